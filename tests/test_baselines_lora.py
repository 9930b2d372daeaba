"""DreamBooth-LoRA on the tiny random-init parts of each family (SD 1.5, SDXL, SD3, FLUX.1-dev;
CPU, fp32): the fit, the diffusers LoRA artifact reloaded by the pipeline's own
`load_lora_weights`, what is trained and what stays frozen, the family defaults, loading a
family from its real on-disk layout, the preflight entries and the shared class images."""
from __future__ import annotations

import math
import re
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import baselines.class_images as class_images
from baselines.dreambooth import DreamBoothConfig
from baselines.dreambooth_lora import DreamBoothLora, DreamBoothLoraConfig
from baselines.family_sampling import generate_images
from baselines.synthetic import synthetic_subject
from baselines.train_dreambooth_lora import LORA_FILE, TARGETS, class_image_paths
from varbench.errors import UserError
from varbench.execution import settle_auto
from varbench.method import CellContext
from varbench.models.diffusion import SD15_ID, SD15_REVISION, tiny_components
from varbench.models.families import FAMILIES, load_family, sampling_scheduler, tiny_family
from varbench.protocol import load_protocol
from varbench.schema import from_dict
from varbench.testing import assert_conforms

FAMILY_NAMES = ["sd15", "sdxl", "sd3", "flux"]
PROMPTS = ["a photo of sks dog", "a sks dog on the beach"]
SEEDS = [11, 12]
STEPS = 3


def make_method(base_model: str, **overrides) -> DreamBoothLora:
    # A large learning rate so three steps visibly change the toy model's images.
    settings = {"base_model": base_model, "weights": "tiny", "resolution": 64, "sample_steps": 3, "steps": STEPS,
                "batch_size": 2, "learning_rate": 1e-2, **overrides}
    return DreamBoothLora(from_dict(DreamBoothLoraConfig, settings, "test"))


def make_context(tmp_path, seed: int = 7) -> CellContext:
    return CellContext(device=torch.device("cpu"), fit_seed=seed, workdir=tmp_path / "work",
                       cache_dir=tmp_path / "cache")


def max_difference(first, second) -> int:
    return int(np.abs(np.asarray(first, dtype=np.int16) - np.asarray(second, dtype=np.int16)).max())


def tiny_pipeline(family: str, config):
    """A fresh tiny base pipeline with the config's sampler, as load_base sets it up."""
    model = load_family(FAMILIES[family], family, None, "tiny", "cpu", torch.float32)
    model.pipeline.scheduler = sampling_scheduler(model, config.sampler)
    return model


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def fitted(request, tmp_path_factory):
    family = request.param
    tmp = tmp_path_factory.mktemp(f"lora-{family}")
    method = make_method(family, prior_preservation=True, num_class_images=2)
    ctx = make_context(tmp)
    model = method.fit(method.load_base(ctx), synthetic_subject(tmp / "subject"), ctx)
    ctx.flush_losses()
    artifact = tmp / "artifact"
    artifact.mkdir()
    model.save(artifact)
    return SimpleNamespace(family=family, method=method, ctx=ctx, model=model, artifact=artifact,
                           images=model.generate(PROMPTS, SEEDS))


def test_fit_logs_the_instance_and_prior_losses_of_every_step(fitted):
    rows = fitted.ctx.losses
    assert [row["step"] for row in rows] == [1.0, 2.0, 3.0]
    for row in rows:
        assert all(math.isfinite(row[key]) for key in ("loss", "instance_loss", "prior_loss"))
        assert row["loss"] == pytest.approx(row["instance_loss"] + row["prior_loss"], rel=1e-5)


def test_artifact_reloads_with_the_pipelines_own_load_lora_weights(fitted):
    """Diffusers' LoRA format: a fresh base pipeline + load_lora_weights gives exactly the
    fitted model's images, and they differ from the base model's."""
    assert sorted(p.name for p in fitted.artifact.iterdir()) == [LORA_FILE]
    config = fitted.method.config
    base = generate_images(tiny_pipeline(fitted.family, config).pipeline, PROMPTS, SEEDS, config)
    pipeline = tiny_pipeline(fitted.family, config).pipeline
    pipeline.load_lora_weights(str(fitted.artifact))
    reloaded = generate_images(pipeline, PROMPTS, SEEDS, config)
    for trained, loaded, untrained in zip(fitted.images, reloaded, base):
        assert max_difference(trained, loaded) == 0
        assert max_difference(loaded, untrained) > 10


