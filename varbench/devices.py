"""Turning a `--device` or `--gpus` value into a torch device, or one clear error."""
from __future__ import annotations

import re
from typing import Any

from varbench.errors import UserError

DEVICE_NAME = re.compile(r"auto|cpu|cuda(:[0-9]{1,3})?")  # ASCII digits: \d also takes "²"
FIX = "Use auto, cpu, cuda or cuda:N."


def resolve_device(name: str, where: str = "--device") -> Any:
    """`auto` (a GPU when there is one), `cpu`, `cuda` or `cuda:N` that this machine has."""
    if not isinstance(name, str) or not DEVICE_NAME.fullmatch(name):
        raise UserError(f"unknown device {str(name)[:40]!r}", where, FIX)
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            fix = "List CPU workers (--gpus cpu,cpu) instead." if where == "--gpus" else "Use --device cpu (or auto)."
            raise UserError("no CUDA GPU is available on this machine", where, fix)
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UserError(f"this machine has {count} GPU(s), so {name} does not exist", where,
                            f"Use cuda:0 to cuda:{count - 1}.")
    return device


def gpu_names(gpus: list[str]) -> list[str]:
    """`["0", "1"]` -> `["cuda:0", "cuda:1"]`; "cpu" entries stay (CPU workers, for tests)."""
    names = []
    for gpu in gpus:
        if gpu == "cpu" or DEVICE_NAME.fullmatch(gpu) and gpu.startswith("cuda"):
            names.append(gpu)
        elif re.fullmatch(r"[0-9]{1,3}", gpu):  # not str.isdigit, which "²" passes and int() refuses
            names.append(f"cuda:{int(gpu)}")
        else:
            raise UserError(f"unknown device {gpu[:40]!r} in --gpus", "--gpus", "List GPU numbers: --gpus 0,1,2.")
    return names
