"""Text conditioning: the Flan-T5-XL encoder (or a tiny random T5) and the placeholder hook.

`TextEncoder.encode(prompts)` returns `TextFeatures`: the encoder's last hidden states,
fp32, padded to the longest prompt of the batch, with per-sample lengths (the EOS token
included, as in the release). Padding to the batch's longest prompt instead of 512 gives
the same features for every real token (T5 masks padded keys) at a fraction of the cost.

Placeholder hook (used by the VAR method): a prompt may contain a placeholder token
("a photo of <placeholder> dog"). `encode(..., placeholder="<placeholder>",
placeholder_vectors=V)` runs T5 with the placeholder as one new token and then replaces
T5's single output vector at that position by the K rows of V (K = 4 in the release),
so that sample's sequence grows by K - 1; gradients flow into V. The placeholder is
added to the tokenizer on first use; T5's input embedding table has spare rows (32,128
rows for 32,100 sentencepiece tokens), so the new token id needs no resize.

The real tokenizer and encoder load from the hub cache (or a local folder) through
`varbench.weights.resolve_snapshot`; the tiny ones are built in code, deterministic.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from varbench.errors import UserError

FLAN_T5_XL = "google/flan-t5-xl"
FLAN_T5_XL_REVISION = "7d6315df2c2fb742f0f5b556879d730926ca9001"  # the snapshot the Infinity scripts name
FLAN_T5_FILES = ["*.json", "spiece.model", "model*.safetensors"]
TINY = "tiny"
RANDOM = "random"  # the real architecture with random weights (rehearsals: timings, memory)
# google/flan-t5-xl's config.json: the architecture the random stand-in builds
FLAN_T5_XL_ARCHITECTURE = {"d_model": 2048, "d_ff": 5120, "d_kv": 64, "num_heads": 32, "num_layers": 24,
                           "vocab_size": 32128, "feed_forward_proj": "gated-gelu",
                           "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128}
DEFAULT_PLACEHOLDER = "<placeholder>"


@dataclass
class TextFeatures:
    """Encoded prompts: features (B, Lt, C) fp32, zero past each sample's length."""

    features: torch.Tensor
    lengths: tuple[int, ...]

    @property
    def batch_size(self) -> int:
        return self.features.shape[0]

    @property
    def mask(self) -> torch.Tensor | None:
        """(B, Lt) bool, True at real tokens; None when no sample is padded."""
        width = self.features.shape[1]
        if all(n == width for n in self.lengths):
            return None
        lengths = torch.tensor(self.lengths, device=self.features.device)
        return torch.arange(width, device=self.features.device)[None, :] < lengths[:, None]

    def to(self, device: torch.device | str) -> TextFeatures:
        return TextFeatures(self.features.to(device), self.lengths)

    def select(self, indices: Sequence[int]) -> TextFeatures:
        """A sub-batch, trimmed to its own longest prompt."""
        lengths = tuple(self.lengths[i] for i in indices)
        index = torch.tensor(list(indices), device=self.features.device)
        return TextFeatures(self.features[index, :max(lengths)], lengths)

    @staticmethod
    def cat(parts: Sequence[TextFeatures]) -> TextFeatures:
        """Concatenate batches, padding to the longest prompt."""
        width = max(p.features.shape[1] for p in parts)
        padded = [torch.nn.functional.pad(p.features, (0, 0, 0, width - p.features.shape[1])) for p in parts]
        return TextFeatures(torch.cat(padded), tuple(n for p in parts for n in p.lengths))


