"""The toyworld SD pretraining (train_sd.py): a run stopped midway and resumed from its
checkpoint ends with exactly the weights of an uninterrupted run."""
from __future__ import annotations

import itertools

import pytest
import torch

from varbench.toyworld import checkpoints as checkpoints_module
from varbench.toyworld import train_sd
from varbench.toyworld.diffusion import random_sd
from varbench.toyworld.pool import render_pool
from varbench.toyworld.train_encoders import Schedule
from varbench.toyworld.train_sd import checkpoints, train_denoiser, train_vae

SCHEDULE = Schedule(steps=3, batch=4, learning_rate=1e-3, warmup=1)


class Stop(Exception):
    """Raised by the progress callback: the run is killed after a step."""


def run(pool, folder, stop_after=None):
    """Both stages on the tiny schedule; `stop_after`: (stage, steps) to die after."""
    components = random_sd(seed=1)
    saved = checkpoints(folder / "sd-checkpoint.pt", {"test": 1})
    for stage, train in (("sd_vae", train_vae), ("sd_unet", train_denoiser)):
        def advance(step, loss, stage=stage):
            if stop_after == (stage, step + 1):
                raise Stop
        train(components, pool, SCHEDULE, 1, torch.device("cpu"), advance, saved)
    return components


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints_module, "CHECKPOINT_SECONDS", 0.0)  # save after every step
    monkeypatch.setattr(train_sd, "SCALE_SCENES", 16)
    pool = render_pool(16, seed=1)
    whole = run(pool, tmp_path / "whole")
    for stop in (("sd_vae", 2), ("sd_unet", 2)):  # mid-VAE; mid-UNet, after a UNet checkpoint
        folder = tmp_path / f"{stop[0]}-{stop[1]}"
        with pytest.raises(Stop):
            run(pool, folder, stop_after=stop)
        resumed = run(pool, folder)
        for name in ("vae", "unet", "text_encoder"):
            expected, got = getattr(whole, name).state_dict(), getattr(resumed, name).state_dict()
            assert all(torch.equal(expected[key], got[key]) for key in expected), (stop, name)
        assert resumed.vae.config.scaling_factor == whole.vae.config.scaling_factor


def test_a_checkpoint_of_the_older_layout_is_ignored_not_a_crash(tmp_path, capsys):
    """Before the shared Checkpoints, an SD checkpoint held its modules at the top level
    under the same identity; such a file must start a fresh run, not raise KeyError."""
    path = tmp_path / "sd-checkpoint.pt"
    torch.save({"identity": {"test": 1}, "stage": "sd_vae", "step": 2, "finished": False, "losses": {},
                "optimizer": {}, "vae": {}}, path)
    saved = checkpoints(path, {"test": 1})
    assert saved.found is None and "starting afresh" in capsys.readouterr().err


def test_a_resumed_run_counts_the_seconds_of_the_run_it_resumes(tmp_path, monkeypatch):
    """training.json's seconds must be the whole training time: a checkpoint carries the
    seconds spent until it was saved, and the run resuming it starts from them."""
    monkeypatch.setattr(checkpoints_module, "CHECKPOINT_SECONDS", 0.0)
    monkeypatch.setattr(train_sd, "SCALE_SCENES", 16)
    clock = itertools.count(0, 10)  # every reading of the clock is 10 s after the last (never runs out)
    monkeypatch.setattr(checkpoints_module.time, "monotonic", lambda: float(next(clock)))
    pool = render_pool(16, seed=1)
    with pytest.raises(Stop):
        run(pool, tmp_path, stop_after=("sd_unet", 2))
    first = torch.load(tmp_path / "sd-checkpoint.pt", weights_only=True)["seconds"]
    assert first > 0
    resumed = checkpoints(tmp_path / "sd-checkpoint.pt", {"test": 1})
    assert resumed.earlier_seconds == first
    run(pool, tmp_path)
    assert torch.load(tmp_path / "sd-checkpoint.pt", weights_only=True)["seconds"] > first


def test_the_denoiser_trains_on_the_described_captions(tmp_path, monkeypatch):
    """Stage 2 tokenizes the pool's captions from sd_captions (colours named), not the
    plain `world.caption`s the pool carries."""
    pool = render_pool(16, seed=1)
    components = random_sd(seed=1)
    tokenized = []
    plain_token_ids = train_sd.token_ids
    monkeypatch.setattr(train_sd, "token_ids",
                        lambda parts, texts: tokenized.append(texts) or plain_token_ids(parts, texts))
    monkeypatch.setattr(train_sd, "SCALE_SCENES", 16)
    saved = checkpoints(tmp_path / "sd-checkpoint.pt", {"test": 2})
    train_denoiser(components, pool, Schedule(steps=1, batch=2, learning_rate=1e-3, warmup=1), 1,
                   torch.device("cpu"), lambda step, loss: None, saved)
    expected = train_sd.stage2_captions(components, pool.scenes, 1)
    assert expected in tokenized and expected != pool.captions
