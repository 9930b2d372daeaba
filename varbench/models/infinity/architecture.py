"""Configs of the Infinity transformer, the BSQ tokenizer, and the named model sizes.

Sizes by name (`get_size`):
  "infinity-2b"   the released text-to-image model (infinity_2b_reg.pth), 2,204,564,032
                  parameters, with the d32reg tokenizer and Flan-T5-XL.
  "infinity-8b"   the 8B architecture (depth 40, width 3584, 28 heads); its release uses a
                  14-bit tokenizer with 2x2 spatial patchify, so tokens carry 56 bits.
  "infinity-tiny" depth 2, width 64, a tiny CNN tokenizer (stride 8) and a tiny T5: a
                  random-init stand-in for tests and the smoke protocol.
  "infinity-small" depth 4, width 128: a slightly larger CPU stand-in (benchmarks).
  "infinity-toyworld" depth 4, width 192, a 16-bit stride-4 tokenizer and a toy T5,
                  pretrained by varbench on its toyworld (varbench.toyworld.infinity).

Pure Python (no torch), so configs can be built and hashed without loading a model.
"""
from __future__ import annotations

from dataclasses import dataclass

from varbench.errors import UserError, did_you_mean


@dataclass(frozen=True)
class InfinityConfig:
    """Architecture of the Infinity transformer (names follow the released checkpoint)."""

    depth: int
    width: int
    num_heads: int
    block_chunks: int = 8  # blocks are registered as `block_chunks.{c}.module.{i}`
    mlp_ratio: float = 4.0
    text_channels: int = 2048  # T5 d_model
    text_max_tokens: int = 512  # rows of `cfg_uncond`
    text_pool_head_dim: int = 128  # head size of the attention pooling over T5 features
    token_bits: int = 32  # bits per token: word_embed input; the head predicts 2 logits per bit
    num_level_embeddings: int = 15  # rows of `lvl_embed` (one per scale)
    norm_eps: float = 1e-6
    drop_path_rate: float = 0.1  # training only; 0 -> rate linearly over depth
    text_drop_prob: float = 0.1  # training only: replace the text by `cfg_uncond`
    # Released-code quirk (1), ARBooth: `lvl_embed` is added before each of the block
    # chunks (8 times) instead of once before the first block. Default False = the
    # intended behaviour of the pretrained model; the ARBooth method sets True to be faithful.
    lvl_embed_every_chunk: bool = False

    def __post_init__(self) -> None:
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} is not divisible by {self.num_heads} heads")
        if self.head_dim % 4:
            raise ValueError(f"head_dim {self.head_dim} must be divisible by 4 (2D RoPE pairs)")
        if self.depth % self.block_chunks:
            raise ValueError(f"depth {self.depth} is not divisible into {self.block_chunks} chunks")
        if self.text_channels % self.text_pool_head_dim:
            raise ValueError("text_channels must be divisible by text_pool_head_dim")
        if self.width % self.text_pool_heads:
            raise ValueError("width must be divisible by the number of text pooling heads")

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    @property
    def ffn_hidden(self) -> int:
        return round(self.width * self.mlp_ratio / 256) * 256  # the release rounds to 256

    @property
    def text_pool_heads(self) -> int:
        return self.text_channels // self.text_pool_head_dim

    @property
    def blocks_per_chunk(self) -> int:
        return self.depth // self.block_chunks

    @property
    def num_logits(self) -> int:
        return 2 * self.token_bits


@dataclass(frozen=True)
class TokenizerConfig:
    """The BSQ tokenizer: a CNN autoencoder and a multi-scale binary spherical quantizer."""

    base_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 4, 4, 4)
    num_res_blocks: int = 2
    bits: int = 32  # latent channels = bits per token
    in_channels: int = 3

    @property
    def stride(self) -> int:
        """Pixels per latent cell: one 2x downsampling per level but the last."""
        return 2 ** (len(self.channel_mult) - 1)


@dataclass(frozen=True)
class ModelSize:
    """Everything that one named size fixes."""

    name: str
    transformer: InfinityConfig
    tokenizer: TokenizerConfig
    text_encoder: str  # "google/flan-t5-xl" or "tiny"
    default_schedule: tuple[str | int, float] = ("1M", 1.0)  # (size or number of scales, h/w)
    random_init_only: bool = False  # no published weights: numbers from it check the pipeline only
    notes: str = ""


_SIZES: dict[str, ModelSize] = {
    "infinity-2b": ModelSize(
        name="infinity-2b",
        transformer=InfinityConfig(depth=32, width=2048, num_heads=16),
        tokenizer=TokenizerConfig(),
        text_encoder="google/flan-t5-xl",
    ),
    "infinity-8b": ModelSize(
        name="infinity-8b",
        transformer=InfinityConfig(depth=40, width=3584, num_heads=28, token_bits=56),
        tokenizer=TokenizerConfig(channel_mult=(1, 2, 4, 4), bits=14),
        text_encoder="google/flan-t5-xl",
        notes="released with a 14-bit, stride-8 tokenizer and 2x2 spatial patchify (56 bits per "
              "token); constructible and loadable here, sampling needs the patchify path (not implemented).",
    ),
    "infinity-tiny": ModelSize(
        name="infinity-tiny",
        transformer=InfinityConfig(depth=2, width=64, num_heads=2, block_chunks=2, text_channels=32,
                                   text_max_tokens=64, text_pool_head_dim=16),
        tokenizer=TokenizerConfig(base_channels=32, channel_mult=(1, 1, 1, 1), num_res_blocks=1),
        text_encoder="tiny",
        default_schedule=(5, 1.0),  # 1, 2, 4, 6, 8 tokens per side: 121 tokens, 64x64 pixels
        random_init_only=True,
    ),
    "infinity-small": ModelSize(
        name="infinity-small",
        transformer=InfinityConfig(depth=4, width=128, num_heads=4, block_chunks=2, text_channels=32,
                                   text_max_tokens=64, text_pool_head_dim=16),
        tokenizer=TokenizerConfig(base_channels=32, channel_mult=(1, 1, 1, 1), num_res_blocks=1),
        text_encoder="tiny",
        default_schedule=(7, 1.0),  # up to 16x16 tokens, 128x128 pixels
        random_init_only=True,
    ),
    # Sizes and their reasons: varbench/toyworld/infinity.py. No drop path: a 3 M model on an
    # unlimited world does not overfit (ARBooth sets its own rate for fine-tuning).
    "infinity-toyworld": ModelSize(
        name="infinity-toyworld",
        transformer=InfinityConfig(depth=4, width=192, num_heads=4, block_chunks=2, text_channels=64,
                                   text_max_tokens=64, text_pool_head_dim=16, token_bits=16, drop_path_rate=0.0),
        tokenizer=TokenizerConfig(base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, bits=16),
        text_encoder="toyworld-t5",
        default_schedule=(7, 1.0),  # 1, 2, 4, 6, 8, 12, 16 tokens per side; stride 4: 64x64 pixels
        notes="pretrained by varbench on the toyworld; read from the toyworld weights folder (infinity/)",
    ),
}


def size_names() -> list[str]:
    return list(_SIZES)


def get_size(name: str) -> ModelSize:
    """The named model size; unknown names fail with close matches."""
    if name not in _SIZES:
        raise UserError(f"unknown Infinity size {name!r}", "model size",
                        f"Use one of {', '.join(_SIZES)}." + did_you_mean(name, _SIZES))
    return _SIZES[name]
