"""The compiled-decoder switch: off on the CPU, restorable, and a failing compiler falls
back to the eager module instead of failing a run."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from varbench.models.infinity import fusion


def test_cpu_inputs_always_run_eager(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda module, **options: calls.append(module) or module)
    layer = nn.Linear(4, 4)
    with fusion.compiled_decoder(True):
        layer_out = fusion.run_module(layer, torch.ones(2, 4))
    assert calls == [] and torch.equal(layer_out, layer(torch.ones(2, 4)))


def test_context_manager_restores_and_env_var_wins(monkeypatch):
    monkeypatch.delenv("VARBENCH_COMPILE", raising=False)
    with fusion.compiled_decoder(True):
        assert fusion._state["enabled"]
        with fusion.compiled_decoder(False):
            assert not fusion._state["enabled"]
        assert fusion._state["enabled"]
    assert not fusion._state["enabled"]
    monkeypatch.setenv("VARBENCH_COMPILE", "0")
    with fusion.compiled_decoder(True):
        assert not fusion._state["enabled"]


def test_compile_failure_warns_and_runs_eager(monkeypatch):
    class FakeCuda(torch.Tensor):
        is_cuda = True  # takes the compiled branch on a CPU-only machine

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", lambda module, **options: broken)
    layer = nn.Linear(4, 4)
    x = torch.ones(2, 4).as_subclass(FakeCuda)
    with fusion.compiled_decoder(True), pytest.warns(RuntimeWarning, match="torch.compile of Linear failed"):
        out = fusion.run_module(layer, x)
        assert not fusion._state["enabled"]  # the rest of the run stays eager
    torch.testing.assert_close(out.as_subclass(torch.Tensor), layer(torch.ones(2, 4)))
    fusion.reset_compiled()


def test_out_of_memory_is_not_a_compiler_failure(monkeypatch):
    class FakeCuda(torch.Tensor):
        is_cuda = True

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(torch, "compile", lambda module, **options: out_of_memory)
    with fusion.compiled_decoder(True), warnings.catch_warnings():
        warnings.filterwarnings("error", message="torch.compile of")  # no fallback to eager
        with pytest.raises(torch.cuda.OutOfMemoryError):
            fusion.run_module(nn.Linear(4, 4), torch.ones(2, 4).as_subclass(FakeCuda))
        assert fusion._state["enabled"]  # the compiled decoder stays on
    fusion.reset_compiled()


# --- compiled transformer blocks (the GPU path, compiled on the CPU here) -----------------
@pytest.mark.parametrize("checkpointing", [False, True])
def test_compiled_blocks_sample_and_train_like_eager_blocks(monkeypatch, checkpointing):
    """Sampling (KV cache, 5 scales) and a training step with drop path, with and without
    recomputing the blocks in backward (checkpointing stops a recomputation early by
    raising through the compiled call, which must not count as a compiler failure):
    compiled blocks give eager's values up to rounding, and the same drop-path draws."""
    from varbench.models.infinity.bench import random_text
    from varbench.models.infinity.factory import build_infinity
    from varbench.models.infinity.sampler import SamplingConfig, sample
    from varbench.models.infinity.schedule import get_schedule

    monkeypatch.setattr(fusion, "COMPILE_DEVICES", ("cuda", "cpu"))
    monkeypatch.delenv("VARBENCH_COMPILE", raising=False)
    fusion.reset_compiled()
    schedule = get_schedule(4)
    model = build_infinity("infinity-tiny", seed=3, drop_path_rate=0.5)
    text = random_text(2, 6, model.config.text_channels, torch.device("cpu"))
    runs = {}
    for compiled in (False, True):
        out = sample(model, None, text, schedule, [0, 1], SamplingConfig(compile_blocks=compiled),
                     return_logits=True, decode=False)
        model.train()
        torch.manual_seed(7)  # drop path draws from the global generator
        cond = model.condition(text.features, text.mask, drop=torch.zeros(2, dtype=torch.bool))
        with fusion.compiled_blocks(compiled), warnings.catch_warnings():
            warnings.filterwarnings("error", message="torch.compile of")  # no fallback to eager
            loss = model(cond, out.inputs, schedule, checkpointing=checkpointing).square().mean()
            loss.backward()
        grad = model.blocks[0].sa.mat_qkv.weight.grad.clone()
        model.zero_grad(set_to_none=True)
        runs[compiled] = (out, loss.detach(), grad)
    assert fusion._compiled_functions, "the compiled path did not run"
    (eager, eager_loss, eager_grad), (fused, fused_loss, fused_grad) = runs[False], runs[True]
    torch.testing.assert_close(fused.logits, eager.logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(fused.bits, eager.bits)
    torch.testing.assert_close(fused_loss, eager_loss, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fused_grad, eager_grad, rtol=1e-3, atol=1e-6)
    fusion.reset_compiled()


def test_drop_path_scales_are_zero_or_the_inverse_keep_rate():
    from varbench.models.infinity.layers import drop_path_scale

    torch.manual_seed(0)
    scales = drop_path_scale(4000, 0.25, torch.device("cpu"))
    assert scales.shape == (4000, 1, 1)
    assert torch.equal(scales.unique(), torch.tensor([0.0, 1 / 0.75]))
    assert abs(float((scales > 0).float().mean()) - 0.75) < 0.03


def test_block_compile_failure_warns_once_and_runs_eager(monkeypatch):
    from varbench.models.infinity.bench import random_text
    from varbench.models.infinity.factory import build_infinity
    from varbench.models.infinity.sampler import SamplingConfig, sample
    from varbench.models.infinity.schedule import get_schedule

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(fusion, "COMPILE_DEVICES", ("cuda", "cpu"))
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: broken)
    monkeypatch.delenv("VARBENCH_COMPILE", raising=False)
    fusion.reset_compiled()
    model = build_infinity("infinity-tiny", seed=3)
    text = random_text(1, 4, model.config.text_channels, torch.device("cpu"))
    eager = sample(model, None, text, get_schedule(3), [0], SamplingConfig(), decode=False)
    with pytest.warns(RuntimeWarning, match="compile of the transformer blocks failed") as caught:
        fallback = sample(model, None, text, get_schedule(3), [0], SamplingConfig(compile_blocks=True), decode=False)
    assert len([w for w in caught if "transformer blocks" in str(w.message)]) == 1
    assert torch.equal(fallback.bits, eager.bits)
    fusion.reset_compiled()


