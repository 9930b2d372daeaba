"""The worker: runs cells (fit -> generate every planned image -> score), resumable at each step.

What is on disk decides what is left to do: a PNG that exists is finished (PNG writes
are atomic), an `artifact/` folder that exists is a finished fit (built under a temp
name and renamed), a `metrics.csv` for the protocol's mode is a finished scoring. A
rerun after a crash therefore redoes only the interrupted step, and because every seed
is derived from names, it redoes it identically.

A worker keeps an arm's base model (`Method.load_base`) for its next cell of that arm
when the method can restore it (`Method.snapshot_base` / `restore_base`): the next cell
restores it (timed as `reuse_base`) instead of loading it again (`load`), and modules
the speed layers compiled for it stay valid. Only a cell that finished its fit and
images gives its base back; after a failure the next cell loads a fresh one. A kept
base is dropped as soon as the worker turns to another arm.
"""
from __future__ import annotations

import errno
import gc
import os
import socket
import shutil
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from varbench import execution
from varbench.errors import UserError, warn_fallback
from varbench.fileio import atomic_dir, sweep_temporaries, write_png, write_text
from varbench.hashing import content_hash
from varbench.integrity import quarantine, to_redo
from varbench.locks import cell_lock
from varbench.method import CellContext, Method, PersonalizedModel
from varbench.cell import Cell, PlannedImage
from varbench.progress import Reporter
from varbench.provenance import now
from varbench.schema import to_dict
from varbench.weights import cache_root
from varbench.store import IMAGE_COLUMNS, METRIC_COLUMNS, TIMING_COLUMNS, CellStore, RunStore, add_rows, write_rows
from varbench.timing import PhaseRecord, timed


@dataclass
class LoadedBase:
    """An arm's loaded base model and its snapshot (None: not to be reused)."""

    run_id: str
    base: Any
    snapshot: Any


