"""`varbench toyworld train`: pretrain every toyworld backbone, reproducibly, with progress.

    varbench toyworld train --out DIR [--only clip,dino,sd,infinity] [--device cuda] [--seed 0]

Each backbone is built by the same code as its real architecture (backbones.py), trained
from a seeded initialisation on rendered scenes (train_encoders.py, train_sd.py), and
written to DIR as fp16 safetensors (the SD parts as a diffusers folder, `sd/`; the
Infinity parts in `infinity/`: train_infinity.py) with
`manifest.sha256` and `training.json` (steps, batch,
seconds, device, torch version, the loss curve). Point $VARBENCH_TOYWORLD_DIR at DIR to use
them, or copy the files into `varbench/toyworld/weights/` to ship them. The same seed on
the same kind of device gives the same weights; CPU and GPU runs differ by rounding.
"""
from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from varbench.errors import UserError
from varbench.progress import progress_bar
from varbench.toyworld.backbones import BACKBONES, FILES, FOLDERS, TOY_CLIP, TOY_DINO, write_manifest
from varbench.toyworld.sd_captions import recipe as caption_recipe
from varbench.toyworld.train_encoders import CLIP_RECIPES, ClipRecipe, Schedule, train_clip, train_dino

# `recipe` ("gpu" or "cpu") picks the CLIP and SD recipes (train_encoders.CLIP_RECIPES,
# train_sd.RECIPES); DINO has one, small enough for the CPU.
DINO_SCHEDULE = Schedule(steps=500, batch=64, learning_rate=1e-3)


def build(name: str, seed: int) -> torch.nn.Module:
    """Backbone `name` at its toyworld size, initialised from `seed` (the real builders)."""
    import open_clip
    import timm

    torch.manual_seed(seed)
    if name == "clip":
        return open_clip.CLIP(**TOY_CLIP, quick_gelu=True)
    return timm.create_model("vit_small_patch16_224.dino", pretrained=False, num_classes=0, **TOY_DINO)


def trainer(name: str, recipe: str, steps: int | None,
            workers: int) -> tuple[Schedule, dict[str, Any], Callable[..., list[float]]]:
    """(schedule, what else training.json records of it, train(model, seed, device, advance))
    of single-file backbone `name`."""
    if name == "dino":
        schedule = _schedule(DINO_SCHEDULE, steps)
        return schedule, {}, lambda model, seed, device, advance: train_dino(model, schedule, seed, device, advance)
    import open_clip

    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    plan = CLIP_RECIPES[recipe]
    plan = ClipRecipe(_schedule(plan.schedule, steps), min(plan.pool, 1024) if steps else plan.pool)
    return plan.schedule, {"pool": plan.pool, "recipe": recipe}, lambda model, seed, device, advance: train_clip(
        model, tokenizer, plan, seed, device, advance, workers)


