"""Release-compatible loading: an Infinity file loads when the official loader would load it
(legacy buffers dropped, `cfg_uncond` cut or padded as the release pads it), and what that
changed is recorded in the ARBooth base identity; everything else stays strict. And the
release's 8-bit conversion (truncation) as ARBooth's quirk_uint8."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from varbench.errors import UserError
from varbench.method import CellContext
from varbench.methods.arbooth import ARBooth
from varbench.methods.arbooth.base import generation_sampling
from varbench.methods.arbooth.config import ARBoothConfig
from varbench.models.infinity.checkpoint import LEGACY_BUFFERS, released_null_text
from varbench.models.infinity.factory import build_infinity, load_transformer, load_transformer_noting
from varbench.models.infinity.sampler import decode_images
from varbench.schema import from_dict

ROWS, CHANNELS = 64, 32  # infinity-tiny's cfg_uncond


def legacy_file(tmp_path, rows: int, name: str = "legacy.pth"):
    """A tiny checkpoint as older Infinity code saved it: its buffers, and a null text of `rows` rows."""
    model = build_infinity("infinity-tiny", seed=5)
    state = dict(model.state_dict())
    for buffer in LEGACY_BUFFERS:
        state[buffer] = torch.arange(6, dtype=torch.float32)
    null = torch.randn(rows, CHANNELS, generator=torch.Generator().manual_seed(3))
    state["cfg_uncond"] = null
    torch.save(state, tmp_path / name)
    return model, null, tmp_path / name


def test_the_release_null_text_is_a_truncated_normal_of_std_1_2_over_sqrt_channels():
    values = released_null_text(ROWS, CHANNELS)
    # the release: trunc_normal_(empty(text_maxlen, Ct5), std=1.2, generator seeded 0) / Ct5 ** 0.5
    reference = torch.nn.init.trunc_normal_(torch.empty(ROWS, CHANNELS), std=1.2,
                                            generator=torch.Generator().manual_seed(0)) / CHANNELS ** 0.5
    assert torch.equal(values, reference) and torch.equal(values, released_null_text(ROWS, CHANNELS))
    assert values.abs().max() <= 2 / CHANNELS ** 0.5 and 0.9 < float(values.std() * CHANNELS ** 0.5) < 1.3


def test_legacy_buffers_and_a_short_null_text_load_as_the_official_loader_does(tmp_path):
    model, null, path = legacy_file(tmp_path, rows=40)
    loaded, notes = load_transformer_noting("infinity-tiny", weights=path)
    assert notes == {"dropped": sorted(LEGACY_BUFFERS), "resized": {"cfg_uncond": [40, ROWS]}}
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        if name != "cfg_uncond":
            assert torch.equal(loaded.state_dict()[name], tensor), name
    # the file's 40 rows, then the release's own initial rows 40..63 (not zeros, not the file's)
    assert torch.equal(loaded.cfg_uncond[:40], null)
    assert torch.equal(loaded.cfg_uncond[40:], released_null_text(ROWS, CHANNELS)[40:])


def test_a_long_null_text_is_cut_and_a_matching_file_gets_no_notes(tmp_path):
    _, null, path = legacy_file(tmp_path, rows=80)
    loaded, notes = load_transformer_noting("infinity-tiny", weights=path)
    assert notes["resized"] == {"cfg_uncond": [80, ROWS]} and torch.equal(loaded.cfg_uncond, null[:ROWS])
    model = build_infinity("infinity-tiny", seed=5)
    torch.save(model.state_dict(), tmp_path / "clean.pth")
    assert load_transformer_noting("infinity-tiny", weights=tmp_path / "clean.pth")[1] == {}


def test_anything_else_unknown_still_fails_naming_the_key(tmp_path):
    state = dict(build_infinity("infinity-tiny").state_dict())
    state["lvl_1L"] = torch.zeros(3)  # dropped, as the release drops it
    state["head.mystery"] = torch.zeros(3)
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(UserError) as err:
        load_transformer("infinity-tiny", weights=tmp_path / "odd.pth")
    line = str(err.value)
    assert "1 unexpected: head.mystery" in line and "lvl_1L" not in line and "\n" not in line
    state.pop("head.mystery")
    state["cfg_uncond"] = torch.zeros(ROWS, CHANNELS + 1)  # another width is not the release's to fix
    torch.save(state, tmp_path / "wide.pth")
    with pytest.raises(UserError, match=r"1 wrong shape: cfg_uncond \(64, 33\) vs model \(64, 32\)"):
        load_transformer("infinity-tiny", weights=tmp_path / "wide.pth")


def test_the_arbooth_base_identity_records_what_was_dropped_and_resized(tmp_path):
    _, _, path = legacy_file(tmp_path, rows=40)
    ctx = CellContext(device=torch.device("cpu"), fit_seed=0, workdir=tmp_path / "w", cache_dir=tmp_path / "c")
    method = ARBooth(from_dict(ARBoothConfig, {"model": "infinity-tiny", "resolution": 64, "weights": str(path)}, "t"))
    transformer = method.load_base(ctx).identity["transformer"]
    assert transformer == {"file": "legacy.pth", "bytes": path.stat().st_size, "dropped": sorted(LEGACY_BUFFERS),
                           "resized": {"cfg_uncond": [40, ROWS]}}


# ---- quirk 8: 8-bit conversion --------------------------------------------------------------
LEVELS = [0.0, 0.3, 0.7, 10.2, 10.8, 127.4, 200.9, 254.6, 255.0]  # (x + 1) / 2 * 255 of known pixels
FLOOR = [0, 0, 0, 10, 10, 127, 200, 254, 255]
ROUND = [0, 0, 1, 10, 11, 127, 201, 255, 255]


class KnownDecoder:
    """Stands in for the VAE: decodes anything to pixels of the known levels."""

    def decode(self, summed: torch.Tensor) -> torch.Tensor:
        x = torch.tensor(LEVELS, dtype=torch.float64) / 255 * 2 - 1
        return x.float().view(1, 1, 1, -1).expand(summed.shape[0], 3, 1, len(LEVELS))


@pytest.mark.parametrize("quirk, expected", [("faithful", FLOOR), ("fixed", ROUND)])
def test_quirk_uint8_faithful_truncates_and_fixed_rounds(quirk, expected):
    sampling = generation_sampling(ARBoothConfig(quirk_uint8=quirk))
    images = decode_images(KnownDecoder(), torch.zeros(2, 4), sampling.amp, sampling.to_uint8)
    assert images.dtype == torch.uint8 and images.shape == (2, 1, len(LEVELS), 3)
    assert images[1, 0, :, 2].tolist() == expected


def test_generated_arbooth_images_are_truncated_by_default_and_rounded_when_fixed(tmp_path):
    assert ARBoothConfig().quirk_uint8 == "faithful"
    ctx = CellContext(device=torch.device("cpu"), fit_seed=0, workdir=tmp_path / "w", cache_dir=tmp_path / "c")
    tiny = {"model": "infinity-tiny", "resolution": 64}
    default = ARBooth(from_dict(ARBoothConfig, tiny, "t")).load_base(ctx).pipeline
    fixed = ARBooth(from_dict(ARBoothConfig, {**tiny, "quirk_uint8": "fixed"}, "t")).load_base(ctx).pipeline
    assert (default.sampling.to_uint8, fixed.sampling.to_uint8) == ("truncate", "round")
    prompts, seeds = ["a dog in the snow", "a red cube"], [4, 5]
    summed = default.sample(default.encode(prompts), seeds, decode=False).summed
    levels = ((default.vae.decode(summed) + 1) / 2 * 255).permute(0, 2, 3, 1).numpy()
    truncated = np.stack([np.asarray(image) for image in default.generate(prompts, seeds)])
    rounded = np.stack([np.asarray(image) for image in fixed.generate(prompts, seeds)])
    assert np.array_equal(truncated, np.floor(levels))
    assert np.array_equal(rounded, np.floor(levels + 0.5))  # no level lands on an exact .5 here
    assert 0.3 < float((rounded != truncated).mean()) < 0.7  # about half the pixels move one level
