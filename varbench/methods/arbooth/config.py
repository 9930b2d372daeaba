"""The ARBooth config: every knob of the method, with the released value as its default.

Defaults follow the public ARBooth release (DESIGN.md section 7): Infinity-2B at 1024 px,
identifier of 4 zero-initialised vectors, cross-attention + FFN + identifier tuned, the
released scale-wise step weights (1.0 for scales 1-8, 0.5 after), soft prior distillation
(lambda 0.5, T 1), AdamW (0.9, 0.97), weight decay 0.005, constant lr 2.34375e-5,
batch 2, 500 iterations, bf16 autocast, bitwise self-correction (flip <= 0.3), text drop 0.1.

Released-code quirks (see README.md, "Fidelity"): each is a field that reads "faithful"
(reproduce the release) or "fixed" (the intended behaviour):
  quirk_lvl_embed          (1) lvl_embed added before each of the 8 block chunks, in
                               training, teacher sampling and generation. Default faithful.
  quirk_next_input         (2) next-scale input resized with "area" when sampling (teacher
                               and generation) although training uses bilinear. Default faithful.
  quirk_teacher_attention  (3) the teacher samples without KV cache, each scale attending only
                               to itself with RoPE rows from offset 0. Default fixed (KV cache).
  quirk_distill_softmax    (4) the soft KL is taken over the whole 64-logit vector instead of
                               per bit (32 two-way softmaxes). Default faithful.
  quirk_optimizer_steps    (5) two optimizer steps per iteration (CE, then distillation) and
                               the identifier updated twice per step (listed twice in AdamW).
                               Default faithful. "fixed": one step on CE + lambda * KL, with the
                               CE and distillation rows in one batched forward.
  quirk_bf16_weights       (6) trained tensors stored in bf16 with no fp32 master copy, so
                               small updates round away. Default fixed (fp32 master weights).
  quirk_uint8              (8) generated images become 8 bits by truncation,
                               `((x + 1) / 2).mul(255).to(uint8)`, as both releases do. Default
                               faithful; "fixed" rounds to the nearest level.
Quirk (7) (evaluation) belongs to the `dreammatcher` metric mode, not to this method.

Pure Python (no torch): protocols validate arms without loading a model.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

from varbench.errors import UserError
from varbench.schema import ADDED, EXECUTION

Fidelity = Literal["faithful", "fixed"]
LayerName = Literal["sa", "ca", "ffn", "identifier", "all", "lora"]
BlockPart = Literal["sa", "ca", "ffn"]
QUIRKS = ("quirk_lvl_embed", "quirk_next_input", "quirk_teacher_attention", "quirk_distill_softmax",
          "quirk_optimizer_steps", "quirk_bf16_weights", "quirk_uint8")


@dataclass
class ARBoothConfig:
    # ---- base model -----------------------------------------------------------------
    # "infinity-2b" (released weights), a random-init stand-in for tests and smoke runs
    # ("infinity-tiny", "infinity-small": results check the pipeline, not the method), or
    # "infinity-toyworld" (pretrained by varbench on its toyworld, read from the toyworld
    # weights folder unless the three paths below are set; resolution 64).
    model: Literal["infinity-2b", "infinity-tiny", "infinity-small", "infinity-toyworld"] = "infinity-2b"
    weights: str | None = None  # transformer checkpoint (file or safetensors folder); default:
    #                             $VARBENCH_INFINITY_DIR, then the Hugging Face hub cache
    vae_weights: str | None = None  # BSQ tokenizer file (infinity_vae_d32reg.pth); same lookup
    text_encoder: str | None = None  # local Flan-T5-XL folder; default: the hub cache
    # each of the three may be "random": the real architecture, random weights (rehearsals)
    init_seed: int = 0  # random-init sizes only: the seed of their weights
    resolution: int = 1024  # training crops and generated images, pixels (64 for infinity-tiny)

    # ---- identifier -------------------------------------------------------------------
    placeholder: str = "<placeholder>"  # the token that names the subject in prompts
    identifier_vectors: int = 4  # learned vectors replacing T5's output at the placeholder

    # ---- selective layer tuning ---------------------------------------------------------
    # Any combination of "sa", "ca", "ffn" (per block), "identifier", or "all" (= sa + ca +
    # ffn of every block, the release's enable_all_layer). Norms, AdaLN gains and the
    # top-level modules (text pooler `text_proj_for_sos.ca.*` included) are never tuned.
    # Without "identifier" the identifier vectors stay zero (prompts still carry them).
    layers: list[LayerName] = field(default_factory=lambda: ["ca", "ffn", "identifier"])
    block_range: tuple[int, int] | None = None  # tune only blocks start..stop-1 (0-based); null = all
    # "lora" in `layers` (e.g. [lora, identifier]): instead of the full tensors, a low-rank
    # update W + (alpha / rank) * B @ A of every linear layer in the `lora_parts` of each
    # block (lora.py; A: peft's default init, B: zeros, so a fit starts at the base model).
    # No released values exist: rank 4 and alpha = rank follow diffusers' DreamBooth-LoRA
    # scripts, the learning rate their 1e-4 (the identifier keeps `learning_rate`).
    lora_parts: list[BlockPart] = field(default_factory=lambda: ["ca", "ffn"], metadata={ADDED: True})
    lora_rank: int = field(default=4, metadata={ADDED: True, "range": (1, 4096)})
    lora_alpha: float | None = field(default=None, metadata={ADDED: True})  # null: = lora_rank (scale 1)
    lora_learning_rate: float = field(default=1e-4, metadata={ADDED: True})

    # ---- scale-wise weighted cross-entropy -----------------------------------------------
    # "released": 1.0 for scales 1-8, 0.5 after; "uniform": 1.0 everywhere; "step": 1.0 for
    # scales 1..weight_cutoff_scale, fine_scale_weight after; "geometric": scale_weight_decay
    # ** (k - 1) for scale k = 1..K.
    scale_weights: Literal["released", "uniform", "step", "geometric"] = "released"
    weight_cutoff_scale: int = 8
    fine_scale_weight: float = 0.5
    scale_weight_decay: float = 0.9
    # "tokens": sum over tokens of w * CE divided by the number of tokens (released);
    # "weights": divided by the sum of the token weights (a weighted mean: lowering weights
    # then does not also lower the effective learning rate).
    loss_normalization: Literal["tokens", "weights"] = "tokens"

    # ---- prior distillation ---------------------------------------------------------------
    distill: Literal["off", "soft", "hard"] = "soft"  # soft: KL at temperature T; hard: CE on teacher argmax
    distill_weight: float = 0.5  # lambda
    distill_temperature: float = 1.0  # T (soft only; no T^2 factor, as released)
    distill_batch_size: int = 2  # class-prompt samples per iteration (released: = batch_size)
    teacher_source: Literal["on_the_fly", "pool"] = "on_the_fly"  # pool: sampled once per class, reused
    teacher_pool_size: int = 64  # pool samples per (base model, class prompt, size, seed, sampler)
    teacher_seed: int = 0  # pool sample seeds derive from (this, prompt, index)
    teacher_cfg: float = 1.0  # the released teacher samples without guidance
    teacher_tau: float = 0.5
    teacher_top_k: int = 900
    teacher_top_p: float = 0.97

    # ---- optimisation ---------------------------------------------------------------------
    iterations: int = 500
    batch_size: int = 2  # subject images per iteration
    learning_rate: float = 2.34375e-5  # constant (6e-3 / 256), no warm-up, no clipping
    adam_beta1: float = 0.9
    adam_beta2: float = 0.97
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.005  # on every trained tensor, identifier included (as released)
    text_drop: float = 0.1  # CE rows: text replaced by the null text with this probability
    drop_path: float = 0.1  # stochastic depth, 0 -> this rate linearly over depth
    flip_max: float = 0.3  # bitwise self-correction: per-scale flip probability <= this (0 = off)
    amp: bool = True  # bf16 autocast on CUDA (the CPU always runs fp32)
    # AdamW moments of the tuned block tensors: "fp32", or "bf16" (half their memory, 6.4 GB
    # less at 2B with the released layers; each moment rounded to bf16 after every update,
    # so results differ slightly). The identifier's and LoRA's moments stay fp32.
    optimizer_states: Literal["fp32", "bf16"] = field(default="fp32", metadata={ADDED: True})
    # ---- execution options: speed and memory only, set under `execution:` (never hashed) --
    # Blocks recomputed in backward: -1 = all (released), 0 = none, n = the first n; "auto"
    # (CUDA) measures the memory one kept block costs and keeps as many of the last blocks
    # as fit (recompute.py): faster, same values.
    checkpoint_blocks: int | Literal["auto"] = field(default="auto", metadata={EXECUTION: "checkpoint_blocks"})
    # CUDA: every transformer block of the fit (CE, distillation, teacher sampling) runs
    # compiled (the speed layer, models/infinity/fast/): faster after a one-off compile
    # per fit process; same values up to rounding. "auto": see ARBooth.compile_pays_after.
    compile_blocks: bool | Literal["auto"] = field(default=True, metadata={EXECUTION: "compile"})
    # CUDA: T5 waits on the CPU during fit (prompts are encoded once)
    offload_text_encoder: bool = field(default=True, metadata={EXECUTION: "offload_text_encoder"})
    # CUDA: the BSQ tokenizer waits on the CPU during fit (subject images are encoded once)
    offload_vae: bool = field(default=True, metadata={EXECUTION: "offload_vae"})

    # ---- generation (evaluation images) -----------------------------------------------------
    cfg: float = 4.0
    tau: float = 0.5
    top_k: int = 900
    top_p: float = 0.97
    # Execution options (never hashed). Replay each scale's forward as a CUDA graph
    # (generation and teacher sampling; CUDA only, same values as eager).
    cuda_graphs: bool = field(default=True, metadata={EXECUTION: "cuda_graphs"})
    # CUDA: generate through compiled blocks too (replayed as CUDA graphs with cuda_graphs):
    # one compile per batch size and process, so it pays only for many images per
    # process (benchmarks/NOTES-infinity.md); same values up to rounding.
    compile_generation: bool | Literal["auto"] = field(default=False, metadata={EXECUTION: "compile_generation"})

    # ---- released-code quirks (module docstring) ----------------------------------------------
    quirk_lvl_embed: Fidelity = "faithful"
    quirk_next_input: Fidelity = "faithful"
    quirk_teacher_attention: Fidelity = "fixed"
    quirk_distill_softmax: Fidelity = "faithful"
    quirk_optimizer_steps: Fidelity = "faithful"
    quirk_bf16_weights: Fidelity = "fixed"
    quirk_uint8: Fidelity = "faithful"

    def faithful(self, quirk: str) -> bool:
        """True when quirk field `quirk` (e.g. "quirk_lvl_embed") reproduces the release."""
        return getattr(self, quirk) == "faithful"


def check_config(config: ARBoothConfig, where: str = "arbooth config") -> None:
    """Value checks the type check cannot express, each one clear `UserError`."""
    _at_least(config, where, 1, "identifier_vectors", "iterations", "batch_size", "distill_batch_size",
              "teacher_pool_size", "weight_cutoff_scale", "resolution")
    _at_least(config, where, 0, "fine_scale_weight", "distill_weight", "learning_rate", "weight_decay",
              "adam_epsilon", "drop_path", "top_k", "teacher_top_k")
    _in_range(config, where, 0.0, 1.0, "text_drop", "adam_beta1", "adam_beta2", "drop_path")
    for name in ("distill_temperature", "tau", "teacher_tau", "cfg", "teacher_cfg"):
        if not getattr(config, name) > 0:
            raise UserError(f"{name} is {getattr(config, name)}, must be positive", where)
    for name in ("top_p", "teacher_top_p", "scale_weight_decay"):
        if not 0 < getattr(config, name) <= 1:
            raise UserError(f"{name} is {getattr(config, name)}, must be in (0, 1]", where)
    if not 0 <= config.flip_max <= 0.5:
        raise UserError(f"flip_max is {config.flip_max}, must be in [0, 0.5]", where,
                        "The release flips at most 30% of the bits (0.3).")
    if config.checkpoint_blocks != "auto" and config.checkpoint_blocks < -1:
        raise UserError(f"checkpoint_blocks is {config.checkpoint_blocks}", where,
                        "Use auto, -1 (every block), 0 (none) or a number of blocks.")
    if not config.layers:
        raise UserError("layers is empty: nothing would be trained", where,
                        "List some of sa, ca, ffn, identifier, all (released: [ca, ffn, identifier]).")
    _check_lora(config, where)
    if config.block_range is not None and not 0 <= config.block_range[0] < config.block_range[1]:
        raise UserError(f"block_range {list(config.block_range)} is not [start, stop) with 0 <= start < stop",
                        where, "E.g. [0, 16] tunes the first 16 blocks.")
    if not config.placeholder.strip() or " " in config.placeholder:
        raise UserError(f"placeholder {config.placeholder!r} must be one word", where, "E.g. '<placeholder>'.")
    if config.teacher_source == "pool" and config.teacher_pool_size < config.distill_batch_size:
        raise UserError(f"teacher_pool_size {config.teacher_pool_size} is smaller than distill_batch_size "
                        f"{config.distill_batch_size}", where, "Make the pool at least one batch.")


def _check_lora(config: ARBoothConfig, where: str) -> None:
    if "lora" not in config.layers:
        return
    if not config.lora_parts:
        raise UserError("lora_parts is empty: LoRA would adapt nothing", where,
                        "List some of sa, ca, ffn (default: [ca, ffn]).")
    full = {"sa", "ca", "ffn"} if "all" in config.layers else set(config.layers) & {"sa", "ca", "ffn"}
    both = sorted(full & set(config.lora_parts))
    if both:
        raise UserError(f"{', '.join(both)} both fully tuned (layers) and adapted by LoRA (lora_parts)", where,
                        "Tune each block part one way: drop it from layers or from lora_parts.")
    if config.lora_alpha is not None and not config.lora_alpha > 0:
        raise UserError(f"lora_alpha is {config.lora_alpha}, must be positive", where, "null means = lora_rank.")
    if not config.lora_learning_rate >= 0:
        raise UserError(f"lora_learning_rate is {config.lora_learning_rate}, must be at least 0", where)


def lora_scale(config: ARBoothConfig) -> float:
    """alpha / rank, the factor of the LoRA update (1 with the default alpha = rank)."""
    return (config.lora_alpha if config.lora_alpha is not None else config.lora_rank) / config.lora_rank


def _at_least(config: ARBoothConfig, where: str, low: float, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if value < low:
            raise UserError(f"{name} is {value}, must be at least {low}", where)


def _in_range(config: ARBoothConfig, where: str, low: float, high: float, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not low <= value < high:
            raise UserError(f"{name} is {value}, must be in [{low}, {high})", where)


def quirk_settings(config: ARBoothConfig) -> dict[str, str]:
    """The quirk flags of `config` by field name (manifests, the benchmark's report)."""
    return {f.name: getattr(config, f.name) for f in fields(config) if f.name in QUIRKS}
