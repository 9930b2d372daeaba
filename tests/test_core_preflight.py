"""The preflight (`varbench check`, and the start of `varbench run`): everything a run needs,
found or missing, with the exact way to get it, and never a wait on the network."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import SHARED_DATA, TESTS_DIR
from runner_helpers import run_cli
from varbench.metrics.encoder_weights import CLIP_FILE, DINO_FILES
from varbench.models.diffusion import PIPELINE_FILES, SD15_ID, SD15_REVISION
from varbench.models.infinity.checkpoint import INFINITY_2B_FILE, VAE_D32REG_FILE
from varbench.models.infinity.text import FLAN_T5_FILES, FLAN_T5_XL, FLAN_T5_XL_REVISION

DREAMBENCH = SHARED_DATA / "dreambench"
needs_dreambench = pytest.mark.skipif(not DREAMBENCH.is_dir(), reason="no shared DreamBench copy")


def sparse(path: Path, size: int | None = None) -> None:
    """A file of the published size that takes no disk (the preflight reads sizes only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(size or 16)


def fake_snapshot(hub: Path, repo: str, revision: str, files: list[str]) -> None:
    """A huggingface_hub cache entry as the hub leaves it after a download."""
    folder = hub / f"models--{repo.replace('/', '--')}" / "snapshots" / revision
    for name in files:
        sparse(folder / name.replace("*", "x.json"))


def environment(tmp_path: Path, weights: bool) -> dict[str, str]:
    hub = tmp_path / "hf" / "hub"
    hub.mkdir(parents=True, exist_ok=True)
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(hub), "VARBENCH_CACHE": str(tmp_path / "cache"),
           "TORCH_HOME": str(tmp_path / "torch")}
    if weights:
        for spec in (INFINITY_2B_FILE, VAE_D32REG_FILE):
            sparse(tmp_path / "infinity" / spec.filename, spec.size)
        sparse(tmp_path / "dino" / DINO_FILES[16].filename)
        sparse(tmp_path / "clip" / CLIP_FILE.filename)
        sparse(tmp_path / "alexnet.pth")
        fake_snapshot(hub, FLAN_T5_XL, FLAN_T5_XL_REVISION, FLAN_T5_FILES)
        fake_snapshot(hub, SD15_ID, SD15_REVISION, PIPELINE_FILES)
        fake_hub_needs(hub, ("lora-sdxl", "lora-flux", "ip-adapter-sdxl"))
        env.update(VARBENCH_INFINITY_DIR=str(tmp_path / "infinity"), VARBENCH_DINO_WEIGHTS=str(tmp_path / "dino"),
                   VARBENCH_CLIP_WEIGHTS=str(tmp_path / "clip"), VARBENCH_ALEXNET_WEIGHTS=str(tmp_path / "alexnet.pth"))
    return env


def fake_hub_needs(hub: Path, arms: tuple[str, ...]) -> None:
    """The hub-cache files and snapshots the given dreambench arms need, as `weights_needed` names them."""
    from varbench.protocol import load_protocol
    from varbench.weights import Snapshot, WeightFile

    protocol = load_protocol("dreambench")
    for name in arms:
        for _, need, _ in protocol.arm(name).make_method().weights_needed():
            if isinstance(need, Snapshot):
                fake_snapshot(hub, need.repo_id, need.revision, list(need.allow_patterns or ()))
            elif isinstance(need, WeightFile):
                folder = hub / f"models--{need.repo_id.replace('/', '--')}" / "snapshots" / need.revision
                sparse(folder / need.filename, need.size)


def check_in_process(tmp_path: Path, weights: bool, monkeypatch) -> tuple[int, str]:
    """`varbench check --protocol dreambench` in this process (a subprocess costs ~10 s of
    imports), with the hub cache and every weight variable pointed into tmp_path."""
    from huggingface_hub import constants
    from typer.testing import CliRunner

    from varbench.cli import app

    env = environment(tmp_path, weights)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", env["HF_HUB_CACHE"])  # read once at import
    result = CliRunner().invoke(app, ["check", "--protocol", "dreambench", "--data-root", str(DREAMBENCH)],
                                terminal_width=200)
    return result.exit_code, result.output


