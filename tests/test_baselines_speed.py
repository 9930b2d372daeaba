"""Speed options of the diffusion baselines (baselines.speed, baselines.sampling) on the CPU:
the sync-free sampling loop draws exactly the pipeline's images, padding a batch leaves its
images unchanged, the options change nothing on the CPU, the compile / CUDA graph fallbacks
keep the results of the plain module, and casts keep fp32 modules without diffusers' warning."""
from __future__ import annotations

import dataclasses
import logging
import warnings

import numpy as np
import pytest
import torch

import baselines.speed as speed
from baselines.common import DiffusionConfig, cast
from baselines.custom_diffusion import make_processors
from baselines.sampling import Sampler, fuse_projections, sampling_pipeline
from baselines.speed import Accelerated, NoisePrediction, accelerate, speed_context
from baselines.synthetic import SMOKE_CONFIGS, synthetic_subject
from baselines.textual_inversion import TextualInversion, TextualInversionConfig
from varbench.schema import from_dict
from varbench.method import CellContext
from varbench.models.diffusion import cast_module, tiny_components

PROMPTS = ["a dog in the snow", "a photo of sks dog", "a red cube"]
SEEDS = [3, 4, 5]
ALL_ON = dict(cudnn_benchmark=True, channels_last=True, channels_last_sampling=True, cuda_graphs=True, compile=True,
              fuse_qkv=True,
              attention_backend="flash", sampling_loop="varbench")
ALL_OFF = dict(cudnn_benchmark=False, channels_last=False, channels_last_sampling=False, cuda_graphs=False,
               compile=False, fuse_qkv=False,
               attention_backend="auto", sampling_loop="diffusers")


@pytest.fixture(scope="module")
def components():
    return tiny_components()


def sample_config(**overrides) -> DiffusionConfig:
    return DiffusionConfig(base_model="tiny", resolution=64, sample_steps=4, **overrides)


def max_difference(first, second) -> int:
    return int(np.abs(np.asarray(first, dtype=np.int16) - np.asarray(second, dtype=np.int16)).max())


@pytest.mark.parametrize("sampler", ["ddim", "dpm"])
@pytest.mark.parametrize("guidance", [7.5, 1.0])
def test_sync_free_loop_draws_exactly_the_pipelines_images(components, sampler, guidance):
    config = sample_config(sampler=sampler, guidance_scale=guidance)
    reference_config = dataclasses.replace(config, sampling_loop="diffusers")
    reference = Sampler(sampling_pipeline(components, components.unet, reference_config), reference_config)
    ours = Sampler(sampling_pipeline(components, components.unet, config), config)
    expected, got = reference(PROMPTS[:2], SEEDS[:2]), ours(PROMPTS[:2], SEEDS[:2])
    assert [max_difference(a, b) for a, b in zip(expected, got)] == [0, 0]
    assert max_difference(got[0], got[1]) > 20  # not trivially equal images


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_device_side_postprocess_gives_the_pipelines_pixels(components, dtype):
    from baselines.sampling import to_pil_images

    pipeline = sampling_pipeline(components, components.unet, sample_config())
    images = (torch.randn(3, 3, 40, 24, generator=torch.Generator().manual_seed(0)) * 0.8)  # some clamp.to(dtype)
    expected = pipeline.image_processor.postprocess(images, output_type="pil", do_denormalize=[True] * 3)
    got = to_pil_images(images)
    assert [np.asarray(image).shape for image in got] == [(40, 24, 3)] * 3
    assert [max_difference(a, b) for a, b in zip(expected, got)] == [0, 0, 0]


