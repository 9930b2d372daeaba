"""The prior-distillation teacher: the pretrained model sampling class-prompt images.

The teacher is a second `Infinity` module that *shares* every tensor the fit never tunes
with the student (self-attention, norms, top-level modules, ...) and holds a frozen copy
of the pretrained values of the tuned tensors only. So at Infinity-2B with the released
layers it costs 1.6 G extra values (bf16 on CUDA: 3.2 GB) instead of a second 2.2 G model.

Each iteration the teacher samples `distill_batch_size` images of the prior prompt "a
photo of {class}" with the KV-cached sampler (cfg 1, tau 0.5, top-p 0.97 as released) and
returns, per sample, the token maps (the teacher-forcing inputs of every scale) and its
raw logits (before 1/tau); the student is then teacher-forced on those inputs. Images are
never decoded. Seeds derive from (fit seed, iteration, row), so a fit is reproducible.

Pool variant (`teacher_source: pool`, cheaper): `teacher_pool_size` samples are drawn once
per (base model, prior prompt, schedule, seeds, sampler settings, precision) into the shared
cache (`varbench.cache.get_or_build`) and reused by every subject of that class and every
run; each iteration takes the next `distill_batch_size` samples of a shuffled order. It
trades the fresh samples of every iteration for a fixed set (about 4 MB per sample at 1024 px).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from varbench.cache import get_or_build
from varbench.errors import UserError
from varbench.methods.arbooth.data import ShuffledOrder, pick_rows
from varbench.models.infinity.sampler import SamplingConfig, sample
from varbench.models.infinity.schedule import ScaleSchedule
from varbench.models.infinity.text import TextFeatures
from varbench.models.infinity.transformer import Infinity
from varbench.seeding import derive_seed

POOL_FORMAT = 1  # bump when the pool files or their sampling change
POOL_FILE = "pool.safetensors"


@dataclass
class TeacherBatch:
    inputs: torch.Tensor  # (B, L - 1, d) fp32: teacher-forcing inputs of the sampled token maps
    logits: torch.Tensor  # (B, L, 2d) fp32: the teacher's raw logits (before 1/tau)


def frozen_twin(student: Infinity, tuned: Sequence[str], dtype: torch.dtype | None = None) -> Infinity:
    """A model sharing `student`'s untuned tensors, with a frozen copy of the `tuned` ones
    (in `dtype`, default their current dtype). Call before training changes them."""
    twin = _empty_like(student)
    tuned = set(tuned)
    for name, param in student.named_parameters():
        if name in tuned:
            copy = param.detach().to(dtype or param.dtype, copy=True)
            param = torch.nn.Parameter(copy, requires_grad=False)
        _set_tensor(twin, name, param, is_buffer=False)
    for name, buffer in student.named_buffers():
        _set_tensor(twin, name, buffer, is_buffer=True)
    return twin.eval()  # the shared tensors keep the student's (frozen) state


def _empty_like(model: Infinity) -> Infinity:
    with torch.device("meta"):  # structure only; every tensor is replaced below
        return Infinity(model.config)


def _set_tensor(module: torch.nn.Module, name: str, tensor: torch.Tensor, is_buffer: bool) -> None:
    path, _, leaf = name.rpartition(".")
    owner = module.get_submodule(path) if path else module
    if is_buffer:
        owner._buffers[leaf] = tensor
    else:
        owner._parameters[leaf] = tensor


class Teacher:
    """Samples class-prompt token maps and logits from the frozen pretrained model."""

    def __init__(self, model: Infinity, schedule: ScaleSchedule, sampling: SamplingConfig):
        self.model, self.schedule, self.sampling = model, schedule, sampling

    def sample(self, text: TextFeatures, seeds: Sequence[int]) -> TeacherBatch:
        out = sample(self.model, None, text, self.schedule, seeds, self.sampling, return_logits=True, decode=False)
        return TeacherBatch(out.inputs, out.logits)


class OnTheFly:
    """Fresh teacher samples at every iteration."""

    def __init__(self, teacher: Teacher, text: TextFeatures, batch: int, fit_seed: int):
        self.teacher, self.text, self.batch, self.fit_seed = teacher, text, batch, fit_seed

    def next(self, step: int) -> TeacherBatch:
        seeds = [derive_seed("teacher", self.fit_seed, step, row) for row in range(self.batch)]
        return self.teacher.sample(self.text, seeds)


class Pool:
    """A fixed set of teacher samples, visited in shuffled passes."""

    def __init__(self, samples: TeacherBatch, batch: int, fit_seed: int):
        self.samples, self.batch = samples, batch
        self.order = ShuffledOrder(samples.inputs.shape[0], derive_seed("teacher_pool_order", fit_seed))

    def next(self, step: int) -> TeacherBatch:
        rows = self.order.take(self.batch)
        return TeacherBatch(pick_rows(self.samples.inputs, rows), pick_rows(self.samples.logits, rows))


def pool_key(base_identity: dict, prompt: str, schedule: ScaleSchedule, size: int, seed: int,
             sampling: SamplingConfig, lvl_embed_every_chunk: bool, precision: str) -> dict:
    """Everything that decides a pool's samples (and nothing else: not the subject).
    `precision` names the device type and arithmetic, e.g. "cuda-bf16" or "cpu-fp32"."""
    return {"format": POOL_FORMAT, "base": base_identity, "prompt": prompt, "scales": schedule.scales,
            "size": size, "seed": seed, "cfg": sampling.cfg, "tau": sampling.tau, "top_k": sampling.top_k,
            "top_p": sampling.top_p, "next_input": sampling.next_input, "attention": sampling.attention,
            "lvl_embed_every_chunk": lvl_embed_every_chunk, "precision": precision}


def build_pool(teacher: Teacher, text_row: TextFeatures, key: dict, cache_dir: Path, batch: int,
               device: torch.device) -> TeacherBatch:
    """The pool of `key` from the shared cache, sampling it (in batches of `batch`) if new."""

    def build(folder: Path) -> None:
        inputs, logits = [], []
        for start in range(0, key["size"], batch):
            rows = range(start, min(start + batch, key["size"]))
            seeds = [derive_seed("teacher_pool", key["seed"], key["prompt"], i) for i in rows]
            text = TextFeatures(text_row.features.expand(len(seeds), -1, -1), text_row.lengths * len(seeds))
            out = teacher.sample(text, seeds)
            inputs.append(out.inputs.cpu())
            logits.append(out.logits.cpu())
        save_file({"inputs": torch.cat(inputs).contiguous(), "logits": torch.cat(logits).contiguous()},
                  str(folder / POOL_FILE))

    folder = get_or_build(cache_dir, "teacher_pool", key, build)
    try:
        tensors = load_file(str(folder / POOL_FILE))
    except (OSError, SafetensorError) as err:
        raise UserError(f"cannot read the teacher pool: {err}", str(folder),
                        "Delete this cache folder; the next fit samples the pool again.") from None
    return TeacherBatch(tensors["inputs"].to(device), tensors["logits"].to(device))
