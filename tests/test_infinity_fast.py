"""The Infinity speed layer (varbench.models.infinity.fast) against the plain computation:
the one switch (`accelerate`) swaps what it says and undoes it; compiled blocks sample and
train like eager blocks; a failing compiler falls back to the plain code; the fused ops
(real-arithmetic RoPE, GELU epilogue, flash attention dispatch) equal the plain ops where
they run; CUDA-graph replay (static buffers on the CPU) samples what the plain sampler does."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from varbench.models.fast.groupnorm import ChannelStatsGroupNorm
from varbench.models.infinity import layers, rope, sampler
from varbench.models.infinity.autoencoder import Upsample
from varbench.models.infinity.bench import random_text
from varbench.models.infinity.bsq import BSQTokenizer
from varbench.models.infinity.factory import build_infinity, build_vae
from varbench.models.infinity.fast import SpeedOptions, accelerate, compiled, graphs, ops
from varbench.models.infinity.layers import FeedForward
from varbench.models.infinity.sampler import SamplingConfig, sample
from varbench.models.infinity.schedule import get_schedule
from varbench.models.infinity.transformer import Block


class FakeCuda(torch.Tensor):
    is_cuda = True  # takes the compiled branch on a CPU-only machine


# --- the switch -----------------------------------------------------------------------------
# The plain functions as imported (collection runs before any test could have swapped them:
# a pipeline accelerated for good by an earlier test keeps its process-wide swaps).
PLAIN_FUNCTIONS = {"apply_rope": layers.apply_rope}


def test_accelerate_swaps_modules_and_functions_and_undo_restores_them(monkeypatch):
    monkeypatch.delenv("VARBENCH_COMPILE", raising=False)
    monkeypatch.setattr(layers, "apply_rope", PLAIN_FUNCTIONS["apply_rope"])
    model, vae = build_infinity("infinity-tiny", seed=3), build_vae("infinity-tiny")
    keys = (list(model.state_dict()), list(vae.state_dict()))
    plain_rope, plain_scale_forward = layers.apply_rope, sampler.scale_forward
    done = accelerate((model, vae), SpeedOptions(compile_blocks=True, cuda_graphs=True))
    assert {type(block) for block in model.blocks} == {compiled.CompiledBlock}
    assert {type(block.ffn) for block in model.blocks} == {ops.FusedFeedForward}
    assert type(vae) is compiled.CompiledDecoding
    assert {type(m) for m in vae.decoder.modules() if isinstance(m, nn.GroupNorm)} == {ChannelStatsGroupNorm}
    assert {type(m) for m in vae.decoder.modules() if isinstance(m, Upsample)} == {ops.SubPixelUpsample}
    assert {type(m) for m in vae.encoder.modules() if isinstance(m, nn.GroupNorm)} == {nn.GroupNorm}  # never compiled
    assert layers.apply_rope is ops.apply_rope and sampler.scale_forward is graphs.scale_forward
    assert (list(model.state_dict()), list(vae.state_dict())) == keys  # checkpoints load as before
    assert "Infinity: 2 Block -> CompiledBlock" in done.changes
    assert "varbench.models.infinity.layers.apply_rope -> varbench.models.infinity.fast.ops.apply_rope" in done.changes
    done.undo()
    assert {type(block) for block in model.blocks} == {Block} and {type(b.ffn) for b in model.blocks} == {FeedForward}
    assert type(vae) is BSQTokenizer and not any(isinstance(m, (ChannelStatsGroupNorm, ops.SubPixelUpsample))
                                                 for m in vae.modules())
    assert layers.apply_rope is plain_rope and sampler.scale_forward is plain_scale_forward
    assert done.changes == []
    done.undo()  # twice is harmless


def test_accelerate_nests_restores_and_env_var_wins(monkeypatch):
    monkeypatch.delenv("VARBENCH_COMPILE", raising=False)
    vae = build_vae("infinity-tiny")
    with accelerate(vae, SpeedOptions(compile_decoder=True)):
        assert type(vae) is compiled.CompiledDecoding
        with accelerate(vae, SpeedOptions(compile_decoder=False)):
            assert type(vae) is BSQTokenizer
        assert type(vae) is compiled.CompiledDecoding
    assert type(vae) is BSQTokenizer
    monkeypatch.setenv("VARBENCH_COMPILE", "0")
    with accelerate(vae, SpeedOptions(compile_decoder=True)):
        assert type(vae) is BSQTokenizer


def test_accelerate_refuses_what_it_cannot_speed_up():
    with pytest.raises(TypeError, match="not Linear"):
        accelerate(nn.Linear(2, 2))


# --- the compiled decoder -----------------------------------------------------------------
def test_cpu_inputs_always_run_eager(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda module, **options: calls.append(module) or module)
    layer = nn.Linear(4, 4)
    layer_out = compiled.run_module(layer, torch.ones(2, 4))
    assert calls == [] and torch.equal(layer_out, layer(torch.ones(2, 4)))
    vae = build_vae("infinity-tiny")
    summed = torch.randn(1, 32, 8, 8, generator=torch.Generator().manual_seed(0))
    with accelerate(vae, SpeedOptions(compile_decoder=True, subpixel_upsample=False)):
        fast = vae.decode(summed)
    assert calls == [] and torch.equal(fast, vae.decode(summed))  # on the CPU: the plain decoder itself


def test_compile_failure_warns_and_runs_eager(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", lambda module, **options: broken)
    layer = nn.Linear(4, 4)
    x = torch.ones(2, 4).as_subclass(FakeCuda)
    with pytest.warns(RuntimeWarning, match="torch.compile of Linear failed"):
        out = compiled.run_module(layer, x)
    assert compiled._failed["modules"]  # the rest of the run stays eager
    torch.testing.assert_close(out.as_subclass(torch.Tensor), layer(torch.ones(2, 4)))
    compiled.reset_compiled()


def test_out_of_memory_is_not_a_compiler_failure(monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(torch, "compile", lambda module, **options: out_of_memory)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="torch.compile of")  # no fallback to eager
        with pytest.raises(torch.cuda.OutOfMemoryError):
            compiled.run_module(nn.Linear(4, 4), torch.ones(2, 4).as_subclass(FakeCuda))
        assert not compiled._failed["modules"]  # the compiled decoder stays on
    compiled.reset_compiled()


def test_decoder_is_compiled_with_static_shapes(monkeypatch):
    """A second batch size must get its own static graph: a dynamic one decoded more
    slowly (benchmarks/NOTES-infinity.md)."""
    options = []
    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: options.append(kwargs) or module)
    compiled.run_module(nn.Linear(4, 4), torch.ones(2, 4).as_subclass(FakeCuda))
    assert options == [{"dynamic": False}]
    compiled.reset_compiled()


def test_a_compiled_module_dies_with_its_module(monkeypatch):
    """The compiled copy (which references its module, as torch's OptimizedModule does)
    must not keep the module alive after its owner dropped it."""
    import gc
    import weakref

    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: nn.Sequential(module))
    module = nn.Linear(4, 4)
    compiled.run_module(module, torch.ones(2, 4).as_subclass(FakeCuda))
    assert "_varbench_compiled" not in dict(module.named_modules())  # not a submodule
    alive = weakref.ref(module)
    del module
    gc.collect()
    assert alive() is None
    compiled.reset_compiled()


# --- compiled transformer blocks (the GPU path, compiled on the CPU here) -----------------
@pytest.mark.parametrize("checkpointing", [False, True])
def test_compiled_blocks_sample_and_train_like_eager_blocks(monkeypatch, checkpointing):
    """Sampling (KV cache, 5 scales) and a training step with drop path, with and without
    recomputing the blocks in backward (checkpointing stops a recomputation early by
    raising through the compiled call, which must not count as a compiler failure):
    compiled blocks give eager's values up to rounding, and the same drop-path draws."""
    monkeypatch.setattr(compiled, "COMPILE_DEVICES", ("cuda", "cpu"))
    monkeypatch.delenv("VARBENCH_COMPILE", raising=False)
    compiled.reset_compiled()
    schedule = get_schedule(4)
    model = build_infinity("infinity-tiny", seed=3, drop_path_rate=0.5)
    text = random_text(2, 6, model.config.text_channels, torch.device("cpu"))
    runs = {}
    for compile_blocks in (False, True):
        with accelerate(model, SpeedOptions(compile_blocks=compile_blocks)):
            out = sample(model, None, text, schedule, [0, 1], SamplingConfig(), return_logits=True, decode=False)
            model.train()
            torch.manual_seed(7)  # drop path draws from the global generator
            cond = model.condition(text.features, text.mask, drop=torch.zeros(2, dtype=torch.bool))
            with warnings.catch_warnings():
                warnings.filterwarnings("error", message="torch.compile of")  # no fallback to eager
                loss = model(cond, out.inputs, schedule, checkpointing=checkpointing).square().mean()
                loss.backward()
        grad = model.blocks[0].sa.mat_qkv.weight.grad.clone()
        model.zero_grad(set_to_none=True)
        runs[compile_blocks] = (out, loss.detach(), grad)
    assert compiled._compiled_functions, "the compiled path did not run"
    (eager, eager_loss, eager_grad), (fused, fused_loss, fused_grad) = runs[False], runs[True]
    torch.testing.assert_close(fused.logits, eager.logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(fused.bits, eager.bits)
    torch.testing.assert_close(fused_loss, eager_loss, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fused_grad, eager_grad, rtol=1e-3, atol=1e-6)
    compiled.reset_compiled()


def test_drop_path_scales_are_zero_or_the_inverse_keep_rate():
    from varbench.models.infinity.layers import drop_path_scale

    torch.manual_seed(0)
    scales = drop_path_scale(4000, 0.25, torch.device("cpu"))
    assert scales.shape == (4000, 1, 1)
    assert torch.equal(scales.unique(), torch.tensor([0.0, 1 / 0.75]))
    assert abs(float((scales > 0).float().mean()) - 0.75) < 0.03


def test_block_compile_failure_warns_once_and_runs_eager(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(compiled, "COMPILE_DEVICES", ("cuda", "cpu"))
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: broken)
    monkeypatch.delenv("VARBENCH_COMPILE", raising=False)
    compiled.reset_compiled()
    model = build_infinity("infinity-tiny", seed=3)
    text = random_text(1, 4, model.config.text_channels, torch.device("cpu"))
    eager = sample(model, None, text, get_schedule(3), [0], SamplingConfig(), decode=False)
    with pytest.warns(RuntimeWarning, match="compile of the transformer blocks failed") as caught:
        with accelerate(model, SpeedOptions(compile_blocks=True)):
            fallback = sample(model, None, text, get_schedule(3), [0], SamplingConfig(), decode=False)
    assert len([w for w in caught if "transformer blocks" in str(w.message)]) == 1
    assert torch.equal(fallback.bits, eager.bits)
    compiled.reset_compiled()


# --- fused ops ----------------------------------------------------------------------------
def test_ffn_fuses_its_gelu_only_in_compiled_cuda_inference():
    x = torch.ones(2, 3, 8, dtype=torch.bfloat16)
    with torch.no_grad():
        assert not ops.epilogue_gelu(x.as_subclass(FakeCuda))  # eager: the release's separate GELU
        assert not ops.epilogue_gelu(x)  # CPU
    ffn = FeedForward(8, 32)
    x = torch.randn(2, 3, 8)
    expected = ffn.fc2(torch.nn.functional.gelu(ffn.fc1(x), approximate="tanh"))
    torch.testing.assert_close(ffn(x), expected, rtol=0, atol=0)
    ffn.__class__ = ops.FusedFeedForward
    torch.testing.assert_close(ffn(x), expected, rtol=0, atol=0)  # eager: the plain FFN


@pytest.mark.parametrize("transposed", [False, True])
def test_real_arithmetic_rope_equals_the_complex_product(transposed):
    schedule = get_schedule(5)
    table = rope.rope_table(schedule, head_dim=16)
    x = torch.randn(2, 4, schedule.num_tokens, 16, generator=torch.Generator().manual_seed(1))
    if transposed:  # (B, L, H, d) viewed as (B, H, L, d): strides the complex view cannot take
        x = x.transpose(1, 2).contiguous().transpose(1, 2)
    plain = rope.apply_rope(x, table)
    torch.testing.assert_close(ops.apply_rope_real(x, table), plain, rtol=1e-6, atol=1e-6)
    assert torch.equal(ops.apply_rope(x, table), plain)  # eager: the plain complex product
    rotated = torch.view_as_complex(plain.view(2, 4, -1, 8, 2))
    torch.testing.assert_close(rotated.abs(), torch.view_as_complex(x.contiguous().view(2, 4, -1, 8, 2)).abs())


def test_attention_dispatch_is_the_plain_attention_off_cuda():
    generator = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=generator) for _ in range(3))
    mask = torch.rand(2, 1, 1, 5, generator=generator) > 0.3
    for m in (None, mask):
        assert torch.equal(ops.attend(q, k, v, 0.5, m), layers.attend(q, k, v, 0.5, m))


