"""A worker keeps an arm's base model across its cells (Method.snapshot_base /
restore_base): later cells restore it instead of loading it, and compute exactly what
they compute on a freshly loaded base; a failed cell's base is never reused; a base is
gone before another arm loads its own."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

import toy_method
from runner_helpers import image_hashes, phases, run_api, states, write_protocol

SUBJECTS = ["red_robot", "striped_mug", "spotted_dog"]  # the order of the smoke dataset: cell order


@pytest.fixture(autouse=True)
def fresh_counters():
    toy_method.LOAD_CALLS.clear()
    toy_method.LIVE_AT_LOAD.clear()


def reuse_protocol(tmp_path: Path, config: str, extra: str = "") -> Path:
    """The toy protocol with the toy method that lets a worker keep its base."""
    path = write_protocol(tmp_path, extra=extra, arm_config=config)
    path.write_text(path.read_text().replace("method: toy,", "method: toy_reuse,"))
    return path


def images_of(results: Path) -> dict[tuple[str, str], str]:
    """(subject, image file) -> sha256, whatever the run id (configs differ between runs)."""
    return {(p.parent.parent.name, p.name): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in results.rglob("cells/*/*/*.png")}


def fresh_images(protocol: Path, results: Path, subjects: list[str]) -> dict[tuple[str, str], str]:
    """Each subject's images from a run of that subject alone: a freshly loaded base."""
    for subject in subjects:
        assert run_api(protocol, results, subjects=[subject]) == 0
    return images_of(results)


def timing_rows(results: Path, subject: str) -> pd.DataFrame:
    (path,) = results.rglob(f"cells/{subject}/timings.csv")
    return pd.read_csv(path)


# --- the worker, with the toy method --------------------------------------------------------

def test_later_cells_of_an_arm_restore_the_base_instead_of_loading_it(tmp_path, monkeypatch):
    snapshots = []
    snapshot_base = toy_method.ReusingToyMethod.snapshot_base
    monkeypatch.setattr(toy_method.ReusingToyMethod, "snapshot_base",
                        lambda self, base: snapshots.append(1) or snapshot_base(self, base))
    protocol = reuse_protocol(tmp_path, "{steps: 6}")
    assert run_api(protocol, tmp_path / "results") == 0
    assert toy_method.LOAD_CALLS == ["red_robot"] and len(snapshots) == 1
    assert phases(tmp_path / "results", "red_robot")[:2] == ["load", "fit"]
    for subject in SUBJECTS[1:]:
        assert phases(tmp_path / "results", subject)[:2] == ["reuse_base", "fit"]
        (reuse,) = timing_rows(tmp_path / "results", subject).query("phase == 'reuse_base'").itertuples()
        assert reuse.items == 0
    # The fit changes its base in place: equal images show the restore undid it. (These
    # runs of one cell each take no snapshot: it would never be used.)
    assert images_of(tmp_path / "results") == fresh_images(protocol, tmp_path / "fresh", SUBJECTS)
    assert len(snapshots) == 1


def test_a_cell_whose_fit_failed_never_hands_its_base_on(tmp_path):
    protocol = reuse_protocol(tmp_path, "{steps: 12, nan_on: striped_mug}")
    assert run_api(protocol, tmp_path / "results") == 1
    assert states(tmp_path / "results") == {"red_robot": "done", "striped_mug": "failed", "spotted_dog": "done"}
    # striped_mug's fit changed the base for 10 steps before its NaN was seen: dropped,
    # freed, and spotted_dog loads a fresh one.
    assert toy_method.LOAD_CALLS == ["red_robot", "spotted_dog"]
    assert toy_method.LIVE_AT_LOAD == [0, 0]
    fresh = fresh_images(protocol, tmp_path / "fresh", ["spotted_dog"])
    assert {k: v for k, v in images_of(tmp_path / "results").items() if k[0] == "spotted_dog"} == fresh


def test_a_base_is_dropped_before_the_next_arm_loads_its_own(tmp_path):
    extra = "  - {method: toy_reuse, name: toy-b, config: {steps: 4}}\n"
    protocol = reuse_protocol(tmp_path, "{steps: 6}", extra)
    assert run_api(protocol, tmp_path / "results") == 0
    assert len(toy_method.LOAD_CALLS) == 2  # one per arm
    assert toy_method.LIVE_AT_LOAD == [0, 0]  # the first arm's base was gone when the second loaded


