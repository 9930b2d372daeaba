"""The speed layer of the diffusion baselines (baselines.fast) against the plain computation,
on the CPU: the one switch (`accelerated`) swaps what it says and undoes it; the sync-free
sampling loop draws exactly the pipeline's images; padding a batch leaves its images
unchanged; routed network calls equal the plain calls; the fused training loop and
encoding ahead compute the plain loops' steps; the options change nothing on the CPU; the
compile / CUDA graph fallbacks keep the results of the plain module; casts keep fp32
modules without diffusers' warning."""
from __future__ import annotations

import copy
import dataclasses
import inspect
import logging
import random
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from torch import nn

import baselines.train_custom_diffusion as train_custom_diffusion
import baselines.train_textual_inversion as train_textual_inversion
from baselines.common import DiffusionConfig
from baselines.custom_diffusion import CustomDiffusionConfig
from baselines.dreambooth_lora import DreamBoothLoraConfig
from baselines.fast import accelerated, calls, family_sampling, lora_qkv, settings
from baselines.fast import sampling as fast_sampling
from baselines.fast.calls import FastCall, NoisePrediction, TextStates, fast_call
from baselines.fast.sampling import SyncFreePipeline, fuse_projections
from baselines.fast.training import EncodedSteps, encoding_ahead, fused_training_loop
from baselines.sampling import generate_images, sampling_pipeline
from baselines.synthetic import SMOKE_CONFIGS, synthetic_subject
from baselines.textual_inversion import TextualInversion, TextualInversionConfig
from baselines.train_custom_diffusion import StepDraws, encoded_steps, make_processors
from baselines.training import cast, training_loop
from varbench.method import CellContext
from varbench.models.diffusion import cast_module, tiny_components
from varbench.models.fast.groupnorm import ChannelStatsGroupNorm
from varbench.schema import from_dict

PROMPTS = ["a dog in the snow", "a photo of sks dog", "a red cube"]
SEEDS = [3, 4, 5]
ALL_ON = dict(cudnn_benchmark=True, channels_last=True, channels_last_sampling=True, cuda_graphs=True, compile=True,
              fuse_qkv=True,
              attention_backend="flash", sampling_loop="varbench")
ALL_OFF = dict(cudnn_benchmark=False, channels_last=False, channels_last_sampling=False, cuda_graphs=False,
               compile=False, fuse_qkv=False,
               attention_backend="auto", sampling_loop="diffusers")


def kept_for(denoiser: nn.Module) -> family_sampling.DenoiserCalls | None:
    """The sampling calls kept for `denoiser` (by whichever pipeline holds it), if any."""
    return next((kept for kept in family_sampling.KEPT.values() if kept.denoiser is denoiser), None)


@pytest.fixture(scope="module")
def components():
    return tiny_components()


def sample_config(**overrides) -> DiffusionConfig:
    return DiffusionConfig(base_model="tiny", resolution=64, sample_steps=4, **overrides)


def max_difference(first, second) -> int:
    return int(np.abs(np.asarray(first, dtype=np.int16) - np.asarray(second, dtype=np.int16)).max())


def simulate_cuda(monkeypatch, captured: list | None = None, inference: list | None = None) -> None:
    """The CUDA control flow on the CPU: 'capture' runs the runner itself. Captures are
    listed by runner class in `captured`, inference ones in `inference` where given."""
    def recorder(into):
        def pass_through(runner, samples):
            if into is not None:
                into.append(type(runner).__name__)
            return runner
        return pass_through

    monkeypatch.setattr(calls, "on_cuda", lambda device: True)
    monkeypatch.setattr(calls, "capture_training_graph", recorder(captured))
    monkeypatch.setattr(calls, "InferenceGraph", recorder(captured if inference is None else inference))


def sdpa_state() -> tuple:
    order = torch._C._get_sdp_priority_order() if hasattr(torch._C, "_get_sdp_priority_order") else None
    return (torch.backends.cudnn.benchmark, torch.backends.cuda.flash_sdp_enabled(),
            torch.backends.cuda.mem_efficient_sdp_enabled(), torch.backends.cuda.cudnn_sdp_enabled(),
            torch.backends.cuda.math_sdp_enabled(), order)


# --- the switch -------------------------------------------------------------------------------

def test_a_fit_switch_swaps_modules_and_functions_and_restores_them(monkeypatch):
    simulate_cuda(monkeypatch)
    base = tiny_components()
    config = from_dict(TextualInversionConfig, {**SMOKE_CONFIGS["textual_inversion"], **ALL_ON}, "test")
    plain_loop, plain_encoded_steps = train_textual_inversion.training_loop, train_custom_diffusion.encoded_steps
    flags = sdpa_state()
    with accelerated(base, config, "cuda", training=True) as done:
        assert base.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        assert base.vae.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        assert "forward" in vars(base.unet) and "forward" in vars(base.text_encoder)
        assert {type(m) for m in base.unet.modules() if isinstance(m, nn.GroupNorm)} == {ChannelStatsGroupNorm}
        assert train_textual_inversion.training_loop is fused_training_loop
        assert train_custom_diffusion.encoded_steps is plain_encoded_steps  # no Custom Diffusion here
        assert torch.backends.cudnn.benchmark is True
        assert "UNet calls with gradients -> FastCall" in done.changes
        assert ("baselines.train_textual_inversion.training_loop -> baselines.fast.training.fused_training_loop"
                in done.changes)
    assert done.changes == []
    assert base.unet.conv_in.weight.is_contiguous() and base.vae.encoder.conv_in.weight.is_contiguous()
    assert "forward" not in vars(base.unet) and "forward" not in vars(base.text_encoder)
    assert {type(m) for m in base.unet.modules() if isinstance(m, nn.GroupNorm)} == {nn.GroupNorm}
    assert train_textual_inversion.training_loop is plain_loop
    assert sdpa_state() == flags
    done.undo()  # twice is harmless