def test_padding_a_batch_leaves_its_images_unchanged(components):
    config = sample_config()
    sampler = Sampler(sampling_pipeline(components, components.unet, config), config)
    # What a CUDA sampler with graphs holds: an Accelerated step (plain on the CPU).
    sampler.step = Accelerated(sampler.guided_noise, training=False, compile=False, cuda_graphs=False)
    full = sampler(PROMPTS, SEEDS)
    alone = sampler(PROMPTS[1:2], SEEDS[1:2])  # padded to the 3 of the earlier call
    assert sampler.batch_sizes == {3}
    assert len(alone) == 1 and max_difference(alone[0], full[1]) <= 1
    plain = Sampler(sampling_pipeline(components, components.unet, config), config)
    assert max_difference(plain(PROMPTS[1:2], SEEDS[1:2])[0], alone[0]) <= 1


def test_speed_options_change_nothing_on_the_cpu(tmp_path):
    def fit(options: dict, folder: str):
        settings = {**SMOKE_CONFIGS["textual_inversion"], "steps": 2, "sample_steps": 3, "learning_rate": 2e-2,
                    **options}
        method = TextualInversion(from_dict(TextualInversionConfig, settings, "test"))
        ctx = CellContext(device=torch.device("cpu"), fit_seed=3, workdir=tmp_path / folder / "work",
                          cache_dir=tmp_path / folder / "cache")
        model = method.fit(method.load_base(ctx), synthetic_subject(tmp_path / folder / "subject"), ctx)
        ctx.flush_losses()
        return model, ctx.losses

    fast, fast_losses = fit(ALL_ON, "on")
    plain, plain_losses = fit(ALL_OFF, "off")
    assert torch.equal(fast.vectors, plain.vectors) and fast_losses == plain_losses
    prompts, seeds = ["a photo of <placeholder>"], [1]
    assert max_difference(fast.generate(prompts, seeds)[0], plain.generate(prompts, seeds)[0]) == 0


def sdpa_state() -> tuple:
    order = torch._C._get_sdp_priority_order() if hasattr(torch._C, "_get_sdp_priority_order") else None
    return (torch.backends.cudnn.benchmark, torch.backends.cuda.flash_sdp_enabled(),
            torch.backends.cuda.mem_efficient_sdp_enabled(), torch.backends.cuda.cudnn_sdp_enabled(),
            torch.backends.cuda.math_sdp_enabled(), order)


def test_speed_context_sets_and_restores_cuda_flags():
    from torch.nn.attention import SDPBackend

    before = sdpa_state()
    with speed_context(sample_config(cudnn_benchmark=True, attention_backend="cudnn"), "cuda"):
        assert torch.backends.cudnn.benchmark is True
        if before[-1] is not None:  # torch with set_priority: cuDNN first, the others where it cannot run
            assert sdpa_state()[-1][0] == int(SDPBackend.CUDNN_ATTENTION)
            assert torch.backends.cuda.cudnn_sdp_enabled() and torch.backends.cuda.flash_sdp_enabled()
    assert sdpa_state() == before
    with speed_context(sample_config(cudnn_benchmark=True), "cpu"):
        assert torch.backends.cudnn.benchmark == before[0]  # CPU: untouched


def test_accelerate_is_the_plain_module_on_the_cpu(components):
    module = NoisePrediction(components.unet)
    assert accelerate(module, sample_config(**ALL_ON), "cpu", training=True) is module
    assert isinstance(accelerate(module, sample_config(**ALL_ON), "cuda", training=True), Accelerated)
    assert accelerate(module, sample_config(**ALL_OFF), "cuda", training=True) is module


