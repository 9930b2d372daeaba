"""Launchers: where cells run. All three share the store, the locks and resume.

- in-process (default): cells one after another in this process, with live progress bars;
- local: one worker process per device (`--gpus 0,1,2` or `cpu,cpu` for tests), cells
  handed out from a queue as workers free up;
- slurm: a submitit job array over the pending cells (one chunk of cells per task,
  requeued on preemption or timeout; a requeued cell resumes from what is on disk).
"""
from __future__ import annotations

import math
import multiprocessing as mp
from collections import Counter
import os
import queue
import re
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import submitit

from varbench.worker import Worker
from varbench.schema import excerpt, from_dict, to_dict
from varbench.errors import UserError
from varbench.cell import Cell
from varbench.progress import QuietReporter, RichReporter, console
from varbench.protocol import Protocol, SlurmSpec, check_sbatch_keys
from varbench.provenance import new_session_id, now, session_record, usable_cores
from varbench.devices import gpu_names, resolve_device
from varbench.plan import RunOptions, pending_cells, prepare
from varbench.store import RunStore, check_name
from varbench.metrics.settings import random_init_backbones


def launch(protocol: Protocol, cells: list[Cell], options: RunOptions) -> None:
    if options.launcher == "inprocess":
        run_inprocess(protocol, cells, options)
    elif options.launcher == "local":
        run_local(protocol, cells, options)
    elif options.launcher == "slurm":
        run_slurm(protocol, cells, options)
    else:
        raise ValueError(f"unknown launcher {options.launcher!r}")


def record_sessions(root: Path, cells: list[Cell], session: str, device: Any, launcher: str,
                    finished: bool = False) -> None:
    """Write each touched run's identity and this session's provenance into its manifest."""
    first_cell = {}
    for cell in cells:
        first_cell.setdefault(cell.arm.run_id, cell)
    base = session_record(session, device, launcher) if first_cell else {}
    for run_id, cell in first_cell.items():
        run = RunStore(root, cell.protocol.name, run_id)
        run.write_identity(cell.arm.identity())
        run.write_score_identity(cell.arm.score_id, cell.arm.score_identity())
        record = {**base, "random_init_method": cell.arm.make_method().uses_random_init(),
                  "random_init_metrics": random_init_backbones(cell.protocol.spec.metrics.backbones)}
        if finished:
            earlier = next((s for s in run.sessions() if s["session"] == session), {})
            record["started"] = earlier.get("started", record["started"])
            record["finished"] = now()
        run.add_session(record)


def run_inprocess(protocol: Protocol, cells: list[Cell], options: RunOptions) -> None:
    root = Path(options.results)
    device = resolve_device(options.device)
    session = new_session_id()
    todo = pending_cells(root, cells, options.retry_failed, options.verify)
    record_sessions(root, todo, session, device, "inprocess")
    with RichReporter() as reporter:
        reporter.start_cells(len(todo))
        worker = Worker(root, device, session, reporter, cells_per_arm(todo))
        for cell in todo:
            reporter.cell_done(cell.label, worker.run_cell(cell, options.retry_failed, options.verify))
    record_sessions(root, todo, session, device, "inprocess", finished=True)


# --- local: one process per device ------------------------------------------------------
def device_list(gpus: list[str]) -> list[str]:
    """`["0", "1"]` -> `["cuda:0", "cuda:1"]`; "cpu" entries stay (CPU workers, for tests)."""
    return gpu_names(gpus)


def cells_per_arm(cells: list[Cell], workers: int = 1) -> dict[str, int]:
    """{run id: cells of that arm one worker of `workers` will run} (rounded up)."""
    counts = Counter(cell.arm.run_id for cell in cells)
    return {run_id: math.ceil(count / workers) for run_id, count in counts.items()}


def _worker_main(protocol_path: str, options: RunOptions, device_name: str, session: str,
                 tasks: Any, results: Any, decode_workers: int, workers: int) -> None:
    """Body of one local worker process: take cell labels from `tasks` until None."""
    import torch

    os.environ.setdefault("VARBENCH_DECODE_WORKERS", str(decode_workers))  # this GPU's share of the cores

    device = torch.device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    _, cells = prepare(protocol_path, options)
    by_label = {cell.label: cell for cell in cells}
    todo = pending_cells(Path(options.results), cells, options.retry_failed, options.verify)
    share = cells_per_arm(todo, workers)  # cells go to whichever worker is free: assume a fair share
    worker = Worker(Path(options.results), device, session, QuietReporter(), share)
    while (label := tasks.get()) is not None:
        try:
            state = worker.run_cell(by_label[label], options.retry_failed, options.verify)
        except UserError as err:  # a full disk, say: one line, and this worker stops
            print(f"error: {err.line()}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        results.put((label, state, device_name))


def _sigterm_as_exit():
    """Make SIGTERM (`kill`, a scheduler's stop) leave through the `finally` that stops the
    workers, as Ctrl-C does: by default it ends the process at once and the spawned workers
    run on as orphans. Returns what puts the previous handler back."""
    if threading.current_thread() is not threading.main_thread():  # handlers live in the main thread only
        return lambda: None

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, leave)
    return lambda: signal.signal(signal.SIGTERM, previous)


