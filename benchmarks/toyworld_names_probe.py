"""Probe, not shipped: does a toy SD that has seen instances called by name let DreamBooth's
prior preservation keep its subject? (benchmarks/NOTES-toyworld.md, session 15)

DreamBooth with the prior teaches "a zwx dog" to mean one instance while the class images
keep "a dog" the class. If the pretrained model never saw a word pick out an instance, the
two prompts may read too alike. Web captions name pets and products; the world's captions
never do. This script continues the shipped SD's stage 2 (UNet and text encoder,
train_sd.train_denoiser) for a few hundred steps on the shipped captions, a seeded
`--share` of them with a made-up three-letter name of the instance right before the class
noun ("a photo of a slf dog"; never "sks" or "zwx"), and writes a whole toyworld weights
folder with that SD (its training.json says how the SD was continued). `--share 0`
continues alike without names: the control. Stage 2 measures the VAE's latent scale
again on the probe's pool, so `scaling_factor` moves in the fourth digit.

    python benchmarks/toyworld_names_probe.py --share 0.15 --out /tmp/names
    python benchmarks/toyworld_names_probe.py --share 0 --out /tmp/control
    VARBENCH_TOYWORLD_DIR=/tmp/names varbench run --protocol toyworld \\
        --methods dreambooth,no_fit,reference_copy --launcher local --gpus cpu,cpu --results /tmp/r-names
    VARBENCH_TOYWORLD_DIR=/tmp/names varbench toyworld answers --results /tmp/r-names
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from varbench.toyworld import train_sd
from varbench.toyworld.backbones import folder_path, write_manifest
from varbench.toyworld.world import CLASSES, Scene

LETTERS = "bcdfghjklmnpqrstvwxz"
RESERVED = ("sks", "zwx")  # DreamBooth's identifiers: they stay new words
POOL, POOL_SEED = 4096, 3  # a pool of its own, not the shipped SD's (seed 0)
SEED = 5  # the continuation's step randomness
BATCH, LEARNING_RATE, WARMUP = 64, 3e-4, 20


def instance_name(class_name: str, instance_id: int) -> str:
    """A made-up name fixed by the instance: three letters, never a RESERVED word."""
    index = next(i for i, spec in enumerate(CLASSES) if spec.name == class_name)
    rng = np.random.default_rng([0x4E, index, instance_id])
    while True:
        name = "".join(rng.choice(list(LETTERS), 3))
        if name not in RESERVED:
            return name


def with_names(share: float):
    """train_sd's caption function, a seeded `share` of its captions naming the instance
    (a stream of its own: the colours named stay those of the shipped captions)."""
    shipped = train_sd.described_captions

    def captions(scenes: list[Scene], seed: int, fits) -> list[str]:
        texts = shipped(scenes, seed, fits)
        named = np.random.default_rng([0xC1, seed]).random(len(scenes)) < share
        out = []
        for text, scene, chosen in zip(texts, scenes, named):
            if chosen:
                words = text.split(" ")
                noun = words.index(scene.class_name)
                longer = " ".join(words[:noun] + [instance_name(scene.class_name, scene.instance_id)] + words[noun:])
                text = longer if fits(longer) else text
            out.append(text)
        return out

    return captions


def main() -> None:
    from varbench.models.diffusion import load_components
    from varbench.toyworld.pool import render_pool
    from varbench.toyworld.train import save_sd
    from varbench.toyworld.train_encoders import Schedule

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--share", type=float, required=True, help="captions that name the instance (0: control)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--out", type=Path, required=True, help="a new folder: the toyworld weights with this SD")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"error: {args.out} exists; give a new folder")
    if not 0 <= args.share <= 1:
        raise SystemExit(f"error: --share {args.share} is not a share; give one from 0 to 1")
    torch.set_num_threads(args.threads)
    components = load_components("toyworld", None, "cpu")
    pool = render_pool(POOL, POOL_SEED, workers=2)
    schedule = Schedule(steps=args.steps, batch=BATCH, learning_rate=LEARNING_RATE, warmup=WARMUP)
    train_sd.described_captions = with_names(args.share)
    started = time.perf_counter()

    def advance(step: int, loss: float) -> None:
        if step % 50 == 0:
            print(f"step {step}: loss {loss:.4f}, {time.perf_counter() - started:.0f} s", flush=True)

    with tempfile.TemporaryDirectory() as scratch:  # a short run: its checkpoints are not kept
        saved = train_sd.checkpoints(Path(scratch) / "sd-checkpoint.pt", {"names_probe": args.share})
        train_sd.train_denoiser(components, pool, schedule, SEED, torch.device("cpu"), advance, saved)
    shutil.copytree(folder_path("sd").parent, args.out)
    shutil.rmtree(args.out / "sd")
    log = args.out / "training.json"
    record = json.loads(log.read_text())
    record["sd"]["names_probe"] = {"continued_from": "the shipped SD", "named_share": args.share,
                                   "steps": args.steps, "batch": BATCH, "learning_rate": LEARNING_RATE,
                                   "warmup": WARMUP, "pool": POOL, "pool_seed": POOL_SEED, "seed": SEED,
                                   "seconds": time.perf_counter() - started}
    log.write_text(json.dumps(record, indent=1))
    save_sd(components, args.out)  # fp16, as the shipped SD is stored
    write_manifest(args.out)
    print(f"wrote {args.out} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