def test_a_failed_restore_warns_and_loads_afresh(tmp_path):
    protocol = reuse_protocol(tmp_path, "{steps: 6, restore_error: 'out of pinned memory'}")
    with pytest.warns(RuntimeWarning, match="restoring the base of toy_reuse failed .*out of pinned memory.*again"):
        assert run_api(protocol, tmp_path / "results") == 0
    assert len(toy_method.LOAD_CALLS) == 3
    assert all("reuse_base" not in phases(tmp_path / "results", subject) for subject in SUBJECTS)


# --- every built-in method, on its tiny config ------------------------------------------------

BUILT_IN = ["arbooth", "dreambooth", "custom_diffusion", "textual_inversion"]
PAIR = ["striped_mug", "red_robot"]  # two classes: class images are made from the reused base too


def builtin_protocol(tmp_path: Path, name: str) -> Path:
    from varbench.registry import get_method

    config = json.dumps(get_method(name).tiny_config)  # JSON is YAML
    path = tmp_path / "reuse.yaml"
    path.write_text(f"""name: reuse
version: 1
data: {{dataset: smoke}}
prompts: {{source: custom, object: ["a {{}} on a table"], live: ["a {{}} running"]}}
images_per_prompt: 2
execution: {{batch_size: 2}}
metrics: {{mode: canonical, backbones: tiny, div: false}}
arms:
  - {{method: {name}, config: {config}}}
""")
    return path


def run_in_order(protocol: Path, results: Path, order: list[str]) -> list[str]:
    """Run the cells of `order` in that order in one worker; returns their states."""
    import torch

    from varbench.launch import cells_per_arm
    from varbench.plan import RunOptions, prepare
    from varbench.worker import Worker

    _, cells = prepare(str(protocol), RunOptions(results=results, device="cpu", subjects=order))
    by_name = {cell.subject.name: cell for cell in cells}
    worker = Worker(results, torch.device("cpu"), "test-session", cells_per_arm=cells_per_arm(cells))
    return [worker.run_cell(by_name[name]) for name in order]


def nan_context(subject: str) -> type:
    """A CellContext whose losses become NaN at fit step 2 for one subject, checked at
    once (as the conformance kit injects a NaN): the fit stops after changing its base."""
    from varbench.method import CellContext

    class NaNContext(CellContext):
        def fit_step(self, step, total, **losses):
            if self.subject_name == subject and step == 2:
                losses = {key: float("nan") for key in losses}
                self.loss_check_every = 1
            super().fit_step(step, total, **losses)

    return NaNContext


@pytest.mark.parametrize("name", BUILT_IN)
def test_builtin_methods_reuse_their_base_bit_identically(name, tmp_path, monkeypatch, isolated_cache):
    from varbench import worker
    from varbench.registry import get_method

    cls = get_method(name)
    loads = []
    load_base = cls.load_base
    monkeypatch.setattr(cls, "load_base", lambda self, ctx: loads.append(ctx.subject_name) or load_base(self, ctx))
    protocol = builtin_protocol(tmp_path, name)
    first, second = PAIR
    # Each subject first (fresh base) in one run and second (restored base) in the other.
    assert run_in_order(protocol, tmp_path / "ab", [first, second]) == ["done", "done"]
    assert run_in_order(protocol, tmp_path / "ba", [second, first]) == ["done", "done"]
    assert loads == [first, second]  # the second cell of each run restored the base
    assert phases(tmp_path / "ab", second)[0] == "reuse_base"
    # Class images (DreamBooth, Custom Diffusion) are compared too: the second class's
    # come from the restored base in one run and from a fresh one in the other.
    reused, fresh = image_hashes(tmp_path / "ab"), image_hashes(tmp_path / "ba")
    assert len([path for path in reused if "/cells/" in path]) == 4 and reused == fresh
    # A fit that stops midway (NaN at its second step) leaves a changed base: the next
    # cell loads a fresh one and computes what it computes on one.
    loads.clear()
    monkeypatch.setattr(worker, "CellContext", nan_context(first))
    assert run_in_order(protocol, tmp_path / "nan", [first, second]) == ["failed", "done"]
    assert loads == [first, second]
    assert {k: v for k, v in image_hashes(tmp_path / "nan").items() if second in k} == \
        {k: v for k, v in fresh.items() if second in k}
