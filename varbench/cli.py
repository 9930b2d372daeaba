"""The `varbench` command line. Imports stay inside commands so `--help` is instant."""
from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from varbench.errors import UserError, did_you_mean

app = typer.Typer(help="varbench: reproducible benchmarks for subject-driven image generation.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
list_app = typer.Typer(help="List installed methods or available protocols.", no_args_is_help=True)
data_app = typer.Typer(help="Download and verify datasets.", no_args_is_help=True)
app.add_typer(list_app, name="list")
app.add_typer(data_app, name="data")

def _absolute(value: Optional[Path]) -> Optional[Path]:
    """Paths as absolute (not resolved: a symlinked root stays visible as one), so every
    error and message names the full path."""
    return value.absolute() if value is not None else None


def _absolute_text(value: Optional[str]) -> Optional[str]:
    return str(Path(value).expanduser().absolute()) if value else value


RESULTS = typer.Option(Path("results"), "--results", help="Results root folder.", callback=_absolute)
DATA_ROOT = typer.Option(None, "--data-root", callback=_absolute_text, help="Local dataset folder (overrides the cache).")


def _split(value: Optional[str]) -> Optional[list[str]]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _sbatch_extra(pairs: list[str]) -> dict[str, str]:
    """--sbatch KEY=VALUE options, checked like a protocol's slurm.extra (they reach the script)."""
    from varbench.schema import convert_field, excerpt
    from varbench.protocol import SlurmSpec, check_sbatch_keys

    extra: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--sbatch expects KEY=VALUE, got {excerpt(pair)}", "--sbatch", "e.g. --sbatch qos=high")
        if key in extra:
            raise UserError(f"--sbatch {excerpt(key)} given twice", "--sbatch", "Give each option once.")
        extra[key] = value
    extra = convert_field(SlurmSpec, "extra", extra, "--sbatch")
    check_sbatch_keys(extra, "--sbatch")
    return extra


def _slurm_flags(**flags: object) -> dict[str, object]:
    """The run command's Slurm flags, each checked like the protocol field it overrides
    (pattern or range); an error names the flag."""
    from varbench.schema import convert_field
    from varbench.protocol import SlurmSpec

    return {name: None if value is None else convert_field(SlurmSpec, name, value, "--" + name.replace("_", "-"))
            for name, value in flags.items()}


@app.command()
def run(
    protocol: str = typer.Option(..., "--protocol", "-p", help="Protocol name (see 'varbench list protocols') or YAML path."),
    methods: Optional[str] = typer.Option(None, "--methods", "-m", help="Comma-separated arm or method names."),
    subjects: Optional[str] = typer.Option(None, "--subjects", "-s", help="Comma-separated subject names."),
    results: Path = RESULTS,
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the cells (and their state) without running."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Rerun cells that failed before."),
    verify: bool = typer.Option(False, "--verify", help="Check done cells' files against their sha256 seal "
                                "(sizes are always checked); damaged cells are repaired."),
    set_: list[str] = typer.Option([], "--set", help="Execution option for every arm (execution.KEY=VALUE) or one "
                                   "arm (ARM.execution.KEY=VALUE); never changes a result (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="With --dry-run: one JSON object per cell and line."),
    no_check: bool = typer.Option(False, "--no-check", help="Skip the preflight (weights, data, disk, GPU memory "
                                  "checked before the first cell)."),
    backbones: str = typer.Option("as-written", "--backbones", help="as-written, or random: every model and metric "
                                  "encoder at its real size with random weights (a rehearsal: real time and memory, "
                                  "meaningless images and scores; results under PROTOCOL-random)."),
    data_root: Optional[str] = DATA_ROOT,
    launcher: str = typer.Option("inprocess", "--launcher", help="inprocess, local (one worker per GPU) or slurm."),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="Local launcher devices: '0,1,2' ('cpu,cpu' for CPU workers)."),
    partition: Optional[str] = typer.Option(None, "--partition", help="Slurm partition."),
    account: Optional[str] = typer.Option(None, "--account", help="Slurm account."),
    time_minutes: Optional[int] = typer.Option(None, "--time-minutes", help="Slurm time limit per array task."),
    gpus_per_job: Optional[int] = typer.Option(None, "--gpus-per-job", help="GPUs (and cells) per Slurm array task."),
    sbatch: list[str] = typer.Option([], "--sbatch", help="Extra sbatch option KEY=VALUE (repeatable)."),
) -> None:
    """Run a protocol: fit, generate and score every pending cell (resumes finished work)."""
    from varbench.runner import RunOptions, run_protocol

    if as_json and not dry_run:
        raise UserError("--json prints the plan of a dry run", "--json", "Add --dry-run.")
    if backbones not in ("as-written", "random"):
        raise UserError(f"unknown --backbones {backbones!r}", "--backbones", "Use as-written or random.")
    if launcher not in ("inprocess", "local", "slurm"):
        raise UserError(f"unknown launcher {launcher!r}", "--launcher", "Use inprocess, local or slurm.")
    slurm = {**_slurm_flags(partition=partition, account=account, time_minutes=time_minutes,
                            gpus_per_job=gpus_per_job), "extra": _sbatch_extra(sbatch) or None}
    options = RunOptions(results=results, device=device, methods=_split(methods), subjects=_split(subjects),
                         data_root=data_root, retry_failed=retry_failed, verify=verify, dry_run=dry_run,
                         json=as_json, overrides=set_, random_weights=backbones == "random", preflight=not no_check,
                         launcher=launcher, gpus=_split(gpus) or [], slurm=slurm)
    raise typer.Exit(run_protocol(protocol, options))