def unet_inputs(components, batch: int = 2, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    noisy = torch.randn(batch, 4, 8, 8, generator=generator)
    timesteps = torch.randint(0, 1000, (batch,), generator=generator)
    states = torch.randn(batch, 77, 32, generator=generator).requires_grad_(True)
    return noisy, timesteps, states


def gradients_of(call, components, inputs):
    noisy, timesteps, states = inputs
    states = states.detach().requires_grad_(True)
    output = call(noisy, timesteps, states)
    (output.float() ** 2).mean().backward()
    return output.detach(), states.grad


def test_a_failing_compile_warns_once_and_runs_eager(components, monkeypatch):
    def broken_compile(module, **kwargs):
        def call(*args):
            raise RuntimeError("backend compiler failed\nsecond line")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    module = NoisePrediction(components.unet)
    accelerated = Accelerated(module, training=True, compile=True, cuda_graphs=False)
    inputs = unet_inputs(components)
    with pytest.warns(RuntimeWarning, match=r"torch.compile of NoisePrediction failed \(RuntimeError: backend "
                                            r"compiler failed\); running eager"):
        output, grad = gradients_of(accelerated, components, inputs)
    expected_output, expected_grad = gradients_of(module, components, inputs)
    assert torch.equal(output, expected_output) and torch.equal(grad, expected_grad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning for later calls
        gradients_of(accelerated, components, unet_inputs(components, seed=1))


@pytest.mark.parametrize("training", [True, False])
def test_a_failing_or_wrong_graph_capture_falls_back_to_the_module(components, monkeypatch, training):
    def wrong_graph(runner, samples):
        return lambda *args: runner(*args) + 1.0  # a "graph" whose output is off

    monkeypatch.setattr(speed, "capture_training_graph", wrong_graph)
    monkeypatch.setattr(speed, "InferenceGraph", wrong_graph)
    module = NoisePrediction(components.unet)
    accelerated = Accelerated(module, training=training, compile=False, cuda_graphs=True)
    inputs = unet_inputs(components)
    with pytest.warns(RuntimeWarning, match="CUDA graph capture of NoisePrediction failed .*outputs differ"):
        output, _ = gradients_of(accelerated, components, inputs)
    assert torch.equal(output, gradients_of(module, components, inputs)[0])

    def failing_graph(runner, samples):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(speed, "capture_training_graph", failing_graph)
    monkeypatch.setattr(speed, "InferenceGraph", failing_graph)
    accelerated = Accelerated(module, training=training, compile=False, cuda_graphs=True)
    with pytest.warns(RuntimeWarning, match="not permitted when stream is capturing"):
        assert torch.equal(gradients_of(accelerated, components, inputs)[0], output)


@pytest.mark.slow
def test_compiled_module_gives_the_modules_values_and_gradients():
    # A small module, so compiling (inductor's C++ backend on the CPU) takes seconds.
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))
    accelerated = Accelerated(module, training=True, compile=True, cuda_graphs=False)
    inputs = torch.randn(3, 8, requires_grad=True)
    try:
        output = accelerated(inputs)
    except Exception as err:  # pragma: no cover - only where inductor cannot build at all
        pytest.skip(f"torch.compile unavailable here: {err}")
    assert accelerated.compile, "compilation fell back to eager"
    output.sum().backward()
    compiled_grads = [p.grad.clone() for p in module.parameters()] + [inputs.grad.clone()]
    module.zero_grad()
    plain_inputs = inputs.detach().requires_grad_(True)
    expected = module(plain_inputs)
    expected.sum().backward()
    torch.testing.assert_close(output, expected)
    for got, want in zip(compiled_grads, [p.grad for p in module.parameters()] + [plain_inputs.grad]):
        torch.testing.assert_close(got, want)


def test_casts_keep_fp32_modules_and_do_not_warn(caplog):
    fresh = tiny_components()
    fresh.unet._keep_in_fp32_modules = ["time_embedding"]
    with caplog.at_level(logging.WARNING):
        cast_module(fresh.unet, torch.bfloat16)
        cast([fresh.vae], torch.bfloat16)
    assert not [r for r in caplog.records if "kept in float32" in r.getMessage()]
    assert fresh.unet.conv_in.weight.dtype == torch.bfloat16
    assert fresh.vae.encoder.conv_in.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in fresh.unet.time_embedding.parameters())
    with caplog.at_level(logging.WARNING):
        fresh.vae.to(torch.float32)  # what the code used to do: diffusers warns
    assert [r for r in caplog.records if "kept in float32" in r.getMessage()]