# --- CUDA graphs (static buffers, no capture, on the CPU) ---------------------------------
def test_static_graph_buffers_match_eager():
    """The CUDA-graph path on the CPU: same static buffers and caches, no capture."""
    from varbench.models.infinity.text import build_tiny_text_encoder

    model, vae, encoder = build_infinity("infinity-tiny", seed=1).eval(), build_vae("infinity-tiny"), \
        build_tiny_text_encoder()
    prompts = ["a dog in the jungle", "a red vase", "a shiny wooden robot toy on the beach at sunset"]
    schedule = get_schedule(5)
    for batch, seeds in ((prompts[:2], [1, 2]), (prompts[1:], [3, 4]), (prompts[:2], [5, 6])):
        text = encoder.encode(batch)
        a = sample(model, vae, text, schedule, seeds, config=SamplingConfig(), return_logits=True)
        with accelerate(model, SpeedOptions(cuda_graphs=True)):
            b = sample(model, vae, text, schedule, seeds, config=SamplingConfig(), return_logits=True)
        torch.testing.assert_close(b.logits, a.logits, atol=2e-5, rtol=1e-5)
        assert torch.equal(a.bits, b.bits)
    assert len(graphs.graph_cache(model).entries) == 1  # every prompt fits one 64-token text bucket
    graphs.release_graphs(model)
    assert len(graphs.graph_cache(model).entries) == 0