class TextEncoder:
    """A T5 tokenizer + encoder pair with the placeholder hook."""

    def __init__(self, tokenizer, model, name: str, max_length: int = 512):
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self.name = name
        self.max_length = max_length

    @property
    def channels(self) -> int:
        return self.model.config.d_model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TextEncoder:
        self.model.to(device=device, dtype=dtype)
        return self

    def placeholder_id(self, placeholder: str) -> int:
        """Id of `placeholder`, adding it to the tokenizer as one special token if new."""
        from tokenizers import AddedToken

        if placeholder not in self.tokenizer.get_vocab():
            self.tokenizer.add_tokens([AddedToken(placeholder, special=True, normalized=False)],
                                      special_tokens=True)
        token_id = self.tokenizer.convert_tokens_to_ids(placeholder)
        rows = self.model.get_input_embeddings().weight.shape[0]
        if token_id >= rows:
            raise UserError(f"placeholder id {token_id} exceeds the {rows} rows of the T5 embedding",
                            self.name, "Use fewer added tokens.")
        return token_id

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, list[int]]:
        """Token ids (B, Lt) on the CPU, padded to the longest prompt, and the lengths."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, not one string")
        tokens = self.tokenizer(list(prompts), max_length=self.max_length, padding="longest",
                                truncation=True, return_tensors="pt")
        return tokens.input_ids, tokens.attention_mask.sum(dim=1).tolist()

    def encode(self, prompts: Sequence[str], placeholder: str | None = None,
               placeholder_vectors: torch.Tensor | None = None) -> TextFeatures:
        """Encode prompts; see the module docstring for the placeholder hook."""
        if placeholder is None and placeholder_vectors is not None:
            raise ValueError("placeholder_vectors given without the placeholder string they replace")
        if placeholder is not None:
            self.placeholder_id(placeholder)  # make sure the tokenizer knows it
        ids, lengths = self.tokenize(prompts)
        mask = torch.arange(ids.shape[1])[None, :] < torch.tensor(lengths)[:, None]
        device = self.device
        with torch.no_grad():
            hidden = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        features = hidden.float() * mask.to(device)[:, :, None]  # zero past each length
        if placeholder is None or placeholder_vectors is None:
            return TextFeatures(features, tuple(lengths))
        return replace_placeholder(features, ids, lengths, self.placeholder_id(placeholder), placeholder_vectors)


def replace_placeholder(features: torch.Tensor, ids: torch.Tensor, lengths: Sequence[int], token_id: int,
                        vectors: torch.Tensor) -> TextFeatures:
    """Replace the output vector at every `token_id` position by the K rows of `vectors`."""
    vectors = vectors.to(device=features.device, dtype=features.dtype)
    if vectors.dim() != 2 or vectors.shape[1] != features.shape[2]:
        raise ValueError(f"placeholder vectors must be (K, {features.shape[2]}), got {tuple(vectors.shape)}")
    rows, new_lengths = [], []
    for b, length in enumerate(lengths):
        positions = (ids[b, :length] == token_id).nonzero().flatten().tolist()  # ids live on the CPU
        pieces, previous = [], 0
        for p in positions:
            pieces += [features[b, previous:p], vectors]
            previous = p + 1
        pieces.append(features[b, previous:length])
        row = torch.cat(pieces)
        rows.append(row)
        new_lengths.append(row.shape[0])
    padded = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    return TextFeatures(padded, tuple(new_lengths))


# ---- loading ------------------------------------------------------------------------------
def load_text_encoder(name: str = FLAN_T5_XL, device: torch.device | str = "cpu", local: str | Path | None = None,
                      revision: str | None = None, dtype: torch.dtype | None = None) -> TextEncoder:
    """Flan-T5-XL from the hub cache / a local folder (fp16 on GPU, fp32 on CPU), or "tiny"."""
    if name == TINY:
        return build_tiny_text_encoder().to(device)
    from transformers import AutoTokenizer, T5EncoderModel
    from transformers.utils import logging as transformers_logging

    from varbench.weights import resolve_snapshot

    transformers_logging.disable_progress_bar()  # a tqdm bar per cell in run logs; varbench draws its own

    if revision is None and name == FLAN_T5_XL:
        revision = FLAN_T5_XL_REVISION
    folder = resolve_snapshot(name, revision, local, allow_patterns=FLAN_T5_FILES)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = T5EncoderModel.from_pretrained(folder)
    except (OSError, ValueError) as err:
        hint = f"Download it with 'hf download {name}' or pass a complete local folder."
        raise UserError(f"cannot load the T5 encoder: {err}".split("\n")[0], str(folder), hint) from None
    if dtype is None:
        dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    return TextEncoder(tokenizer, model, name).to(device, dtype)


def build_random_text_encoder(device: torch.device | str = "cpu", seed: int = 0) -> TextEncoder:
    """Flan-T5-XL's architecture with random weights, built on `device` (fp16 on GPU).

    The tokenizer is the small offline one: it changes which ids a prompt becomes, not the
    cost of encoding it. The name records that nothing here is the published encoder."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(**FLAN_T5_XL_ARCHITECTURE, dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
                      decoder_start_token_id=0)
    dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    with torch.random.fork_rng(devices=[]), torch.device(device):  # built in place: 1.2 B parameters
        torch.manual_seed(seed)
        model = T5EncoderModel(config).to(dtype)
    return TextEncoder(tiny_tokenizer(), model, f"{FLAN_T5_XL} ({RANDOM} weights)")