def test_custom_diffusion_keeps_its_vae_nchw_and_encodes_ahead(monkeypatch):
    simulate_cuda(monkeypatch)
    base = tiny_components()
    config = from_dict(CustomDiffusionConfig, {**SMOKE_CONFIGS["custom_diffusion"], **ALL_ON}, "test")
    plain = train_custom_diffusion.encoded_steps
    with accelerated(base, config, "cuda", training=True):
        assert base.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        assert base.vae.encoder.conv_in.weight.is_contiguous()  # encoded every step: GroupNorm-bound
        assert {type(m) for m in base.vae.modules() if isinstance(m, nn.GroupNorm)} == {ChannelStatsGroupNorm}
        assert train_custom_diffusion.encoded_steps is not plain
    assert train_custom_diffusion.encoded_steps is plain
    assert {type(m) for m in base.vae.modules() if isinstance(m, nn.GroupNorm)} == {nn.GroupNorm}


def test_on_the_cpu_a_fit_switch_changes_only_the_loops(components):
    config = from_dict(TextualInversionConfig, {**SMOKE_CONFIGS["textual_inversion"], **ALL_ON}, "test")
    flags = sdpa_state()
    with accelerated(components, config, "cpu", training=True) as done:
        assert done.changes == [
            "baselines.train_textual_inversion.training_loop -> baselines.fast.training.fused_training_loop"]
        assert sdpa_state() == flags and "forward" not in vars(components.unet)
    with accelerated(components, dataclasses.replace(config, fuse_micro_batches=False), "cpu", training=True) as done:
        assert done.changes == []


def test_a_sampling_switch_swaps_the_pipelines_loop_and_restores_it(components):
    pipeline = sampling_pipeline(components, components.unet, sample_config())
    with accelerated(pipeline, sample_config(), "cpu", training=False) as done:
        assert type(pipeline) is SyncFreePipeline and fast_sampling.ACTIVE[pipeline] is not None
        assert done.changes == ["pipeline call -> sync-free loop", "pipeline: 1 StableDiffusionPipeline -> SyncFreePipeline"]
    assert type(pipeline) is StableDiffusionPipeline and pipeline not in fast_sampling.ACTIVE
    with accelerated(pipeline, sample_config(sampling_loop="diffusers"), "cpu", training=False) as done:
        assert type(pipeline) is StableDiffusionPipeline and done.changes == []
    with pytest.raises(TypeError, match="takes a StableDiffusionPipeline"):
        accelerated(components, sample_config(), "cpu", training=False)


