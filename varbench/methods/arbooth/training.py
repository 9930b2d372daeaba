"""One ARBooth fine-tuning iteration, and the storage (precision) plan of the trained model.

An iteration (batch B subject images, Bd teacher samples):
  1. teacher: Bd class-prompt samples (token maps + raw logits), fresh or from the pool;
  2. CE rows: B subject latents re-quantized with random self-correction flips, the
     training prompt with the current identifier vectors, text dropped with p = 0.1;
     loss = scale-weighted bitwise CE;
  3. distillation rows: the student teacher-forced on the teacher's token maps under the
     prior prompt (never dropped); loss = lambda * KL (or hard CE);
  4. optimizer. quirk_optimizer_steps "faithful" (released): backward + AdamW step after
     the CE rows, then forward/backward/step for the distillation rows, the identifier
     stepped twice per step (it was listed twice in the release's AdamW: two updates
     with the same gradient, shared moments, as torch's single-tensor AdamW applies a
     duplicated parameter). "fixed": CE and distillation rows run as ONE batched forward
     (B + Bd rows) and one backward, one AdamW step on CE + lambda * KL.
Randomness (image order, flips, text drop, teacher seeds) comes from the fit seed; drop
path uses torch's global generator, seeded from the fit seed by the method. Each
iteration runs the student through the speed layer as `speed_options(config, device,
"train")` says (compiled blocks with `compile_blocks`).

Memory plan (Infinity-2B, released layers, CUDA, bf16 autocast):
  tuned tensors (1.61 G)     fp32 master weights + fp32 grads + fp32 AdamW moments: 25.8 GB
                             (quirk_bf16_weights "faithful": all bf16 as released, 12.9 GB;
                             optimizer_states "bf16": fp32 weights and grads, bf16 moments, 19.3 GB)
  untuned block tensors      bf16 (0.59 G: 1.2 GB); top-level modules fp32 (0.5 GB)
  teacher                    shares all untuned tensors; bf16 copy of the tuned ones: 3.2 GB
  autocast                   bf16 copies of the tuned weights during a forward: 3.2 GB
  activations                block inputs (fp32) kept, each block recomputed in backward
                             (checkpoint_blocks -1); ~0.35 GB per block and batch of 2;
                             "auto" keeps the last blocks' activations where memory allows
  T5-XL, BSQ tokenizer       encode the prompts and the subject once, then wait on the CPU.
With LoRA (lora.py) every block tensor is frozen in bf16 (2.2 G: 4.4 GB), the teacher shares
them all, and the adapters with their fp32 moments take ~70 MB at rank 4.
On the CPU everything is fp32 without autocast (tests compare exact values).

No host syncs in an iteration: indices are picked in Python, every random draw comes
from a device generator, and losses go back to the caller as tensors.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from varbench.methods.arbooth.base import speed_options
from varbench.methods.arbooth.config import ARBoothConfig
from varbench.methods.arbooth.data import PromptFeatures, ShuffledOrder, pick_rows
from varbench.methods.arbooth.losses import distillation_loss, weighted_ce
from varbench.methods.arbooth.optim import make_adamw, state_dtype
from varbench.methods.arbooth.recompute import Recompute
from varbench.methods.arbooth.scale_weights import loss_normalizer, scale_weights, token_weights
from varbench.methods.arbooth.teacher import OnTheFly, Pool, TeacherBatch
from varbench.models.infinity.bsq import multiscale_quantize
from varbench.models.infinity.fast import accelerate
from varbench.models.infinity.schedule import ScaleSchedule
from varbench.models.infinity.transformer import Condition, Infinity
from varbench.seeding import derive_seed


# ---- storage ----------------------------------------------------------------------------
def uses_amp(config: ARBoothConfig, device: torch.device) -> bool:
    return config.amp and device.type == "cuda"


def prepare_storage(model: Infinity, tuned: list[str], config: ARBoothConfig, device: torch.device) -> None:
    """Set each tensor's storage dtype for training (module docstring, "Memory plan")."""
    if config.faithful("quirk_bf16_weights"):
        model.cast_blocks(torch.bfloat16)  # as released: every block tensor bf16, tuned ones too
        return
    if not uses_amp(config, device):
        return  # fp32 everywhere
    tuned_set = set(tuned)
    for name, param in model.block_chunks.named_parameters(prefix="block_chunks"):
        if name not in tuned_set:
            param.data = param.data.to(torch.bfloat16)


