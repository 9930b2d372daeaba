"""The built-in extra metrics: DINOv2 and CLIP ViT-L/14 similarities, the copy guard, and
their encoders' real-weight loading (local files, one-line errors when missing)."""
from __future__ import annotations

import shutil

import huggingface_hub.constants
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

from varbench.data.subject import Subject
from varbench.errors import UserError
from varbench.metrics.scoring import GeneratedImage, Scorer
from varbench.metrics.settings import MetricsConfig
from varbench.models import encoders
from varbench.models.encoders import TINY_CLIPS, TINY_DINOV2, build_clip, build_dinov2

EXTRAS = ["dinov2_s", "dinov2_l", "clip_l_i", "clip_l_t", "copy"]


def write_png(path, seed, size=(48, 40)):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    """3 references; 4 eval images of one prompt, the last a byte copy of reference 1."""
    folder = tmp_path_factory.mktemp("extras-cell")
    references = tuple(write_png(folder / f"ref{i}.png", 100 + i, (52, 44)) for i in range(3))
    images = [GeneratedImage(write_png(folder / f"p000_s{s:02d}.png", s), f"images/p000_s{s:02d}.png", "eval", 0, s,
                             "a toy in the jungle", "a {} in the jungle") for s in range(3)]
    shutil.copy(references[1], folder / "p000_s03.png")
    images.append(GeneratedImage(folder / "p000_s03.png", "images/p000_s03.png", "eval", 0, 3,
                                 "a toy in the jungle", "a {} in the jungle"))
    return Subject("toy", "toy", False, references), images


@pytest.fixture(scope="module")
def scored(cell):
    """mode -> (scorer, rows by metric) with every extra."""
    subject, images = cell
    out = {}
    for mode in ("canonical", "kosmosg", "dreammatcher"):
        scorer = Scorer(MetricsConfig(mode=mode, backbones="tiny", div=False, extra=EXTRAS), "cpu", threads=2)
        rows = scorer.score_cell(subject, images)
        grouped = {}
        for row in rows:
            grouped.setdefault(row["metric"], []).append(row["value"])
        out[mode] = (scorer, grouped)
    yield out
    for scorer, _ in out.values():
        scorer.close()


def unit(tensor):
    return F.normalize(tensor.double(), dim=-1)


def test_dinov2_and_clip_l_follow_the_mode_like_dino_and_clip(scored, cell):
    subject, images = cell
    scorer, rows = scored["canonical"]
    refs = scorer.embed(list(subject.image_paths), encoders=["dinov2_s", "dinov2_l", "clip_l"])
    mine = scorer.embed([image.path for image in images], encoders=["dinov2_s", "dinov2_l", "clip_l"])
    for metric, encoder in [("dinov2_s", "dinov2_s"), ("dinov2_l", "dinov2_l"), ("clip_l_i", "clip_l")]:
        expected = (unit(mine[encoder]) @ unit(refs[encoder]).T).mean(dim=1)  # mean over all references
        assert rows[metric] == pytest.approx(expected.tolist(), abs=1e-6)
    assert rows["dinov2_s"] != pytest.approx(rows["dinov2_l"], abs=1e-4)  # two encoders, not one
    text = scorer.models["clip_l"].encode_text(["a toy in the jungle"])
    assert rows["clip_l_t"] == pytest.approx((unit(mine["clip_l"]) @ unit(text).T).flatten().tolist(), abs=1e-6)
    assert scorer.models["dinov2_s"].vit.patch_embed.proj.kernel_size == (14, 14)
    assert scorer.models["clip_l"].model.visual.conv1.kernel_size == (14, 14)
    kosmosg, fixed = scored["kosmosg"]  # one paired reference (index 0), x100
    refs, mine = (kosmosg.embed(paths, encoders=["dinov2_s"]) for paths in
                  (list(subject.image_paths), [image.path for image in images]))
    assert fixed["dinov2_s"] == pytest.approx((100 * unit(mine.dinov2_s) @ unit(refs.dinov2_s[0])).tolist(), abs=1e-4)
    dreammatcher = scored["dreammatcher"][0]  # the mode's 256 px DINO input
    assert dreammatcher.models["dinov2_s"].vit.patch_embed.img_size == (256, 256)


@pytest.mark.parametrize("mode,scale", [("canonical", 1.0), ("kosmosg", 100.0)])
def test_copy_guard_flags_an_image_closer_to_one_reference_than_real_pairs(scored, cell, mode, scale):
    subject, images = cell
    scorer, rows = scored[mode]
    refs = scorer.reference_embeddings(subject)
    mine = scorer.embed([image.path for image in images])
    nearest_dino = (unit(mine.dino) @ unit(refs.dino).T).max(dim=1).values  # every reference, any pairing
    nearest_clip = (unit(mine.clip) @ unit(refs.clip).T).max(dim=1).values
    assert rows["copy_dino"] == pytest.approx((scale * nearest_dino).tolist(), abs=1e-4)
    assert rows["copy_clip_i"] == pytest.approx((scale * nearest_clip).tolist(), abs=1e-4)
    real = unit(refs.dino) @ unit(refs.dino).T
    threshold = float(real[~torch.eye(3, dtype=torch.bool)].max())  # highest real-vs-real pair
    assert threshold < 1 - 1e-4
    assert rows["copy"] == [float(value > threshold) for value in nearest_dino.tolist()]
    assert rows["copy"][3] == 1.0 and rows["copy_dino"][3] == pytest.approx(scale, abs=1e-4)  # the copied photo


