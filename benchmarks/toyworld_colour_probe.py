"""Probe (issue 22): can Textual Inversion, which trains one word against the frozen toy
SD, learn a subject's colour? A held-out subject is drawn as it is, or recoloured by one
of the world's modifiers ("red", "purple": before session 14, the only colours the SD's
pretraining captions named);
Textual Inversion (the toyworld protocol's recipe) and no_fit then sample the subject's
first five prompts, and the mean toy-DINO cosine of the samples to the (recoloured)
references is printed for both. A strip of references and samples is written too.

    python benchmarks/toyworld_colour_probe.py --subject can --modifier red

Set VARBENCH_TOYWORLD_DIR to probe other toyworld weights (e.g. a continued SD).
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from varbench.data.subject import Subject
from varbench.method import CellContext
from varbench.registry import get_method
from varbench.schema import from_dict
from varbench.toyworld.dataset import reference_scene, toyworld_dataset
from varbench.toyworld.known_answers import make_scorer
from varbench.toyworld.world import render

BASE = {"base_model": "toyworld", "revision": None, "resolution": 64, "sample_steps": 15}
ARMS = (("no_fit", {}), ("textual_inversion", {"steps": 150, "grad_accumulation": 1, "learning_rate": 4e-2}))


def recoloured_subject(name: str, modifier: str | None, folder: Path) -> Subject:
    """Subject `name` with its five reference views drawn under `modifier` (None: as is)."""
    original = toyworld_dataset().subject(name)
    paths = []
    for view in range(5):
        scene = dataclasses.replace(reference_scene(name, view), modifier=modifier)
        path = folder / f"{view}.png"
        render(scene).save(path)
        paths.append(path)
    return Subject(name, original.class_noun, original.live, tuple(paths))


def dino_embeddings(scorer, images: list[Image.Image]) -> torch.Tensor:
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for index, image in enumerate(images):
            paths.append(Path(tmp) / f"{index}.png")
            image.save(paths[-1])
        return torch.nn.functional.normalize(scorer.embed(paths, encoders=["dino"])["dino"].float(), dim=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subject", default="can")
    parser.add_argument("--modifier", choices=["red", "purple"], help="recolour the subject (default: as it is)")
    parser.add_argument("--strip", type=Path, default=Path("colour-probe.png"))
    args = parser.parse_args()
    if args.subject not in {subject.name for subject in toyworld_dataset().subjects}:
        parser.error(f"unknown subject {args.subject!r}: pick from "
                     + ", ".join(subject.name for subject in toyworld_dataset().subjects))
    work = Path(tempfile.mkdtemp(prefix="colour-probe-"))
    subject = recoloured_subject(args.subject, args.modifier, work)
    scorer = make_scorer()
    references = dino_embeddings(scorer, subject.load_images())
    rows = [np.concatenate([np.asarray(im) for im in subject.load_images()[:3]], axis=1)]
    templates = toyworld_dataset().prompts_for(subject)[:5]
    for name, recipe in ARMS:
        method_class = get_method(name)
        method = method_class(from_dict(method_class.Config, {**BASE, **recipe}, "colour probe"))
        prompts = [t.replace("{}", method.subject_phrase(subject.class_noun)) for t in templates]
        ctx = CellContext(device=torch.device("cpu"), fit_seed=0, workdir=work / name, cache_dir=work / "cache")
        model = method.fit(method.load_base(ctx), subject, ctx)
        images = model.generate(prompts, list(range(len(prompts))))
        similarity = float((dino_embeddings(scorer, images) @ references.T).mean())
        print(f"{args.subject} ({args.modifier or 'as drawn'}) {name}: DINO {similarity:.3f}", flush=True)
        rows.append(np.concatenate([np.asarray(im.convert("RGB")) for im in images[:3]], axis=1))
    Image.fromarray(np.concatenate(rows)).resize((384, 384), Image.Resampling.NEAREST).save(args.strip)


if __name__ == "__main__":
    main()