def test_a_failing_switch_undoes_what_it_did(monkeypatch):
    simulate_cuda(monkeypatch)
    base = tiny_components()
    monkeypatch.setattr(calls, "route_text_encoder_calls", lambda *args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        accelerated(base, sample_config(**ALL_ON), "cuda", training=True)
    assert "forward" not in vars(base.unet) and base.unet.conv_in.weight.is_contiguous()


# --- sampling -------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", ["ddim", "dpm"])
@pytest.mark.parametrize("guidance", [7.5, 1.0])
def test_sync_free_loop_draws_exactly_the_pipelines_images(components, sampler, guidance, monkeypatch):
    config = sample_config(sampler=sampler, guidance_scale=guidance)
    reference_config = dataclasses.replace(config, sampling_loop="diffusers")
    loops = []
    real_sample = SyncFreePipeline._sample
    monkeypatch.setattr(SyncFreePipeline, "_sample", lambda *args: loops.append(1) or real_sample(*args))
    expected = generate_images(sampling_pipeline(components, components.unet, reference_config), PROMPTS[:2],
                               SEEDS[:2], reference_config)
    assert loops == []
    got = generate_images(sampling_pipeline(components, components.unet, config), PROMPTS[:2], SEEDS[:2], config)
    assert loops == [1]  # the sync-free loop did run
    assert [max_difference(a, b) for a, b in zip(expected, got)] == [0, 0]
    assert max_difference(got[0], got[1]) > 20  # not trivially equal images


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_device_side_postprocess_gives_the_pipelines_pixels(components, dtype):
    from baselines.fast.sampling import to_pil_images

    pipeline = sampling_pipeline(components, components.unet, sample_config())
    images = (torch.randn(3, 3, 40, 24, generator=torch.Generator().manual_seed(0)) * 0.8)  # some clamp.to(dtype)
    expected = pipeline.image_processor.postprocess(images, output_type="pil", do_denormalize=[True] * 3)
    got = to_pil_images(images)
    assert [np.asarray(image).shape for image in got] == [(40, 24, 3)] * 3
    assert [max_difference(a, b) for a, b in zip(expected, got)] == [0, 0, 0]


def test_padding_a_batch_leaves_its_images_unchanged(components, monkeypatch):
    config = sample_config()
    # What a CUDA pipeline with graphs holds: FastCalls (plain on the CPU).
    monkeypatch.setattr(calls, "fast_call", lambda module, config, device, training, allow_compile=True:
                        FastCall(module, training, compile=False, cuda_graphs=False))
    pipeline = sampling_pipeline(components, components.unet, config)
    full = generate_images(pipeline, PROMPTS, SEEDS, config)
    alone = generate_images(pipeline, PROMPTS[1:2], SEEDS[1:2], config)  # padded to the 3 of the earlier call
    [setup] = fast_sampling.SETUPS[pipeline].values()
    assert setup.batch_sizes == {3}
    assert len(alone) == 1 and max_difference(alone[0], full[1]) <= 1
    plain_config = dataclasses.replace(config, sampling_loop="diffusers")
    plain = generate_images(sampling_pipeline(components, components.unet, plain_config), PROMPTS[1:2], SEEDS[1:2],
                            plain_config)
    assert max_difference(plain[0], alone[0]) <= 1


def test_fused_projections_draw_the_same_images():
    config = sample_config()
    fresh = tiny_components()
    unfused = generate_images(sampling_pipeline(fresh, fresh.unet, config), PROMPTS[:2], SEEDS[:2], config)
    assert fuse_projections(fresh.unet)
    assert {type(p).__name__ for p in fresh.unet.attn_processors.values()} == {"FusedAttnProcessor2_0"}
    fused = generate_images(sampling_pipeline(fresh, fresh.unet, config), PROMPTS[:2], SEEDS[:2], config)
    assert [max_difference(a, b) for a, b in zip(fused, unfused)] in ([0, 0], [0, 1], [1, 0], [1, 1])
    custom = tiny_components()
    custom.unet.set_attn_processor(dict(make_processors(custom.unet, kv_weights=None)))
    assert not fuse_projections(custom.unet)  # Custom Diffusion's processors hold trained K/V: left alone
    assert {type(p).__name__ for p in custom.unet.attn_processors.values()} == {"CustomDiffusionAttnProcessor2_0"}


def test_sampling_fuses_only_a_reduced_precision_unet(monkeypatch):
    simulate_cuda(monkeypatch)
    for dtype, fused in ((torch.float32, False), (torch.bfloat16, True)):
        fresh = tiny_components()
        cast_module(fresh.unet, dtype)
        pipeline = sampling_pipeline(fresh, fresh.unet, sample_config())
        with accelerated(pipeline, sample_config(), "cuda", training=False) as done:
            pass
        kinds = {type(p).__name__ for p in fresh.unet.attn_processors.values()}
        assert (kinds == {"FusedAttnProcessor2_0"}) is fused
        assert ("UNet: fused q/k/v projections" in done.kept) is fused


# --- fits -------------------------------------------------------------------------------------

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


def test_routed_calls_equal_the_plain_calls_and_leave_other_calls_alone():
    base = tiny_components()
    runs = []

    def runner_of(module):
        def run(*args):
            runs.append(type(module).__name__)
            return module(*args)
        return run

    inputs = unet_inputs(base)
    plain = gradients_of(lambda *a: base.unet(*a, return_dict=False)[0], base, inputs)
    ids = base.tokenizer(["a photo of sks dog"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    plain_states = base.text_encoder(ids)[0]
    undo_unet = calls.route_unet_calls(base.unet, runner_of(NoisePrediction(base.unet)))
    undo_text = calls.route_text_encoder_calls(base.text_encoder, runner_of(TextStates(base.text_encoder)))
    routed = gradients_of(lambda *a: base.unet(*a, return_dict=False)[0], base, inputs)
    as_output = gradients_of(lambda *a: base.unet(*a).sample, base, inputs)
    assert all(torch.equal(a, b) for a, b in zip(plain, routed))
    assert all(torch.equal(a, b) for a, b in zip(plain, as_output))
    assert torch.equal(base.text_encoder(ids)[0], plain_states)
    assert runs == ["NoisePrediction", "NoisePrediction", "TextStates"]
    with torch.no_grad():  # no gradient: the plain forward (as for fixed prompts and latents)
        base.unet(*inputs, return_dict=False)
        base.text_encoder(ids)
    base.text_encoder(ids, attention_mask=torch.ones_like(ids))  # other arguments: the plain forward
    copied = copy.deepcopy(base.unet)  # a copy (e.g. a bf16 sampling UNet) runs its own forward
    copied(*inputs, return_dict=False)
    assert runs == ["NoisePrediction", "NoisePrediction", "TextStates"]
    undo_unet()
    undo_text()
    assert "forward" not in vars(base.unet) and "forward" not in vars(base.text_encoder)


def micro_batch_draws(seed: int):
    generator = torch.Generator().manual_seed(seed)

    def draw():
        inputs = torch.randn(1, 3, generator=generator)
        return inputs, inputs.sum(1, keepdim=True) + torch.randn(1, 1, generator=generator)

    return draw


def test_the_fused_loop_gives_the_accumulated_steps():
    trained = []
    for loop in (training_loop, fused_training_loop):
        torch.manual_seed(0)
        layer = nn.Linear(3, 1)
        optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
        ctx = SimpleNamespace(device=torch.device("cpu"), rows=[],
                              fit_step=lambda step, total, **losses: ctx.rows.append(float(losses["loss"])))

        def loss(batch):
            return {"loss": ((layer(batch[0]) - batch[1]) ** 2).mean()}

        loop(micro_batch_draws(1), loss, list(layer.parameters()), optimizer, 3, ctx, torch.float32,
             grad_accumulation=4, max_grad_norm=1.0)
        trained.append((layer.weight.detach().clone(), ctx.rows))
    (plain_weight, plain_rows), (fused_weight, fused_rows) = trained
    torch.testing.assert_close(fused_weight, plain_weight, rtol=1e-6, atol=1e-7)
    assert fused_rows == pytest.approx(plain_rows, rel=1e-6) and len(plain_rows) == 3


def test_encoding_ahead_yields_the_plain_steps():
    vae = tiny_components().vae

    def draws():
        rng = random.Random(4)

        def draw_step() -> StepDraws:
            pixels = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(rng.randrange(99))) * 2 - 1
                      for _ in range(2)]
            return StepDraws([rng.randrange(5)] * 2, pixels, [], [], [])

        return draw_step

    config = CustomDiffusionConfig(base_model="tiny", resolution=64, encode_ahead=3)
    plain = encoded_steps(draws(), vae)
    ahead = encoding_ahead(config, "cpu")(draws(), vae)
    assert isinstance(ahead, EncodedSteps)
    for _ in range(4):
        (plain_step, plain_moments), (ahead_step, ahead_moments) = next(plain), next(ahead)
        assert plain_step.picks == ahead_step.picks
        torch.testing.assert_close(ahead_moments, plain_moments, rtol=1e-5, atol=1e-5)  # batch-size rounding


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

    fast_model, fast_losses = fit(ALL_ON, "on")
    plain, plain_losses = fit(ALL_OFF, "off")
    assert torch.equal(fast_model.vectors, plain.vectors) and fast_losses == plain_losses
    prompts, seeds = ["a photo of <placeholder>"], [1]
    assert max_difference(fast_model.generate(prompts, seeds)[0], plain.generate(prompts, seeds)[0]) == 0


def test_cuda_settings_are_set_and_restored(components):
    from torch.nn.attention import SDPBackend

    before = sdpa_state()
    undo = settings.set_cuda_settings(sample_config(cudnn_benchmark=True, attention_backend="cudnn"))
    assert torch.backends.cudnn.benchmark is True
    if before[-1] is not None:  # torch with set_priority: cuDNN first, the others where it cannot run
        assert sdpa_state()[-1][0] == int(SDPBackend.CUDNN_ATTENTION)
        assert torch.backends.cuda.cudnn_sdp_enabled() and torch.backends.cuda.flash_sdp_enabled()
    undo()
    assert sdpa_state() == before
    pipeline = sampling_pipeline(components, components.unet, sample_config())
    with accelerated(pipeline, sample_config(cudnn_benchmark=True), "cpu", training=False):
        assert torch.backends.cudnn.benchmark == before[0]  # CPU: untouched


# --- compile and CUDA graphs ------------------------------------------------------------------

def test_fast_call_is_the_plain_module_on_the_cpu(components):
    module = NoisePrediction(components.unet)
    assert fast_call(module, sample_config(**ALL_ON), "cpu", training=True) is module
    assert isinstance(fast_call(module, sample_config(**ALL_ON), "cuda", training=True), FastCall)
    assert fast_call(module, sample_config(**ALL_OFF), "cuda", training=True) is module


def test_a_failing_compile_warns_once_and_runs_eager(components, monkeypatch):
    def broken_compile(module, **kwargs):
        def call(*args):
            raise RuntimeError("backend compiler failed\nsecond line")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    module = NoisePrediction(components.unet)
    accelerated_call = FastCall(module, training=True, compile=True, cuda_graphs=False)
    inputs = unet_inputs(components)
    with pytest.warns(RuntimeWarning, match=r"torch.compile of NoisePrediction failed \(RuntimeError: backend "
                                            r"compiler failed\); running eager"):
        output, grad = gradients_of(accelerated_call, components, inputs)
    expected_output, expected_grad = gradients_of(module, components, inputs)
    assert torch.equal(output, expected_output) and torch.equal(grad, expected_grad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning for later calls
        gradients_of(accelerated_call, components, unet_inputs(components, seed=1))


@pytest.mark.parametrize("training", [True, False])
def test_a_failing_or_wrong_graph_capture_falls_back_to_the_module(components, monkeypatch, training):
    def wrong_graph(runner, samples):
        return lambda *args: runner(*args) + 1.0  # a "graph" whose output is off

    monkeypatch.setattr(calls, "capture_training_graph", wrong_graph)
    monkeypatch.setattr(calls, "InferenceGraph", wrong_graph)
    module = NoisePrediction(components.unet)
    accelerated_call = FastCall(module, training=training, compile=False, cuda_graphs=True)
    inputs = unet_inputs(components)
    with pytest.warns(RuntimeWarning, match="CUDA graph capture of NoisePrediction failed .*outputs differ"):
        output, _ = gradients_of(accelerated_call, components, inputs)
    assert torch.equal(output, gradients_of(module, components, inputs)[0])

    def failing_graph(runner, samples):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(calls, "capture_training_graph", failing_graph)
    monkeypatch.setattr(calls, "InferenceGraph", failing_graph)
    accelerated_call = FastCall(module, training=training, compile=False, cuda_graphs=True)
    with pytest.warns(RuntimeWarning, match="not permitted when stream is capturing"):
        assert torch.equal(gradients_of(accelerated_call, components, inputs)[0], output)


@pytest.mark.slow
def test_compiled_module_gives_the_modules_values_and_gradients():
    # A small module, so compiling (inductor's C++ backend on the CPU) takes seconds.
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))
    accelerated_call = FastCall(module, training=True, compile=True, cuda_graphs=False)
    inputs = torch.randn(3, 8, requires_grad=True)
    try:
        output = accelerated_call(inputs)
    except Exception as err:  # pragma: no cover - only where inductor cannot build at all
        pytest.skip(f"torch.compile unavailable here: {err}")
    assert accelerated_call.compile, "compilation fell back to eager"
    output.sum().backward()
    compiled_grads = [p.grad.clone() for p in module.parameters()] + [inputs.grad.clone()]
    module.zero_grad()
    plain_inputs = inputs.detach().requires_grad_(True)
    expected = module(plain_inputs)
    expected.sum().backward()
    torch.testing.assert_close(output, expected)
    for got, want in zip(compiled_grads, [p.grad for p in module.parameters()] + [plain_inputs.grad]):
        torch.testing.assert_close(got, want)