class Worker:
    """Runs cells in one process; keeps metric encoders loaded across cells, and an arm's
    base model across its cells (module docstring)."""

    def __init__(self, root: Path, device: Any, session: str, reporter: Reporter | None = None,
                 cells_per_arm: dict[str, int] | None = None):
        self.root = Path(root)
        self.device = device
        self.session = session
        self.reporter = reporter or Reporter()
        # How many cells of each arm (run id) this worker expects: `compile: auto` compiles
        # an arm only when enough of its cells share the compiled graphs.
        self.cells_per_arm = cells_per_arm or {}
        # Compiled graphs outlive the process: later workers and cells load them from here.
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_root() / "inductor"))
        self._scorers: dict[str, Any] = {}
        # A user error while loading an arm's base model (missing weights, say) would
        # repeat identically, slowly (hub retries), for every later cell of that arm.
        self._load_errors: dict[str, UserError] = {}
        self._kept: LoadedBase | None = None  # the base of the last finished cell, to reuse
        limit_cpu_threads(device)
        tune_cuda(device)

    def run_cell(self, cell: Cell, retry_failed: bool = False, verify: bool = False) -> str:
        """Run `cell` unless done (or failed, without retry); returns its state afterwards,
        or "busy" when another process holds its lock. A damaged cell is repaired: what
        is damaged is quarantined and recomputed (`verify` also compares hashes)."""
        store = RunStore(self.root, cell.protocol.name, cell.arm.run_id).cell(cell.subject.name)
        store.refuse_links(self.root)
        with cell_lock(store.dir, self.session) as taken:
            if not taken:
                return "busy"
            sweep_temporaries(store.dir)  # we hold the lock: any temporary here is a dead writer's
            found = store.state(cell.arm.score_id, hashes=verify)
            if found.state == "done" or (found.state == "failed" and not retry_failed):
                return found.state
            if found.state == "damaged":
                quarantine(store.dir, to_redo(list(found.problems)))
            self._keep_only(cell.arm.run_id)
            if store.state().state != "done" and not self._run_step(cell, store, None, self._work):
                return "failed"
            return "done" if self._run_step(cell, store, cell.arm.score_id, self._score) else "failed"

    def _run_step(self, cell: Cell, store: CellStore, score_id: str | None, step: Any) -> bool:
        """Run the generation (score_id None) or the scoring of a cell and record its state:
        done (sealed) or failed (with its error); one cell's failure never stops the run."""
        facts = {"started": now(), **self._where(), "execution": cell.arm.execution}
        try:  # a status write that fails (an I/O error) fails the step like any other error
            store.set_step(score_id, "running", **facts)
            step(cell, store)
            store.set_step(score_id, "done", **facts, finished=now(), error=None)
        except Exception as err:
            self._record_failure(store, score_id, err, facts)
            return False
        finally:
            self._free_memory()
        return True

    # --- the steps of a cell ---------------------------------------------------------
    def _work(self, cell: Cell, store: CellStore) -> None:
        store.replace_rows("images", IMAGE_COLUMNS, [self._image_row(cell, p) for p in cell.images])
        missing = [p for p in cell.images if not (store.dir / p.path).is_file()]
        # no cell.json: never fitted, or its fit records were quarantined as damaged
        if missing or not (store.dir / "cell.json").is_file():
            method = cell.arm.make_method(self.cells_per_arm.get(cell.arm.run_id, 1))
            ctx = CellContext(device=self.device, fit_seed=cell.fit_seed, workdir=store.workdir,
                              cache_dir=self.root / ".cache", subject_name=cell.subject.name,
                              on_fit_step=self.reporter.advance_phase)
            store.workdir.mkdir(parents=True, exist_ok=True)
            loaded = self._base(cell, store, method, ctx)
            model = self._personalize(cell, store, method, loaded.base, ctx)
            self._generate(cell, store, model, [p for p in missing if p.kind == "eval"], "generate")
            self._generate(cell, store, model, [p for p in missing if p.kind == "pres"], "pres_generate")
            del model
            if loaded.snapshot is not None:  # only reached when the fit and every image succeeded
                self._kept = loaded
        if not cell.protocol.spec.keep_artifacts:
            shutil.rmtree(store.artifact_dir, ignore_errors=True)
        shutil.rmtree(store.workdir, ignore_errors=True)

    def _base(self, cell: Cell, store: CellStore, method: Method, ctx: CellContext) -> LoadedBase:
        """The arm's base: the one its last finished cell left, restored, or a fresh one."""
        run_id = cell.arm.run_id
        if run_id in self._load_errors:
            raise self._load_errors[run_id]
        kept, self._kept = self._kept, None  # taken: a cell that fails never gives it back
        if kept is not None and kept.run_id == run_id:
            try:
                with self._phase(store, "reuse_base"):
                    method.restore_base(kept.base, kept.snapshot)
                return kept
            except Exception as err:  # noqa: BLE001 - reuse is a speed-up: load afresh instead
                warn_fallback(f"restoring the base of {cell.arm.name}", err, "loading it again")
        if kept is not None:
            del kept
            self._free_memory()  # the old base goes before the new one comes
        try:
            with self._phase(store, "load"):
                base = method.load_base(ctx)
                snapshot = self._snapshot(method, base, run_id)
        except UserError as err:
            self._load_errors[run_id] = err
            raise
        return LoadedBase(run_id, base, snapshot)

    def _snapshot(self, method: Method, base: Any, run_id: str) -> Any:
        """The method's snapshot of a fresh base when this worker will run more of its arm's
        cells (else None: the copy would never be used)."""
        if self.cells_per_arm.get(run_id, 1) < 2:
            return None
        try:
            return method.snapshot_base(base)
        except Exception as err:  # noqa: BLE001 - see _base
            warn_fallback(f"snapshot of the {method.name} base", err, "loading it for every cell")
            return None

    def _keep_only(self, run_id: str) -> None:
        """Drop a kept base of another arm: two arms' bases never sit side by side."""
        if self._kept is not None and self._kept.run_id != run_id:
            self._kept = None
            self._free_memory()

    def _personalize(self, cell: Cell, store: CellStore, method: Method, base: Any,
                     ctx: CellContext) -> PersonalizedModel:
        if store.artifact_dir.is_dir():
            with self._phase(store, "load_artifact"):
                model = method.load_artifact(base, store.artifact_dir, ctx)
        else:
            self.reporter.start_phase(f"fit {cell.arm.name}/{cell.subject.name}", 0)
            with self._phase(store, "fit") as record:
                model = method.fit(base, cell.subject, ctx)
                ctx.flush_losses()
                record.items = len(ctx.losses)
            self.reporter.end_phase()
            atomic_dir(store.artifact_dir, model.save)
            self._write_losses(store, ctx.losses)
        store.update_facts(subject=cell.subject.name, class_noun=cell.subject.class_noun,
                           live=cell.subject.live, fit_seed=cell.fit_seed,
                           trainable_parameters=int(model.trainable_parameters),
                           artifact_bytes=folder_bytes(store.artifact_dir), device=str(self.device))
        return model

    def _generate(self, cell: Cell, store: CellStore, model: PersonalizedModel,
                  todo: list[PlannedImage], phase: str) -> None:
        if not todo:
            return
        size = cell.arm.batch_size
        batches = [todo[i:i + size] for i in range(0, len(todo), size)]
        self.reporter.start_phase(f"{phase} {cell.arm.name}/{cell.subject.name}", len(todo))
        done = 0
        for index, batch in enumerate(batches):
            # The first batch of a session pays for kernel selection and caches: it is
            # recorded as warm-up and kept out of seconds-per-image.
            name = f"{phase}_warmup" if index == 0 and phase == "generate" and len(batches) > 1 else phase
            with self._phase(store, name, items=len(batch)):
                images = model.generate([p.prompt for p in batch], [p.seed for p in batch])
            if len(images) != len(batch):
                raise RuntimeError(f"generate returned {len(images)} images for {len(batch)} prompts")
            for planned, image in zip(batch, images):
                write_png(store.dir / planned.path, image.convert("RGB"))
            done += len(batch)
            self.reporter.advance_phase(done, len(todo))
        self.reporter.end_phase()

    def _score(self, cell: Cell, store: CellStore) -> None:
        from varbench.metrics.scoring import GeneratedImage

        metrics, folder = cell.arm.metrics, store.score_dir(cell.arm.score_id)
        images = [GeneratedImage(path=store.dir / p.path, name=p.path, kind=p.kind,
                                 prompt_index=p.prompt_index, sample_index=p.sample_index,
                                 clip_text=p.clip_text, template=p.template) for p in cell.images]
        execution.decode_workers_env(cell.arm.execution)  # read when the scorer starts its pool
        scorer = self._scorer(metrics, store, folder)
        with self._phase(store, "score", items=len(images), folder=folder):
            rows = scorer.score_cell(cell.subject, images)
        base = {"run_id": cell.arm.run_id, "subject": cell.subject.name}
        write_rows(folder / "metrics.csv", METRIC_COLUMNS, [{**base, **row} for row in rows])

    # --- helpers -----------------------------------------------------------------------
    def _scorer(self, metrics: Any, store: CellStore, folder: Path) -> Any:
        """The worker's Scorer for this metrics config, built once (its load is timed once)."""
        from varbench.metrics.scoring import Scorer

        key = content_hash([to_dict(metrics), os.environ.get("VARBENCH_DECODE_WORKERS")])
        if key not in self._scorers:
            with self._phase(store, "load_metrics", folder=folder):
                self._scorers[key] = Scorer(metrics, self.device)
        return self._scorers[key]

    @contextmanager
    def _phase(self, store: CellStore, phase: str, items: int = 0, folder: Path | None = None) -> Iterator[PhaseRecord]:
        """Time one phase into the cell's timings.csv (a score folder's, for scoring)."""
        with timed(phase, self.device, items=items, warmup=phase.endswith("_warmup")) as record:
            yield record
        path = (folder or store.dir) / "timings.csv"
        add_rows(path, TIMING_COLUMNS, [{
            "run_id": store.run_dir.name, "subject": store.subject, "phase": phase,
            "seconds": round(record.seconds, 6), "items": record.items,
            "seconds_per_item": round(record.seconds_per_item, 6) if record.items else "",
            "peak_memory_bytes": record.peak_memory_bytes, "device": str(self.device),
            "warmup": record.warmup, "session": self.session}])

    def _image_row(self, cell: Cell, planned: PlannedImage) -> dict[str, Any]:
        return {"run_id": cell.arm.run_id, "subject": cell.subject.name, "kind": planned.kind,
                "prompt_index": planned.prompt_index, "sample_index": planned.sample_index,
                "seed": planned.seed, "prompt": planned.prompt, "clip_text": planned.clip_text,
                "template": planned.template, "path": planned.path}

    def _write_losses(self, store: CellStore, losses: list[dict[str, float]]) -> None:
        if losses:
            columns = list(dict.fromkeys(key for row in losses for key in row))
            store.replace_rows("losses", columns, losses)

    def _record_failure(self, store: CellStore, score_id: str | None, err: BaseException,
                        facts: dict[str, Any]) -> None:
        """Record a failed step (its error.txt beside its status); only a full disk (which
        fails every later cell too) stops the run."""
        message = err.line() if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
        message = (message.splitlines() or [type(err).__name__])[0]
        if is_disk_full(err):  # not the cell's fault: it stays unfinished and resumes next run
            raise disk_full_error(store, err) from None
        full_disk = None
        folder = store.score_dir(score_id) if score_id else store.dir
        try:
            write_text(folder / "error.txt", "".join(traceback.format_exception(err)))
        except OSError as write_err:
            message += f" (error.txt not written: {write_err.strerror or write_err})"
            full_disk = write_err if is_disk_full(write_err) else None
        guard_disk(store, lambda: store.set_step(score_id, "failed", **facts, finished=now(), error=message))
        if full_disk is not None:  # the cell's own failure is recorded; later cells would only fail
            raise disk_full_error(store, full_disk)

    def _where(self) -> dict[str, Any]:
        """Who ran the cell: device, host, process, session (shown by `varbench status`)."""
        return {"device": str(self.device), "host": socket.gethostname(), "pid": os.getpid(),
                "session": self.session}

    def _free_memory(self) -> None:
        gc.collect()
        if str(self.device).startswith("cuda"):
            import torch

            torch.cuda.empty_cache()


