"""benchmarks/lora_step_profile.py's attribution of GPU kernels, on recorded-event stand-ins
(the script itself runs on a GPU): kernels summed per step by the op that launched them,
and a compiled graph's GPU-side annotation not counted as a kernel."""
from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
import torch

from conftest import REPO_DIR

CPU, CUDA = torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.CUDA


def load_script():
    spec = importlib.util.spec_from_file_location("lora_step_profile", REPO_DIR / "benchmarks" / "lora_step_profile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def op(name, parent=None, kernels=(), shapes=()):
    return SimpleNamespace(name=name, cpu_parent=parent, device_type=CPU, input_shapes=list(shapes),
                           kernels=[SimpleNamespace(name=kernel, duration=us) for kernel, us in kernels])


def test_kernels_are_summed_per_step_by_their_launching_op_and_parents():
    script = load_script()
    graph = op("## Call CompiledFxGraph ##", op("CompiledFunctionBackward", op("autograd engine")))
    backward = op("aten::convolution_backward", graph)
    events = [graph.cpu_parent.cpu_parent, graph.cpu_parent, graph, backward,
              op("aten::copy_", op("aten::clone", backward), [("copy_kernel", 30.0)], [[4, 320, 64, 64]]),
              op("aten::copy_", op("aten::clone", backward), [("copy_kernel", 50.0)], [[4, 320, 64, 64]]),
              op("aten::mm", graph, [("gemm", 10.0), ("gemm", 12.0)], [[16384, 4], [4, 320]]),
              op("aten::mm", graph, [("gemm", 400.0)], [[16384, 320], [320, 320]])]
    rows = script.launching_ops(SimpleNamespace(events=lambda: events), profiled=2, top=3)
    # costliest first
    assert [row["shapes"] for row in rows] == ["[[16384, 320], [320, 320]]", "[[4, 320, 64, 64]]",
                                               "[[16384, 4], [4, 320]]"]
    copies, products = rows[1], rows[2]
    assert copies["parents"] == ("aten::clone < aten::convolution_backward < ## Call CompiledFxGraph ## < "
                                 "CompiledFunctionBackward")  # four parents, the nearest first
    assert copies["s_per_step"] == pytest.approx(40e-6) and copies["calls_per_step"] == 1  # two steps: 80 us in 2 calls
    assert products["s_per_step"] == pytest.approx(11e-6) and products["calls_per_step"] == 1  # both kernels of the op
    *_, rest = script.launching_ops(SimpleNamespace(events=lambda: events), profiled=2, top=1)
    assert rest["op"] == "(the other 2 rows)"  # the copies and the small products
    assert rest["s_per_step"] == pytest.approx(51e-6) and rest["calls_per_step"] == 2


def test_a_compiled_graphs_annotation_is_not_a_kernel():
    script = load_script()

    def average(key, device, us, annotation=False):
        return SimpleNamespace(key=key, device_type=device, is_user_annotation=annotation,
                               self_device_time_total=us, count=1)

    averages = [average("## Call CompiledFxGraph ##", CUDA, 900.0, annotation=True),
                average("aten::mm", CPU, 0.0), average("gemm", CUDA, 100.0), average("copy_kernel", CUDA, 300.0)]
    rows = script.kernel_rows(SimpleNamespace(key_averages=lambda: averages))
    assert rows == [("copy_kernel", pytest.approx(300e-6), 1), ("gemm", pytest.approx(100e-6), 1)]