class SelfAttention(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.scaled_dot_product_attention(x, x, x)


@pytest.fixture
def recorded_compiles(monkeypatch):
    """torch.compile with a backend that records each forward graph after AOT autograd's
    dispatch (where SDPA's kernel is chosen) and runs it uncompiled: seconds, not minutes."""
    from torch._functorch.aot_autograd import aot_module_simplified

    graphs: list[set[str]] = []

    def backend(module, inputs):
        def record(graph, _):
            graphs.append({str(node.target) for node in graph.graph.nodes})
            return graph.forward
        return aot_module_simplified(module, inputs, fw_compiler=record)

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module, **options: real_compile(module, backend=backend, **options))
    torch._dynamo.reset()  # no versions left by earlier tests
    yield graphs
    torch._dynamo.reset()


def test_compiled_calls_follow_the_attention_switches(recorded_compiles):
    """Dynamo does not guard SDPA's switches, and compiled code keeps the kernel chosen when
    it was traced: each new FastCall (a cell's fit) must compile again when they changed,
    and reuse the version compiled under the same switches."""
    x = torch.randn(1, 2, 64, 32)
    flash = "aten._scaled_dot_product_flash_attention_for_cpu.default"
    kept = torch.backends.cuda.flash_sdp_enabled()
    try:
        for allowed in (True, False, True):
            torch.backends.cuda.enable_flash_sdp(allowed)
            call = FastCall(SelfAttention(), training=False, compile=True, cuda_graphs=False)
            with torch.no_grad():  # as sampling calls it (compiled code is specialised on the grad mode)
                torch.testing.assert_close(call(x), SelfAttention()(x))
            assert call.compile, "fell back to eager"
    finally:
        torch.backends.cuda.enable_flash_sdp(kept)
    # traced with the flash kernel, then without it; the third call reused the first version
    # (where dynamo traces a module's parameters as inputs; older torch traces each module anew)
    reused = getattr(torch._dynamo.config, "inline_inbuilt_nn_modules", False)
    assert [flash in graph for graph in recorded_compiles] == ([True, False] if reused else [True, False, True])


