"""ARBooth config: released defaults, value checks, registration, and the ablation protocols."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from varbench import execution
from varbench.errors import UserError
from varbench.methods.arbooth import ARBooth
from varbench.methods.arbooth.config import QUIRKS, ARBoothConfig, quirk_settings
from varbench.protocol import load_protocol
from varbench.registry import get_method
from varbench.schema import execution_apart, execution_fields, from_dict

REPO = Path(__file__).resolve().parent.parent
ABLATIONS = {
    "layers": ["layers-sa", "layers-ca", "layers-ffn", "layers-ca_ffn", "layers-all", "layers-identifier",
               "layers-lora_r4", "layers-lora_r16"],
    "distill": ["distill-none", "distill-hard", "distill-soft-l0.25", "distill-soft-l0.5", "distill-soft-l1.0",
                "distill-soft-l2.0", "distill-soft-perbit-l0.5", "distill-soft-pool-l0.5"],
    "scale_weights": ["scalew-uniform", "scalew-released", "scalew-step8-0.0", "scalew-step8-0.25",
                      "scalew-step6-0.5", "scalew-step10-0.5", "scalew-geo0.9", "scalew-geo0.8"],
}


def test_defaults_are_the_released_values():
    config = ARBoothConfig()
    assert (config.model, config.resolution, config.identifier_vectors) == ("infinity-2b", 1024, 4)
    assert config.layers == ["ca", "ffn", "identifier"] and config.block_range is None
    assert (config.scale_weights, config.loss_normalization) == ("released", "tokens")
    assert (config.distill, config.distill_weight, config.distill_temperature) == ("soft", 0.5, 1.0)
    assert (config.teacher_cfg, config.teacher_tau, config.teacher_top_p) == (1.0, 0.5, 0.97)
    assert (config.adam_beta1, config.adam_beta2, config.adam_epsilon) == (0.9, 0.97, 1e-8)
    assert config.weight_decay == 0.005 and config.learning_rate == 6e-3 / 256
    assert (config.batch_size, config.iterations, config.text_drop, config.flip_max) == (2, 500, 0.1, 0.3)
    assert (config.cfg, config.tau, config.top_p) == (4.0, 0.5, 0.97)
    assert config.checkpoint_blocks == "auto"  # speed only; the release's "every block" is -1
    # fp32 master weights and the KV-cached teacher are fixed by default; the rest as released.
    assert quirk_settings(config) == {
        "quirk_lvl_embed": "faithful", "quirk_next_input": "faithful", "quirk_teacher_attention": "fixed",
        "quirk_distill_softmax": "faithful", "quirk_optimizer_steps": "faithful", "quirk_bf16_weights": "fixed",
        "quirk_uint8": "faithful"}
    assert set(quirk_settings(config)) == set(QUIRKS)


@pytest.mark.parametrize("overrides, message", [
    ({"layers": []}, "layers is empty"),
    ({"iterations": 0}, "iterations is 0"),
    ({"distill_temperature": 0.0}, "distill_temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"text_drop": 1.0}, "text_drop"),
    ({"flip_max": 0.7}, "flip_max"),
    ({"block_range": [8, 4]}, "block_range"),
    ({"placeholder": "two words"}, "placeholder"),
    ({"checkpoint_blocks": -2}, "checkpoint_blocks"),
    ({"teacher_source": "pool", "teacher_pool_size": 1}, "teacher_pool_size"),
])
def test_bad_values_are_one_clear_user_error(overrides, message):
    speed = {k: v for k, v in overrides.items() if k in execution_fields(ARBoothConfig).values()}
    config = from_dict(ARBoothConfig, {k: v for k, v in overrides.items() if k not in speed},
                       "test.yaml", "arms[0].config")
    with pytest.raises(UserError, match=message):
        ARBooth(dataclasses.replace(config, **speed))  # execution options are set apart, checked alike


def test_checkpoint_blocks_takes_a_count_or_auto():
    resolved = execution.resolve(ARBoothConfig, {}, {"checkpoint_blocks": 12}, "test.yaml")
    assert execution.apply(ARBoothConfig(), resolved).checkpoint_blocks == 12
    with pytest.raises(UserError, match="checkpoint_blocks"):
        execution.resolve(ARBoothConfig, {}, {"checkpoint_blocks": "most"}, "test.yaml")
    with pytest.raises(UserError, match="checkpoint_blocks is an execution option"), execution_apart():
        from_dict(ARBoothConfig, {"checkpoint_blocks": 12}, "test.yaml", "arms[0].config")


def test_bad_types_and_unknown_layers_are_caught_while_parsing():
    with pytest.raises(UserError, match="layers\\[1\\] is 'attention'"):
        from_dict(ARBoothConfig, {"layers": ["ca", "attention"]}, "test.yaml")
    with pytest.raises(UserError, match="quirk_lvl_embed is 'fix'.*Did you mean 'fixed'"):
        from_dict(ARBoothConfig, {"quirk_lvl_embed": "fix"}, "test.yaml")
    with pytest.raises(UserError, match="unknown key 'distil_weight'.*'distill_weight'"):
        from_dict(ARBoothConfig, {"distil_weight": 0.5}, "test.yaml")


def test_registered_method_and_subject_phrase():
    method_class = get_method("arbooth")
    assert method_class is ARBooth and method_class.Config is ARBoothConfig
    method = ARBooth()
    assert method.subject_phrase("stuffed animal") == "<placeholder> stuffed animal"
    assert not method.uses_random_init()
    assert ARBooth(ARBoothConfig(model="infinity-tiny", resolution=64)).uses_random_init()


def test_importing_the_method_does_not_import_torch():
    code = "import sys, varbench.methods.arbooth; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("kind", sorted(ABLATIONS))
@pytest.mark.parametrize("variant", ["", "_vico", "_tiny"])
def test_ablation_protocols_load_with_the_same_arms(kind, variant):
    protocol = load_protocol(REPO / "protocols" / f"ablation_{kind}{variant}.yaml")
    assert [arm.name for arm in protocol.arms] == ABLATIONS[kind]
    assert {arm.method_name for arm in protocol.arms} == {"arbooth"}
    dataset = {"": "dreambench", "_vico": "vico", "_tiny": "smoke"}[variant]
    assert protocol.spec.data.dataset == dataset
    tiny = variant == "_tiny"
    assert all(arm.make_method().uses_random_init() == tiny for arm in protocol.arms)
    assert (protocol.spec.metrics.backbones == "tiny") == tiny


def test_ablation_arms_change_exactly_the_ablated_setting():
    arms = {arm.name: arm.config for kind in ABLATIONS
            for arm in load_protocol(REPO / "protocols" / f"ablation_{kind}.yaml").arms}
    assert arms["layers-ca_ffn"] == ARBoothConfig()  # the released method
    assert arms["distill-soft-l0.5"] == ARBoothConfig()
    assert arms["scalew-released"] == ARBoothConfig()
    assert arms["layers-all"].layers == ["all", "identifier"]
    assert arms["distill-none"].distill == "off" and arms["distill-hard"].distill == "hard"
    assert arms["distill-soft-perbit-l0.5"].quirk_distill_softmax == "fixed"
    assert arms["distill-soft-pool-l0.5"].teacher_source == "pool"
    step = arms["scalew-step6-0.5"]
    assert (step.scale_weights, step.weight_cutoff_scale, step.fine_scale_weight) == ("step", 6, 0.5)
    assert arms["scalew-geo0.8"].scale_weight_decay == 0.8


def test_report_spec_names_the_protocol_arms():
    from varbench.report.spec import load_spec

    spec = load_spec(REPO / "report" / "paper.yaml")
    listed = {section.name: [row.arm for row in section.arms] for section in spec.sections}
    assert set(listed["layers"]) == set(ABLATIONS["layers"])
    assert set(listed["distill"]) == set(ABLATIONS["distill"])
    assert set(listed["scale-weights"]) | set(listed["scale-weight-shapes"]) == set(ABLATIONS["scale_weights"])
    distill = next(s for s in spec.sections if s.name == "distill")
    assert distill.parameter.key == "config.distill_weight" and hasattr(ARBoothConfig(), "distill_weight")


def test_compiled_generation_is_opt_in_and_reaches_the_speed_layer():
    import torch

    from varbench.methods.arbooth.base import speed_options

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not speed_options(ARBoothConfig(), cpu, "generate").compile_blocks
    assert speed_options(ARBoothConfig(compile_generation=True), cpu, "generate").compile_blocks
    assert speed_options(ARBoothConfig(compile_generation=True, compile_blocks=False), cpu, "teacher").compile_blocks \
        is False
    # The fit (training passes, teacher) compiles by default; CUDA graphs for both samplers, on CUDA only.
    assert speed_options(ARBoothConfig(), cpu, "train").compile_blocks
    assert speed_options(ARBoothConfig(), cpu, "teacher").compile_blocks
    lora = ARBoothConfig(layers=["lora", "identifier"])  # parametrized layers train eager; the teacher compiles
    assert not speed_options(lora, cpu, "train").compile_blocks and speed_options(lora, cpu, "teacher").compile_blocks
    assert not speed_options(ARBoothConfig(), cpu, "generate").cuda_graphs
    assert speed_options(ARBoothConfig(), cuda, "generate").cuda_graphs
    assert speed_options(ARBoothConfig(), cuda, "teacher").cuda_graphs
    assert not speed_options(ARBoothConfig(cuda_graphs=False), cuda, "teacher").cuda_graphs
    assert not speed_options(ARBoothConfig(), cuda, "train").cuda_graphs
