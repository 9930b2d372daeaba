"""The built-in benchmark components of varbench itself: each runs its module's benchmark
and turns the report into rows (varbench.bench.harness.row). Registered in pyproject.toml
under `varbench.benchmarks`, like any plugin's component.
"""
from __future__ import annotations

from typing import Any

from varbench.bench.harness import failed, row


def bench_infinity(size: str, device: str) -> list[dict[str, Any]]:
    from varbench.models.infinity.bench import run_benchmark

    report = run_benchmark(size, (1, 4, 8), device, repeats=3, warmup=2,
                           variants=("graphs", "fused", "compiled", "compiled-graphs"))
    flops, rate = report["flops_per_image"]["total"], report["matmul_flops_per_second"]
    # Per batch size the fastest of the default paths (graphs up to batch 4, else the
    # fused decoder), and the faster of compiled blocks with and without CUDA graphs as a
    # row of their own: generation does not compile them by default (compiling costs
    # ~50 s per batch size).
    best: dict[tuple[int, bool], dict] = {}
    for result in report["results"]:
        key = (result["batch"], result["variant"].startswith("compiled"))
        if "error" not in result and (key not in best or
                                      result["total_s_per_image"] < best[key]["total_s_per_image"]):
            best[key] = result
    return [row("infinity", f"infinity sampling@{batch}" + (" (compiled)" if compiled else ""),
                r["total_s_per_image"], "s/image", flops, rate, r["peak_memory_gib"], variant=r["variant"],
                transformer_s=r["transformer_s_per_image"], decode_s=r["vae_decode_s_per_image"],
                setup_s=r["warmup_seconds"], full_size=size == "infinity-2b")
            for (batch, compiled), r in sorted(best.items())]


def bench_arbooth(size: str, device: str) -> list[dict[str, Any]]:
    from varbench.methods.arbooth.bench import run_benchmark

    report = run_benchmark(size, device, ("default", "eager", "joint-pool"), warmup=2, iterations=5)
    rate = report["matmul_flops_per_second"]
    names = {"default": "arbooth iteration", "eager": "arbooth iteration (eager blocks)",
             "joint-pool": "arbooth iteration (teacher pool)"}
    return [failed("arbooth", names[r["variant"]], r["error"]) if "error" in r else
            row("arbooth", names[r["variant"]], r["seconds_per_iteration"], "s/iteration", r["flops"]["total"],
                rate, r["peak_memory_gib"], split=r["split_seconds"], setup_s=r["warmup_seconds"],
                recomputed_blocks=r["recomputed_blocks"], full_size=size == "infinity-2b")
            for r in report["results"]]


def bench_metrics(size: str, device: str) -> list[dict[str, Any]]:
    from varbench.metrics.bench import measure_throughput

    images = 4096 if size == "real" else 64
    report = measure_throughput(device, size, images=images, image_size=512 if size == "real" else 64,
                                batch_size=256 if size == "real" else 16)
    flops = report["encoder_gflops_per_image"] * 1e9
    return [row("metrics", "scoring", report["images_per_second"], "images/s", flops,
                report["matmul_tflops_per_second"] * 1e12, None, decode_images_per_second=report["decode_images_per_second"],
                encode_images_per_second=report["encode_images_per_second"],
                decode_workers=report["decode_workers"], workers_start_seconds=report["workers_start_seconds"],
                full_size=size == "real")]


def bench_score(size: str, device: str) -> list[dict[str, Any]]:
    """`varbench score` end to end (check, fingerprint, copy into the store, decode, DINO +
    CLIP-I + CLIP-T) on synthetic 512 px PNGs laid out for the smoke subjects, random weights,
    with fp32 encoders (the default), with TF32 matmuls (`execution.metric_tf32`) and under
    bf16 autocast (`execution.metric_precision=bf16`; the setting `varbench bench`'s
    scoring row was first measured in). The first setting also pays the process's cold
    start (CUDA, imports, the decoding pool); compare the settings on their scoring rows.

    Two rows per setting: "varbench score", the rate of its scoring phases (images over the
    seconds the worker spent scoring cells: what `varbench bench`'s "scoring" measures), and
    "varbench score end to end", images over the whole call, with the split into checking
    and staging, loading the encoders and the decoding pool, scoring, and the rest."""
    per_subject = 4000 if size == "real" else 12  # 3 subjects: 12,000 images (or 36)
    settings = ({"fp32": {}, "tf32": {"metric_tf32": True}, "bf16": {"metric_precision": "bf16"}}
                if size == "real" else {"fp32": {}})
    rows = []
    for label, execution in settings.items():
        split = _score_once(size, device, per_subject, execution)
        images, seconds, scoring = 3 * per_subject, split["total_s"], split["score_s"]
        suffix = "" if label == "fp32" else f" ({label})"
        rows.append(row("score", f"varbench score{suffix}", images / scoring, "images/s", None, None, None,
                        images=images, scoring_seconds=scoring, full_size=size == "real"))
        rows.append(row("score", f"varbench score end to end{suffix}", images / seconds, "images/s", None, None,
                        None, images=images, **split, full_size=size == "real"))
    return rows


def _score_once(size: str, device: str, per_subject: int, execution: dict[str, Any]) -> dict[str, float]:
    import tempfile
    import time
    from pathlib import Path

    from varbench.data.smoke import smoke_dataset
    from varbench.metrics.bench import write_synthetic_images
    from varbench.score import ScoreRequest, prepare_external, score_staged
    from varbench.store import read_rows

    with tempfile.TemporaryDirectory(prefix="varbench-bench-score-") as tmp:
        folder = Path(tmp)
        files = write_synthetic_images(folder, 64, 512 if size == "real" else 64, threads=8)
        for subject in smoke_dataset(None).subjects:
            (folder / "images" / subject.name).mkdir(parents=True)
            for index in range(per_subject):  # prompts 0-2, samples 0..per_subject/3
                (folder / "images" / subject.name / f"{index % 3}_{index // 3}.png").hardlink_to(files[index % 64])
        request = ScoreRequest(images=folder / "images", dataset="smoke", backbones="random" if size == "real" else "tiny",
                               results=folder / "results", device=device, div=False,
                               execution={"metric_batch_size": 256 if size == "real" else 16, **execution})
        start = time.perf_counter()
        cells = prepare_external(request)
        staged = time.perf_counter()
        score_staged(request, cells)
        total = time.perf_counter() - start
        phases: dict[str, float] = {}
        for path in (folder / "results").rglob("scores/*/timings.csv"):
            for record in read_rows(path):
                phases[record["phase"]] = phases.get(record["phase"], 0.0) + float(record["seconds"])
    check_stage = staged - start
    load, score = phases.get("load_metrics", 0.0), phases.get("score", 0.0)
    if not score:
        raise RuntimeError("varbench score recorded no scoring time (no score timings.csv in its store)")
    return {"total_s": round(total, 3), "check_and_stage_s": round(check_stage, 3), "load_metrics_s": round(load, 3),
            "score_s": round(score, 3), "other_s": round(total - check_stage - load - score, 3)}
