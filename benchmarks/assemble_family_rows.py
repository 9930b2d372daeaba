"""Writes the `families` component of benchmarks/bench-h100.json from the `family_bench`
runs of sessions 12-21, so `varbench run --dry-run`, `varbench report` and the cost
projection price the DreamBooth-LoRA and IP-Adapter arms.

No one `varbench bench --only families` run has covered every family at the settings a
protocol worker uses: a 30-minute GPU session fits one or two families' compiles. So each
row here is the latest full measurement (several timed steps or calls), on one H100 80GB
with random weights, of the setting a worker running a whole DreamBench arm (30 cells) settles on (compiled where
`COMPILE_PAYS_AFTER` says so), named as `varbench bench` names its default rows. Its FLOPs
are those counted at the same shapes in session 12 (the compiled runs count none), its
floor uses the source run's matmul rate, and its details name the file and row it came
from. The rows come from several machines and sessions (matmul rates 784-801 TFLOP/s).

    python benchmarks/assemble_family_rows.py
"""
from __future__ import annotations

import json
from pathlib import Path

from baselines.bench_component import family_rows
from varbench.fileio import read_json, write_json

HERE = Path(__file__).resolve().parent
S12, S12_FLUX = "h100-families-s12.json", "h100-families-s12-sd3-flux.json"
# bench row: (the run that measured it, its row there, the session-12 run that counted the
# FLOPs of the same shapes under the bench row's name)
ROWS = {
    "dreambooth_lora sd15 step": ("h100-families-s21-sd15-compiled.json", "dreambooth_lora sd15 step (compiled)", S12),
    "dreambooth_lora sd15 sampling@4": ("h100-families-s16-sd15.json",
                                        "dreambooth_lora sd15 sampling@4 (compiled)", S12),
    "dreambooth_lora sdxl step": ("h100-families-s19-sdxl.json", "dreambooth_lora sdxl step (compiled+cudnn+qkv)", S12),
    "dreambooth_lora sdxl sampling@4": ("h100-families-s21-sdxl-sampling4.json",
                                        "dreambooth_lora sdxl sampling@4 (compiled)", S12),
    "dreambooth_lora sd3 step": ("h100-families-s16-sd3-compiled-cudnn.json",
                                 "dreambooth_lora sd3 step (compiled+cudnn)", S12_FLUX),
    "dreambooth_lora sd3 sampling@4": ("h100-families-s21-sd3-sampling4.json",
                                       "dreambooth_lora sd3 sampling@4 (compiled)", S12_FLUX),
    # session 16's 4 steps in 2 windows, not session 21's single timed step (1.666 steps/s)
    "dreambooth_lora flux step (gradient checkpointing)": (
        "h100-families-s16-flux-step-compiled.json",
        "dreambooth_lora flux step (gradient checkpointing) (compiled)", S12_FLUX),
    "dreambooth_lora flux sampling@1": ("h100-families-s13-flux-compiled.json",
                                        "dreambooth_lora flux sampling@1 (compiled)", S12_FLUX),
    "dreambooth_lora flux sampling@4": ("h100-families-s16-flux-sampling.json",
                                        "dreambooth_lora flux sampling@4 (compiled)", S12_FLUX),
    # IP-Adapter has no speed options: its rows are its only setting
    "ip_adapter sd15 sampling@1": (S12, "ip_adapter sd15 sampling@1", S12),
    "ip_adapter sd15 sampling@4": (S12, "ip_adapter sd15 sampling@4", S12),
    "ip_adapter sdxl sampling@1": ("h100-families-s12-sdxl-ip.json", "ip_adapter sdxl sampling@1",
                                   "h100-families-s12-sdxl-ip.json"),
    "ip_adapter flux sampling@1": (S12_FLUX, "ip_adapter flux sampling@1", S12_FLUX),
}


def find(file: str, name: str) -> tuple[dict, float]:
    """Row `name` of a `family_bench --json` file, and that run's matmul rate."""
    report = json.loads((HERE / file).read_text())
    (found,) = [r for r in report["results"] if r["name"] == name]
    return found, report["matmul_flops_per_second"]


def assembled_row(name: str) -> dict:
    """The bench row `name`, as `varbench bench` would write it from its source run."""
    file, source_name, flops_file = ROWS[name]
    source, rate = find(file, source_name)
    renamed = {**source, "name": name, "flops": find(flops_file, name)[0]["flops"],
               "extra": {**source["extra"], "source": f"{file}: {source_name}", "flops_counted_in": flops_file}}
    (assembled,) = family_rows({"matmul_flops_per_second": rate, "results": [renamed], "errors": []}, full_size=True)
    return assembled


def main() -> None:
    path = HERE / "bench-h100.json"
    bench = read_json(path)
    bench["rows"] = [r for r in bench["rows"] if r["component"] != "families"] + [assembled_row(n) for n in ROWS]
    write_json(path, bench)
    for r in bench["rows"]:
        if r["component"] == "families":
            share = f"{r['fraction_of_floor']:.0%} of floor" if r["fraction_of_floor"] else ""
            print(f"{r['name']:52s} {r['value']:8.4g} {r['unit']:9s} {share}")


if __name__ == "__main__":
    main()
