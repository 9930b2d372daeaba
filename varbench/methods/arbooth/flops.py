"""FLOPs of one ARBooth iteration, counted from the architecture (multiply-add = 2 FLOPs).

Only matrix products and attention are counted (what a GPU's tensor cores do; norms, RoPE
and element-wise work are memory-bound and left out), as torch's FlopCounterMode does; a
test checks these formulas against it on the tiny model, exactly.

Forward, per row (image) with L tokens, Lt text tokens, width C, FFN width H, per block:
  self-attention   qkv 6LC^2, proj 2LC^2, attention 4C sum_k n_k m_k (n_k queries of scale
                   k see m_k keys: all earlier scales, or only its own with quirk 3)
  cross-attention  q 2LC^2, proj 2LC^2, keys/values of the text 4LtC^2, attention 4CLLt
  FFN              4LCH
plus outside the blocks: the text condition (pooling, projections, shared AdaLN), the
input embedding and the head.
Backward, per matrix product: the gradient w.r.t. its input costs one forward product if
that input needs a gradient (anything trained, or the identifier, lies before it); the
gradient w.r.t. its weight costs one forward product if the weight is trained; attention
backward costs 2.5 forwards (scores are recomputed, as in flash attention). Activation
checkpointing adds one forward of every recomputed block. Teacher sampling with the KV
cache costs one forward per sample (plus the head's AdaLN at every scale).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from varbench.methods.arbooth.config import ARBoothConfig
from varbench.methods.arbooth.tuned_layers import block_parts, lora_parts, trains_identifier
from varbench.methods.arbooth.recompute import configured_count
from varbench.models.infinity.architecture import InfinityConfig
from varbench.models.infinity.schedule import ScaleSchedule

ATTENTION_BACKWARD = 2.5  # backward / forward FLOPs of attention (FlopCounterMode's convention)
SUBLAYERS = ("sa", "ca", "ffn")  # in block order


@dataclass
class Sublayer:
    """Forward FLOPs of one sub-layer of one block for one row."""

    first: float  # the product reading the block's residual stream (qkv, ca q, fc1)
    rest: float  # the other products on image tokens (sa proj, ca proj, fc2)
    text: float  # cross-attention keys/values of the text tokens
    attention: float

    @property
    def forward(self) -> float:
        return self.first + self.rest + self.text + self.attention

    def backward(self, trained: bool, input_grad: bool, text_grad: bool) -> float:
        """Backward FLOPs; `input_grad`: its input needs a gradient; `text_grad`: so does the text."""
        if not (trained or input_grad or (self.text and text_grad)):
            return 0.0  # nothing before or inside it needs a gradient
        inputs = (self.first if input_grad else 0.0) + self.rest + (self.text if text_grad else 0.0)
        weights = self.first + self.rest + self.text if trained else 0.0
        return inputs + weights + ATTENTION_BACKWARD * self.attention


def self_attention_pairs(schedule: ScaleSchedule, self_only: bool = False) -> int:
    """Sum over scales of (queries x visible keys): block-causal, or each scale alone."""
    return sum(n * (n if self_only else end) for n, (_, end) in zip(schedule.tokens_per_scale, schedule.bounds()))


def sublayers(model: InfinityConfig, schedule: ScaleSchedule, text_tokens: int,
              self_only: bool = False) -> dict[str, Sublayer]:
    c, tokens, hidden = model.width, schedule.num_tokens, model.ffn_hidden
    self_pairs, cross_pairs = self_attention_pairs(schedule, self_only), tokens * text_tokens
    return {
        "sa": Sublayer(2 * tokens * 3 * c * c, 2 * tokens * c * c, 0.0, 4 * c * self_pairs),
        "ca": Sublayer(2 * tokens * c * c, 2 * tokens * c * c, 2 * text_tokens * 2 * c * c, 4 * c * cross_pairs),
        "ffn": Sublayer(2 * tokens * c * hidden, 2 * tokens * hidden * c, 0.0, 0.0),
    }


def condition_flops(model: InfinityConfig, text_tokens: int) -> tuple[float, float]:
    """(products, pooling attention) of the text condition of one row."""
    c, ct5 = model.width, model.text_channels
    products = 2 * text_tokens * (2 * ct5 * c + ct5 * c + c * c) + 2 * (c * c + c * 6 * c)
    return products, 4 * c * text_tokens


def head_flops(model: InfinityConfig, schedule: ScaleSchedule) -> float:
    """The head's AdaLN (once per row) and the head."""
    return 2 * model.width * 2 * model.width + 2 * schedule.num_tokens * model.width * model.num_logits


