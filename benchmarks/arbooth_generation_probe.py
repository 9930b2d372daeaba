"""Why does ARBooth generate at 16 s/image in the runner and 0.3-0.5 s/image in its bench?
(issue 20's rehearsal, NOTES-rehearsal.md)

    python benchmarks/arbooth_generation_probe.py [--iterations 3] [--out FILE.json]

Infinity-2B with random weights (timing only). As a worker runs a cell: load the base,
generate (batches of 2 images, each batch a new prompt, as the runner does), fit a few
iterations, generate again. Each batch is split into text encoding, the scale loop and
decoding (synchronised), and the number of captured graph sets is printed. One batch after
the fit runs under torch.profiler; its top operators are printed (CPU and CUDA time).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

PROMPTS = ["a photo of {} in the snow", "a photo of {} on the beach", "a photo of {} on a wooden floor",
           "a photo of {} with a city in the background", "a photo of {} in the jungle"]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def synced(fn):
    sync()
    start = time.perf_counter()
    result = fn()
    sync()
    return result, time.perf_counter() - start


def split_batch(pipeline, prompts, seeds, placeholder=None, vectors=None) -> dict:
    """One batch as `pipeline.generate` runs it, each part timed."""
    from varbench.methods.arbooth.base import bring_back
    from varbench.models.infinity.fast.graphs import graph_cache

    _, back = synced(lambda: bring_back(pipeline))
    with torch.no_grad():
        text, encode = synced(lambda: pipeline.encode(prompts, placeholder, vectors))
    out, loop = synced(lambda: pipeline.sample(text, seeds, decode=False))
    _, decode = synced(lambda: pipeline.sample(text, seeds, decode=True))  # includes a second loop
    return {"bring_back_s": round(back, 3), "encode_s": round(encode, 3), "scale_loop_s": round(loop, 3),
            "loop_plus_decode_s": round(decode, 3), "graph_sets": len(graph_cache(pipeline.model).entries),
            "blocks_dtype": str(next(pipeline.model.block_chunks.parameters()).dtype),
            "requires_grad": sum(p.requires_grad for p in pipeline.model.parameters()),
            "memory_gib": round(torch.cuda.memory_allocated() / 2**30, 1) if torch.cuda.is_available() else 0}


def generate_rounds(label: str, generate, count: int) -> list[dict]:
    rows = []
    for index in range(count):
        prompt = PROMPTS[index % len(PROMPTS)]
        _, seconds = synced(lambda: generate([prompt, prompt], [index, index + 100]))
        rows.append({"when": label, "batch": index, "s_per_image": round(seconds / 2, 3)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def profile_batch(generate) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        generate([PROMPTS[0], PROMPTS[0]], [1, 2])
        sync()
    averages = prof.key_averages()
    return (averages.table(sort_by="cuda_time_total", row_limit=20) + "\n"
            + averages.table(sort_by="cpu_time_total", row_limit=20))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--model", default="infinity-2b", help="infinity-tiny: a quick CPU check of the script")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from varbench.data.smoke import smoke_dataset
    from varbench.method import CellContext
    from varbench.methods.arbooth import ARBooth
    from varbench.schema import from_dict

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    real = args.model == "infinity-2b"
    values = {"weights": "random", "vae_weights": "random", "text_encoder": "random"} if real else {
        **ARBooth.tiny_config, "model": args.model}
    config = from_dict(ARBooth.Config, {**values, "iterations": args.iterations, "compile_blocks": False}, "probe")
    method = ARBooth(config)
    subject = smoke_dataset().subject("spotted_dog")
    report: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as folder:
        ctx = CellContext(device=device, fit_seed=7, workdir=Path(folder) / "work", cache_dir=Path(folder) / "cache",
                          subject_name=subject.name)
        ctx.workdir.mkdir(parents=True)
        base, report["load_s"] = synced(lambda: method.load_base(ctx))
        pipeline = base.pipeline
        phrase = method.subject_phrase(subject.class_noun)
        before = lambda p, s: pipeline.generate([x.format("a dog") for x in p], s, batch_size=len(p))  # noqa: E731
        report["before_fit"] = generate_rounds("base, before the fit", before, args.batches)
        report["split_before"] = split_batch(pipeline, [PROMPTS[1].format("a dog")] * 2, [5, 6])
        print(json.dumps(report["split_before"]), flush=True)
        model, report["fit_s"] = synced(lambda: method.fit(base, subject, ctx))
        after = lambda p, s: model.generate([x.format(phrase) for x in p], s)  # noqa: E731
        report["after_fit"] = generate_rounds("personalized, after the fit", after, args.batches)
        report["split_after"] = split_batch(pipeline, [PROMPTS[1].format(phrase)] * 2, [5, 6],
                                            config.placeholder, model.identifier)
        print(json.dumps(report["split_after"]), flush=True)
        report["profile_after"] = profile_batch(after)
        print(report["profile_after"], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