def test_load_artifact_reproduces_the_fitted_model(fitted):
    method = make_method(fitted.family)
    model = method.load_artifact(method.load_base(fitted.ctx), fitted.artifact, fitted.ctx)
    assert [max_difference(a, b) for a, b in zip(model.generate(PROMPTS, SEEDS), fitted.images)] == [0, 0]
    assert model.trainable_parameters == fitted.model.trainable_parameters


def test_the_adapters_start_from_the_seed_not_from_the_process_generator():
    """peft draws the adapters' initial values from torch's global generator: a cell must
    not depend on what ran before it in the process, nor change what runs after it."""
    from baselines.train_dreambooth_lora import add_lora

    config = make_method("sd15").config
    starts = []
    for global_seed, seed in ((1, 7), (2, 7), (1, 8)):
        torch.manual_seed(global_seed)
        denoiser = tiny_family(FAMILIES["sd15"]).denoiser
        expected_next = torch.random.get_rng_state()
        add_lora(denoiser, "sd15", config, seed)
        assert torch.equal(torch.random.get_rng_state(), expected_next)  # the process's stream is untouched
        starts.append({name: p.detach().clone() for name, p in denoiser.named_parameters() if "lora_A" in name})
    assert starts[0] and all(torch.equal(starts[0][name], starts[1][name]) for name in starts[0])
    assert not any(torch.equal(starts[0][name], starts[2][name]) for name in starts[0])


def test_only_the_adapters_train_and_their_count_is_rank_times_in_plus_out(fitted):
    reference = tiny_family(FAMILIES[fitted.family])
    denoiser = fitted.model.model.denoiser
    expected = 0
    for name, module in reference.denoiser.named_modules():
        if isinstance(module, torch.nn.Linear) and any(name == t or name.endswith("." + t)
                                                       for t in TARGETS[fitted.family]):
            expected += 4 * (module.in_features + module.out_features)  # rank 4: A (4 x in) + B (out x 4)
    assert fitted.model.trainable_parameters == expected > 0
    # every base weight (denoiser, text encoders, VAE) is untouched: peft keeps it as base_layer
    trained = {name.replace(".base_layer", ""): t for name, t in denoiser.state_dict().items() if "lora_" not in name}
    assert all(torch.equal(trained[name], t) for name, t in reference.denoiser.state_dict().items())
    for part in ("vae", "text_encoder"):
        for (name, tensor), (_, before) in zip(getattr(fitted.model.pipeline, part).state_dict().items(),
                                               getattr(reference.pipeline, part).state_dict().items()):
            assert torch.equal(tensor, before), (part, name)


def test_each_image_depends_only_on_its_own_prompt_and_seed(fitted):
    alone = fitted.model.generate(PROMPTS[1:], SEEDS[1:])[0]
    swapped = fitted.model.generate(PROMPTS[::-1], SEEDS[::-1])
    assert max_difference(alone, fitted.images[1]) <= 1
    assert max_difference(swapped[0], fitted.images[1]) <= 1 and max_difference(swapped[1], fitted.images[0]) <= 1


def test_the_runners_rules_hold_for_a_transformer_family():
    assert_conforms("dreambooth_lora", config={"base_model": "flux"})