def test_a_compiled_module_with_graph_breaks_is_named(recorded_compiles):
    """Only the code before a graph break is specialised on the switches: say so."""
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x * 2
            torch._dynamo.graph_break()
            return nn.functional.scaled_dot_product_attention(x, x, x)

    x = torch.randn(1, 2, 64, 32)
    with pytest.warns(RuntimeWarning, match=r"torch.compile of Broken: \d+ graph break\(s\)"), torch.no_grad():
        call = FastCall(Broken(), training=False, compile=True, cuda_graphs=False)
        torch.testing.assert_close(call(x), Broken()(x))
    assert call.compile
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unbroken module compiles without a word
        with torch.no_grad():
            FastCall(SelfAttention(), training=False, compile=True, cuda_graphs=False)(x)


@pytest.mark.slow
def test_compiled_calls_take_no_code_traced_under_other_switches_from_the_disk_cache(tmp_path, monkeypatch):
    """The graph dynamo hands on is the same under any SDPA switches (the kernel is chosen
    after it), so AOT autograd's on-disk cache, shared by a machine's processes, would give
    a process code compiled under another process's switches. Real inductor, on the CPU."""
    from torch._dynamo.utils import counters

    if not getattr(torch._functorch.config, "enable_autograd_cache", False):
        pytest.skip("this torch keeps no AOT autograd cache")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    x = torch.randn(1, 2, 64, 32)
    kept = torch.backends.cuda.flash_sdp_enabled()
    counters.clear()
    try:
        for allowed in (True, False, True):
            torch._dynamo.reset()  # as a new process starts: only the disk cache is shared
            torch.backends.cuda.enable_flash_sdp(allowed)
            call = FastCall(SelfAttention(), training=False, compile=True, cuda_graphs=False)
            with torch.no_grad():
                call(x)
            assert call.compile, "fell back to eager"
    finally:
        torch.backends.cuda.enable_flash_sdp(kept)
        torch._dynamo.reset()
    # only the third process, under the first one's switches, takes the first one's code (a
    # torch without the compile caches' tag runs these calls without that cache)
    tagged = hasattr(getattr(torch.compiler, "config", None), "cache_key_tag")
    assert counters["aot_autograd"]["autograd_cache_hit"] == (1 if tagged else 0)


def test_compiled_calls_keep_compiling_past_dynamos_default_limit(recorded_compiles):
    """Every FastCall compiles one function; dynamo's default of 8 versions per function
    would leave the ninth module or shape of a process uncompiled (one log line)."""
    limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    # the default (Infinity's speed layer raises it for the process; monkeypatch would break
    # torch's config module on undo)
    with torch._dynamo.config.patch(**{limit: 8}):
        for width in range(1, 13):
            with torch.no_grad():
                FastCall(nn.Linear(width, 2), training=False, compile=True, cuda_graphs=False)(torch.randn(3, width))
        assert getattr(torch._dynamo.config, limit) == 8  # (raised only around the compiled calls)
    assert len(recorded_compiles) == 12


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


@pytest.mark.parametrize("method_name", ["dreambooth", "custom_diffusion", "textual_inversion"])
def test_the_cuda_control_flow_runs_with_graphs_simulated(method_name, tmp_path, monkeypatch):
    """The GPU path (channels_last, fused projections, routed calls with their graph
    wrappers and output checks, batch padding) on the CPU, with 'capture' replaced by the
    runner itself."""
    from baselines.custom_diffusion import CustomDiffusion
    from baselines.dreambooth import DreamBooth

    captured = []
    simulate_cuda(monkeypatch, captured)
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
    [setup] = fast_sampling.SETUPS[model.pipeline].values()
    assert setup.batch_sizes == {3}  # the single prompt was padded to the captured 3
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
    assert "forward" not in vars(model.pipeline.unet)  # the fit's routing is gone
    if method_name == "dreambooth":  # fp32 here, so sampling uses the trained UNet itself, not a copy
        assert model.trained_unet is model.pipeline.unet
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    model.save(artifact)
    reloaded = method.load_artifact(method.load_base(ctx), artifact, ctx)
    assert max_difference(reloaded.generate(PROMPTS[:1], SEEDS[:1])[0], images[0]) <= 1


# --- DreamBooth-LoRA's fits (a family's denoiser called by keyword) ----------------------------

def lora_fit(family: str, tmp_path, **execution):
    """A 2-step tiny DreamBooth-LoRA fit with prior preservation; its adapters, losses and model."""
    from peft.utils import get_peft_model_state_dict

    from baselines.dreambooth_lora import DreamBoothLora, DreamBoothLoraConfig

    settings = {"base_model": family, "weights": "tiny", "resolution": 64, "sample_steps": 2, "steps": 2,
                "batch_size": 2, "learning_rate": 1e-2, "prior_preservation": True, "num_class_images": 2,
                **execution}
    method = DreamBoothLora(from_dict(DreamBoothLoraConfig, settings, "test"))
    ctx = CellContext(device=torch.device("cpu"), fit_seed=3, workdir=tmp_path / "work", cache_dir=tmp_path / "cache")
    model = method.fit(method.load_base(ctx), synthetic_subject(tmp_path / "subject", count=2), ctx)
    ctx.flush_losses()
    return get_peft_model_state_dict(model.model.denoiser), [row["loss"] for row in ctx.losses], model


