"""Resumable staged pretraining: the training state of a toyworld backbone saved every
CHECKPOINT_SECONDS and at the end of each stage, and resumed from when a run with the
same identity (recipe, seed, architecture, device kind) starts again.

Shared by the SD and Infinity pretraining: the stages are named in order,
and two functions say what of the backbone's parts to save and how to put it back. A
stage the checkpoint is past is skipped, the stage it stopped in resumes at its step with
its optimizer state, and, since every step's randomness comes from (seed, stage, step)
alone (`pool.step_random`), the resumed run ends with the uninterrupted run's weights.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_SECONDS = 120.0  # a stopped run loses at most this much training
FORMAT = 2  # the layout of a saved state (1: the SD's modules at the top level, before "parts")

States = Callable[[Any], dict[str, Any]]  # the parts -> tensors (and numbers) to save
Restore = Callable[[Any, dict[str, Any]], None]  # put a saved state back into the parts


class Checkpoints:
    """Training state of `stages`, saved at `path` (module docstring)."""

    def __init__(self, path: Path, identity: dict[str, Any], stages: Sequence[str], states: States,
                 restore: Restore):
        identity = {**identity, "format": FORMAT}  # a file of another layout is another run
        self.path, self.identity, self.saved_at = path, identity, time.monotonic()
        self.started = self.saved_at
        self.stages, self.states, self.restore = tuple(stages), states, restore
        found = torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None
        if found is not None and found.get("identity") != identity:
            print(f"ignoring {path}: another recipe, seed, architecture or device; starting afresh",
                  file=sys.stderr, flush=True)
            found = None
        self.found = found  # the state to resume from, until a stage has used it
        self.losses: dict[str, list[float]] = dict(found["losses"]) if found else {}
        # training seconds of the earlier runs this one resumes (until their last save), so a
        # resumed run's record tells the whole training time, not only its own part
        self.earlier_seconds = float(found.get("seconds", 0.0)) if found else 0.0

    def resume(self, stage: str, total: int, parts: Any, optimizer: torch.optim.Optimizer) -> tuple[int, list[float]]:
        """(first step of `stage` to run, its losses so far), restoring the saved state:
        a stage the checkpoint is past is skipped, the stage it stopped in resumes."""
        found, self.found = self.found, None  # restored once: later stages continue in memory
        if found is None:
            return 0, []
        self.restore(parts, found["parts"])
        saved, here = self.stages.index(found["stage"]), self.stages.index(stage)
        losses = found["losses"].get(stage, [])
        if saved > here or (saved == here and found["finished"]):
            self.found = found  # the next stage resumes from it too
            return total, list(losses)
        if saved < here:
            return 0, []
        optimizer.load_state_dict(found["optimizer"])
        return found["step"], list(losses)

    def maybe_save(self, stage: str, step: int, parts: Any, optimizer: torch.optim.Optimizer,
                   losses: list[float], finished: bool = False) -> None:
        if not finished and time.monotonic() - self.saved_at < CHECKPOINT_SECONDS:
            return
        self.losses[stage] = losses
        state = {"identity": self.identity, "stage": stage, "step": step, "finished": finished,
                 "seconds": self.earlier_seconds + time.monotonic() - self.started,
                 "losses": self.losses, "optimizer": optimizer.state_dict(), "parts": self.states(parts)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        torch.save(state, partial)
        partial.replace(self.path)
        self.saved_at = time.monotonic()
        print(f"checkpoint: {stage} step {step}, loss {losses[-1]:.4f} -> {self.path}", file=sys.stderr, flush=True)