@app.command()
def check(
    protocol: str = typer.Option(..., "--protocol", "-p", help="Protocol name or YAML path."),
    data_root: Optional[str] = DATA_ROOT,
    results: Path = RESULTS,
    methods: Optional[str] = typer.Option(None, "--methods", help="Only these arms or methods (comma-separated)."),
    backbones: str = typer.Option("as-written", "--backbones", help="as-written, or random (the rehearsal)."),
    bench: Optional[Path] = typer.Option(None, "--bench", help="A bench.json of 'varbench bench' for the GPU "
                                         "memory projection (default: $VARBENCH_BENCH, the checkout's benchmarks/)."),
) -> None:
    """Preflight: is everything a run needs here (data, weights, disk, GPU memory)? Downloads nothing."""
    from varbench.plan import RunOptions
    from varbench.preflight import missing, preflight, print_requirements

    if backbones not in ("as-written", "random"):
        raise UserError(f"unknown --backbones {backbones!r}", "--backbones", "Use as-written or random.")
    options = RunOptions(results=results, data_root=data_root, methods=_split(methods), dry_run=True,
                         random_weights=backbones == "random")
    loaded, arms, cells = _prepare_for_check(protocol, options)
    rows = preflight(loaded, arms, cells, results, data_root, bench)
    print_requirements(rows)
    lacking = missing(rows)
    typer.echo(f"{len(lacking)} missing" if lacking else "everything found")
    raise typer.Exit(2 if lacking else 0)


def _prepare_for_check(protocol: str, options: Any) -> tuple:
    """(protocol, arms, cells); cells None when the dataset is not here (the weights are
    still checked)."""
    from varbench.plan import prepare, select_arms
    from varbench.protocol import load_protocol

    loaded = load_protocol(protocol, options.overrides, options.random_weights)
    arms = select_arms(loaded, options.methods)
    try:
        return loaded, arms, prepare(protocol, options)[1]
    except UserError:
        return loaded, arms, None


