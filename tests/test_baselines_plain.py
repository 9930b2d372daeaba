"""The diffusion baselines' plain code stays plain: no compiler, CUDA-graph, kernel or
layout code; the speed layer (baselines.fast) is imported only as `accelerated`, called
once where each method fits and once where each kind of pipeline samples; and the method modules
import no heavy library, so planning a protocol loads none."""
from __future__ import annotations

import ast
import io
import os
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

import baselines
import varbench.models.diffusion as diffusion

PACKAGE = Path(baselines.__file__).parent
TOOLS = {"bench.py", "bench_device.py", "bench_report.py", "bench_component.py"}  # drive the speed layer
PLAIN = sorted(path for path in PACKAGE.glob("*.py") if path.name not in TOOLS) + [Path(diffusion.__file__)]
# Where `accelerated` may be called: each method's fit, and the two sampling calls (SD 1.5, LoRA families).
CALL_SITES = {"dreambooth.py": 1, "custom_diffusion.py": 1, "textual_inversion.py": 1, "dreambooth_lora.py": 1,
              "sampling.py": 1, "family_sampling.py": 1}
SPEED_CODE = ("torch.compile", "torch.compiler", "torch._dynamo", "torch._inductor", "CUDAGraph", "torch.cuda.graph",
              "make_graphed_callables", "torch.cuda.Stream", "triton", "load_inline", "torch.backends", "sdpa_kernel",
              "torch.channels_last", "memory_format", "fuse_qkv_projections", "ChannelStatsGroupNorm",
              "use_channel_stats", "FastCall")
HEAVY = ("torch", "diffusers", "transformers", "open_clip", "timm", "torchvision")


def code_of(path: Path) -> str:
    """The file's code without comments and strings, tokens joined without spaces."""
    skip = {tokenize.COMMENT, tokenize.STRING, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    return "".join(t.string for t in tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
                   if t.type not in skip)


def test_the_plain_modules_are_the_ones_the_package_lists():
    names = {path.name for path in PLAIN}
    assert {"common.py", "dreambooth.py", "custom_diffusion.py", "textual_inversion.py", "train_dreambooth.py",
            "train_custom_diffusion.py", "train_textual_inversion.py", "training.py", "data.py", "sampling.py",
            "class_images.py", "tokens.py", "diffusion.py"} <= names
    assert "speed.py" not in names  # moved into fast/


@pytest.mark.parametrize("path", PLAIN, ids=lambda path: path.name)
def test_plain_module_has_no_speed_code(path):
    code = code_of(path)
    found = [name for name in SPEED_CODE if name in code]
    assert not found, f"{path.name} has {found}: that belongs in baselines/fast/"


@pytest.mark.parametrize("path", PLAIN, ids=lambda path: path.name)
def test_plain_module_calls_the_speed_layer_only_through_accelerated(path):
    tree = ast.parse(path.read_text())
    from_fast = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not [a.name for a in node.names if a.name.startswith("baselines.fast")], path.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("baselines.fast"):
            assert node.module == "baselines.fast", f"{path.name} imports {node.module}"
            from_fast += [alias.name for alias in node.names]
    calls = [node for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "accelerated"]
    expected = CALL_SITES.get(path.name, 0)
    assert from_fast == ["accelerated"] * expected, f"{path.name} imports {from_fast} from baselines.fast"
    assert len(calls) == expected, f"{path.name} calls accelerated {len(calls)} times"
    withs = [item.context_expr for node in ast.walk(tree) if isinstance(node, ast.With) for item in node.items]
    assert all(call in withs for call in calls), f"{path.name}: accelerated(...) outside a with block"


def test_planning_a_protocol_imports_no_heavy_library():
    script = """
import sys
import baselines.dreambooth, baselines.custom_diffusion, baselines.textual_inversion
from varbench.registry import get_method
for name in ("dreambooth", "custom_diffusion", "textual_inversion"):
    method_class = get_method(name)
    method = method_class(method_class.Config())
    assert method.subject_phrase("dog").endswith(("dog", ">")), method.subject_phrase("dog")
    assert method.uses_random_init() is False and method_class.Config.__dataclass_fields__["compile"]
print(",".join(sorted(m for m in %r if m in sys.modules)))
""" % (HEAVY,)
    env = {key: value for key, value in os.environ.items() if key != "VARBENCH_PLUGINS"}  # (the toy imports torch)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
    assert result.stdout.strip() == ""