def test_family_defaults_follow_the_diffusers_scripts():
    expected = {  # baselines/README-lora.md gives each value's source
        "sd15": dict(resolution=512, learning_rate=5e-4, adam_weight_decay=1e-2, lora_alpha=4, sampler="dpm",
                     sample_steps=25, guidance_scale=7.5, weighting_scheme=None, train_guidance_scale=None),
        "sdxl": dict(resolution=1024, learning_rate=1e-4, adam_weight_decay=1e-4, lora_alpha=4, sampler="dpm",
                     sample_steps=25, guidance_scale=5.0, weighting_scheme=None, train_guidance_scale=None),
        "sd3": dict(resolution=512, learning_rate=1e-4, adam_weight_decay=1e-4, lora_alpha=4, sampler="shipped",
                    sample_steps=28, guidance_scale=7.0, weighting_scheme="logit_normal", max_sequence_length=77),
        "flux": dict(resolution=512, learning_rate=1e-4, adam_weight_decay=1e-4, lora_alpha=4, sampler="shipped",
                     sample_steps=28, guidance_scale=3.5, weighting_scheme="none", max_sequence_length=512,
                     train_guidance_scale=3.5),
    }
    for family, values in expected.items():
        config = DreamBoothLora(DreamBoothLoraConfig(base_model=family)).config
        assert {name: getattr(config, name) for name in values} == values, family
        assert (config.rank, config.steps, config.batch_size, config.prior_preservation, config.num_class_images,
                config.max_grad_norm, config.identifier) == (4, 500, 4, False, 100, 1.0, "sks")
    assert DreamBoothLoraConfig(base_model="sdxl", rank=16).lora_alpha == 16  # tied to the rank ...
    assert DreamBoothLoraConfig(base_model="flux", rank=16).lora_alpha == 4  # ... but FLUX's is its own
    assert DreamBoothLoraConfig(base_model="sdxl", learning_rate=3e-4).learning_rate == 3e-4  # set: kept
    assert DreamBoothLora().uses_random_init() is False and make_method("sd3").uses_random_init() is True


def test_compile_and_cudnn_attention_are_decided_per_family():
    """`auto` compiles where the family's break-even was measured and the worker runs enough
    cells (COMPILE_PAYS_AFTER); cuDNN attention is a family default; neither enters the run id."""
    arms = {arm.name: arm for arm in load_protocol("dreambench").arms}

    def settled(arm, cells):
        config = arms[arm].make_method(cells).config
        return config.compile, config.compile_generation, config.cudnn_attention

    assert settled("lora-flux", 30) == (True, True, False)  # cuDNN's backward fails on FLUX.1-dev
    assert settled("lora-flux", 2) == (True, False, False)  # sampling pays after 3 cells
    assert settled("lora-flux", 1) == (False, False, False)
    assert settled("lora-sdxl", 8) == (True, True, True)
    assert settled("lora-sdxl", 7) == (True, False, True)  # sampling pays after 8 cells
    assert settled("lora-sdxl", 6) == (False, False, True)
    sd15 = DreamBoothLoraConfig(base_model="sd15")
    assert [settle_auto(sd15, cells, DreamBoothLora.compile_break_even(sd15)).compile for cells in (11, 12)] == [
        False, True]
    sd3 = DreamBoothLoraConfig(base_model="sd3")
    pays_after = DreamBoothLora.compile_break_even(sd3)
    assert [settle_auto(sd3, cells, pays_after).compile for cells in (9, 10)] == [False, True]
    assert [settle_auto(sd3, cells, pays_after).compile_generation for cells in (5, 6)] == [False, True]
    assert (sd15.cudnn_attention, DreamBoothLoraConfig(base_model="sdxl").cudnn_attention, sd3.cudnn_attention) == (
        True, True, True)
    assert replace(sd3, cudnn_attention=None).cudnn_attention is True  # None: the family's default again
    assert sd15.fuse_lora_qkv is True  # (a UNet family's fit; the transformers' have no such processors)
    changed = ["execution.compile=false", "execution.compile_generation=true", "execution.cudnn_attention=true"]
    other = {arm.name: arm for arm in load_protocol("dreambench", changed).arms}
    assert other["lora-flux"].make_method(30).config.cudnn_attention is True  # (taken: the option reached the arm)
    assert all(arms[name].run_id == other[name].run_id for name in ("lora-flux", "lora-sdxl"))
    # a method built outside a worker decides `auto` as for one cell; a value set is kept
    assert DreamBoothLora(DreamBoothLoraConfig(base_model="flux")).config.compile is False
    forced = DreamBoothLora(DreamBoothLoraConfig(base_model="flux", compile=True, cudnn_attention=True)).config
    assert (forced.compile, forced.cudnn_attention) == (True, True)