def is_disk_full(err: BaseException | None) -> bool:
    """Whether `err`, or an error it was raised from, says the disk or quota is full."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        err = err.__cause__ or err.__context__
    return False


def disk_full_error(store: CellStore, err: BaseException) -> UserError:
    return UserError(f"disk full while working on cell {store.subject} ({err})", str(store.dir.resolve()),
                     "Free disk space and rerun: finished cells are kept, this one resumes.")


def guard_disk(store: CellStore, write: Any) -> None:
    """Run a status write; a full disk becomes one clear line that stops the run (the
    cell's lock is released, so it shows as interrupted and resumes next time)."""
    try:
        write()
    except OSError as err:
        if is_disk_full(err):
            raise disk_full_error(store, err) from None
        raise UserError(f"cannot write the status of cell {store.subject}: {err.strerror or err}",
                        str(store.dir.resolve()), "Check the folder's permissions and free space.") from None


def limit_cpu_threads(device: Any) -> None:
    """On the CPU, run torch single-threaded unless OMP_NUM_THREADS says otherwise.

    CPU runs are the tiny random-init checks (smoke, tests), where intra-op threads buy
    nothing, and OpenMP threads that spin while another process holds a core slowed a
    smoke run on a shared 2-core machine from 23 s to over 5 minutes.
    """
    if getattr(device, "type", str(device)) == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(1)


def tune_cuda(device: Any) -> None:
    """Let cuDNN pick the fastest convolution algorithms: a cell runs the same shapes
    thousands of times (UNet, VAE decoder), so the one-time autotuning pays for itself."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        torch.backends.cudnn.benchmark = True


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) if Path(folder).is_dir() else 0