def test_copy_guard_without_a_real_pair_writes_no_copy_row(cell):
    subject, images = cell
    single = Subject("solo", "toy", False, subject.image_paths[:1])
    scorer = Scorer(MetricsConfig(backbones="tiny", div=False, extra=["copy"]), "cpu", threads=1)
    try:
        rows = scorer.score_cell(single, images)
    finally:
        scorer.close()
    metrics = {row["metric"] for row in rows}
    assert {"copy_dino", "copy_clip_i"} <= metrics and "copy" not in metrics


# --- real weights -------------------------------------------------------------------------------
@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """No network and an empty Hugging Face cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    for name in ("VARBENCH_DINOV2_S_WEIGHTS", "VARBENCH_DINOV2_L_WEIGHTS", "VARBENCH_CLIP_L_WEIGHTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VARBENCH_CACHE", str(tmp_path / "varbench"))
    return tmp_path


@pytest.mark.parametrize("builder,repo,env", [
    (lambda: build_dinov2("s", "real"), "timm/vit_small_patch14_dinov2.lvd142m model.safetensors",
     "VARBENCH_DINOV2_S_WEIGHTS"),
    (lambda: build_dinov2("l", "real"), "timm/vit_large_patch14_dinov2.lvd142m model.safetensors",
     "VARBENCH_DINOV2_L_WEIGHTS"),
    (lambda: build_clip("real", arch="ViT-L-14"),
     "timm/vit_large_patch14_clip_224.openai open_clip_model.safetensors", "VARBENCH_CLIP_L_WEIGHTS"),
])
def test_missing_extra_weights_name_the_download_command(empty_hub, builder, repo, env):
    with pytest.raises(UserError) as caught:
        builder()
    line = caught.value.line()
    assert f"hf download {repo}" in line and env in line and "\n" not in line


def test_real_dinov2_loads_a_518_pixel_file_at_the_modes_input_size(empty_hub, monkeypatch):
    """The hub file's position embedding is for 518 px (a 37 x 37 grid); loaded for 224 px it
    is resampled to 16 x 16 by timm's filter, every other tensor kept (tiny-sized ViT)."""
    create_model = encoders.timm.create_model
    monkeypatch.setattr(encoders.timm, "create_model", lambda *args, **kwargs: create_model(
        *args, **{**kwargs, **TINY_DINOV2["s"]}))
    source = build_dinov2("s", "real", pretrained=False, input_size=518)
    state = {key: value.contiguous() for key, value in source.vit.state_dict().items()}
    assert state["pos_embed"].shape == (1, 1 + 37 * 37, 32)
    path = empty_hub / "model.safetensors"
    save_file(state, str(path))
    monkeypatch.setenv("VARBENCH_DINOV2_S_WEIGHTS", str(empty_hub))  # a folder works too
    loaded = build_dinov2("s", "real")
    expected = resample_abs_pos_embed(state["pos_embed"], new_size=(16, 16), num_prefix_tokens=1)
    assert torch.equal(loaded.vit.pos_embed, expected)
    assert torch.equal(loaded.vit.blocks[1].ls2.gamma, state["blocks.1.ls2.gamma"])
    assert loaded(torch.randn(2, 3, 224, 224)).shape == (2, 32)
    save_file({"pos_embed": torch.zeros(1, 1370, 32)}, str(path))
    with pytest.raises(UserError, match="do not fit"):
        build_dinov2("s", "real")


def test_real_clip_l_loads_a_local_open_clip_file(empty_hub, monkeypatch):
    monkeypatch.setattr(encoders.open_clip, "get_model_config", lambda name: {**TINY_CLIPS[name]})
    source = build_clip("real", pretrained=False, arch="ViT-L-14")
    path = empty_hub / "open_clip_model.safetensors"
    save_file({key: value.contiguous() for key, value in source.model.state_dict().items()}, str(path))
    monkeypatch.setenv("VARBENCH_CLIP_L_WEIGHTS", str(path))
    loaded = build_clip("real", arch="ViT-L-14")
    assert loaded.model.visual.conv1.kernel_size == (14, 14)
    assert torch.equal(loaded.encode_text(["a red toy"]), source.encode_text(["a red toy"]))
    pixels = torch.randn(1, 3, 224, 224)
    assert torch.equal(loaded.encode_image(pixels), source.encode_image(pixels))