@pytest.mark.parametrize("settings, message", [
    ({"base_model": "sdxl", "family": "flux"}, "is SDXL base 1.0, but family says 'flux'"),
    ({"base_model": "someone/model"}, "family is unknown"),
    ({"base_model": "flux", "resolution": 72}, "multiple of 16"),
    ({"base_model": "sd3", "sampler": "ddim"}, "does not apply to Stable Diffusion 3"),
    ({"base_model": "sdxl", "train_guidance_scale": 2.0}, "FLUX.1-dev only"),
    ({"base_model": "sd15", "steps": 0}, "at least 1"),
])
def test_bad_config_values_are_one_line_user_errors(settings, message):
    with pytest.raises(UserError, match=message) as caught:
        DreamBoothLora(from_dict(DreamBoothLoraConfig, settings, "protocol.yaml"))
    assert "\n" not in caught.value.line()


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_a_family_loads_from_its_real_on_disk_layout(family, tmp_path):
    """A tiny pipeline written by save_pretrained (model_index.json, one folder per part,
    safetensors) loads as `base_model: <folder>` and samples the same images."""
    source = tiny_family(FAMILIES[family])
    source.pipeline.save_pretrained(str(tmp_path / family), safe_serialization=True)
    method = make_method(str(tmp_path / family), family=family, weights="pretrained")
    ctx = make_context(tmp_path)
    loaded = method.load_base(ctx)
    assert loaded.source == str((tmp_path / family).resolve()) and not loaded.random_init
    config = method.config
    first = generate_images(loaded.pipeline, PROMPTS[:1], SEEDS[:1], config)[0]
    again = generate_images(tiny_pipeline(family, config).pipeline, PROMPTS[:1], SEEDS[:1], config)[0]
    # (the same weights; a loaded CLIP projection's matmuls may round differently, ~1e-7)
    assert max_difference(first, again) <= 1
    wrong = make_method(str(tmp_path / family), family="flux" if family == "sdxl" else "sdxl", weights="pretrained")
    with pytest.raises(UserError, match=f"holds a {FAMILIES[family].pipeline}"):
        wrong.load_base(ctx)


def test_weights_needed_pins_each_release_and_flags_the_gated_ones():
    rows = {family: DreamBoothLora(DreamBoothLoraConfig(base_model=family)).weights_needed()
            for family in FAMILY_NAMES}
    (label, need, local), = rows["sd15"]
    assert label == f"{SD15_ID} (diffusers pipeline)" and need.revision == SD15_REVISION and local is None
    from baselines.dreambooth import DreamBooth

    assert DreamBooth().weights_needed()[0][:2] == rows["sd15"][0][:2]  # one preflight row with DreamBooth's
    for family in ("sdxl", "sd3", "flux"):
        (label, need, _), = rows[family]
        assert (need.repo_id, need.revision) == (FAMILIES[family].repo_id, FAMILIES[family].revision)
        assert re.fullmatch(r"[0-9a-f]{40}", need.revision)
        assert ("gated" in label) == (family in ("sd3", "flux"))
        assert "model_index.json" in need.download_command()
    assert DreamBoothLora(DreamBoothLoraConfig(base_model="flux", weights="random")).weights_needed() == []
    assert DreamBoothLora.random_weights == {"weights": "random"}