@app.command()
def rehearse(
    protocol: str = typer.Option(..., "--protocol", "-p", help="Protocol name or YAML path."),
    subjects: Optional[str] = typer.Option(None, "--subjects", help="Subjects to run (default: the first)."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Only these arms or methods."),
    fit_steps: int = typer.Option(10, "--fit-steps", help="Optimizer steps of each shortened fit."),
    prompts: int = typer.Option(2, "--prompts", help="Prompts per subject."),
    images_per_prompt: int = typer.Option(2, "--images-per-prompt"),
    results: Path = RESULTS,
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    data_root: Optional[str] = DATA_ROOT,
    measured: Optional[Path] = typer.Option(None, "--measured", help="Only project PROTOCOL from an earlier "
                                            "rehearsal's rehearsal.json (runs nothing)."),
    set_: list[str] = typer.Option([], "--set", help="Execution option execution.KEY=VALUE or "
                                   "ARM.execution.KEY=VALUE (repeatable)."),
) -> None:
    """Full-size rehearsal: every arm at its real size with random weights, short fits; time and
    peak memory per phase, and the protocol's projected GPU-hours."""
    from varbench.rehearsal import RehearsalOptions, rehearse as run_rehearsal

    for name, value in (("--fit-steps", fit_steps), ("--prompts", prompts), ("--images-per-prompt", images_per_prompt)):
        if value < 1:
            raise UserError(f"{name} is {value}", name, "Use a positive number.")
    options = RehearsalOptions(results=results, subjects=_split(subjects), methods=_split(methods),
                               fit_steps=fit_steps, prompts=prompts, images_per_prompt=images_per_prompt,
                               device=device, data_root=data_root, measured=measured, overrides=set_)
    typer.echo(run_rehearsal(protocol, options))


@app.command()
def score(
    images: Path = typer.Argument(..., callback=_absolute, help="Image folder: IMAGES/<subject>/<prompt index>_"
                                  "<sample index>.png, or the folder a --manifest's paths are relative to."),
    dataset: str = typer.Option("dreambench", "--dataset", help="dreambench, vico, smoke, toyworld or folder (your own subjects)."),
    data_root: Optional[str] = typer.Option(None, "--data-root", callback=_absolute_text,
                                            help="Local dataset folder (overrides the cache; required for "
                                            "--dataset folder)."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", callback=_absolute,
                                            help="CSV or JSONL with image, subject, prompt [, sample] instead "
                                            "of the folder layout."),
    identifier: Optional[str] = typer.Option(None, "--identifier", help="Token to strip from manifest prompts for "
                                             "CLIP-T ('a sks dog' -> 'a dog')."),
    mode: str = typer.Option("canonical", "--mode", help="Metric mode: canonical, dreammatcher, kosmosg, dreambench++."),
    backbones: str = typer.Option("real", "--backbones",
                                  help="real (published weights), tiny or random (random-init), or "
                                  "toyworld (trained by varbench on its miniature world)."),
    name: str = typer.Option("external", "--name", help="Arm name the images are shown under in reports."),
    results: Path = RESULTS,
    protocol: Optional[str] = typer.Option(None, "--protocol", help="Store them beside this protocol's runs "
                                           "(default: the dataset's name)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    div: bool = typer.Option(True, "--div/--no-div", help="Also score DIV (LPIPS among a prompt's images)."),
    extra: Optional[str] = typer.Option(None, "--extra", help="Extra metrics, comma-separated (see 'varbench "
                                        "list metrics'): e.g. dinov2_s,clip_l_i,copy."),
    set_: list[str] = typer.Option([], "--set", help="Scoring execution option execution.KEY=VALUE "
                                   "(metric_batch_size, metric_precision, decode_workers; repeatable)."),
) -> None:
    """Score images made anywhere with the metrics of a mode; report shows them beside generated arms."""
    from varbench.api import results_of
    from varbench.execution import parse_overrides
    from varbench.runner import summarise
    from varbench.score import ScoreRequest, score_external

    shared, per_arm = parse_overrides(set_)
    if per_arm:
        raise UserError("--set ARM.execution.KEY applies to protocol arms", "--set", "Use execution.KEY=VALUE.")
    request = ScoreRequest(images=images, dataset=dataset, data_root=data_root, manifest=manifest,
                           identifier=identifier, mode=mode, backbones=backbones, name=name, results=results,
                           protocol=protocol, device=device, div=div, extra=_split(extra) or [], execution=shared)
    cells = score_external(request)
    code = summarise(results, cells)
    _print_summary(results_of(results, cells).summary, backbones)
    typer.echo(f"stored in {(results / cells[0].protocol.name / cells[0].arm.run_id).resolve()} "
               "('varbench report' shows them beside generated arms)")
    raise typer.Exit(code)


def _print_summary(summary: Any, backbones: str) -> None:
    """Mean over subjects and its 95% bootstrap interval, one row per metric."""
    from rich.console import Console
    from rich.table import Table

    from varbench.toyworld.backbones import NOTE as TOYWORLD_NOTE

    captions = {"real": None, "toyworld": TOYWORLD_NOTE}
    caption = captions.get(backbones, f"{backbones} backbones: random-init encoders; these values check the "
                                      "pipeline, not the images")
    table = Table("metric", "mode", "mean", "95% CI", "subjects", caption=caption)
    for row in summary[summary["group"] == "all"].itertuples():
        interval = "" if row.ci_low != row.ci_low else f"[{row.ci_low:.4f}, {row.ci_high:.4f}]"  # NaN: < 2 subjects
        table.add_row(row.metric, row.mode, f"{row.mean:.4f}", interval, str(row.n_subjects))
    Console().print(table)


@app.command("check-method")
def check_method_command(
    name: str = typer.Argument(..., help="Method name (see 'varbench list methods')."),
    config: list[str] = typer.Option([], "--config", help="KEY=VALUE over the method's tiny_config (repeatable)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
) -> None:
    """Check a method against the rules the runner relies on, on a tiny config (seconds on a CPU)."""
    import time

    from varbench.conformance import check_method, parse_config_pairs, summary
    from varbench.devices import resolve_device

    start = time.perf_counter()
    results = check_method(name, parse_config_pairs(config), resolve_device(device), where="--config")
    for result in results:
        typer.echo(result.line())
    typer.echo(summary(name, results, time.perf_counter() - start))
    raise typer.Exit(0 if all(result.passed for result in results) else 1)


import_app = typer.Typer(help="Bring subject models trained elsewhere into varbench.", no_args_is_help=True)
app.add_typer(import_app, name="import")


@import_app.command("arbooth")
def import_arbooth(
    checkpoint: Path = typer.Argument(..., help="A fine-tuned checkpoint of the ARBooth release (a dict whose "
                                      "'model' entry is Infinity-2B's state dict plus special_token)."),
    class_noun: str = typer.Option(..., "--class-noun", help="The subject's class: prompts say '<placeholder> NOUN'."),
    name: str = typer.Option(..., "--name", help="Name of the imported subject model (its folder under --out)."),
    out: Path = typer.Option(Path("imports/arbooth"), "--out", help="Parent folder of imported models."),
    model: str = typer.Option("infinity-2b", "--model", help="Model size the checkpoint was fine-tuned from."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Base transformer file (default: "
                                          "$VARBENCH_INFINITY_DIR, then the hub cache)."),
    vae_weights: Optional[str] = typer.Option(None, "--vae-weights", help="Tokenizer file (same default lookup)."),
) -> None:
    """Turn a released ARBooth subject model into a varbench artifact (scored beside varbench's fits)."""
    from varbench.methods.arbooth.release import import_release, next_steps

    folder = import_release(checkpoint, class_noun, name, out, model=model, weights=weights, vae_weights=vae_weights)
    for line in next_steps(folder):
        typer.echo(line)


toyworld_app = typer.Typer(help="The toyworld: a miniature world with backbones varbench pretrains itself.",
                           no_args_is_help=True)
app.add_typer(toyworld_app, name="toyworld")


@toyworld_app.command("train")
def toyworld_train(
    out: Path = typer.Option(..., "--out", callback=_absolute, help="Folder for the weights, their manifest "
                             "and training.json (use them with VARBENCH_TOYWORLD_DIR=OUT)."),
    only: Optional[str] = typer.Option(None, "--only", help="Comma-separated backbones (default: all): clip, dino, "
                                       "sd, infinity."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    seed: int = typer.Option(0, "--seed"),
    steps: Optional[int] = typer.Option(None, "--steps", help="Override every schedule's length (quick checks)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Processes rendering the training pools."),
    recipe: str = typer.Option("gpu", "--recipe", help="CLIP, SD and Infinity recipes: gpu (for a GPU) or cpu (smaller, "
                               "for a 2-core CPU); see train_encoders.CLIP_RECIPES, train_sd.RECIPES and "
                               "train_infinity.RECIPES."),
) -> None:
    """Pretrain the toyworld backbones from scratch, seeded, on rendered scenes."""
    from varbench.devices import resolve_device
    from varbench.toyworld.train import train_backbones

    names = [name.strip() for name in only.split(",") if name.strip()] if only else None
    records = train_backbones(out, names, str(resolve_device(device)), seed, steps, workers, recipe)
    for name, record in records.items():
        stages = ", ".join(f"{stage} {record['schedule'][stage]['steps']} steps, final loss {losses[-1]:.3f}"
                           for stage, losses in record["losses"].items())
        typer.echo(f"{name}: {stages}; {record['seconds']:.0f} s on {record['device_name']}")
    typer.echo(f"written: {out}  (use it with VARBENCH_TOYWORLD_DIR={out})")


@toyworld_app.command("answers")
def toyworld_answers(
    results: Path = typer.Option(Path("results"), "--results", callback=_absolute, help="Results root folder."),
    protocol: str = typer.Option("toyworld", "--protocol", "-p", help="The toyworld protocol that was run."),
) -> None:
    """Check a toyworld run's method-level known answers (tuning beats the floor; priors
    lower PRES); exits 1 if one does not hold."""
    from varbench.api import results_of
    from varbench.plan import RunOptions, prepare
    from varbench.toyworld.method_answers import method_answers, to_markdown

    _, cells = prepare(protocol, RunOptions(results=results, dry_run=True))
    scores = results_of(results, cells)
    if scores.rows.empty:
        raise UserError(f"no finished cells of {protocol!r}", str(results), f"Run 'varbench run --protocol "
                        f"{protocol} --results {results}' first.")
    answers = method_answers(scores.rows, {cell.arm.name: cell.arm.run_id for cell in cells})
    typer.echo(to_markdown(answers))
    if any(answer.holds is False for answer in answers):
        raise typer.Exit(1)


@toyworld_app.command("grid")
def toyworld_grid(
    out: Path = typer.Option(Path("toyworld-grid.png"), "--out", callback=_absolute, help="PNG to write."),
) -> None:
    """Draw the world's picture grid: a row per class, a column per context."""
    from varbench.toyworld.world import picture_grid

    typer.echo(f"written: {picture_grid(out)}")


@app.command()
def report(
    results: Path = RESULTS,
    out: Path = typer.Option(Path("report/out"), "--out", help="Output folder."),
    spec: Optional[Path] = typer.Option(None, "--spec", help="Report spec YAML (default: report/paper.yaml)."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty --out folder that no earlier report "
                               "wrote (files varbench did not write are never deleted)."),
    data_root: Optional[str] = typer.Option(None, "--data-root", callback=_absolute_text,
                                            help="Dataset folder for the reference photos of the sample grids "
                                            "(default: the cache copy; never downloaded)."),
) -> None:
    """Render tables, plots, sample grids and one self-contained HTML report."""
    from varbench.report.render import render_report

    if not results.is_dir():
        raise UserError("results folder not found", str(results), "Run 'varbench run --protocol ...' first or pass --results.")
    index = render_report(results, out, spec, force=force, data_root=data_root)
    typer.echo(f"report written: {index}")


@app.command()
def status(
    results: Path = RESULTS,
    protocol: Optional[str] = typer.Option(None, "--protocol", "-p", help="Only this protocol."),
    verify: bool = typer.Option(False, "--verify", help="Also compare done cells' files with their sha256 seal."),
) -> None:
    """Show done / failed / damaged / pending / running cells per protocol, arm and subject."""
    from varbench.status import print_status

    raise typer.Exit(print_status(results, protocol, verify))


@app.command()
def migrate(results: Path = RESULTS) -> None:
    """Convert results written before run ids and score ids were split (layout 1), in place."""
    from varbench.migrate import migrate_results

    lines = migrate_results(results)
    for line in lines:
        typer.echo(f"migrated {line}")
    typer.echo(f"{len(lines)} run(s) migrated" if lines else "nothing to migrate: every run is in the current layout")


@app.command()
def validate(path: str = typer.Argument(..., help="Protocol YAML path or name.")) -> None:
    """Check a protocol file: keys, types, methods and their configs."""
    from varbench.protocol import load_protocol

    protocol = load_protocol(path)
    arms = ", ".join(f"{a.name} ({a.method_name}, run {a.run_id})" for a in protocol.arms)
    typer.echo(f"ok: {protocol.name} v{protocol.spec.version}: {len(protocol.arms)} arms: {arms}")


@list_app.command("methods")
def list_methods() -> None:
    """Installed methods (entry-point group varbench.methods)."""
    from varbench.execution import honoured
    from varbench.registry import available, get_method

    for name, source in available().items():
        typer.echo(f"{name:<22} {source}")
        try:
            keys = honoured(get_method(name).Config)
        except UserError as err:  # a plugin that cannot be imported is listed with why
            typer.echo(f"{'':<22} (cannot be loaded: {err.what})")
            continue
        typer.echo(f"{'':<22} execution: {', '.join(keys)}")


@list_app.command("protocols")
def list_protocols() -> None:
    """Protocols found in $VARBENCH_PROTOCOLS and the checkout's protocols/ folder."""
    from varbench.protocol import available_protocols

    for name, path in available_protocols().items():
        typer.echo(f"{name:<28} {path}")


@list_app.command("metrics")
def list_metrics() -> None:
    """Installed metrics (entry-point group varbench.metrics): standard ones and extras."""
    from varbench.metrics.registry import describe

    for line in describe():
        typer.echo(line)


@data_app.command("fetch")
def data_fetch(
    name: str = typer.Argument(..., help="dreambench or vico"),
    dest: Optional[Path] = typer.Option(None, "--dest", help="Target folder (default: the varbench cache)."),
    source: Optional[str] = typer.Option(None, "--source", help="'hf', 'github', or a local folder to copy from."),
) -> None:
    """Download a dataset into the cache and verify every file's sha256."""
    from varbench.data.fetch import fetch_dataset

    typer.echo(f"{name}: {fetch_dataset(name, dest=dest, source=source)}")


@data_app.command("verify")
def data_verify(
    name: str = typer.Argument(..., help="dreambench or vico"),
    data_root: Optional[Path] = typer.Option(None, "--data-root", callback=_absolute, help="Dataset folder "
                                             "(default: the cache)."),
) -> None:
    """Check every file of a dataset against the sha256 manifest shipped with varbench."""
    from varbench.data.fetch import verify_dataset

    report = verify_dataset(name, root=data_root)
    typer.echo(str(report))


@app.command()
def calibrate(
    name: str = typer.Argument("dreambench", help="Dataset to calibrate on."),
    data_root: Optional[str] = DATA_ROOT,
    backbones: str = typer.Option("real", "--backbones", help="real (published weights) or tiny (random-init)."),
    device: str = typer.Option("auto", "--device"),
    mode: str = typer.Option("canonical", "--mode", help="Metric mode: canonical, dreammatcher, kosmosg, dreambench++."),
    per_subject: bool = typer.Option(False, "--per-subject", help="Also print the per-subject table."),
) -> None:
    """Real-vs-real DINO and CLIP-I per subject, beside the published 0.774 / 0.885."""
    from varbench.metrics.calibrate import run_calibration

    run_calibration(name, root=data_root, backbones=backbones, device=device, mode=mode, per_subject=per_subject)


@app.command()
def bench(
    size: str = typer.Option("full", "--size", help="full (real sizes, GPU) or tiny (a quick CPU check)."),
    device: str = typer.Option("cuda", "--device"),
    only: Optional[str] = typer.Option(None, "--only", help="Comma-separated: infinity, arbooth, baselines, families, "
                                       "metrics, score (and plugins)."),
    out: Path = typer.Option(Path("results/bench"), "--out", help="Folder for bench.json, bench.md, cost.md."),
    gpus: int = typer.Option(8, "--gpus", help="GPU count for the wall-clock projection."),
) -> None:
    """Speed of every method and metric against its FLOP floor, and projected protocol cost."""
    from varbench.bench.harness import components, print_bench, run_bench

    known = list(components())
    chosen = tuple(_split(only) or known)
    for name in chosen:
        if name not in known:
            raise UserError(f"unknown benchmark component {name!r}", "--only",
                            f"Use: {', '.join(known)}." + did_you_mean(name, known))
    if size not in ("full", "tiny"):
        raise UserError(f"unknown size {size!r}", "--size", "Use full or tiny.")
    from varbench.devices import resolve_device

    resolve_device(device)  # a bad or absent device: one line before any model is built
    print_bench(run_bench(size, device, chosen, out, gpus))
    typer.echo(f"written: {out / 'bench.json'}, {out / 'bench.md'}, {out / 'cost.md'}")


def main() -> None:
    import warnings

    # Dataset warnings (e.g. a concept absent from a local copy) as one plain line.
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"
    # A path or prompt the terminal's encoding cannot show (a non-UTF-8 locale) is
    # printed escaped rather than crashing the command.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        app()
    except UserError as err:
        _fail(err.line())
    except OSError as err:  # an unwritable, full or missing folder: the user's to fix
        _fail(UserError(*os_error_parts(err)).line())
    except RecursionError:
        _fail("input nested too deeply to process. Simplify the file (protocol, spec or CSV) it came from.")


def _fail(line: str) -> None:
    typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)
    sys.exit(2)


def os_error_parts(err: OSError) -> tuple[str, str | None, str]:
    """(what, where, fix) for a filesystem error that reached the command line."""
    where = str(Path(err.filename).absolute()) if err.filename else None
    reason = err.strerror or type(err).__name__
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full: {reason}", where, "Free space (or point --results / VARBENCH_CACHE elsewhere) and rerun."
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write or read here: {reason}", where, "Check the permissions, or choose another folder."
    return f"file system error: {reason}", where, "Check that the path exists and is of the right kind."