def test_fused_projections_draw_the_same_images():
    config = sample_config()
    fresh = tiny_components()
    unfused = Sampler(sampling_pipeline(fresh, fresh.unet, config), config)(PROMPTS[:2], SEEDS[:2])
    fuse_projections(fresh.unet)
    assert {type(p).__name__ for p in fresh.unet.attn_processors.values()} == {"FusedAttnProcessor2_0"}
    fused = Sampler(sampling_pipeline(fresh, fresh.unet, config), config)(PROMPTS[:2], SEEDS[:2])
    assert [max_difference(a, b) for a, b in zip(fused, unfused)] in ([0, 0], [0, 1], [1, 0], [1, 1])
    custom = tiny_components()
    custom.unet.set_attn_processor(dict(make_processors(custom.unet, kv_weights=None)))
    fuse_projections(custom.unet)  # Custom Diffusion's processors hold trained K/V: left alone
    assert {type(p).__name__ for p in custom.unet.attn_processors.values()} == {"CustomDiffusionAttnProcessor2_0"}


@pytest.mark.parametrize("method_name", ["dreambooth", "custom_diffusion", "textual_inversion"])
def test_the_cuda_control_flow_runs_with_graphs_simulated(method_name, tmp_path, monkeypatch):
    """The GPU path (channels_last, fused projections, graph wrappers with their output
    check, batch padding) on the CPU, with 'capture' replaced by the runner itself."""
    import baselines.sampling as sampling
    from baselines.custom_diffusion import CustomDiffusion
    from baselines.dreambooth import DreamBooth

    captured = []

    def pass_through(runner, samples):
        captured.append(type(runner).__name__)
        return runner

    for module in (speed, sampling):
        monkeypatch.setattr(module, "on_cuda", lambda device: True)
    monkeypatch.setattr(speed, "capture_training_graph", pass_through)
    monkeypatch.setattr(speed, "InferenceGraph", pass_through)
    method_class = {"dreambooth": DreamBooth, "custom_diffusion": CustomDiffusion,
                    "textual_inversion": TextualInversion}[method_name]
    settings = {**SMOKE_CONFIGS[method_name], "steps": 2, "sample_steps": 2, "num_class_images": 2,
                **dict(ALL_ON, compile=False, channels_last_sampling=False)}
    settings = {k: v for k, v in settings.items() if k in method_class.Config.__dataclass_fields__}
    method = method_class(from_dict(method_class.Config, settings, "test"))
    ctx = CellContext(device=torch.device("cpu"), fit_seed=1, workdir=tmp_path / "work", cache_dir=tmp_path / "cache")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback may trigger
        model = method.fit(method.load_base(ctx), synthetic_subject(tmp_path / "subject", count=2), ctx)
        ctx.flush_losses()
        images = model.generate(PROMPTS, SEEDS) + model.generate(PROMPTS[:1], SEEDS[:1])
    assert all(np.isfinite(row["loss"]) for row in ctx.losses) and len(images) == 4
    assert model.sampler.batch_sizes == {3}  # the single prompt was padded to the captured 3
    assert max_difference(images[3], images[0]) <= 1
    training = {"dreambooth": ["NoisePrediction"],
                "custom_diffusion": ["TextStates", "NoisePrediction"],  # its VAE encoder: no graph (no gain)
                "textual_inversion": ["TextStates", "NoisePrediction"]}[method_name]
    sampling = ("GuidedNoise", "LatentDecoding")
    assert [name for name in captured if name not in sampling] == training
    samplers = 1 if method_name == "textual_inversion" else 2  # + the class images' sampler
    assert captured.count("GuidedNoise") == captured.count("LatentDecoding") == samplers
    # NHWC for the fit, NCHW again for sampling (channels_last_sampling: false)
    assert model.pipeline.unet.conv_in.weight.is_contiguous()
    assert not model.pipeline.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    if method_name == "dreambooth":  # fp32 here, so sampling uses the trained UNet itself, not a copy
        assert model.trained_unet is model.pipeline.unet
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    model.save(artifact)
    reloaded = method.load_artifact(method.load_base(ctx), artifact, ctx)
    assert max_difference(reloaded.generate(PROMPTS[:1], SEEDS[:1])[0], images[0]) <= 1