def test_a_gated_release_missing_from_the_cache_says_how_to_get_access(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(UserError) as caught:
        load_family(FAMILIES["flux"], "flux", None, "pretrained", "cpu", torch.float32)
    line = caught.value.line()
    assert "\n" not in line and "gated" in line and "hf auth login" in line
    assert "https://huggingface.co/black-forest-labs/FLUX.1-dev" in line


def test_class_images_are_shared_with_dreambooth_and_built_once_per_family(tmp_path, monkeypatch):
    ctx = make_context(tmp_path)
    lora = make_method("sd15", prior_preservation=True, num_class_images=2, sampler="ddim").config
    components = tiny_components()
    dreambooth = DreamBoothConfig(base_model="tiny", revision=None, resolution=64, sample_steps=3, num_class_images=2)
    expected = class_images.class_image_paths(components, dreambooth, "dog", ctx)
    assert class_image_paths(tiny_pipeline("sd15", lora), lora, "dog", ctx) == expected  # DreamBooth's cache entry
    calls = []
    import baselines.train_dreambooth_lora as recipe

    monkeypatch.setattr(recipe, "generate_images", lambda *args, **kw: calls.append(len(args[1])) or
                        generate_images(*args, **kw))
    sdxl = make_method("sdxl", prior_preservation=True, num_class_images=3, class_batch_size=2).config
    first = class_image_paths(tiny_pipeline("sdxl", sdxl), sdxl, "dog", ctx)
    assert calls == [2, 1] and len(first) == 3 and first[0].parent != expected[0].parent
    assert class_image_paths(tiny_pipeline("sdxl", sdxl), sdxl, "dog", ctx) == first and calls == [2, 1]


@pytest.mark.parametrize("family", ["sdxl", "flux"])
def test_bf16_frozen_weights_train_fp32_adapters_that_reload_exactly(family, tmp_path, monkeypatch):
    """The CUDA precision recipe, run on the CPU: frozen weights in bf16 under bf16 autocast,
    adapters trained and saved in fp32; a reload into a bf16 pipeline samples the same images."""
    import baselines.train_dreambooth_lora as recipe
    import baselines.training as training

    def bf16(config, device):
        return torch.bfloat16

    monkeypatch.setattr(training, "compute_dtype", bf16)
    monkeypatch.setattr(recipe, "compute_dtype", bf16)
    ctx = make_context(tmp_path)
    method = make_method(family, steps=2, batch_size=1)
    base = method.load_base(ctx)
    assert next(base.denoiser.parameters()).dtype == torch.bfloat16
    model = method.fit(base, synthetic_subject(tmp_path / "subject", count=2), ctx)
    assert {tensor.dtype for tensor in model.layers.values()} == {torch.float32}
    model.save(tmp_path / "artifact")
    images = model.generate(PROMPTS[:1], SEEDS[:1])
    again = make_method(family).load_artifact(make_method(family).load_base(ctx), tmp_path / "artifact", ctx)
    assert max_difference(again.generate(PROMPTS[:1], SEEDS[:1])[0], images[0]) == 0


def test_full_size_random_parts_have_the_releases_parameter_counts():
    """`weights: random` (the `--backbones random` rehearsal) builds the real architectures:
    built on the meta device (no memory), every part has its release's parameter count."""
    from baselines.ip_adapter_model import full_image_encoder
    from varbench.models.families import random_family

    counts = {"sdxl": {"unet": 2_567_463_684, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840,
                       "vae": 83_653_863},
              "sd3": {"transformer": 2_028_328_000, "text_encoder": 123_650_304, "text_encoder_2": 694_659_840,
                      "text_encoder_3": 4_762_310_656, "vae": 83_819_683},
              "flux": {"transformer": 11_901_408_320, "text_encoder": 123_060_480, "text_encoder_2": 4_762_310_656,
                       "vae": 83_819_683}}
    for family, expected in counts.items():
        model = random_family(FAMILIES[family], "meta", torch.bfloat16)
        parts = {name: sum(p.numel() for p in module.parameters())
                 for name, module in model.pipeline.components.items() if hasattr(module, "parameters")}
        assert parts == expected, family
        assert model.pipeline.scheduler.sigmas.dtype == torch.float32  # schedules stay fp32 on the host
    with torch.device("meta"):  # IP-Adapter's image encoders: ViT-H/14, ViT-bigG/14, ViT-L/14 (with projections)
        assert [sum(p.numel() for p in full_image_encoder(f).parameters()) for f in ("sd15", "sdxl", "flux")] == \
            [632_076_800, 1_844_907_264, 303_966_208]
