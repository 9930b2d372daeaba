"""Text conditioning: the tiny tokenizer / T5, padding, and the placeholder hook."""
from __future__ import annotations

import pytest
import torch

from varbench.errors import UserError
from varbench.models.infinity.text import TextFeatures, build_tiny_text_encoder, load_text_encoder, tiny_tokenizer


@pytest.fixture(scope="module")
def encoder():
    return build_tiny_text_encoder()


def test_tiny_tokenizer_is_deterministic_and_appends_eos():
    a, b = tiny_tokenizer(), tiny_tokenizer()
    assert a.get_vocab() == b.get_vocab()
    ids = a("A photo of a dog in the Jungle").input_ids
    assert a.convert_ids_to_tokens(ids) == ["a", "photo", "of", "a", "dog", "in", "the", "jungle", "</s>"]
    assert a.convert_ids_to_tokens(a("xyz").input_ids) == ["x", "##y", "##z", "</s>"]  # unknown word: characters


def test_encode_pads_and_masks(encoder):
    text = encoder.encode(["a dog", "a red vase in the snow"])
    assert text.lengths == (3, 7)
    assert text.features.shape == (2, 7, 32) and text.features.dtype == torch.float32
    assert text.mask.tolist()[0] == [True] * 3 + [False] * 4
    assert torch.all(text.features[0, 3:] == 0)
    alone = encoder.encode(["a dog"])
    assert alone.mask is None  # nothing padded
    torch.testing.assert_close(alone.features[0], text.features[0, :3], atol=1e-5, rtol=1e-5)
    picked = text.select([1])
    assert picked.lengths == (7,) and torch.equal(picked.features[0], text.features[1])
    joined = TextFeatures.cat([alone, picked])
    assert joined.lengths == (3, 7) and joined.features.shape == (2, 7, 32)
    torch.testing.assert_close(joined.features, text.features, atol=1e-5, rtol=1e-5)


def test_placeholder_is_one_new_token(encoder):
    token_id = encoder.placeholder_id("<placeholder>")
    assert token_id == encoder.placeholder_id("<placeholder>")  # added once
    ids, lengths = encoder.tokenize(["a photo of <placeholder> dog"])
    tokens = encoder.tokenizer.convert_ids_to_tokens(ids[0])
    assert tokens == ["a", "photo", "of", "<placeholder>", "dog", "</s>"] and lengths == [6]


def test_placeholder_vectors_replace_one_output_by_k(encoder):
    prompts = ["a photo of <placeholder> dog", "a <placeholder> cat and a <placeholder> dog", "a red vase"]
    vectors = torch.randn(4, 32, requires_grad=True)
    plain = encoder.encode(prompts, placeholder="<placeholder>")
    grown = encoder.encode(prompts, placeholder="<placeholder>", placeholder_vectors=vectors)
    assert plain.lengths == (6, 8, 4)
    assert grown.lengths == (9, 14, 4)  # +3 per occurrence
    torch.testing.assert_close(grown.features[0, :3], plain.features[0, :3])  # before the placeholder
    torch.testing.assert_close(grown.features[0, 3:7], vectors.detach())
    torch.testing.assert_close(grown.features[0, 7:9], plain.features[0, 4:6])  # shifted by 3
    torch.testing.assert_close(grown.features[1, 1:5], vectors.detach())
    torch.testing.assert_close(grown.features[1, 8:12], vectors.detach())
    torch.testing.assert_close(grown.features[2, :4], plain.features[2, :4])
    assert grown.mask[2].tolist() == [True] * 4 + [False] * 10
    grown.features.sum().backward()
    torch.testing.assert_close(vectors.grad, torch.full((4, 32), 3.0))  # used three times
    with pytest.raises(ValueError, match="placeholder vectors"):
        encoder.encode(prompts, placeholder="<placeholder>", placeholder_vectors=torch.zeros(4, 31))


def test_missing_flan_t5_is_one_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache
    with pytest.raises(UserError, match="google/flan-t5-xl") as err:
        load_text_encoder("google/flan-t5-xl")
    assert "hf download google/flan-t5-xl" in str(err.value)
    with pytest.raises(UserError, match="model folder not found"):
        load_text_encoder("google/flan-t5-xl", local=tmp_path / "nowhere")
