"""Does reusing a base across cells (Method.snapshot_base / restore_base) give a fresh base's
images on a GPU, and does it spare the recompiling? (issue 18, part 2)

    python benchmarks/base_reuse.py [--methods arbooth,dreambooth,...] [--out FILE.json]

For each method at its tiny config with every speed option on (compiled blocks / UNet,
CUDA graphs, bf16 storage, channels-last, fused projections: the paths the CPU tests
cannot take), in one process, as a worker runs them:
  run 1   one base for cells A then B (B on the restored base)
  run 2   one base for cells B then A (A on the restored base)
  run 3   cell A on a fresh base again (how deterministic a fresh cell is here)
and prints, per cell, the fit and generate seconds, the restore seconds, and how many
graphs dynamo compiled (`unique_graphs`). Images are compared bit for bit: A and B fresh
against A and B restored, and A fresh against A fresh.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import torch

# The built-in methods (imported directly: the check runs from a source tree, installed or not).
CLASSES = {"arbooth": "varbench.methods.arbooth:ARBooth", "dreambooth": "baselines.dreambooth:DreamBooth",
           "custom_diffusion": "baselines.custom_diffusion:CustomDiffusion",
           "textual_inversion": "baselines.textual_inversion:TextualInversion"}
SPEED = {
    "arbooth": {"compile_blocks": True, "compile_generation": True, "cuda_graphs": True},
    "dreambooth": {"compile": True, "cuda_graphs": True},
    "custom_diffusion": {"compile": True, "cuda_graphs": True},
    "textual_inversion": {"compile": True, "cuda_graphs": True},
}
PROMPT = "a photo of {} on a table"
SEEDS = [11, 12]


def compiled_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def timed(fn):
    torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    torch.cuda.synchronize()
    return result, time.perf_counter() - start


def cell(method, base, subject, folder: Path, device) -> dict:
    from varbench.method import CellContext

    ctx = CellContext(device=device, fit_seed=7, workdir=folder / subject.name, cache_dir=folder / "cache",
                      subject_name=subject.name)
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    graphs = compiled_graphs()
    model, fit_s = timed(lambda: method.fit(base, subject, ctx))
    prompts = [PROMPT.format(method.subject_phrase(subject.class_noun))] * len(SEEDS)
    images, generate_s = timed(lambda: model.generate(prompts, SEEDS))
    digest = hashlib.sha256(b"".join(image.tobytes() for image in images)).hexdigest()[:16]
    return {"subject": subject.name, "fit_s": round(fit_s, 2), "generate_s": round(generate_s, 2),
            "compiled_graphs": compiled_graphs() - graphs, "images": digest}


def one_base(method, subjects, folder: Path, device) -> list[dict]:
    """Cells of `subjects` on one base, restored between them (a worker's reuse)."""
    from varbench.method import CellContext

    load = CellContext(device=device, fit_seed=0, workdir=folder, cache_dir=folder / "cache")
    base, load_s = timed(lambda: method.load_base(load))
    snapshot, snapshot_s = timed(lambda: method.snapshot_base(base))
    rows = []
    for index, subject in enumerate(subjects):
        restore_s = 0.0
        if index:
            _, restore_s = timed(lambda: method.restore_base(base, snapshot))
        rows.append({**cell(method, base, subject, folder, device), "restore_s": round(restore_s, 2),
                     "load_s": round(load_s, 2) if not index else 0.0,
                     "snapshot_s": round(snapshot_s, 2) if not index else 0.0})
    return rows


def check(name: str, folder: Path, device) -> dict:
    import importlib

    from varbench.data.smoke import smoke_dataset
    from varbench.schema import from_dict

    module, _, class_name = CLASSES[name].partition(":")
    cls = getattr(importlib.import_module(module), class_name)
    method = cls(from_dict(cls.Config, {**cls.tiny_config, **SPEED[name]}, "base_reuse"))
    dataset = smoke_dataset()  # drawn into the varbench cache
    a, b = dataset.subject("striped_mug"), dataset.subject("red_robot")
    run1 = one_base(method, [a, b], folder / "run1", device)
    run2 = one_base(method, [b, a], folder / "run2", device)
    run3 = one_base(method, [a], folder / "run3", device)
    verdict = {"B fresh == B restored": run2[0]["images"] == run1[1]["images"],
               "A fresh == A restored": run1[0]["images"] == run2[1]["images"],
               "A fresh == A fresh": run1[0]["images"] == run3[0]["images"]}
    return {"method": name, "run1 (A, B)": run1, "run2 (B, A)": run2, "run3 (A)": run3, "verdict": verdict}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(SPEED))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device("cuda")
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.methods.split(","):
            result = check(name, Path(folder) / name, device)
            results.append(result)
            print(json.dumps(result, indent=1), flush=True)
            if args.out:
                Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")


if __name__ == "__main__":
    main()