def test_graphs_die_with_their_model_even_when_never_released():
    """A model accelerated for good (as a fit's base is) is freed once unused: its graphs
    do not keep it alive (they did: a worker kept each finished arm's model on the GPU)."""
    import gc
    import weakref

    model = build_infinity("infinity-tiny", seed=1).eval()
    text = random_text(1, 4, model.config.text_channels, torch.device("cpu"))
    handle = accelerate(model, SpeedOptions(cuda_graphs=True))
    sample(model, None, text, get_schedule(3), [0], SamplingConfig(), decode=False)
    assert len(graphs.graph_cache(model).entries) == 1
    alive = weakref.ref(model)
    del model, handle
    gc.collect()
    assert alive() is None


def test_graphs_leave_the_released_teacher_attention_and_other_models_plain():
    model, other = build_infinity("infinity-tiny", seed=1), build_infinity("infinity-tiny", seed=2)
    text = random_text(1, 4, model.config.text_channels, torch.device("cpu"))
    quirk = SamplingConfig(cfg=1.0, attention="released_teacher")
    with accelerate(model, SpeedOptions(cuda_graphs=True)):
        sample(model, None, text, get_schedule(3), [0], quirk, decode=False)
        sample(other, None, text, get_schedule(3), [0], SamplingConfig(), decode=False)
        assert len(graphs.graph_cache(model).entries) == 0 and len(graphs.graph_cache(other).entries) == 0
        sample(model, None, text, get_schedule(3), [0], SamplingConfig(), decode=False)
        assert len(graphs.graph_cache(model).entries) == 1
    graphs.release_graphs(model)