@pytest.mark.parametrize("family", ["sd15", "sdxl", "sd3", "flux"])
def test_lora_fits_through_routed_denoiser_calls_train_the_plain_adapters(family, tmp_path, monkeypatch):
    """With graphs 'captured' (simulated), every denoiser call of the fit goes through one
    KeywordCall per set of keywords and trains exactly the adapters of the plain fit."""
    plain_adapters, plain_losses, _ = lora_fit(family, tmp_path / "plain")
    captured, sampled = [], []
    simulate_cuda(monkeypatch, captured, sampled)  # (class images may be sampled through graphs)
    runs = []
    original = calls.KeywordCall.forward

    def counted(self, *tensors):
        if torch.is_grad_enabled():  # (not the class images' sampling)
            runs.append(self.names)
        return original(self, *tensors)

    monkeypatch.setattr(calls.KeywordCall, "forward", counted)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback may trigger
        adapters, losses, model = lora_fit(family, tmp_path / "routed", cuda_graphs=True, channels_last=False,
                                           fuse_lora_qkv=False)  # (the one pass: its own test below)
    assert captured == ["KeywordCall"]  # one capture: the same keywords and shapes at every step
    assert sampled == ([] if family == "sd15" else ["KeywordCall"])  # SD 1.5: DreamBooth's class images
    assert kept_for(model.model.denoiser) is None  # the pre-adapter graphs went when the fit began
    # the first call runs it three times (the plain-vs-graph check twice, the 'graph' once), then one per step
    assert len(runs) == 4 and len(set(runs)) == 1
    assert "forward" not in vars(model.model.denoiser)  # the routing ends with the fit
    assert losses == plain_losses
    assert adapters.keys() == plain_adapters.keys()
    assert all(torch.equal(adapters[key], plain_adapters[key]) for key in adapters)