def test_decoder_is_compiled_with_static_shapes(monkeypatch):
    """A second batch size must get its own static graph: a dynamic one decoded batch 8 at
    0.028 instead of 0.021 s/image on an H100."""
    class FakeCuda(torch.Tensor):
        is_cuda = True

    options = []
    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: options.append(kwargs) or module)
    with fusion.compiled_decoder(True):
        fusion.run_module(nn.Linear(4, 4), torch.ones(2, 4).as_subclass(FakeCuda))
    assert options == [{"dynamic": False}]
    fusion.reset_compiled()


def test_ffn_fuses_its_gelu_only_in_compiled_cuda_inference():
    from varbench.models.infinity.layers import FeedForward, epilogue_gelu

    class FakeCuda(torch.Tensor):
        is_cuda = True

    x = torch.ones(2, 3, 8, dtype=torch.bfloat16)
    with torch.no_grad():
        assert not epilogue_gelu(x.as_subclass(FakeCuda))  # eager: the release's separate GELU
        assert not epilogue_gelu(x)  # CPU
    ffn = FeedForward(8, 32)
    x = torch.randn(2, 3, 8)
    expected = ffn.fc2(torch.nn.functional.gelu(ffn.fc1(x), approximate="tanh"))
    torch.testing.assert_close(ffn(x), expected, rtol=0, atol=0)
