"""New words for the text encoder: Custom Diffusion's `<new1>` and Textual Inversion's
`<placeholder>`.

A new token gets a row in the embedding table. Both releases train the whole table and
then zero the other rows' gradients (Custom Diffusion) or restore them after every step
(Textual Inversion). Here the table stays frozen and the new rows are separate fp32
parameters spliced in during the forward pass (`TokenEmbeddingWithNewRows`): the same
trained values, the exact parameter count, and no 49408 x 768 optimizer state. After
fitting, the vectors are written into the table, so the plain diffusers pipeline (and
`load_textual_inversion` on the saved file) sees an ordinary vocabulary entry.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from varbench.errors import UserError
from varbench.models.diffusion import DiffusionComponents

EMBEDS_FILE = "learned_embeds.safetensors"  # diffusers' Textual Inversion file name


class TokenEmbeddingWithNewRows(torch.nn.Module):
    """The token embedding table with the rows of `token_ids` replaced by trainable vectors."""

    def __init__(self, table: torch.nn.Embedding, token_ids: list[int], initial: torch.Tensor):
        super().__init__()
        self.table = table
        self.token_ids = list(token_ids)
        self.vectors = torch.nn.Parameter(initial.detach().float().clone().reshape(len(token_ids), -1))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        embeds = self.table(input_ids)
        for row, token_id in enumerate(self.token_ids):
            is_new = (input_ids == token_id).unsqueeze(-1)
            embeds = torch.where(is_new, self.vectors[row].to(embeds.dtype), embeds)
        return embeds


def add_token(components: DiffusionComponents, token: str) -> int:
    """Add `token` to the tokenizer (reused if already there) and grow the embedding table
    when the new id does not fit; returns the token id."""
    tokenizer, text_encoder = components.tokenizer, components.text_encoder
    tokenizer.add_tokens(token)
    token_id = int(tokenizer.convert_tokens_to_ids(token))
    if token_id >= text_encoder.get_input_embeddings().num_embeddings:
        options = {}
        # The new row is overwritten anyway; newer transformers would otherwise fit a
        # Gaussian to the whole table (slow, and it draws from the global RNG).
        if "mean_resizing" in inspect.signature(text_encoder.resize_token_embeddings).parameters:
            options["mean_resizing"] = False
        text_encoder.resize_token_embeddings(len(tokenizer), **options)
    return token_id


def initial_vector(components: DiffusionComponents, words: str, where: str) -> torch.Tensor:
    """The mean embedding of the tokens of `words` (one token for 'dog' or 'ktn'; a mean
    for multi-token class nouns such as 'stuffed animal'), in fp32."""
    ids = components.tokenizer(words, add_special_tokens=False).input_ids
    if not ids:
        raise UserError(f"initializer text {words!r} has no tokens", where, "Use a non-empty word.")
    table = components.text_encoder.get_input_embeddings().weight
    return table[ids].detach().float().mean(dim=0)


def splice_in(components: DiffusionComponents, token_ids: list[int],
              initial: torch.Tensor) -> TokenEmbeddingWithNewRows:
    """Route the text encoder's token lookup through trainable vectors for `token_ids`."""
    table = components.text_encoder.get_input_embeddings()
    spliced = TokenEmbeddingWithNewRows(table, token_ids, initial.to(table.weight.device))
    components.text_encoder.set_input_embeddings(spliced)
    return spliced


def splice_out(components: DiffusionComponents, spliced: TokenEmbeddingWithNewRows) -> torch.Tensor:
    """Write the trained vectors into the table, restore the plain table, and return an
    fp32 copy of the vectors (what gets saved)."""
    vectors = spliced.vectors.detach().float().clone()
    write_rows(spliced.table, spliced.token_ids, vectors)
    components.text_encoder.set_input_embeddings(spliced.table)
    return vectors


def write_rows(table: torch.nn.Embedding, token_ids: list[int], vectors: torch.Tensor) -> None:
    with torch.no_grad():
        for row, token_id in enumerate(token_ids):
            table.weight[token_id] = vectors[row].to(table.weight.dtype)


def save_embeds(folder: Path, token: str, vectors: torch.Tensor) -> None:
    """diffusers' Textual Inversion format: {token: (vectors, dim)} in safetensors."""
    save_file({token: vectors.detach().float().cpu().contiguous()}, str(Path(folder) / EMBEDS_FILE),
              metadata={"format": "pt"})


def load_embeds(folder: Path) -> tuple[str, torch.Tensor]:
    """(token, (n, dim) fp32 vectors) from a saved `learned_embeds.safetensors`."""
    path = Path(folder) / EMBEDS_FILE
    if not path.is_file():
        raise UserError("learned token embedding file missing", str(path),
                        "Delete the artifact folder so the cell is fitted again.")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise UserError(f"cannot read learned token embedding: {err}", str(path),
                        "Delete the artifact folder so the cell is fitted again.") from None
    if len(state) != 1:
        raise UserError(f"learned token embedding file holds {len(state)} entries, expected 1", str(path),
                        "Delete the artifact folder so the cell is fitted again.")
    token, vectors = next(iter(state.items()))
    return token, vectors.float().reshape(-1, vectors.shape[-1])


def apply_embeds(components: DiffusionComponents, folder: Path) -> tuple[str, torch.Tensor]:
    """Add the saved token to `components` with its trained vector; returns (token, vectors)."""
    token, vectors = load_embeds(folder)
    if vectors.shape[0] != 1:
        raise UserError(f"learned token {token!r} has {vectors.shape[0]} vectors; one is supported",
                        str(Path(folder) / EMBEDS_FILE), "Fit the cell again with this varbench version.")
    token_id = add_token(components, token)
    write_rows(components.text_encoder.get_input_embeddings(), [token_id], vectors)
    return token, vectors