def train_backbones(out: Path, only: list[str] | None = None, device: str = "cpu", seed: int = 0,
                    steps: int | None = None, workers: int = 1, recipe: str = "gpu") -> dict[str, dict]:
    """Train the named backbones (default: all) into `out`; `steps` overrides every
    schedule's length (quick checks; pools shrink to 1,024 scenes); `workers`: processes
    rendering the training pools; `recipe`: "gpu" or "cpu" (the CLIP, SD and Infinity recipes). An SD or Infinity run
    stopped midway resumes from its checkpoint (`out/sd-checkpoint.pt`, `out/infinity-checkpoint.pt`). Returns each
    backbone's training record."""
    from varbench.toyworld.train_infinity import RECIPES as INFINITY_RECIPES
    from varbench.toyworld.train_sd import RECIPES

    names = only or list(BACKBONES)
    unknown = sorted(set(names) - set(BACKBONES))
    if unknown:
        raise UserError(f"unknown toyworld backbone(s): {', '.join(unknown)}", "--only",
                        f"Use some of: {', '.join(BACKBONES)}.")
    recipes = [name for name in RECIPES if name in CLIP_RECIPES and name in INFINITY_RECIPES]
    if recipe not in recipes:
        raise UserError(f"unknown training recipe {recipe!r}", "--recipe", f"Use one of: {', '.join(recipes)}.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch_device = torch.device(device)
    records = {}
    for name in names:
        started = time.perf_counter()
        if name == "infinity":
            plan = _short_recipe(INFINITY_RECIPES[recipe], steps)
            losses, earlier = _train_infinity(plan, seed, torch_device, out, workers)
            schedules = {"infinity_vae": asdict(plan.vae), "infinity_transformer": asdict(plan.transformer),
                         "pool": plan.pool, "recipe": recipe}
        elif name in FOLDERS:
            plan = _short_recipe(RECIPES[recipe], steps)
            losses, earlier = _train_sd(plan, seed, torch_device, out, workers)
            schedules = {"sd_vae": asdict(plan.vae), "sd_unet": asdict(plan.unet), "pool": plan.pool,
                         "recipe": recipe, "captions": caption_recipe()}
        else:
            schedule, details, train = trainer(name, recipe, steps, workers)
            losses, earlier = {name: _train_file(name, schedule, train, seed, torch_device, out)}, 0.0
            schedules = {name: asdict(schedule), **details}
        seconds = time.perf_counter() - started + earlier  # earlier: resumed runs' seconds (checkpoints.py)
        records[name] = {"schedule": schedules, "seed": seed, "seconds": seconds,
                         "device": str(torch_device), "device_name": _device_name(torch_device),
                         "torch": torch.__version__, "python": platform.python_version(), "losses": losses}
        write_manifest(out)  # after each backbone: a run stopped later keeps what it finished
        log = out / "training.json"
        logged = json.loads(log.read_text()) if log.is_file() else {}
        log.write_text(json.dumps({**logged, name: records[name]}, indent=1))
    return records


def _schedule(recipe: Schedule, steps: int | None) -> Schedule:
    return recipe if steps is None else Schedule(steps, recipe.batch, recipe.learning_rate, warmup=1)


def _short_recipe(recipe: Any, steps: int | None) -> Any:
    """A staged recipe (SD, Infinity) with every stage `steps` long and a pool of at most 1,024."""
    from dataclasses import fields, replace

    if steps is None:
        return recipe
    stages = {f.name: _schedule(getattr(recipe, f.name), steps) for f in fields(recipe)
              if isinstance(getattr(recipe, f.name), Schedule)}
    return replace(recipe, pool=min(recipe.pool, 1024), **stages)


def _train_file(name: str, schedule: Schedule, train: Callable[..., list[float]], seed: int, device: torch.device,
                out: Path) -> list[float]:
    """Train a single-file backbone (clip, dino) and write its weights; returns its losses."""
    model = build(name, seed)
    losses = _with_bar(f"toyworld {name}", schedule, lambda advance: train(model, seed, device, advance))
    state = {key: value.detach().to("cpu", torch.float16).contiguous() for key, value in model.state_dict().items()}
    save_file(state, str(out / FILES[name]), metadata={"backbone": name, "seed": str(seed)})
    return losses


def _train_sd(recipe: Any, seed: int, device: torch.device, out: Path,
              workers: int) -> tuple[dict[str, list[float]], float]:
    """Both SD stages (train_sd.py), resumable, then the fp16 diffusers folder `out/sd`."""
    from varbench.toyworld.diffusion import PROMPT_TOKENS, TEXT, UNET, VAE, random_sd
    from varbench.toyworld.pool import render_pool
    from varbench.toyworld.train_sd import checkpoints, train_denoiser, train_vae

    components = random_sd(seed)
    # what a checkpoint must match to be resumed: the per-step random streams differ between
    # CPU and CUDA generators, and another architecture or prompt length is another model
    identity = {"recipe": asdict(recipe), "seed": seed, "device": device.type,
                "architecture": {"unet": UNET, "vae": VAE, "text": TEXT, "prompt_tokens": PROMPT_TOKENS},
                "captions": caption_recipe()}
    saved = checkpoints(out / "sd-checkpoint.pt", identity)
    with progress_bar("toyworld sd: rendering the pool", 1) as advance:
        pool = render_pool(recipe.pool, seed, workers)
        advance(1, f"{len(pool.scenes):,} scenes")
    losses = {}
    for stage, schedule, train in (("sd_vae", recipe.vae, train_vae), ("sd_unet", recipe.unet, train_denoiser)):
        losses[stage] = _with_bar(f"toyworld {stage}", schedule, lambda advance: train(
            components, pool, schedule, seed, device, advance, saved))
    save_sd(components, out)
    return losses, saved.earlier_seconds


def save_sd(components: Any, out: Path) -> None:
    """The SD parts as the fp16 diffusers folder `out/sd` (`load_folder` gives fp32 back)."""
    from varbench.models.diffusion import save_folder

    components.to("cpu")
    for module in (components.text_encoder, components.vae, components.unet):
        module.half()
    save_folder(components, out / FOLDERS["sd"])


def _train_infinity(recipe: Any, seed: int, device: torch.device, out: Path,
                    workers: int) -> tuple[dict[str, list[float]], float]:
    """Both Infinity stages (train_infinity.py), resumable, then the fp16 files in `out/infinity`."""
    from varbench.models.infinity.architecture import get_size
    from varbench.toyworld.infinity import SIZE, TEXT, random_infinity, save_infinity
    from varbench.toyworld.pool import render_pool
    from varbench.toyworld.train_infinity import STAGES, checkpoints, train_tokenizer, train_transformer

    parts = random_infinity(seed)
    size = get_size(SIZE)
    # what a checkpoint must match to be resumed (as for SD: the device kind's random streams)
    identity = {"recipe": asdict(recipe), "seed": seed, "device": device.type,
                "architecture": {"transformer": asdict(size.transformer), "tokenizer": asdict(size.tokenizer),
                                 "text": TEXT}}
    saved = checkpoints(out / "infinity-checkpoint.pt", identity)
    with progress_bar("toyworld infinity: rendering the pool", 1) as advance:
        pool = render_pool(recipe.pool, seed, workers)
        advance(1, f"{len(pool.scenes):,} scenes")
    losses = {}
    for stage, schedule, train in zip(STAGES, (recipe.vae, recipe.transformer), (train_tokenizer, train_transformer)):
        losses[stage] = _with_bar(f"toyworld {stage}", schedule, lambda advance: train(
            parts, pool, schedule, seed, device, advance, saved))
    save_infinity(parts.to("cpu"), out / FOLDERS["infinity"])
    return losses, saved.earlier_seconds


def _with_bar(label: str, schedule: Schedule, run: Callable[[Callable[[int, float], None]], list[float]]) -> list[float]:
    with progress_bar(label, schedule.steps) as advance_bar:
        return run(lambda step, loss: advance_bar(1, f"loss {loss:.3f}"))


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
