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
import os
import queue
from pathlib import Path
from typing import Any

import submitit

from varbench.cell import Worker
from varbench.plan import Cell
from varbench.progress import QuietReporter, RichReporter, console
from varbench.protocol import Protocol
from varbench.provenance import new_session_id, now, session_record, usable_cores
from varbench.runner import RunOptions, pending_cells, prepare, resolve_device
from varbench.store import RunStore


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
        record = {**base, "random_init_method": cell.arm.make_method().uses_random_init(),
                  "random_init_metrics": cell.protocol.spec.metrics.backbones == "tiny"}
        if finished:
            earlier = next((s for s in run.sessions() if s["session"] == session), {})
            record["started"] = earlier.get("started", record["started"])
            record["finished"] = now()
        run.add_session(record)


def run_inprocess(protocol: Protocol, cells: list[Cell], options: RunOptions) -> None:
    root = Path(options.results)
    device = resolve_device(options.device)
    session = new_session_id()
    todo = pending_cells(root, cells, options.retry_failed)
    record_sessions(root, todo, session, device, "inprocess")
    with RichReporter() as reporter:
        reporter.start_cells(len(todo))
        worker = Worker(root, device, session, reporter)
        for cell in todo:
            reporter.cell_done(cell.label, worker.run_cell(cell, options.retry_failed))
    record_sessions(root, todo, session, device, "inprocess", finished=True)


# --- local: one process per device ------------------------------------------------------
def device_list(gpus: list[str]) -> list[str]:
    """`["0", "1"]` -> `["cuda:0", "cuda:1"]`; "cpu" entries stay (CPU workers, for tests)."""
    return [g if g == "cpu" or g.startswith("cuda") else f"cuda:{int(g)}" for g in gpus]


def _worker_main(protocol_path: str, options: RunOptions, device_name: str, session: str,
                 tasks: Any, results: Any, decode_workers: int) -> None:
    """Body of one local worker process: take cell labels from `tasks` until None."""
    import torch

    os.environ.setdefault("VARBENCH_DECODE_WORKERS", str(decode_workers))  # this GPU's share of the cores

    device = torch.device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    _, cells = prepare(protocol_path, options)
    by_label = {cell.label: cell for cell in cells}
    worker = Worker(Path(options.results), device, session, QuietReporter())
    while (label := tasks.get()) is not None:
        results.put((label, worker.run_cell(by_label[label], options.retry_failed), device_name))


def run_local(protocol: Protocol, cells: list[Cell], options: RunOptions) -> None:
    root = Path(options.results)
    devices = device_list(options.gpus or ["0"])
    session = new_session_id()
    todo = pending_cells(root, cells, options.retry_failed)
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
                               args=(str(protocol.path), options, d, session, tasks, results, decode_workers))
               for d in devices]
    for process in workers:
        process.start()
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
    finally:  # also on Ctrl-C or a Slurm signal: no worker outlives this process
        for process in workers:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join()
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
        return {c.label: RunStore(root, protocol.name, c.arm.run_id).cell(c.subject.name).status()["state"]
                for c in chosen}


def slurm_parameters(protocol: Protocol, options: RunOptions) -> dict[str, Any]:
    """sbatch parameters (submitit's Slurm names) from the protocol, overridden by the CLI."""
    spec = {**vars(protocol.spec.slurm), **{k: v for k, v in options.slurm.items() if v is not None}}
    params = {"job_name": f"varbench-{protocol.name}", "time": int(spec["time_minutes"]),
              "gpus_per_node": int(spec["gpus_per_job"]),
              "cpus_per_task": int(spec["cpus_per_gpu"]) * int(spec["gpus_per_job"]),
              "mem": f"{int(spec['mem_gb'])}GB", "array_parallelism": int(spec["max_parallel"]),
              "signal_delay_s": 120}
    if spec.get("partition"):
        params["partition"] = spec["partition"]
    if spec.get("account"):
        params["account"] = spec["account"]
    if spec.get("extra"):
        params["additional_parameters"] = dict(spec["extra"])
    return params


def chunk_labels(cells: list[Cell], per_chunk: int) -> list[list[str]]:
    labels = [c.label for c in cells]
    return [labels[i:i + per_chunk] for i in range(0, len(labels), max(1, per_chunk))]


def sbatch_script(protocol: Protocol, options: RunOptions, n_tasks: int, folder: Path) -> str:
    """The sbatch file submitit would submit (for --dry-run and tests)."""
    from submitit.slurm.slurm import _make_sbatch_string  # submitit's own renderer

    return _make_sbatch_string(command="python -u -m submitit.core._submit " + str(folder),
                               folder=folder, map_count=n_tasks, **slurm_parameters(protocol, options))


def describe_slurm(protocol: Protocol, todo: list[Cell], options: RunOptions) -> None:
    per_chunk = int(options.slurm.get("gpus_per_job") or protocol.spec.slurm.gpus_per_job)
    n_tasks = math.ceil(len(todo) / per_chunk) if todo else 0
    folder = Path(options.results) / ".slurm" / "dry-run"
    console.print(f"slurm: {n_tasks} array tasks over {len(todo)} pending cells, "
                  f"{per_chunk} cell(s) per task; parameters: {slurm_parameters(protocol, options)}")
    if n_tasks:
        console.print(sbatch_script(protocol, options, n_tasks, folder), markup=False, highlight=False)


def run_slurm(protocol: Protocol, cells: list[Cell], options: RunOptions,
              cluster: str | None = None) -> list[Any]:
    """Submit the pending cells as a job array; returns the submitit jobs (not waited on)."""
    root = Path(options.results)
    todo = pending_cells(root, cells, options.retry_failed)
    if not todo:
        console.print("nothing to submit: every selected cell is done")
        return []
    params = slurm_parameters(protocol, options)
    chunks = chunk_labels(todo, params["gpus_per_node"])
    executor = submitit.AutoExecutor(folder=root / ".slurm" / new_session_id(), cluster=cluster)
    executor.update_parameters(
        name=params["job_name"], timeout_min=params["time"], gpus_per_node=params["gpus_per_node"],
        cpus_per_task=params["cpus_per_task"], slurm_array_parallelism=params["array_parallelism"],
        slurm_partition=params.get("partition"), slurm_account=params.get("account"),
        slurm_additional_parameters=params.get("additional_parameters", {}),
        slurm_signal_delay_s=params["signal_delay_s"])
    jobs = executor.map_array(CellChunkTask(str(protocol.path), options), chunks)
    console.print(f"submitted {len(jobs)} array tasks for {len(todo)} cells: job {jobs[0].job_id.split('_')[0]}; "
                  "check with 'varbench status'")
    return jobs
