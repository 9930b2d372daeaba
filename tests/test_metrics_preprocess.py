"""Every mode's pixel pipeline equals a hand-written reference, tensor for tensor.

References follow the published evaluators: torchvision transforms on PIL images
(canonical, Kosmos-G / DreamBench++ DINO), numpy steps written like Hugging Face's
CLIPImageProcessor (kosmosg, dreambench++ CLIP) and like DreamMatcher's loader and CLIP
evaluator (dreammatcher). Image sizes are odd on purpose, so crop offsets that round
differently (torchvision) and floor (Hugging Face) give different crops.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from varbench.errors import UserError
from varbench.metrics.imagefile import decode_image
from varbench.metrics.preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    center_crop,
    clip_input,
    cpu_views,
    dino_input,
    lpips_input,
    resize_short_side,
)

BICUBIC = transforms.InterpolationMode.BICUBIC


def make_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def device_views(image: Image.Image, pixels: str, with_square: bool = False) -> dict[str, torch.Tensor]:
    """cpu_views of one image as a batch of one, the way the decoder stacks them."""
    return {name: torch.from_numpy(np.stack([view]))
            for name, view in cpu_views(image, pixels, with_square).items()}


# --- hand-written references ----------------------------------------------------------
def torchvision_reference(image: Image.Image, resize: int, mean, std) -> torch.Tensor:
    pipeline = transforms.Compose([transforms.Resize(resize, interpolation=BICUBIC), transforms.CenterCrop(224),
                                   transforms.ToTensor(), transforms.Normalize(mean, std)])
    return pipeline(image)[None]


def hf_clip_reference(image: Image.Image) -> torch.Tensor:
    """CLIPImageProcessor (slow, PIL) for openai/clip-vit-base-patch32, step by step."""
    width, height = image.size
    if width <= height:
        new_size = (224, int(224 * height / width))
    else:
        new_size = (int(224 * width / height), 224)
    pixels = np.asarray(image.resize(new_size, Image.BICUBIC))
    top, left = (pixels.shape[0] - 224) // 2, (pixels.shape[1] - 224) // 2
    pixels = pixels[top:top + 224, left:left + 224]
    scaled = (pixels.astype(np.float64) * (1 / 255)).astype(np.float32)
    normalized = (scaled - np.array(CLIP_MEAN, dtype=np.float32)) / np.array(CLIP_STD, dtype=np.float32)
    return torch.from_numpy(normalized.transpose(2, 0, 1).copy())[None]


def dreammatcher_reference(image: Image.Image, antialias: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """DreamMatcher's PersonalizedBase (256x256, x / 127.5 - 1) and its CLIPEvaluator
    preprocessing: under torchvision 0.14 (tensor Resize without antialias), or as the
    installed torchvision computes it by default (its Resize defaults to antialias=True from 0.17)."""
    pixels = np.asarray(image.resize((256, 256), resample=Image.BICUBIC)).astype(np.uint8)
    signed = torch.from_numpy((pixels / 127.5 - 1.0).astype(np.float32)).permute(2, 0, 1)[None]
    clip = transforms.Compose([
        transforms.Normalize(mean=[-1.0, -1.0, -1.0], std=[2.0, 2.0, 2.0]),
        transforms.Resize(224, interpolation=BICUBIC, antialias=antialias),
        transforms.CenterCrop(224),
        transforms.Normalize(CLIP_MEAN, CLIP_STD),
    ])(signed.clone())
    return signed, clip


SIZES = [(224, 227), (61, 47), (300, 203), (97, 97)]


# --- the pipelines ------------------------------------------------------------------------
@pytest.mark.parametrize("width,height", SIZES)
def test_canonical_pipelines_equal_torchvision(width, height):
    image = make_image(width, height)
    views = device_views(image, "canonical")
    assert torch.equal(dino_input(views, "canonical"),
                       torchvision_reference(image, 256, IMAGENET_MEAN, IMAGENET_STD))
    assert torch.equal(clip_input(views, "canonical"), torchvision_reference(image, 224, CLIP_MEAN, CLIP_STD))


@pytest.mark.parametrize("width,height", SIZES)
def test_hf_clip_pipeline_equals_clip_image_processor_steps(width, height):
    image = make_image(width, height, seed=1)
    views = device_views(image, "hf_clip")
    assert torch.equal(clip_input(views, "hf_clip"), hf_clip_reference(image))
    # Kosmos-G and DreamBench++ compute DINO with the same torchvision pipeline as canonical
    assert torch.equal(dino_input(views, "hf_clip"), torchvision_reference(image, 256, IMAGENET_MEAN, IMAGENET_STD))


@pytest.mark.parametrize("width,height", SIZES)
def test_dreammatcher_pipelines_equal_its_evaluator(width, height):
    image = make_image(width, height, seed=2)
    views = device_views(image, "dreammatcher")
    signed, clip = dreammatcher_reference(image)
    assert torch.equal(dino_input(views, "dreammatcher"), signed)  # no ImageNet normalisation
    assert torch.equal(clip_input(views, "dreammatcher", antialias=False), clip)  # clip_resize: legacy
    _, today = dreammatcher_reference(image, antialias=True)
    assert torch.equal(clip_input(views, "dreammatcher"), today)  # clip_resize: antialias, the default
    assert not torch.equal(today, clip)
    assert signed.min() >= -1 and signed.max() <= 1


def test_lpips_input_is_the_256_square_in_signed_range():
    image = make_image(61, 47, seed=3)
    views = device_views(image, "canonical", with_square=True)
    assert set(views) == {"dino224", "clip224", "square256"}
    assert torch.equal(lpips_input(views["square256"]), dreammatcher_reference(image)[0])


def test_crop_offsets_round_like_torchvision_and_floor_like_hugging_face():
    image = make_image(224, 227)  # 3 spare rows: torchvision's offset round(1.5) = 2, HF's 1 // 1
    rows = np.asarray(image)
    assert np.array_equal(np.asarray(center_crop(image, 224, "round")), rows[2:226])
    assert np.array_equal(np.asarray(center_crop(image, 224, "floor")), rows[1:225])
    canonical, hf = cpu_views(image, "canonical")["clip224"], cpu_views(image, "hf_clip")["clip224"]
    assert not np.array_equal(canonical, hf)


@pytest.mark.parametrize("width,height", [(61, 47), (47, 61), (300, 203), (1000, 999)])
def test_resize_short_side_truncates_the_long_side_like_torchvision(width, height):
    image = make_image(width, height)
    expected = transforms.Resize(224, interpolation=BICUBIC)(image)
    resized = resize_short_side(image, 224)
    assert resized.size == expected.size and min(resized.size) == 224
    assert np.array_equal(np.asarray(resized), np.asarray(expected))


def test_pixel_scalings_follow_each_library():
    values = torch.arange(256, dtype=torch.uint8).view(1, 16, 16, 1).expand(1, 16, 16, 3)
    views = {"clip224": values, "dino224": values, "square256": values}
    tensor = dino_input(views, "canonical")[0, 0] * torch.tensor(IMAGENET_STD[0]) + torch.tensor(IMAGENET_MEAN[0])
    assert torch.allclose(tensor.flatten(), torch.arange(256) / 255, atol=1e-6)
    signed = dino_input(views, "dreammatcher")[0, 0].flatten()
    numpy_float64 = torch.from_numpy((np.arange(256) / 127.5 - 1.0).astype(np.float32))
    assert signed[0] == -1 and signed[255] == 1 and torch.equal(signed, numpy_float64)
    # the float64 detour matters: plain float32 arithmetic rounds some values differently
    assert not torch.equal(numpy_float64, torch.arange(256, dtype=torch.float32) / 127.5 - 1)


# --- decoding -------------------------------------------------------------------------
def test_dreambench_plus_loading_applies_exif_orientation_and_white_background(tmp_path):
    pixels = np.zeros((20, 30, 4), dtype=np.uint8)
    pixels[..., 0] = 200  # red, fully transparent: plain RGB conversion keeps red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = tmp_path / "rotated.png"
    Image.fromarray(pixels, "RGBA").save(path, exif=exif)
    plain = decode_image(path)
    loaded = decode_image(path, exif_and_alpha=True)
    assert plain.size == (30, 20) and np.asarray(plain)[0, 0].tolist() == [200, 0, 0]
    assert loaded.size == (20, 30) and np.asarray(loaded)[0, 0].tolist() == [255, 255, 255]


def test_missing_or_corrupt_image_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        decode_image(tmp_path / "absent.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(UserError, match="cannot read image"):
        decode_image(broken)


def test_device_pipeline_runs_on_batches_and_matches_single_images():
    images = [make_image(61, 47, seed=s) for s in range(3)]
    batch = {name: torch.from_numpy(np.stack([cpu_views(im, "canonical")[name] for im in images]))
             for name in ("dino224", "clip224")}
    together = clip_input(batch, "canonical")
    for index, image in enumerate(images):
        assert torch.equal(together[index:index + 1], clip_input(device_views(image, "canonical"), "canonical"))
    assert F.mse_loss(together[0], together[1]) > 0


def test_each_mode_names_its_pipeline_pairing_text_and_scale():
    from varbench.metrics.modes import MODE_SPECS, mode_spec

    table = {name: (spec.dino_patch, spec.dino_input_size, spec.pixels, spec.pairing, spec.clip_text, spec.scale)
             for name, spec in MODE_SPECS.items()}
    assert table == {
        "canonical": (16, 224, "canonical", "all", "clip_text", 1.0),
        "dreammatcher": (16, 256, "dreammatcher", "all", "template", 1.0),
        "kosmosg": (16, 224, "hf_clip", "fixed", "clip_text", 100.0),
        "dreambench++": (8, 224, "hf_clip", "fixed", "clip_text", 100.0),
    }
    assert mode_spec("kosmosg").label == "kosmosg mode (x100 scale)"
    with pytest.raises(UserError, match="dreammatcher"):
        mode_spec("dreammatch")


def test_loader_yields_batches_in_order(tmp_path):
    from varbench.metrics.decode import ViewLoader

    paths = []
    for index in range(7):
        paths.append(tmp_path / f"{index}.png")
        make_image(50 + index, 40, seed=index).save(paths[-1])
    loader = ViewLoader("canonical", threads=3)
    batches = list(loader.batches(paths, 3, torch.device("cpu"), with_square=True))
    loader.close()
    assert [len(batch["clip224"]) for batch in batches] == [3, 3, 1]
    stacked = torch.cat([batch["dino224"] for batch in batches])
    for index, path in enumerate(paths):
        expected = cpu_views(decode_image(path), "canonical")["dino224"]
        assert torch.equal(stacked[index], torch.from_numpy(expected.copy()))
    assert batches[0]["square256"].shape == (3, 256, 256, 3) and batches[0]["square256"].dtype == torch.uint8


# --- the GPU path: whole images resized on the device ------------------------------------
# (width, height) pairs: square, both orders of Pillow 13's passes (height first when
# in_h - out_h > 2 (in_w - out_w): most portraits), its boundary (400x545 vs 400x544 to
# 256), portrait and landscape far beyond 2:1, upscales, one-sided resizes.
RESIZE_CASES = [((512, 512), (256, 256)), ((37, 53), (20, 31)), ((90, 100), (201, 224)), ((640, 480), (341, 256)),
                ((300, 7), (29, 7)), ((300, 900), (256, 256)), ((900, 300), (256, 256)), ((400, 545), (256, 256)),
                ((400, 544), (256, 256)), ((257, 1000), (224, 224)), ((1000, 257), (224, 224)),
                ((100, 300), (256, 256)), ((120, 500), (64, 80)), ((256, 600), (256, 256))]
SHAPES = [(61, 47), (100, 300), (300, 100), (97, 250), (250, 97), (140, 545)]  # (width, height)


@pytest.mark.parametrize(("size", "out"), RESIZE_CASES)
def test_tensor_resize_equals_pil_bicubic_bit_for_bit(size, out):
    from varbench.metrics.resample import resize_bicubic

    rng = np.random.default_rng(sum(size))
    noise = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    binary = (noise > 127).astype(np.uint8) * 255  # hard edges: the overshoot clamps at 0 and 255
    batch = torch.from_numpy(np.stack([noise, binary]))
    resized = resize_bicubic(batch, out[1], out[0])
    for index, pixels in enumerate((noise, binary)):
        expected = np.asarray(Image.fromarray(pixels).resize(out, Image.BICUBIC))
        assert np.array_equal(resized[index].numpy(), expected)


def test_the_pass_order_follows_the_installed_pillow():
    from varbench.metrics.resample import height_first, pillow_orders_by_shape

    assert pillow_orders_by_shape()  # the locked Pillow (13) orders its passes by shape
    assert height_first(900, 256, 300, 256) and not height_first(300, 256, 900, 256)
    assert height_first(545, 256, 400, 256) and not height_first(544, 256, 400, 256)


@pytest.mark.parametrize("pixels", ["canonical", "hf_clip", "dreammatcher"])
@pytest.mark.parametrize(("width", "height"), SHAPES)
def test_device_views_equal_cpu_views(pixels, width, height):
    from varbench.metrics.preprocess import device_views as tensor_views

    images = [make_image(width, height, seed=1), make_image(width, height, seed=2)]
    batch = torch.from_numpy(np.stack([np.asarray(image) for image in images]))
    views = tensor_views(batch, pixels, with_square=True)
    for index, image in enumerate(images):
        expected = cpu_views(image, pixels, with_square=True)
        assert sorted(views) == sorted(expected)
        for name, view in expected.items():
            assert torch.equal(views[name][index], torch.from_numpy(view.copy())), name
