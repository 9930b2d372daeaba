"""The toyworld's Infinity: the Infinity-2B classes (BSQ tokenizer, Infinity transformer, a
T5 text encoder) at toy size, pretrained on the toyworld (train_infinity.py) and loaded by
the ARBooth method as `model: infinity-toyworld`, through the same loaders as the real
files (`load_transformer_noting`, `load_vae`, `load_text_encoder` with local paths) after
the folder is checked against the toyworld manifest (`backbones.folder_path("infinity")`).

    part          toy size ("infinity-toyworld")                       real Infinity-2B
    tokenizer     BSQ CNN autoencoder, stride 4, channels (32, 64, 64),  stride 16, 128 ... 512,
                  16 bits per token (64 px -> 16x16 tokens)             32 bits (1024 px -> 64x64)
    scales        1, 2, 4, 6, 8, 12, 16 tokens per side (521 tokens)    13 scales up to 64 (10,521)
    transformer   depth 4, width 192, 4 heads, 2 block chunks           depth 32, width 2048, 16 heads
    text encoder  T5 encoder, width 64, 4 layers, a WordPiece vocabulary Flan-T5-XL, width 2048, 24
                  in which every world word is one token                layers, SentencePiece

Why these sizes. The stride is 4 rather than 16 (or the tiny size's 8) for the reason the
toy SD's VAE has stride 4: a 64 px subject's colours, patterns and parts must survive in
its tokens, and stride 8 would leave an 8x8 grid; the 16x16 grid then takes the first
seven scales of the square schedule, so `schedule_for_pixels(64, 64, 4)` finds it.
16 bits per 4x4 pixel patch carry more per pixel than the real 32 bits per 16x16 patch,
and halve the bits the transformer must predict. The widths keep the whole model at 7.7 MiB
in fp16 (the shipped-weights budget is shared with CLIP, DINO and the toy SD):
transformer 2.80 M parameters (5.6 MB), tokenizer 0.93 M (1.9 MB), T5 0.28 M (0.6 MB).

Files, in `<toyworld weights folder>/infinity/` (fp16; the loaders give fp32 back):
    transformer.safetensors   the Infinity state dict (keys as the released checkpoint's)
    vae.safetensors           the BSQ tokenizer without its constant bit-weight buffer
    text_encoder/             a transformers T5 encoder folder with its tokenizer
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from varbench.toyworld.diffusion import world_words

SIZE = "infinity-toyworld"
TEXT_ENCODER = "toyworld-t5"  # the size's `text_encoder`: the name the loaded encoder carries
BACKBONE = "infinity"  # its entry in backbones.FOLDERS
TRANSFORMER_FILE, VAE_FILE, TEXT_FOLDER = "transformer.safetensors", "vae.safetensors", "text_encoder"
RESOLUTION = 64  # pixels: the toyworld's pictures

# Flan-T5's layout (gated GELU, relative position buckets) at toy width; dropout off, so a
# training step's randomness is the step's own (train_infinity.py).
TEXT = dict(d_model=64, d_kv=16, d_ff=256, num_layers=4, num_heads=4, relative_attention_num_buckets=16,
            relative_attention_max_distance=32, feed_forward_proj="gated-gelu", dropout_rate=0.0)
CHARACTERS = list("abcdefghijklmnopqrstuvwxyz0123456789.,'!?-")  # words outside the world go by letters
SPARE_ROWS = 28  # like T5: embedding rows for added tokens (ARBooth's placeholder) without a resize


@dataclass
class ToyInfinity:
    """The three parts of the toy Infinity."""

    transformer: Any  # varbench.models.infinity.transformer.Infinity
    vae: Any  # varbench.models.infinity.bsq.BSQTokenizer
    text_encoder: Any  # varbench.models.infinity.text.TextEncoder

    def to(self, device: torch.device | str) -> ToyInfinity:
        self.transformer.to(device)
        self.vae.to(device)
        self.text_encoder.to(device)
        return self


def toyworld_t5_tokenizer() -> Any:
    """A WordPiece tokenizer whose every world word is one token (others by characters),
    lower-cased, appending EOS as T5's does (`text.word_piece_tokenizer`), offline."""
    from varbench.models.infinity.text import word_piece_tokenizer

    return word_piece_tokenizer(world_words(), CHARACTERS)


def random_text_encoder(seed: int = 0, name: str = TEXT_ENCODER) -> Any:
    """The toy T5 encoder with T5's own initialisation, drawn from `seed`; `name`: what it
    calls itself (the ARBooth base names random weights so)."""
    from transformers import T5Config, T5EncoderModel

    from varbench.models.infinity.text import TextEncoder

    tokenizer = toyworld_t5_tokenizer()
    config = T5Config(vocab_size=len(tokenizer) + SPARE_ROWS, pad_token_id=0, eos_token_id=1,
                      decoder_start_token_id=0, **TEXT)
    with torch.random.fork_rng(devices=[]):  # the caller's global generator stays as it was
        torch.manual_seed(seed)
        model = T5EncoderModel(config)
    return TextEncoder(tokenizer, model, name, max_length=64)


def random_infinity(seed: int = 0) -> ToyInfinity:
    """The toy Infinity, random-initialised from `seed` by the real builders (what
    pretraining starts from)."""
    from varbench.models.infinity.factory import build_infinity, build_vae

    return ToyInfinity(build_infinity(SIZE, seed=seed), build_vae(SIZE, seed=seed), random_text_encoder(seed))


def save_infinity(parts: ToyInfinity, folder: Path) -> None:
    """Write the three parts into `folder` as fp16 (module docstring), the models untouched."""
    from safetensors.torch import save_file
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # transformers 5 draws a bar per saved model
    folder.mkdir(parents=True, exist_ok=True)
    # the bit-weight buffer is a constant saved under two aliases (bsq.py); `load_vae` restores it
    vae_state = {k: v for k, v in parts.vae.state_dict().items() if not k.endswith("lfq.mask")}
    save_file(_half(parts.transformer.state_dict()), str(folder / TRANSFORMER_FILE), metadata={"size": SIZE})
    save_file(_half(vae_state), str(folder / VAE_FILE), metadata={"size": SIZE})
    text = parts.text_encoder
    text.model.save_pretrained(str(folder / TEXT_FOLDER), state_dict=_half(text.model.state_dict()),
                               safe_serialization=True)
    text.tokenizer.save_pretrained(str(folder / TEXT_FOLDER))


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: (value.detach().to("cpu", torch.float16) if value.is_floating_point() else value.detach().cpu())
            .contiguous() for key, value in state.items()}


@dataclass(frozen=True)
class WeightPaths:
    transformer: Path
    vae: Path
    text_encoder: Path


def weight_paths() -> WeightPaths:
    """The trained parts in the toyworld weights folder, every file checked against its
    manifest first (a missing or changed folder is one clear `UserError`)."""
    from varbench.toyworld.backbones import folder_path

    folder = folder_path(BACKBONE)
    return WeightPaths(folder / TRANSFORMER_FILE, folder / VAE_FILE, folder / TEXT_FOLDER)