def test_fuse_lora_qkv_computes_self_attention_in_one_pass_for_the_fit_only(tmp_path, monkeypatch):
    """With `fuse_lora_qkv`, SDXL's fit computes each self-attention's adapted q/k/v as one
    LoRA (lora_qkv.py) and trains the plain fit's adapters up to rounding; after the fit
    its processors are diffusers' again."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    plain_adapters, plain_losses, _ = lora_fit("sdxl", tmp_path / "plain")
    simulate_cuda(monkeypatch)
    plain_lora_qkv, calls_with_gradients = lora_qkv.lora_qkv, []
    monkeypatch.setattr(lora_qkv, "lora_qkv",
                        lambda *args: calls_with_gradients.append(torch.is_grad_enabled()) or plain_lora_qkv(*args))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback may trigger
        adapters, losses, model = lora_fit("sdxl", tmp_path / "fused", cuda_graphs=True, channels_last=False,
                                           fuse_lora_qkv=True)
    assert calls_with_gradients and all(calls_with_gradients)  # the fit's calls only, not sampling's
    denoiser = model.model.denoiser
    assert {type(m.processor) for m in denoiser.modules() if hasattr(m, "processor")} == {AttnProcessor2_0}
    torch.testing.assert_close(losses, plain_losses, rtol=1e-5, atol=0)
    assert adapters.keys() == plain_adapters.keys()
    for key in adapters:  # (Adam moves a near-zero gradient by about lr = 1e-2 whatever its rounding)
        torch.testing.assert_close(adapters[key], plain_adapters[key], rtol=1e-3, atol=1e-4)


def test_a_checkpointed_lora_fit_runs_without_graphs_and_a_unet_trains_nhwc(tmp_path, monkeypatch):
    captured, layouts = [], []
    simulate_cuda(monkeypatch, captured)
    from baselines import train_dreambooth_lora

    plain_add_lora = train_dreambooth_lora.add_lora

    attention = []

    def add_lora(denoiser, *args):
        layouts.append(denoiser.conv_in.weight.is_contiguous(memory_format=torch.channels_last))
        attention.append(sdpa_state())
        return plain_add_lora(denoiser, *args)

    monkeypatch.setattr(train_dreambooth_lora, "add_lora", add_lora)
    before = sdpa_state()
    _, losses, model = lora_fit("sd15", tmp_path, cuda_graphs=True, gradient_checkpointing=True,
                                cudnn_attention=False)
    assert captured == [] and len(losses) == 2
    assert layouts == [True]  # NHWC during the fit, standard again for sampling and saving
    assert model.model.denoiser.conv_in.weight.is_contiguous()
    cudnn = 3  # sdpa_state's cuDNN flag
    assert before[cudnn] is True and attention[0][cudnn] is False  # off during the fit only
    assert sdpa_state() == before


@pytest.mark.parametrize("family, allowed", [("sd15", True), ("sdxl", True), ("sd3", True), ("flux", False)])
def test_a_lora_fit_allows_cudnn_attention_as_its_family_default_says(family, allowed, tmp_path, monkeypatch):
    """cuDNN's attention is on in the fits of SD 1.5, SDXL and SD3 and off in FLUX.1-dev's
    (its backward fails there), whatever the process had, and the process's setting comes
    back after the fit."""
    simulate_cuda(monkeypatch)
    from baselines import train_dreambooth_lora

    plain_add_lora, seen = train_dreambooth_lora.add_lora, []
    monkeypatch.setattr(train_dreambooth_lora, "add_lora",
                        lambda *args: seen.append(torch.backends.cuda.cudnn_sdp_enabled()) or plain_add_lora(*args))
    previous = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(not allowed)  # the opposite, so the fit must set it
    try:
        lora_fit(family, tmp_path, gradient_checkpointing=True)
        assert seen == [allowed] and torch.backends.cuda.cudnn_sdp_enabled() is (not allowed)
    finally:
        torch.backends.cuda.enable_cudnn_sdp(previous)


@pytest.mark.parametrize("family", ["sd15", "sdxl", "sd3", "flux"])
def test_lora_sampling_through_routed_denoiser_calls_gives_the_plain_images(family, tmp_path, monkeypatch):
    """With graphs 'captured' (simulated), a fitted model's sampling runs every denoiser step
    through one kept KeywordCall, captured once for both calls, and gives the plain images."""
    _, _, model = lora_fit(family, tmp_path)
    plain = model.generate(PROMPTS[:2], SEEDS[:2])
    captured = []
    simulate_cuda(monkeypatch, captured)
    runs = []
    original = calls.KeywordCall.forward

    def counted(self, *tensors):
        runs.append(self.names)
        return original(self, *tensors)

    monkeypatch.setattr(calls.KeywordCall, "forward", counted)
    model.config = dataclasses.replace(model.config, cuda_graphs=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback may trigger
        first = model.generate(PROMPTS[:2], SEEDS[:2])
        second = model.generate(PROMPTS[:2], SEEDS[:2])
    assert captured == ["KeywordCall"]  # kept between the calls: same denoiser, same shapes
    assert len(set(runs)) == 1 and len(runs) >= 2 * model.config.sample_steps
    assert "forward" not in vars(model.model.denoiser)  # the routing ends with each call
    for image, want in zip(first + second, plain + plain):
        assert max_difference(image, want) == 0


def test_kept_sampling_calls_are_built_again_when_the_adapters_change(tmp_path, monkeypatch):
    """A graph bakes in the adapters' scale and reads parameters where they were: a new
    scale, or a parameter replaced, must not replay the old graph."""
    _, _, model = lora_fit("sd3", tmp_path)
    captured = []
    simulate_cuda(monkeypatch, captured)
    model.config = dataclasses.replace(model.config, cuda_graphs=True)
    model.generate(PROMPTS[:1], SEEDS[:1])
    denoiser = model.model.denoiser
    before = kept_for(denoiser)
    model.generate(PROMPTS[:1], SEEDS[:1])
    assert kept_for(denoiser) is before and captured == ["KeywordCall"]
    scaled = next(m for m in denoiser.modules() if isinstance(getattr(m, "scaling", None), dict) and m.scaling)
    name = next(iter(scaled.scaling))
    scaled.scaling[name] = scaled.scaling[name] * 0.5
    halved = model.generate(PROMPTS[:1], SEEDS[:1])
    assert kept_for(denoiser) is not before and captured == ["KeywordCall"] * 2
    weight = next(p for p in denoiser.parameters())
    weight.data = weight.data.clone()  # same values, new storage
    model.generate(PROMPTS[:1], SEEDS[:1])
    assert captured == ["KeywordCall"] * 3
    model.config = dataclasses.replace(model.config, cuda_graphs=False)
    monkeypatch.setattr(calls, "on_cuda", lambda device: False)
    assert max_difference(model.generate(PROMPTS[:1], SEEDS[:1])[0], halved[0]) == 0


def test_kept_sampling_calls_do_not_keep_a_dropped_model_alive(tmp_path, monkeypatch):
    """The kept graphs hold the denoiser: they must go with the pipeline, or a benchmark's
    (or a worker's) next model would share the GPU with every model sampled before it."""
    import gc
    import weakref

    _, _, model = lora_fit("flux", tmp_path)
    simulate_cuda(monkeypatch)
    model.config = dataclasses.replace(model.config, cuda_graphs=True)
    model.generate(PROMPTS[:1], SEEDS[:1])
    denoiser = weakref.ref(model.model.denoiser)
    assert kept_for(denoiser()) is not None
    del model
    gc.collect()
    assert denoiser() is None and len(family_sampling.KEPT) == 0


def test_kept_sampling_calls_hand_out_copies_of_the_graph_output(monkeypatch):
    """A replayed graph writes every output into the same buffer; true CFG calls the
    denoiser twice per step and uses both outputs, so each call must get its own copy."""
    from varbench.models.families import FAMILIES, load_family

    class OneBufferGraph:  # as a CUDA graph: the same output tensor, overwritten by each replay
        def __init__(self, runner, samples):
            self.runner, self.output = runner, None

        def __call__(self, *args):
            result = self.runner(*args)
            if self.output is None:
                self.output = result.clone()
            self.output.copy_(result)
            return self.output

    monkeypatch.setattr(calls, "on_cuda", lambda device: True)
    monkeypatch.setattr(calls, "InferenceGraph", OneBufferGraph)
    model = load_family(FAMILIES["sd3"], "sd3", None, "tiny", "cpu", torch.float32)
    kept = family_sampling.calls_for(model.pipeline, DreamBoothLoraConfig(), "cpu")
    config, generator = model.denoiser.config, torch.Generator().manual_seed(4)
    names = ("hidden_states", "timestep", "encoder_hidden_states", "pooled_projections")

    def inputs():
        return (torch.randn(1, config.in_channels, 8, 8, generator=generator), torch.tensor([500.0]),
                torch.randn(1, 5, config.joint_attention_dim, generator=generator),
                torch.randn(1, config.pooled_projection_dim, generator=generator))

    first, second = inputs(), inputs()
    with torch.no_grad():
        plain = calls.KeywordCall(model.denoiser, names)(*first)
        run = kept.runner_for(names)
        positive = run(*first)
        run(*second)  # (the negative prompt's call)
    assert torch.equal(positive, plain)


def test_sampling_compiles_only_with_compile_generation_true():
    assert DreamBoothLoraConfig().compile_generation == "auto"  # settled per worker (COMPILE_PAYS_AFTER)
    assert family_sampling.sampling_options(DreamBoothLoraConfig()) == (True, False)
    assert family_sampling.sampling_options(DreamBoothLoraConfig(compile_generation="auto")) == (True, False)
    assert family_sampling.sampling_options(DreamBoothLoraConfig(compile_generation=True)) == (True, True)
    assert family_sampling.sampling_options(DreamBoothLoraConfig(cuda_graphs=False, compile=True)) == (False, False)
    assert family_sampling.sampling_options(SimpleNamespace()) == (False, False)  # IP-Adapter: neither


def test_keyword_routing_without_gradients_takes_only_no_grad_calls():
    from varbench.models.families import FAMILIES, load_family

    denoiser = load_family(FAMILIES["flux"], "flux", None, "tiny", "cpu", torch.float32).denoiser
    seen = []

    def runner_for(names):
        seen.append(names)
        return calls.KeywordCall(denoiser, names)

    config = denoiser.config
    generator = torch.Generator().manual_seed(2)
    inputs = dict(hidden_states=torch.randn(1, 16, config.in_channels, generator=generator),
                  encoder_hidden_states=torch.randn(1, 3, config.joint_attention_dim, generator=generator),
                  pooled_projections=torch.randn(1, config.pooled_projection_dim, generator=generator),
                  timestep=torch.tensor([0.5]), img_ids=torch.zeros(16, 3), txt_ids=torch.zeros(3, 3))
    if config.guidance_embeds:
        inputs["guidance"] = torch.tensor([3.5])
    undo = calls.route_keyword_calls(denoiser, runner_for, grad=False)
    try:
        denoiser(**inputs, return_dict=False)  # gradients on: the plain forward
        assert seen == []
        with torch.no_grad():
            plain = type(denoiser).forward(denoiser, **inputs, return_dict=False)[0]
            routed = denoiser(**inputs, return_dict=False)[0]
        assert len(seen) == 1 and set(seen[0]) == set(inputs) and torch.equal(routed, plain)
        with torch.no_grad():  # an empty options dict, as FLUX's pipeline passes: the default
            routed = denoiser(**inputs, joint_attention_kwargs={}, return_dict=False)[0]
        assert len(seen) == 1 and torch.equal(routed, plain)
    finally:
        undo()
    assert "forward" not in vars(denoiser)
    signature = inspect.signature(type(denoiser).forward)
    assert list(calls.keyword_tensors(signature, {"img_ids": inputs["img_ids"], "joint_attention_kwargs": {}})) == [
        "img_ids"]
    assert calls.keyword_tensors(signature, {"img_ids": inputs["img_ids"], "controlnet_block_samples": []}) is None


def test_keyword_routing_takes_only_tensor_calls_without_return_dict():
    from varbench.models.families import FAMILIES, load_family

    model = load_family(FAMILIES["sd3"], "sd3", None, "tiny", "cpu", torch.float32)
    denoiser = model.denoiser
    names_seen = []

    def runner_for(names):
        names_seen.append(names)
        return calls.KeywordCall(denoiser, names)

    generator = torch.Generator().manual_seed(0)
    config = denoiser.config
    inputs = dict(hidden_states=torch.randn(1, config.in_channels, 8, 8, generator=generator),
                  timestep=torch.tensor([500.0]),
                  encoder_hidden_states=torch.randn(1, 5, config.joint_attention_dim, generator=generator),
                  pooled_projections=torch.randn(1, config.pooled_projection_dim, generator=generator))
    plain = denoiser(**inputs, return_dict=False)[0]
    undo = calls.route_keyword_calls(denoiser, runner_for)
    try:
        routed = denoiser(**inputs, return_dict=False)[0]
        assert torch.equal(routed, plain) and [set(names) for names in names_seen] == [set(inputs)]
        denoiser(**inputs)  # return_dict left on: the plain forward
        denoiser(**inputs, joint_attention_kwargs={"scale": 1.0}, return_dict=False)  # a number inside
        with torch.no_grad():
            denoiser(**inputs, return_dict=False)
        assert len(names_seen) == 1
    finally:
        undo()
    assert "forward" not in vars(denoiser)


def test_keyword_routing_binds_positional_and_dict_arguments_and_gives_the_plain_gradients():
    """SDXL's UNet as its training code calls it: three tensors by position, the added
    conditioning as a dict, return_dict by keyword; a required argument passed as None
    is not routed."""
    from varbench.models.families import FAMILIES, load_family

    unet = load_family(FAMILIES["sdxl"], "sdxl", None, "tiny", "cpu", torch.float32).denoiser
    generator = torch.Generator().manual_seed(1)
    config = unet.config
    noisy = torch.randn(2, config.in_channels, 8, 8, generator=generator)
    states = torch.randn(2, 5, config.cross_attention_dim, generator=generator, requires_grad=True)
    text_embeds = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
    added = {"text_embeds": torch.randn(2, text_embeds, generator=generator),
             "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2)}
    times = torch.tensor([10, 500])

    def gradients():
        states.grad = None
        output = unet(noisy, times, states, return_dict=False, added_cond_kwargs=added)[0]
        (output ** 2).mean().backward()
        return output.detach(), states.grad.clone()

    plain = gradients()
    seen = []

    def runner_for(names):
        seen.append(names)
        return calls.KeywordCall(unet, names)

    undo = calls.route_keyword_calls(unet, runner_for)
    try:
        routed = gradients()
        assert seen == [("sample", "timestep", "encoder_hidden_states", "added_cond_kwargs.text_embeds",
                         "added_cond_kwargs.time_ids")]
        assert all(torch.equal(a, b) for a, b in zip(plain, routed))
    finally:
        undo()
    signature = inspect.signature(type(unet).forward)
    assert calls.keyword_tensors(signature, {"sample": noisy, "timestep": None}) is None  # required: not routed
    assert list(calls.keyword_tensors(signature, {"sample": noisy, "class_labels": None})) == ["sample"]  # default