def run_local(protocol: Protocol, cells: list[Cell], options: RunOptions) -> None:
    root = Path(options.results)
    devices = device_list(options.gpus or ["0"])
    session = new_session_id()
    todo = pending_cells(root, cells, options.retry_failed, options.verify)
    record_sessions(root, todo, session, devices[0], f"local:{','.join(devices)}")
    context = mp.get_context("spawn")  # CUDA cannot be used in forked children
    tasks, results = context.Queue(), context.Queue()
    for cell in todo:
        tasks.put(cell.label)
    for _ in devices:
        tasks.put(None)
    decode_workers = max(1, usable_cores() // len(devices))
    # not daemonic: a worker's scorer starts decoding processes, which daemons may not have
    workers = [context.Process(target=_worker_main,
                               args=(str(protocol.path), options, d, session, tasks, results, decode_workers,
                                     len(devices)))
               for d in devices]
    for process in workers:
        process.start()
    stop_on_sigterm = _sigterm_as_exit()
    try:
        with RichReporter() as reporter:
            reporter.start_cells(len(todo))
            remaining = len(todo)
            while remaining and any(p.is_alive() for p in workers):
                try:
                    label, state, device = results.get(timeout=1.0)
                except queue.Empty:
                    continue
                reporter.cell_done(f"{label} [{device}]", state)
                remaining -= 1
    finally:  # also on Ctrl-C, `kill` or a Slurm signal: no worker outlives this process
        for process in workers:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join()
        stop_on_sigterm()
    for process in workers:
        if process.exitcode not in (0, None):
            console.print(f"[red]a worker exited with code {process.exitcode}[/]; "
                          "its cell stays unfinished and resumes on the next run")
    record_sessions(root, todo, session, devices[0], f"local:{','.join(devices)}", finished=True)


# --- slurm: a submitit job array ---------------------------------------------------------
class CellChunkTask(submitit.helpers.Checkpointable):
    """One array task: run a chunk of cells on this job's GPUs. Checkpointable, so on
    preemption or timeout submitit requeues it with the same arguments; finished cells
    are skipped and the interrupted one resumes from disk."""

    def __init__(self, protocol_path: str, options: RunOptions):
        self.protocol_path = protocol_path
        self.options = options

    def __call__(self, labels: list[str]) -> dict[str, str]:
        import torch

        protocol, cells = prepare(self.protocol_path, self.options)
        chosen = [c for c in cells if c.label in labels]
        gpus = torch.cuda.device_count()
        options = RunOptions(**{**vars(self.options), "launcher": "local" if gpus > 1 else "inprocess",
                                "gpus": [str(i) for i in range(gpus)]})
        launch(protocol, chosen, options)
        root = Path(self.options.results)
        return {c.label: RunStore(root, protocol.name, c.arm.run_id).cell(c.subject.name).state().state
                for c in chosen}


SCRIPT_PATH_CHAR = r"[A-Za-z0-9_@+=:,./-]"  # what shlex.quote leaves alone, less '%'


def slurm_parameters(protocol: Protocol, options: RunOptions) -> dict[str, Any]:
    """sbatch parameters (submitit's Slurm names) from the protocol, overridden by the CLI.

    The merged values are checked again here (the CLI checks its flags, the loader the
    protocol, but RunOptions may also come from code), and so is the results folder,
    which reaches the script's --output/--error lines and its command."""
    overrides = {k: v for k, v in options.slurm.items() if v is not None}
    spec = from_dict(SlurmSpec, {**to_dict(protocol.spec.slurm), **overrides}, "slurm options")
    check_sbatch_keys(spec.extra, "slurm options")
    check_name(protocol.name, "protocol", str(protocol.path))  # the job name
    check_script_path(Path(options.results), "--results")
    params = {"job_name": f"varbench-{protocol.name}", "time": spec.time_minutes,
              "gpus_per_node": spec.gpus_per_job, "cpus_per_task": spec.cpus_per_gpu * spec.gpus_per_job,
              "mem": f"{spec.mem_gb}GB", "array_parallelism": spec.max_parallel, "signal_delay_s": 120}
    if spec.partition:
        params["partition"] = spec.partition
    if spec.account:
        params["account"] = spec.account
    if spec.extra:
        params["additional_parameters"] = dict(spec.extra)
    return params


def check_script_path(path: Path, where: str) -> None:
    """A folder that goes into the sbatch script (#SBATCH --output/--error, srun's flags,
    the command). submitit shell-quotes it, but an #SBATCH line ends at a newline, sbatch
    reads quotes its own way and Slurm expands '%' there, so only characters that need no
    quoting at all are accepted: the script then reads exactly as the path is written."""
    text = str(Path(path).expanduser().absolute())
    bad = [c for c in text if not re.fullmatch(SCRIPT_PATH_CHAR, c)]
    if bad:
        raise UserError(f"results folder {excerpt(text)} cannot go into an sbatch script (it holds {bad[0]!r})",
                        where, "Use a results path of letters, digits and _ @ + = : , . / - only.")


def _executor_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """submitit AutoExecutor names for `params`; the Slurm executor maps them back to
    exactly `params`, so the submitted script is the one `sbatch_script` renders."""
    return dict(name=params["job_name"], timeout_min=params["time"], gpus_per_node=params["gpus_per_node"],
                cpus_per_task=params["cpus_per_task"], mem_gb=int(params["mem"].removesuffix("GB")),
                slurm_array_parallelism=params["array_parallelism"], slurm_partition=params.get("partition"),
                slurm_account=params.get("account"),
                slurm_additional_parameters=params.get("additional_parameters", {}),
                slurm_signal_delay_s=params["signal_delay_s"])


def chunk_labels(cells: list[Cell], per_chunk: int) -> list[list[str]]:
    labels = [c.label for c in cells]
    return [labels[i:i + per_chunk] for i in range(0, len(labels), max(1, per_chunk))]


def sbatch_script(protocol: Protocol, options: RunOptions, n_tasks: int, folder: Path) -> str:
    """The sbatch file submitit submits for `n_tasks` array tasks logging into `folder`
    (for --dry-run and tests): the same renderer, parameters and command as run_slurm."""
    from submitit.slurm.slurm import _make_sbatch_string  # submitit's own renderer

    params = slurm_parameters(protocol, options)
    folder = Path(folder).expanduser().absolute()  # as submitit's executor stores it
    check_script_path(folder, "--results")
    # submitit's SlurmExecutor._submitit_command_str, with the default python
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    map_count = n_tasks if n_tasks > 1 else None  # submitit submits a single task as a plain job
    return _make_sbatch_string(command=command, folder=folder, map_count=map_count, **params)


def describe_slurm(protocol: Protocol, todo: list[Cell], options: RunOptions) -> None:
    """--dry-run: the plan on stderr, then the script on stdout exactly as it would be
    submitted (raw: rich would wrap long lines and read '[...]' as markup)."""
    params = slurm_parameters(protocol, options)
    per_chunk = params["gpus_per_node"]
    n_tasks = math.ceil(len(todo) / per_chunk) if todo else 0
    folder = Path(options.results) / ".slurm" / "dry-run"  # a real submission uses a session id
    console.print(f"slurm: {n_tasks} array tasks over {len(todo)} pending cells, "
                  f"{per_chunk} cell(s) per task; parameters: {params}", markup=False, highlight=False,
                  soft_wrap=True)
    if n_tasks:
        sys.stdout.write(sbatch_script(protocol, options, n_tasks, folder) + "\n")
        sys.stdout.flush()


def run_slurm(protocol: Protocol, cells: list[Cell], options: RunOptions,
              cluster: str | None = None) -> list[Any]:
    """Submit the pending cells as a job array; returns the submitit jobs (not waited on)."""
    root = Path(options.results)
    params = slurm_parameters(protocol, options)  # refuses bad values before anything is written
    todo = pending_cells(root, cells, options.retry_failed, options.verify)
    if not todo:
        console.print("nothing to submit: every selected cell is done")
        return []
    chunks = chunk_labels(todo, params["gpus_per_node"])
    executor = submitit.AutoExecutor(folder=root / ".slurm" / new_session_id(), cluster=cluster)
    executor.update_parameters(**_executor_parameters(params))
    jobs = executor.map_array(CellChunkTask(str(protocol.path), options), chunks)
    console.print(f"submitted {len(jobs)} array tasks for {len(todo)} cells: job {jobs[0].job_id.split('_')[0]}; "
                  "check with 'varbench status'")
    return jobs