def embed_flops(model: InfinityConfig, schedule: ScaleSchedule) -> float:
    return 2 * (schedule.num_tokens - 1) * model.token_bits * model.width


def sampling_flops(model: InfinityConfig, schedule: ScaleSchedule, text_tokens: int, self_only: bool = False) -> float:
    """One sample of the KV-cached sampler without guidance (the teacher): a forward over
    every token, with the head's AdaLN recomputed at every scale. `self_only`: quirk 3."""
    per_block = sum(sub.forward for sub in sublayers(model, schedule, text_tokens, self_only).values())
    condition = sum(condition_flops(model, text_tokens))
    head_adaln = 2 * model.width * 2 * model.width
    return (model.depth * per_block + condition + embed_flops(model, schedule) + head_flops(model, schedule)
            + (schedule.num_scales - 1) * head_adaln)


@dataclass
class PassSpec:
    """What one teacher-forced pass computes, for its rows."""

    text_tokens: int  # keys of the cross-attention (the longest prompt of the batch)
    condition_tokens: int  # tokens of a text condition computed in the pass; 0 = precomputed
    grad_from_text: bool  # the text (and the first input) carry the identifier's gradient


def training_pass_flops(model: InfinityConfig, schedule: ScaleSchedule, spec: PassSpec, rows: int,
                        trained: dict[int, set[str]], recomputed_blocks: int) -> float:
    """Forward + backward (+ recomputation) of `rows` rows; `trained[b]`: trained sub-layers of block b."""
    layers = sublayers(model, schedule, spec.text_tokens)
    block_forward = sum(sub.forward for sub in layers.values())
    forward = model.depth * block_forward + embed_flops(model, schedule) + head_flops(model, schedule)
    backward, input_grad = 0.0, spec.grad_from_text
    for block in range(model.depth):
        block_backward = 0.0
        for name in SUBLAYERS:
            is_trained = name in trained.get(block, set())
            block_backward += layers[name].backward(is_trained, input_grad, spec.grad_from_text)
            input_grad = input_grad or is_trained or (name == "ca" and spec.grad_from_text)
        if block_backward and block < recomputed_blocks:
            block_backward += block_forward  # a checkpointed block is recomputed in its backward
        backward += block_backward
    head_adaln = 2 * model.width * 2 * model.width
    if input_grad:  # the head's input gradient (its AdaLN's too when the condition carries one)
        backward += head_flops(model, schedule) - (0 if spec.grad_from_text else head_adaln)
    if spec.condition_tokens:
        products, attention = condition_flops(model, spec.condition_tokens)
        forward += products + attention
        if spec.grad_from_text:
            backward += products + ATTENTION_BACKWARD * attention
    return rows * (forward + backward)


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
                    prompt_tokens: int, prior_tokens: int, recomputed: int | None = None) -> IterationFlops:
    """FLOPs of one iteration of `config`; `prompt_tokens` counts the training prompt after
    the identifier insertion. In the joint step (quirk 5 fixed) the rows share one batch:
    text padded to the longer prompt, gradients flowing through every row. `recomputed`:
    the blocks a fit actually recomputed (what checkpoint_blocks "auto" chose); by default
    the config's count, every block for "auto"."""
    # LoRA's parts count as trained: their weight gradients are computed at full size (lora.py)
    parts = block_parts(config.layers) | lora_parts(config.layers, config.lora_parts)
    start, stop = config.block_range or (0, model.depth)
    trained = {block: parts for block in range(start, min(stop, model.depth))}
    if recomputed is None:
        recomputed = configured_count(config.checkpoint_blocks, model.depth)
    recomputed = min(recomputed, model.depth)
    identifier = trains_identifier(config.layers)
    distill = config.distill != "off"
    joint = distill and not config.faithful("quirk_optimizer_steps")
    text = max(prompt_tokens, prior_tokens) if joint else prompt_tokens
    ce = training_pass_flops(model, schedule, PassSpec(text, prompt_tokens, identifier), config.batch_size,
                             trained, recomputed)
    if not distill:
        return IterationFlops(0.0, ce, 0.0)
    spec = PassSpec(text, 0, identifier) if joint else PassSpec(prior_tokens, 0, False)
    rows = config.distill_batch_size
    distill_pass = training_pass_flops(model, schedule, spec, rows, trained, recomputed)
    teacher = 0.0
    if config.teacher_source == "on_the_fly":
        teacher = rows * sampling_flops(model, schedule, prior_tokens, config.faithful("quirk_teacher_attention"))
    return IterationFlops(teacher, ce, distill_pass)
