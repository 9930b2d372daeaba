"""The Infinity transformer: text-conditioned next-scale prediction of bit tokens.

Read top to bottom:
  * `Condition`  the per-batch text condition (pooled vector, shared AdaLN, text tokens);
  * `Block`      self-attention (cosine + 2D RoPE, block-causal), cross-attention to the
                 text, FFN; AdaLN shared across blocks plus a per-block `ada_gss`;
  * `Infinity`   the whole model. Parameter names equal the released checkpoint keys, so
                 `infinity_2b_reg.pth` loads with a plain strict `load_state_dict`, and
                 trainable tensors can be picked by name (`block_chunks.*.module.*.ca.*`).

Sequence layout: the tokens of all scales, coarse to fine, flattened row-major per scale;
token 0 is the SOS (pooled text + `pos_start`). The input of the tokens of scale k >= 2
is `word_embed` of the running sum of codes of scales < k, resized to scale k's grid
(see `bsq.py` and `sampler.py`).

Outputs are logits shaped (B, L, 2 * token_bits): `logits.view(B, L, token_bits, 2)`
gives, for every bit, the logits of the values 0 and 1 (`bit_logits`).

dtype policy: top-level modules (text path, embeddings, head) stay fp32 and run without
autocast; blocks may be bf16 (`cast_blocks`) and run in their weight dtype or the
autocast dtype; the residual stream and all norms are fp32, as in the release.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from varbench.errors import UserError
from varbench.models.infinity.architecture import InfinityConfig
from varbench.models.infinity.layers import (AdaLNBeforeHead, CrossAttention, FeedForward, KVCache, RMSNorm,
                                             SelfAttention, TextAttentivePool, drop_path_scale, modulate)
from varbench.models.infinity.rope import RopeCache
from varbench.models.infinity.schedule import ScaleSchedule


@dataclass
class Condition:
    """Text condition of a batch (computed once; reused by every scale and block)."""

    pooled: torch.Tensor  # (B, C) fp32: the SOS base and the AdaLN input ("cond_BD")
    ada: torch.Tensor  # (B, 1, 6, C) fp32: shared AdaLN output, before each block's ada_gss
    text: torch.Tensor | None  # (B, Lt, C) fp32: projected T5 tokens (cross-attention input);
    #                            None only where every block's keys/values are precomputed
    text_mask: torch.Tensor | None  # (B, Lt) bool, True = real token; None = no padding

    @property
    def batch_size(self) -> int:
        return self.pooled.shape[0]

    def select(self, index: torch.Tensor | slice) -> Condition:
        mask = None if self.text_mask is None else self.text_mask[index]
        text = None if self.text is None else self.text[index]
        return Condition(self.pooled[index], self.ada[index], text, mask)

    def detach(self) -> Condition:
        text = None if self.text is None else self.text.detach()
        return Condition(self.pooled.detach(), self.ada.detach(), text, self.text_mask)


def bit_logits(logits: torch.Tensor) -> torch.Tensor:
    """(B, L, 2*bits) -> (B, L, bits, 2): per bit, the logits of 0 and 1."""
    return logits.view(*logits.shape[:-1], -1, 2)


class Block(nn.Module):
    """x += SA(AdaLN(x)) * g1;  x += CA(ca_norm(x), text);  x += FFN(AdaLN(x)) * g2."""

    def __init__(self, config: InfinityConfig, drop_path_rate: float):
        super().__init__()
        width = config.width
        self.eps = config.norm_eps
        self.drop_path_rate = drop_path_rate
        self.ada_gss = nn.Parameter(torch.randn(1, 1, 6, width) / width**0.5)
        self.sa = SelfAttention(width, config.num_heads)
        self.ca = CrossAttention(width, config.num_heads)
        self.ffn = FeedForward(width, config.ffn_hidden)
        self.ca_norm = nn.LayerNorm(width, eps=config.norm_eps)

    def forward(self, x: torch.Tensor, ada: torch.Tensor, text_kv: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
                text_mask: torch.Tensor | None, rope: torch.Tensor, spans: tuple[tuple[int, int, int], ...],
                cache: KVCache | None = None, cache_start: int = 0) -> torch.Tensor:
        """x (B, n, C) fp32. `text_kv`: this block's precomputed (k, v), or the projected
        text (B, Lt, C) to compute them from. `spans`/`cache`: see SelfAttention."""
        drop_scales = self._drop_path_scales(x)
        return self.body(x, ada, text_kv, text_mask, rope, spans, cache, cache_start, drop_scales)

    def body(self, x: torch.Tensor, ada: torch.Tensor, text_kv: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
             text_mask: torch.Tensor | None, rope: torch.Tensor, spans: tuple[tuple[int, int, int], ...],
             cache: KVCache | None, cache_start: int,
             drop_scales: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """The block, given its stochastic-depth scales: a function of its inputs and
        weights alone (no random draws, no per-block numbers), the same code for every block."""
        if torch.is_tensor(text_kv):
            text_kv = self.ca.text_kv(text_kv)
        sa_drop, ffn_drop = drop_scales if drop_scales is not None else (None, None)
        gamma1, gamma2, scale1, scale2, shift1, shift2 = (self.ada_gss.float() + ada).unbind(2)
        h = self.sa(modulate(x, scale1, shift1, self.eps), rope, spans, cache, cache_start)
        x = _residual(x, h, gamma1, sa_drop)
        normed = F.layer_norm(x, (x.shape[-1],), self.ca_norm.weight.float(), self.ca_norm.bias.float(), self.eps)
        x = x + self.ca(normed, text_kv, text_mask)  # fp32 + (bf16 or fp32) -> fp32
        h = self.ffn(modulate(x, scale2, shift2, self.eps))
        return _residual(x, h, gamma2, ffn_drop)

    def _drop_path_scales(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Stochastic depth of the two residual branches: per sample 0 or 1/keep (drawn in
        branch order, from torch's global generator), or None when nothing is dropped."""
        if not (self.training and self.drop_path_rate > 0):
            return None
        return drop_path_scale(x.shape[0], self.drop_path_rate, x.device), \
            drop_path_scale(x.shape[0], self.drop_path_rate, x.device)


