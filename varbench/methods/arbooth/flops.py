"""FLOPs of one ARBooth iteration, counted from the architecture (multiply-add = 2 FLOPs).

Only matrix products and attention are counted (what a GPU's tensor cores do; norms,
RoPE and element-wise work are memory-bound and left out), like torch's FlopCounterMode,
against which a test checks these formulas on the tiny model.

Per row (one image) of a teacher-forced forward over L tokens with Lt text tokens, width C,
FFN width H, depth D:
  per block   tokens: 2L(3C^2 + C^2) self-attn qkv/proj, 2L(2C^2) cross-attn q/proj, 4LCH FFN;
              text:   2Lt(2C^2) cross-attn keys/values;
              attention: 4C sum_k n_k m_k (self; m_k = keys visible to scale k) + 4C L Lt (cross)
  outside     word_embed, head, text projections, pooling, AdaLN (small).
Backward: gradients w.r.t. activations cost one forward matmul each (every block passes
gradient on: the identifier sits before all of them); gradients w.r.t. weights cost one
forward matmul each for trained weights only; attention backward costs 2.5 forward
(scores are recomputed, as flash attention does). Activation checkpointing adds one more
forward of the recomputed blocks. Teacher sampling (KV cache) costs one forward per sample.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from varbench.methods.arbooth.config import ARBoothConfig
from varbench.methods.arbooth.layers import block_parts
from varbench.models.infinity.config import InfinityConfig
from varbench.models.infinity.schedule import ScaleSchedule

ATTENTION_BACKWARD = 2.5  # backward / forward FLOPs of attention (FlopCounterMode's convention)


@dataclass
class BlockFlops:
    """FLOPs of one block's forward for one row, split by what the backward needs."""

    sa_tokens: float  # qkv + proj on the image tokens
    ca_tokens: float  # q + proj on the image tokens
    ca_text: float  # keys/values of the text tokens
    ffn: float
    attention: float  # self + cross attention (score and value products)

    @property
    def matmul(self) -> float:
        return self.sa_tokens + self.ca_tokens + self.ca_text + self.ffn

    def trained_matmul(self, parts: set[str]) -> float:
        """Forward matmul FLOPs of the layers whose weights are trained (their weight grads)."""
        return ((self.sa_tokens if "sa" in parts else 0.0) + (self.ca_tokens + self.ca_text if "ca" in parts else 0.0)
                + (self.ffn if "ffn" in parts else 0.0))


def self_attention_pairs(schedule: ScaleSchedule, self_only: bool = False) -> int:
    """Sum over scales of (queries x visible keys): block-causal, or each scale alone."""
    return sum(n * (n if self_only else end) for n, (_, end) in zip(schedule.tokens_per_scale, schedule.bounds()))


def block_flops(model: InfinityConfig, schedule: ScaleSchedule, text_tokens: int, self_only: bool = False) -> BlockFlops:
    c, tokens = model.width, schedule.num_tokens
    attention = 4 * c * self_attention_pairs(schedule, self_only) + 4 * c * tokens * text_tokens
    return BlockFlops(sa_tokens=2 * tokens * 4 * c * c, ca_tokens=2 * tokens * 2 * c * c,
                      ca_text=2 * text_tokens * 2 * c * c, ffn=2 * tokens * 2 * c * model.ffn_hidden,
                      attention=attention)


@dataclass
class OutsideFlops:
    """Matmul FLOPs outside the blocks for one row's forward."""

    condition: float  # text path: pooling keys/values and attention, projections, shared AdaLN
    condition_attention: float  # the pooling attention (one query per head) within `condition`
    word_embed: float
    head: float  # head AdaLN + head


def outside_flops(model: InfinityConfig, schedule: ScaleSchedule, text_tokens: int) -> OutsideFlops:
    c, ct5, tokens = model.width, model.text_channels, schedule.num_tokens
    attention = 4 * c * text_tokens
    text = 2 * text_tokens * (2 * ct5 * c + ct5 * c + c * c)  # pooling keys/values, projection to C
    condition = text + attention + 2 * (c * c + c * 6 * c)  # + pooling output projection, shared AdaLN
    head = 2 * c * 2 * c + 2 * tokens * c * model.num_logits
    return OutsideFlops(condition, attention, 2 * (tokens - 1) * model.token_bits * c, head)


def sampling_flops(model: InfinityConfig, schedule: ScaleSchedule, text_tokens: int, self_only: bool = False) -> float:
    """One sample of the KV-cached sampler without guidance (the teacher): a forward over
    every token, with the head's AdaLN recomputed at every scale. `self_only`: quirk 3."""
    block = block_flops(model, schedule, text_tokens, self_only)
    outside = outside_flops(model, schedule, text_tokens)
    head_adaln = 2 * model.width * 2 * model.width
    return (model.depth * (block.matmul + block.attention) + outside.condition + outside.word_embed + outside.head
            + (schedule.num_scales - 1) * head_adaln)


def training_pass_flops(model: InfinityConfig, schedule: ScaleSchedule, text_tokens: int, rows: int,
                        parts: set[str], recomputed_blocks: int, condition_grad: bool) -> float:
    """Forward + backward (+ recomputation) of `rows` teacher-forced rows.

    `condition_grad`: the text condition is computed in the pass and needs gradients (the
    CE rows: the identifier is in their prompt); otherwise it is a precomputed constant
    (the prior prompt's). Block 0's self-attention backward is counted even where its
    input needs no gradient (distillation rows alone): an over-count of < 1% at 2B."""
    block = block_flops(model, schedule, text_tokens)
    per_block_forward = block.matmul + block.attention
    per_block_backward = block.matmul + block.trained_matmul(parts) + ATTENTION_BACKWARD * block.attention
    if not condition_grad:
        per_block_backward -= block.ca_text  # no gradient flows into a constant text
    outside = outside_flops(model, schedule, text_tokens)
    forward = outside.word_embed + outside.head + (outside.condition if condition_grad else 0.0)
    backward = outside.head  # the head's input gradients (its weights are frozen)
    if condition_grad:
        backward += outside.condition + (ATTENTION_BACKWARD - 1) * outside.condition_attention
    per_row = (model.depth * (per_block_forward + per_block_backward) + recomputed_blocks * per_block_forward
               + forward + backward)
    return rows * per_row


@dataclass
class IterationFlops:
    teacher_sampling: float
    ce_pass: float
    distill_pass: float

    @property
    def total(self) -> float:
        return self.teacher_sampling + self.ce_pass + self.distill_pass

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "total": self.total}


def iteration_flops(config: ARBoothConfig, model: InfinityConfig, schedule: ScaleSchedule,
                    prompt_tokens: int, prior_tokens: int, teacher_from_pool: bool | None = None) -> IterationFlops:
    """FLOPs of one iteration of `config` (prompt lengths after the identifier insertion)."""
    parts = block_parts(config.layers)
    recomputed = model.depth if config.checkpoint_blocks == -1 else min(config.checkpoint_blocks, model.depth)
    ce = training_pass_flops(model, schedule, prompt_tokens, config.batch_size, parts, recomputed, True)
    if config.distill == "off":
        return IterationFlops(0.0, ce, 0.0)
    rows = config.distill_batch_size
    distill = training_pass_flops(model, schedule, prior_tokens, rows, parts, recomputed, False)
    pool = config.teacher_source == "pool" if teacher_from_pool is None else teacher_from_pool
    self_only = config.faithful("quirk_teacher_attention")
    teacher = 0.0 if pool else rows * sampling_flops(model, schedule, prior_tokens, self_only)
    return IterationFlops(teacher, ce, distill)