def compute_autocast(config: ARBoothConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if uses_amp(config, device):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def join_conditions(first: Condition, second: Condition, mask: torch.Tensor | None) -> Condition:
    """One Condition for the rows of both, text zero-padded to the longer one."""
    length = max(first.text.shape[1], second.text.shape[1])
    texts = [F.pad(c.text, (0, 0, 0, length - c.text.shape[1])) for c in (first, second)]
    return Condition(torch.cat([first.pooled, second.pooled]), torch.cat([first.ada, second.ada]),
                     torch.cat(texts), mask)


def join_mask(rows: tuple[int, int], lengths: tuple[int, int], device: torch.device) -> torch.Tensor | None:
    """Key mask of `join_conditions` (None when both texts have the same length)."""
    if lengths[0] == lengths[1]:
        return None
    per_row = torch.tensor([lengths[0]] * rows[0] + [lengths[1]] * rows[1])
    return (torch.arange(max(lengths))[None, :] < per_row[:, None]).to(device)


class NoClock:
    """Section timer interface (the benchmark's clock records CUDA events)."""

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        yield


@dataclass
class TrainingData:
    latents: torch.Tensor  # (N, d, h, w) continuous subject latents, on the device
    prompt: PromptFeatures  # the training prompt (with the placeholder)
    prior: Condition  # the prior prompt's condition, distill_batch_size rows (constant)
    teacher: OnTheFly | Pool | None  # .next(step) -> TeacherBatch; None without distillation


class Trainer:
    """Runs iterations; holds the optimizers and the per-fit random state."""

    def __init__(self, config: ARBoothConfig, model: Infinity, identifier: torch.nn.Parameter,
                 tuned: list[torch.nn.Parameter], schedule: ScaleSchedule, data: TrainingData,
                 device: torch.device, fit_seed: int, clock: NoClock | None = None,
                 adapters: list[torch.nn.Parameter] | None = None):
        self.config, self.model, self.identifier, self.schedule, self.data = config, model, identifier, schedule, data
        self.device, self.clock = device, clock or NoClock()
        self.order = ShuffledOrder(data.latents.shape[0], derive_seed("images", fit_seed))
        self.generator = torch.Generator(device=device).manual_seed(derive_seed("step noise", fit_seed))
        weights = token_weights(scale_weights(config, schedule.num_scales), schedule)
        self.normalizer = loss_normalizer(weights, config.loss_normalization)
        self.token_weights = weights.to(device)
        groups = [{"params": tuned, "state_dtype": state_dtype(config)}] if tuned else []
        if adapters:  # LoRA's A and B: their own learning rate, fp32 moments (lora.py)
            groups.append({"params": adapters, "lr": config.lora_learning_rate})
        self.optimizer = make_adamw(groups, config, device) if groups else None
        self.identifier_optimizer = (make_adamw([{"params": [identifier]}], config, device)
                                     if identifier.requires_grad else None)
        self.identifier_updates = 2 if config.faithful("quirk_optimizer_steps") else 1
        self.recompute = Recompute(config.checkpoint_blocks, model.config.depth, device)
        self.speed = speed_options(config, device, "train")
        self.joint = not config.faithful("quirk_optimizer_steps")
        self.per_bit = not config.faithful("quirk_distill_softmax")
        with torch.no_grad():  # the training prompt's length once the identifier vectors are in
            prompt_length = data.prompt.rows(1, identifier).lengths[0]
        self.joint_mask = join_mask((config.batch_size, config.distill_batch_size),
                                    (prompt_length, data.prior.text.shape[1]), device)

    def iteration(self, step: int) -> dict[str, torch.Tensor]:
        """One iteration (module docstring); returns the losses as tensors (no host sync)."""
        self.checkpointing = self.recompute.before()
        with accelerate(self.model, self.speed):
            losses = self._iteration(step)
        self.recompute.after()
        return losses

    def _iteration(self, step: int) -> dict[str, torch.Tensor]:
        teacher = None
        if self.data.teacher is not None:
            with self.clock.section("teacher"):
                teacher = self.data.teacher.next(step)
        if teacher is not None and self.joint:
            with self.clock.section("joint pass"):
                ce, distill = self._joint_pass(teacher)
            with self.clock.section("optimizer"):
                self._step()
        else:
            with self.clock.section("ce pass"):
                ce = self._ce_pass()
            with self.clock.section("optimizer"):
                self._step()
            distill = torch.zeros((), device=self.device)
            if teacher is not None:
                with self.clock.section("distill pass"):
                    distill = self._distill_pass(teacher)
                with self.clock.section("optimizer"):
                    self._step()
        weight = self.config.distill_weight if teacher is not None else 0.0
        return {"loss": ce + weight * distill, "ce": ce, "distill": distill}

    # ---- the passes ---------------------------------------------------------------------
    def _subject_rows(self) -> tuple[Condition, torch.Tensor, torch.Tensor]:
        """Condition, teacher-forcing inputs and bit labels of B subject images."""
        config, batch = self.config, self.config.batch_size
        latents = pick_rows(self.data.latents, self.order.take(batch))
        maps = multiscale_quantize(latents, self.schedule, flip_max=config.flip_max, generator=self.generator)
        text = self.data.prompt.rows(batch, self.identifier)
        drop = torch.rand(batch, generator=self.generator, device=self.device) < config.text_drop
        cond = self.model.condition(text.features, text.mask, drop=drop)
        return cond, maps.inputs, maps.labels()

    def _forward(self, cond: Condition, inputs: torch.Tensor) -> torch.Tensor:
        with compute_autocast(self.config, self.device):
            return self.model(cond, inputs, self.schedule, checkpointing=self.checkpointing)

    def _ce(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return weighted_ce(logits, labels, self.token_weights, self.normalizer)

    def _distill(self, logits: torch.Tensor, teacher: TeacherBatch) -> torch.Tensor:
        return distillation_loss(logits, teacher.logits, self.config.distill, self.config.distill_temperature,
                                 self.per_bit)

    def _ce_pass(self) -> torch.Tensor:
        cond, inputs, labels = self._subject_rows()
        ce = self._ce(self._forward(cond, inputs), labels)
        ce.backward()
        return ce.detach()

    def _distill_pass(self, teacher: TeacherBatch) -> torch.Tensor:
        distill = self._distill(self._forward(self.data.prior, teacher.inputs), teacher)
        if distill.requires_grad:  # not when only the identifier is trained: the prior prompt lacks it
            (self.config.distill_weight * distill).backward()
        return distill.detach()

    def _joint_pass(self, teacher: TeacherBatch) -> tuple[torch.Tensor, torch.Tensor]:
        cond, inputs, labels = self._subject_rows()
        joined = join_conditions(cond, self.data.prior, self.joint_mask)
        logits = self._forward(joined, torch.cat([inputs, teacher.inputs]))
        rows = self.config.batch_size
        ce = self._ce(logits[:rows], labels)
        distill = self._distill(logits[rows:], teacher)
        (ce + self.config.distill_weight * distill).backward()
        return ce.detach(), distill.detach()

    def _step(self) -> None:
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        if self.identifier_optimizer is not None:
            for _ in range(self.identifier_updates):  # skipped by AdamW while the grad is None
                self.identifier_optimizer.step()
            self.identifier_optimizer.zero_grad(set_to_none=True)