def _residual(x: torch.Tensor, branch: torch.Tensor, gamma: torch.Tensor, drop: torch.Tensor | None) -> torch.Tensor:
    """x + branch * gamma (* drop), in fp32 (one fused kernel when nothing is dropped)."""
    if drop is not None:
        return x + branch.float() * gamma * drop
    return torch.addcmul(x, branch, gamma)


class BlockChunk(nn.Module):
    """A group of consecutive blocks; exists so that keys read `block_chunks.{c}.module.{i}`."""

    def __init__(self, blocks: list[Block]):
        super().__init__()
        self.module = nn.ModuleList(blocks)


class Infinity(nn.Module):
    def __init__(self, config: InfinityConfig):
        super().__init__()
        self.config = config
        width, ct5 = config.width, config.text_channels
        self.cfg_uncond = nn.Parameter(torch.zeros(config.text_max_tokens, ct5))  # learned null text
        self.pos_start = nn.Parameter(torch.zeros(1, 1, width))
        self.text_norm = RMSNorm(ct5, eps=config.norm_eps)
        self.text_proj_for_sos = TextAttentivePool(width, ct5, config.text_pool_heads)
        self.text_proj_for_ca = nn.Sequential(nn.Linear(ct5, width), nn.GELU(approximate="tanh"),
                                              nn.Linear(width, width))
        self.lvl_embed = nn.Embedding(config.num_level_embeddings, width)
        self.word_embed = nn.Linear(config.token_bits, width)
        self.shared_ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        self.head_nm = AdaLNBeforeHead(width, width, eps=config.norm_eps)
        self.head = nn.Linear(width, config.num_logits)
        rates = torch.linspace(0, config.drop_path_rate, config.depth, device="cpu").tolist()
        blocks = [Block(config, rate) for rate in rates]
        per = config.blocks_per_chunk
        self.block_chunks = nn.ModuleList(BlockChunk(blocks[c * per:(c + 1) * per])
                                          for c in range(config.block_chunks))
        self.rope = RopeCache()
        self._level_cache: dict[tuple, torch.Tensor] = {}  # see _level_indices

    @property
    def blocks(self) -> list[Block]:
        return [block for chunk in self.block_chunks for block in chunk.module]

    def cast_blocks(self, dtype: torch.dtype) -> Infinity:
        """Store the blocks (99% of the weights) in `dtype`; top-level modules stay fp32."""
        for chunk in self.block_chunks:
            chunk.to(dtype)
        return self

    # ---- text condition -------------------------------------------------------------
    def condition(self, features: torch.Tensor, mask: torch.Tensor | None = None,
                  drop: torch.Tensor | None = None) -> Condition:
        """T5 features (B, Lt, Ct5) (+ key mask) -> Condition.

        `drop` (B,) bool replaces a sample's text by the learned null text `cfg_uncond`
        (same length), as classifier-free guidance training does. When None and the
        model is in training mode, each sample is dropped with `config.text_drop_prob`.
        """
        batch, length = features.shape[:2]
        if length > self.config.text_max_tokens:
            raise UserError(f"prompt has {length} text tokens, the model takes at most "
                            f"{self.config.text_max_tokens}", "text encoder", "Shorten the prompt.")
        with torch.autocast(features.device.type, enabled=False):
            features = features.float()
            if drop is None and self.training and self.config.text_drop_prob > 0:
                drop = torch.rand(batch, device=features.device) < self.config.text_drop_prob
            if drop is not None:
                null = self.cfg_uncond[:length].float().unsqueeze(0)
                features = torch.where(drop.to(features.device)[:, None, None], null, features)
            normed = self.text_norm(features)
            pooled = self.text_proj_for_sos(normed, mask)
            text = self.text_proj_for_ca(normed)
            ada = self.shared_ada_lin(pooled).view(batch, 1, 6, -1)
        return Condition(pooled, ada, text, mask)

    # ---- pieces shared by teacher forcing and sampling --------------------------------
    def sos(self, cond: Condition) -> torch.Tensor:
        """(B, 1, C): the first token, pooled text + pos_start."""
        return cond.pooled.unsqueeze(1) + self.pos_start.float()

    def embed_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, n, token_bits) accumulated codes -> (B, n, C)."""
        with torch.autocast(inputs.device.type, enabled=False):
            return self.word_embed(inputs.float())

    def logits(self, x: torch.Tensor, cond: Condition) -> torch.Tensor:
        """Hidden states (B, n, C) -> logits (B, n, 2*token_bits), fp32."""
        with torch.autocast(x.device.type, enabled=False):
            return self.head(self.head_nm(x.float(), cond.pooled.float()))

    def run_blocks(self, x: torch.Tensor, cond: Condition, level: torch.Tensor, rope: torch.Tensor,
                   spans: tuple[tuple[int, int, int], ...], text_kvs: list | None = None,
                   caches: list[KVCache] | None = None, cache_start: int = 0,
                   checkpointing: bool | int = False) -> torch.Tensor:
        """All blocks, adding the level embedding `level` ((n, C) or (C,)) once before the
        first chunk, or before every chunk if `config.lvl_embed_every_chunk` (quirk 1).

        `checkpointing`: True recomputes every block in the backward pass, an int n only
        the first n blocks (the others keep their activations: faster, more memory)."""
        blocks_per_chunk = self.config.blocks_per_chunk
        checkpointed = checkpointed_blocks(checkpointing, self.config.depth)
        for index, block in enumerate(self.blocks):
            if index == 0 or (self.config.lvl_embed_every_chunk and index % blocks_per_chunk == 0):
                x = x + level
            text_kv = cond.text if text_kvs is None else text_kvs[index]
            cache = None if caches is None else caches[index]
            if index < checkpointed and torch.is_grad_enabled():
                x = checkpoint(block, x, cond.ada, text_kv, cond.text_mask, rope, spans, cache, cache_start,
                               use_reentrant=False)
            else:
                x = block(x, cond.ada, text_kv, cond.text_mask, rope, spans, cache, cache_start)
        return x

    # ---- teacher-forced (training) forward -------------------------------------------
    def forward(self, cond: Condition, inputs: torch.Tensor | None, schedule: ScaleSchedule,
                checkpointing: bool | int = False) -> torch.Tensor:
        """Logits (B, L, 2*token_bits) of all L tokens of `schedule`, block-causal.

        `inputs` (B, L - 1, token_bits): the inputs of every token after the SOS, i.e. per
        scale k >= 2 the running code sum of scales < k resized to scale k (from
        `BSQTokenizer.quantize` or a sampler's `inputs`). `checkpointing` recomputes each
        block (True) or the first n blocks (an int) in the backward pass (activation
        checkpointing) to save memory.
        """
        length = schedule.num_tokens
        x = self.sos(cond)
        if length > 1:
            if inputs is None or inputs.shape[1] != length - 1 or inputs.shape[2] != self.config.token_bits:
                got = None if inputs is None else tuple(inputs.shape)
                raise ValueError(f"inputs must be (B, {length - 1}, {self.config.token_bits}), got {got}")
            x = torch.cat([x, self.embed_inputs(inputs)], dim=1)
        level = self.lvl_embed(self._level_indices(schedule, x.device)).float()
        rope = self.rope.get(schedule, self.config.head_dim, x.device)
        spans = tuple((start, end, end) for start, end in schedule.bounds())
        x = self.run_blocks(x, cond, level, rope, spans, checkpointing=checkpointing)
        return self.logits(x, cond)

    def _level_indices(self, schedule: ScaleSchedule, device: torch.device) -> torch.Tensor:
        """Scale index of every token, cached per (schedule, device): building it from a
        Python list at every forward would copy it to the GPU and wait for queued work."""
        key = (schedule.scales, str(device))
        if key not in self._level_cache:
            self._level_cache[key] = torch.tensor(schedule.scale_of_token(), device=device)
        return self._level_cache[key]

    # ---- initialisation ----------------------------------------------------------------
    @torch.no_grad()
    def init_random(self, seed: int = 0) -> Infinity:
        """Deterministic random weights (for tests, smoke runs and benchmarks)."""
        device = self.pos_start.device
        generator = torch.Generator(device=device).manual_seed(seed)
        width = self.config.width
        small = math.sqrt(1 / width / 3)
        for name, tensor in self.named_parameters():
            if name.endswith("bias") or name.endswith("_bias"):
                tensor.zero_()
            elif name.endswith("scale_mul_1H11"):
                tensor.fill_(math.log(4.0))
            elif name.endswith("norm.weight") or name == "text_norm.weight":
                tensor.fill_(1.0)
            elif name == "cfg_uncond":
                _normal(tensor, 1.2 / math.sqrt(self.config.text_channels), generator)
            elif name.endswith("ada_gss"):
                _normal(tensor, 1 / math.sqrt(width), generator)
            elif name in ("pos_start", "lvl_embed.weight") or name.endswith("mat_q") and tensor.dim() == 3:
                _normal(tensor, small, generator)
            else:
                _normal(tensor, 0.02, generator)
        return self


def checkpointed_blocks(checkpointing: bool | int, depth: int) -> int:
    """How many leading blocks `checkpointing` (True, False or a count) recomputes."""
    if isinstance(checkpointing, bool):
        return depth if checkpointing else 0
    if checkpointing < 0:
        raise ValueError(f"checkpointing must be a bool or a block count >= 0, got {checkpointing}")
    return min(int(checkpointing), depth)


def _normal(tensor: torch.Tensor, std: float, generator: torch.Generator) -> None:
    """Normal(0, std) truncated at 2 std, drawn from `generator`."""
    tensor.normal_(0.0, std, generator=generator).clamp_(-2 * std, 2 * std)
