"""How much the scoring precision moves scores: fp32 (the default) against bf16 autocast and
against TF32, on the smoke subjects, for every metric mode, on one GPU.

The images scored are the smoke subjects' own reference photos, laid out as generated
images (`<subject>/<prompt>_<sample>.png`, prompt i = reference i), so the run needs no
generation and no dataset download. The encoders are the real architectures with random
weights (`--backbones random`): the differences measure the arithmetic, not a real model.

    python benchmarks/precision_check.py --out /tmp/precision   # writes precision.json and .md
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

SETTINGS = {"fp32": {}, "bf16": {"metric_precision": "bf16"}, "tf32": {"metric_tf32": True}}
MODES = ("canonical", "dreammatcher", "dreambench++")


def lay_out_smoke_images(folder: Path) -> None:
    """Copy each smoke subject's references into the external-images layout."""
    from varbench.data import open_dataset

    dataset = open_dataset("smoke")
    for subject in dataset.subjects:
        prompts = len(dataset.prompts_for(subject))
        (folder / subject.name).mkdir(parents=True, exist_ok=True)
        for index, path in enumerate(subject.image_paths):
            name = f"{index % prompts}_{index // prompts}{path.suffix}"
            shutil.copyfile(path, folder / subject.name / name)


def score_all(images: Path, work: Path, device: str) -> dict[tuple[str, str], dict[tuple, float]]:
    """(mode, setting) -> {(subject, prompt index, sample, metric): value}."""
    import varbench

    values = {}
    for mode in MODES:
        for name, execution in SETTINGS.items():
            scores = varbench.score_images(images, dataset="smoke", mode=mode, backbones="random",
                                           results=work / f"{mode}-{name}", device=device, execution=execution)
            rows = scores.rows
            values[mode, name] = {(r.subject, r.prompt_index, r.sample_index, r.metric): float(r.value)
                                  for r in rows.itertuples()}
    return values


def compare(values: dict) -> list[dict]:
    """Per mode, setting and metric: the largest per-image difference to fp32 and the
    difference of the means."""
    table = []
    for mode in MODES:
        base = values[mode, "fp32"]
        for name in SETTINGS:
            if name == "fp32":
                continue
            other = values[mode, name]
            for metric in sorted({key[3] for key in base}):
                keys = [k for k in base if k[3] == metric and k in other]
                diffs = [abs(other[k] - base[k]) for k in keys]
                mean_shift = sum(other[k] for k in keys) / len(keys) - sum(base[k] for k in keys) / len(keys)
                table.append({"mode": mode, "setting": name, "metric": metric, "images": len(keys),
                              "max_abs_diff": max(diffs), "mean_shift": mean_shift})
    return table


def markdown(table: list[dict]) -> str:
    lines = ["| mode | setting | metric | images | max abs diff to fp32 | shift of the mean |",
             "| :--- | :--- | :--- | ---: | ---: | ---: |"]
    lines += [f"| {r['mode']} | {r['setting']} | {r['metric']} | {r['images']} | {r['max_abs_diff']:.2e} | "
              f"{r['mean_shift']:+.2e} |" for r in table]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    images = args.out / "images"
    lay_out_smoke_images(images)
    table = compare(score_all(images, args.out / "results", args.device))
    (args.out / "precision.json").write_text(json.dumps(table, indent=1))
    (args.out / "precision.md").write_text(markdown(table))
    print(markdown(table))


if __name__ == "__main__":
    main()
