"""The toyworld's Infinity (varbench/toyworld/infinity.py, train_infinity.py): built by the
real builders at its toy size, pretrained in two resumable stages, written by `varbench
toyworld train` and read back by the ARBooth base through the real loaders."""
from __future__ import annotations

import json

import pytest
import torch

from varbench.errors import UserError
from varbench.toyworld import checkpoints as checkpoints_module
from varbench.toyworld import train_infinity
from varbench.toyworld.backbones import ENV_VAR
from varbench.toyworld.infinity import SIZE, random_infinity
from varbench.toyworld.pool import render_pool
from varbench.toyworld.train_encoders import Schedule
from varbench.toyworld.train_infinity import Recipe, train_tokenizer, train_transformer

SCHEDULE = Schedule(steps=3, batch=4, learning_rate=1e-3, warmup=1)
CPU = torch.device("cpu")


class Stop(Exception):
    """Raised by the progress callback: the run is killed after a step."""


@pytest.fixture(scope="module")
def pool():
    return render_pool(16, seed=1)


def run(pool, path, stop_after=None):
    """Both stages on the tiny schedule; returns (parts, losses). `stop_after`: (stage,
    steps) to die after."""
    parts = random_infinity(seed=1)
    saved = train_infinity.checkpoints(path, {"test": 1})
    losses = {}
    for stage, train in zip(train_infinity.STAGES, (train_tokenizer, train_transformer)):
        def advance(step, loss, stage=stage):
            if stop_after == (stage, step + 1):
                raise Stop
        losses[stage] = train(parts, pool, SCHEDULE, 1, CPU, advance, saved)
    return parts, losses


@pytest.fixture(scope="module")
def whole(pool, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoints_module, "CHECKPOINT_SECONDS", 0.0)  # save after every step
        return run(pool, tmp_path_factory.mktemp("whole") / "infinity-checkpoint.pt")


def states(parts):
    return {"vae": parts.vae.state_dict(), "transformer": parts.transformer.state_dict(),
            "text_encoder": parts.text_encoder.model.state_dict()}


def test_the_toy_size_is_built_by_the_real_builders_and_fits_its_budget():
    from varbench.models.infinity.architecture import get_size
    from varbench.models.infinity.bsq import BSQTokenizer
    from varbench.models.infinity.schedule import schedule_for_pixels
    from varbench.models.infinity.transformer import Infinity

    parts = random_infinity(seed=0)
    size = get_size(SIZE)
    assert isinstance(parts.transformer, Infinity) and parts.transformer.config == size.transformer
    assert isinstance(parts.vae, BSQTokenizer) and parts.vae.stride == 4
    schedule = schedule_for_pixels(64, 64, parts.vae.stride)
    assert schedule.scales[-1] == (16, 16) and schedule.num_scales == 7
    assert parts.text_encoder.channels == size.transformer.text_channels
    ids, _ = parts.text_encoder.tokenize(["a purple teapot on top of green grass with sunflowers around it"])
    assert 2 not in ids.tolist()[0]  # every world word is a token: no <unk>
    counted = sum(p.numel() for module in (parts.transformer, parts.vae, parts.text_encoder.model)
                  for p in module.parameters())
    assert 3_000_000 < counted and 2 * counted < 8 * 2**20  # fp16 under 8 MiB


def test_the_straight_through_quantizer_is_bsq_forward_and_passes_gradients():
    """Stage 1 trains the quantizer the sampler decodes: the same summed codes forward."""
    from varbench.models.infinity.bsq import multiscale_quantize

    z = torch.randn(2, 16, 16, 16, generator=torch.Generator().manual_seed(0), requires_grad=True)
    scales = train_infinity.toy_schedule()
    summed, commitment = train_infinity.straight_through_quantize(z, scales)
    assert torch.allclose(summed, multiscale_quantize(z.detach(), scales).summed, atol=1e-6)
    (summed.square().sum() + commitment).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_each_stage_lowers_a_finite_loss(whole):
    _, losses = whole
    for stage, values in losses.items():
        assert len(values) == SCHEDULE.steps and all(torch.isfinite(torch.tensor(values))), (stage, values)
        assert values[-1] < values[0], (stage, values)
    assert abs(losses["infinity_transformer"][0] - 0.693) < 0.05  # untrained bits: about ln 2 each


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(pool, whole, tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints_module, "CHECKPOINT_SECONDS", 0.0)
    expected = states(whole[0])
    # mid-tokenizer; mid-transformer: each resumes from the checkpoint of a step after the
    # warm-up (its learning rate then comes from the cosine, as in a real run's checkpoints)
    for stop in (("infinity_vae", 3), ("infinity_transformer", 3)):
        path = tmp_path / f"{stop[0]}-{stop[1]}.pt"
        with pytest.raises(Stop):
            run(pool, path, stop_after=stop)
        resumed, losses = run(pool, path)
        assert losses == whole[1], stop
        for name, got in states(resumed).items():
            assert all(torch.equal(expected[name][key], got[key]) for key in expected[name]), (stop, name)


def test_trained_weights_load_through_the_arbooth_base_as_trained(tmp_path, monkeypatch):
    """`varbench toyworld train --only infinity` writes fp16 files and a manifest; the
    ARBooth base reads them through the real loaders: the trained values, rounded to fp16."""
    from varbench.methods.arbooth.base import load_base
    from varbench.methods.arbooth.config import ARBoothConfig
    from varbench.toyworld.train import train_backbones

    monkeypatch.setitem(train_infinity.RECIPES, "cpu", Recipe(16, SCHEDULE, SCHEDULE))
    train_backbones(tmp_path, ["infinity"], recipe="cpu")
    record = json.loads((tmp_path / "training.json").read_text())["infinity"]
    assert record["schedule"]["infinity_transformer"]["steps"] == 3 and len(record["losses"]["infinity_vae"]) == 3
    trained = torch.load(tmp_path / "infinity-checkpoint.pt", weights_only=True)["parts"]  # the final fp32 state
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    base = load_base(ARBoothConfig(model=SIZE, resolution=64), CPU)
    pipeline = base.pipeline
    loaded = {"vae": pipeline.vae.state_dict(), "transformer": pipeline.model.state_dict(),
              "text_encoder": pipeline.text_encoder.model.state_dict()}
    for name, state in trained.items():
        for key, value in state.items():
            got = loaded[name][key]
            assert got.dtype == value.dtype and torch.equal(got, value.half().to(value.dtype)), (name, key)
    assert not pipeline.random_init and len(base.identity["files_sha256"]) == 16
    image = pipeline.generate(["a dog in the snow"], [3])[0]
    assert image.size == (64, 64)


def test_missing_or_changed_toyworld_infinity_weights_are_one_clear_error(tmp_path, monkeypatch):
    from varbench.methods.arbooth.base import load_base
    from varbench.methods.arbooth.config import ARBoothConfig
    from varbench.toyworld.backbones import write_manifest
    from varbench.toyworld.infinity import save_infinity

    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    config = ARBoothConfig(model=SIZE, resolution=64)
    with pytest.raises(UserError, match="toyworld infinity weights not found") as raised:
        load_base(config, CPU)
    line = raised.value.line()
    assert "\n" not in line and str(tmp_path / "infinity") in line and "--only infinity" in line
    save_infinity(random_infinity(seed=0), tmp_path / "infinity")
    write_manifest(tmp_path)
    (tmp_path / "infinity" / "vae.safetensors").write_bytes(b"changed")
    with pytest.raises(UserError, match="does not match"):
        load_base(config, CPU)