def test_graphs_captured_from_plain_blocks_are_not_replayed_for_compiled_ones():
    model = build_infinity("infinity-tiny", seed=1)
    text = random_text(1, 4, model.config.text_channels, torch.device("cpu"))
    with accelerate(model, SpeedOptions(cuda_graphs=True)):
        sample(model, None, text, get_schedule(3), [0], SamplingConfig(), decode=False)
        assert len(graphs.graph_cache(model).entries) == 1
        with accelerate(model, SpeedOptions(cuda_graphs=True, compile_blocks=True)):
            assert len(graphs.graph_cache(model).entries) == 0
            sample(model, None, text, get_schedule(3), [0], SamplingConfig(), decode=False)
            assert len(graphs.graph_cache(model).entries) == 1
        assert len(graphs.graph_cache(model).entries) == 0  # captured from compiled blocks: dropped too
        with accelerate(model, SpeedOptions(cuda_graphs=True)):  # nothing changes: graphs stay
            sample(model, None, text, get_schedule(3), [0], SamplingConfig(), decode=False)
        assert len(graphs.graph_cache(model).entries) == 1
    graphs.release_graphs(model)


def test_accelerated_pipeline_samples_and_decodes_what_the_plain_one_does():
    """All pieces on (the compiled ones inert on the CPU): the same tokens, and images
    within the rounding of the sub-pixel upsampling."""
    model, vae = build_infinity("infinity-tiny", seed=4).eval(), build_vae("infinity-tiny", seed=4)
    text = random_text(2, 5, model.config.text_channels, torch.device("cpu"))
    schedule = get_schedule(5)
    plain = sample(model, vae, text, schedule, [3, 4], SamplingConfig(), return_logits=True)
    plain_pixels = vae.decode(plain.summed)
    with accelerate((model, vae), SpeedOptions(compile_blocks=True, cuda_graphs=True)):
        fast = sample(model, vae, text, schedule, [3, 4], SamplingConfig(), return_logits=True)
        fast_pixels = vae.decode(fast.summed)
    graphs.release_graphs(model)
    assert torch.equal(fast.bits, plain.bits)
    torch.testing.assert_close(fast.logits, plain.logits, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(fast_pixels, plain_pixels, rtol=0, atol=1e-5)
    assert (fast.images.int() - plain.images.int()).abs().max() <= 1