@needs_dreambench
def test_check_lists_every_missing_file_with_its_download_line(tmp_path, monkeypatch):
    code, out = check_in_process(tmp_path, False, monkeypatch)
    assert code == 2 and "Traceback" not in out
    for line in ("hf download FoundationVision/Infinity infinity_2b_reg.pth",
                 f"hf download {FLAN_T5_XL} spiece.model", f"hf download {SD15_ID} model_index.json",
                 f"hf download {DINO_FILES[16].repo_id} model.safetensors --revision {DINO_FILES[16].revision}",
                 "VARBENCH_ALEXNET_WEIGHTS", "Downloads are off"):
        assert line in out, line
    assert "dreambooth, custom_diffusion, textual_inversion" in out  # one shared SD 1.5 row
    assert "huggingface-cli" not in out


@needs_dreambench
def test_check_finds_local_weight_files_and_passes(tmp_path, monkeypatch):
    code, out = check_in_process(tmp_path, True, monkeypatch)
    assert code == 0, out
    assert "missing" not in out and "everything found" in out


def test_a_wrong_size_is_missing_not_found(tmp_path):
    from varbench.preflight import weight_requirements

    sparse(tmp_path / INFINITY_2B_FILE.filename, 1000)  # an interrupted download
    (row,) = weight_requirements("arbooth", [("transformer", INFINITY_2B_FILE, str(tmp_path))])
    assert not row.found and "1,000 bytes" in row.note


def test_run_stops_before_its_first_cell_when_weights_are_missing(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from varbench.errors import UserError
    from varbench.plan import RunOptions
    from varbench.runner import run_protocol

    toy = (TESTS_DIR / "protocols" / "toy.yaml").read_text()
    protocol = tmp_path / "real.yaml"
    protocol.write_text(toy.replace("backbones: tiny", "backbones: real"))
    results = tmp_path / "results"
    env = environment(tmp_path, weights=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", env["HF_HUB_CACHE"])
    with pytest.raises(UserError, match="requirement\\(s\\) missing: metrics: DINO ViT-S/16"):
        run_protocol(str(protocol), RunOptions(results=results, device="cpu"))
    assert not list(results.glob("*/*/cells/*/status.json"))  # no cell started


@needs_dreambench
def test_dry_run_projects_gpu_hours_from_the_committed_bench(tmp_path):
    done = run_cli("run", "--protocol", "dreambench", "--dry-run", "--data-root", str(DREAMBENCH),
                   env_extra=environment(tmp_path, weights=False))
    assert done.returncode == 0
    assert "projected GPU-hours of the pending cells on NVIDIA H100" in done.stderr
    assert re.search(r"arbooth \d+\.\d\d, dreambooth \d+\.\d\d", done.stderr)


def test_each_arm_is_checked_against_its_own_family_peak(monkeypatch):
    """The memory check takes an arm's peak from its own rows: FLUX.1-dev's LoRA fit, not
    the SD 1.5 baselines' sampling that an `sd15 sampling` prefix would find."""
    from varbench.bench.cost import load_bench
    from varbench.preflight import arm_peak_gib
    from varbench.protocol import load_protocol

    monkeypatch.setenv("VARBENCH_DREAMBENCH_DIR", str(DREAMBENCH))
    protocol, rows = load_protocol("dreambench"), load_bench()["rows"]
    peak = {name: arm_peak_gib(protocol.arm(name), rows) for name in ("lora-flux", "lora-sdxl", "ip-adapter-sdxl")}
    by_name = {r["name"]: r["peak_memory_gib"] for r in rows}
    assert peak["lora-flux"] == by_name["dreambooth_lora flux step (gradient checkpointing)"] > 50
    assert peak["lora-sdxl"] == by_name["dreambooth_lora sdxl step"]
    assert peak["ip-adapter-sdxl"] == by_name["ip_adapter sdxl sampling@1"]
    assert arm_peak_gib(protocol.arm("dreambooth"), rows) == max(by_name["dreambooth step"], by_name["sd15 sampling@4"])