# ---- the tiny stand-in -------------------------------------------------------------------
_TINY_WORDS = """a an the of in on with and from at to by near under over top front behind inside
photo picture image dog cat toy vase teapot clock barn statue plushy plushie teddybear sunglasses
backpack bear bowl can candle boot sneaker glasses cartoon robot duck monster sloth wolf car
jungle snow beach city street mountain forest floor rug grass field water ocean road sidewalk
house tower bridge moon galaxy rainbow sunset autumn leaves tree flower sunflowers wheat dirt
cobblestone wooden red pink blue purple green yellow white black grey brown shiny wet fancy
colorful beautiful modern japanese new york eiffel santa hat shirt scarf outfit chef police
firefighter wizard sailor angel cube shaped floating background living room kitchen table
luxurious crowded distant milk poop emoji rc unique token class format it wearing among around""".split()
_TINY_CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789.,'!?-")
_TINY_SPARE_ROWS = 28  # like T5: room to add tokens (the placeholder) without resizing


def tiny_tokenizer():
    """A deterministic word-piece tokenizer: common prompt words whole, anything else by
    characters; lower-cased; appends EOS like T5. Built offline, no files."""
    return word_piece_tokenizer(_TINY_WORDS, _TINY_CHARS)


def word_piece_tokenizer(words: list[str], characters: list[str]):
    """A T5-style fast tokenizer over a WordPiece vocabulary: `words` whole, anything else
    by `characters`; lower-cased; EOS appended; ids 0-2 are pad, EOS, unknown."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for piece in words + characters + ["##" + c for c in characters]:
        vocab.setdefault(piece, len(vocab))
    core = Tokenizer(models.WordPiece(vocab, unk_token="<unk>", max_input_chars_per_word=64))
    core.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                        special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=64)


def build_tiny_text_encoder(seed: int = 0, d_model: int = 32) -> TextEncoder:
    """A 2-layer T5 encoder (d_model 32) with deterministic random weights."""
    from transformers import T5Config, T5EncoderModel

    tokenizer = tiny_tokenizer()
    config = T5Config(vocab_size=len(tokenizer) + _TINY_SPARE_ROWS, d_model=d_model, d_kv=8, d_ff=64,
                      num_layers=2, num_heads=4, relative_attention_num_buckets=8,
                      relative_attention_max_distance=32, feed_forward_proj="gated-gelu",
                      dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    model = T5EncoderModel(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # our own init: values independent of the transformers version
        for name, tensor in sorted(model.named_parameters()):
            if "layer_norm" in name:
                tensor.fill_(1.0)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * (0.5 if "shared" in name else 0.1))
    return TextEncoder(tokenizer, model, TINY, max_length=64)
