"""`varbench toyworld train`: pretrain every toyworld backbone, reproducibly, with progress.

    varbench toyworld train --out DIR [--only clip,dino] [--device cuda] [--seed 0]

Each backbone is built by the same code as its real architecture (backbones.py), trained
from a seeded initialisation on freshly rendered scenes (train_encoders.py), and written
to DIR as fp16 safetensors with `manifest.sha256` and `training.json` (steps, batch,
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

import torch
from safetensors.torch import save_file

from varbench.errors import UserError
from varbench.progress import progress_bar
from varbench.toyworld.backbones import FILES, TOY_CLIP, TOY_DINO, write_manifest
from varbench.toyworld.train_encoders import Schedule, train_clip, train_dino

# The recipes (steps, batch, peak learning rate) the shipped weights were trained with.
SCHEDULES = {"clip": Schedule(steps=1200, batch=128, learning_rate=2e-3),
             "dino": Schedule(steps=500, batch=64, learning_rate=1e-3)}


def build(name: str, seed: int) -> torch.nn.Module:
    """Backbone `name` at its toyworld size, initialised from `seed` (the real builders)."""
    import open_clip
    import timm

    torch.manual_seed(seed)
    if name == "clip":
        return open_clip.CLIP(**TOY_CLIP, quick_gelu=True)
    return timm.create_model("vit_small_patch16_224.dino", pretrained=False, num_classes=0, **TOY_DINO)


def trainer(name: str) -> Callable[..., list[float]]:
    if name == "clip":
        import open_clip

        tokenizer = open_clip.get_tokenizer("ViT-B-32")
        return lambda model, schedule, seed, device, advance: train_clip(model, tokenizer, schedule, seed, device,
                                                                         advance)
    return train_dino


def train_backbones(out: Path, only: list[str] | None = None, device: str = "cpu", seed: int = 0,
                    steps: int | None = None) -> dict[str, dict]:
    """Train the named backbones (default: all) into `out`; `steps` overrides every
    schedule's length (quick checks). Returns each backbone's training record."""
    names = only or list(FILES)
    unknown = sorted(set(names) - set(FILES))
    if unknown:
        raise UserError(f"unknown toyworld backbone(s): {', '.join(unknown)}", "--only",
                        f"Use some of: {', '.join(FILES)}.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch_device = torch.device(device)
    records = {}
    for name in names:
        schedule = SCHEDULES[name] if steps is None else Schedule(steps, SCHEDULES[name].batch,
                                                                   SCHEDULES[name].learning_rate, warmup=1)
        model = build(name, seed)
        started = time.perf_counter()
        with progress_bar(f"toyworld {name}", schedule.steps) as advance_bar:
            losses = trainer(name)(model, schedule, seed, torch_device,
                                   lambda step, loss: advance_bar(1, f"loss {loss:.3f}"))
        seconds = time.perf_counter() - started
        state = {key: value.detach().to("cpu", torch.float16).contiguous() for key, value in model.state_dict().items()}
        save_file(state, str(out / FILES[name]), metadata={"backbone": name, "seed": str(seed)})
        records[name] = {"schedule": asdict(schedule), "seed": seed, "seconds": seconds, "device": str(torch_device),
                         "device_name": _device_name(torch_device), "torch": torch.__version__,
                         "python": platform.python_version(), "losses": losses}
        write_manifest(out)  # after each backbone: a run stopped later keeps what it finished
        log = out / "training.json"
        earlier = json.loads(log.read_text()) if log.is_file() else {}
        log.write_text(json.dumps({**earlier, name: records[name]}, indent=1))
    return records


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
