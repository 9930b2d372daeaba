"""End to end: `render_report` on a synthetic results root with the default spec, the files
it writes, the self-contained index.html, and that page rendered in headless Chromium."""
from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import varbench.data
from varbench.data import Dataset
from varbench.data.subject import Subject
from varbench.errors import UserError
from varbench.fileio import write_png
from varbench.report import render_report
from varbench.report.paths import digest, write_index
from varbench.report.results import RANDOM_INIT_NOTE
from varbench.report.synthetic_results import SyntheticArm, SyntheticSubject, synthetic_image, write_synthetic_run

pytestmark = pytest.mark.slow

SUBJECTS = [SyntheticSubject("red_robot", "robot", live=False, offset=0.0),
            SyntheticSubject("spotted_dog", "dog", live=True, offset=0.05),
            SyntheticSubject("striped_mug", "mug", live=False, offset=-0.02)]
ARMS = [
    SyntheticArm("arbooth", "arbooth", {"dino": 0.4, "clip_i": 0.6, "clip_t": 0.2}, fit_seconds=20,
                 seconds_per_image=0.3, trainable_parameters=120_000, artifact_bytes=480_000),
    SyntheticArm("dreambooth", "dreambooth", {"dino": 0.35, "clip_i": 0.62, "clip_t": 0.21}, fit_seconds=12,
                 seconds_per_image=0.9, trainable_parameters=300_000, artifact_bytes=1_200_000,
                 states={"striped_mug": "failed"}),
    SyntheticArm("custom_diffusion", "custom_diffusion", {"dino": 0.3, "clip_i": 0.55, "clip_t": 0.22},
                 fit_seconds=10, seconds_per_image=0.9, trainable_parameters=20_000, artifact_bytes=80_000,
                 states={"spotted_dog": "absent"}),
    SyntheticArm("textual_inversion", "textual_inversion", {"dino": 0.25, "clip_i": 0.5, "clip_t": 0.19},
                 fit_seconds=15, seconds_per_image=0.9, trainable_parameters=32, artifact_bytes=1_000),
]
SMOKE_TABLE = "smoke-smoke-comparison"


def reference_dataset(root: Path) -> Dataset:
    """A stand-in for the smoke dataset with two reference photos per subject."""
    subjects = []
    for spec in SUBJECTS:
        paths = []
        for index in range(2):
            path = root / spec.name / f"{index}.png"
            write_png(path, synthetic_image("reference", spec.name, index, size=64))
            paths.append(path)
        subjects.append(Subject(spec.name, spec.class_noun, spec.live, tuple(paths)))
    return Dataset("smoke", tuple(subjects), ("a {} in the jungle",), ("a {} in the jungle",))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    base = tmp_path_factory.mktemp("render")
    results, out = base / "results", base / "out"
    runs = {arm.arm: write_synthetic_run(results, "smoke", arm, SUBJECTS, prompts=3) for arm in ARMS}
    second = SyntheticArm("arbooth", "arbooth", {"dino": 0.45, "clip_i": 0.6, "clip_t": 0.2}, config={"steps": 20})
    runs["arbooth-second"] = write_synthetic_run(results, "smoke", second, SUBJECTS, prompts=3)
    for weight in (0.0, 0.5, 1.0):
        arm = SyntheticArm(f"distill-soft-l{weight}", "arbooth", {"dino": 0.4 + weight / 10, "clip_i": 0.6,
                                                                   "clip_t": 0.2, "pres": 0.5 - weight / 10},
                           config={"distill_weight": weight})
        write_synthetic_run(results, "ablation_distill_tiny", arm, SUBJECTS)
    (out / "tables").mkdir(parents=True)
    (out / "tables" / "left-over.md").write_text("from an older render")
    (out / "tables" / "notes.txt").write_text("not ours")
    # an older render wrote left-over.md (its index says so); notes.txt is the user's
    write_index(out, {"tables/left-over.md": digest(b"from an older render")})
    dataset = reference_dataset(base / "references")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(varbench.data, "open_dataset", lambda name, root=None, fetch_missing=True: dataset)
        index = render_report(results, out, None)  # the default spec: report/paper.yaml
    return {"index": index, "out": out, "runs": runs, "html": index.read_text(encoding="utf-8")}


def test_output_layout(rendered):
    out = rendered["out"]
    assert rendered["index"] == out / "index.html"
    for suffix in (".md", ".tex", ".csv"):
        assert (out / "tables" / f"{SMOKE_TABLE}{suffix}").is_file()
    assert (out / "tables" / "distill-ablation_distill_tiny-comparison.md").is_file()
    for kind in ("cost", "spread", "loss"):
        assert (out / "figures" / f"smoke-smoke-{kind}.png").is_file()
        assert (out / "figures" / f"smoke-smoke-{kind}.pdf").read_bytes().startswith(b"%PDF")
    assert (out / "figures" / "distill-ablation_distill_tiny-sweep.png").is_file()
    assert sorted(p.name for p in (out / "grids").glob("*.png")) == [
        "smoke-smoke-red_robot.png", "smoke-smoke-spotted_dog.png", "smoke-smoke-striped_mug.png"]
    assert not (out / "tables" / "left-over.md").exists()  # stale output of an older render removed
    assert (out / "tables" / "notes.txt").exists()  # files that are not report outputs are left alone


def test_smoke_table_has_the_required_columns_and_random_init_caption(rendered):
    markdown = (rendered["out"] / "tables" / f"{SMOKE_TABLE}.md").read_text(encoding="utf-8")
    header = next(line for line in markdown.splitlines() if line.startswith("| Method"))
    for column in ("DINO", "CLIP-I", "CLIP-T", "Fit time", "s / image", "Trainable params"):
        assert column in header
    assert RANDOM_INIT_NOTE in markdown
    runs = rendered["runs"]
    for key in ("arbooth", "arbooth-second", "dreambooth", "custom_diffusion", "textual_inversion"):
        assert runs[key].run_id in markdown  # both arbooth runs shown, told apart by run id
    assert "| dreambooth† |" in markdown and "2/3 (1 failed)" in markdown and "2/3 (1 pending)" in markdown


def test_html_is_self_contained_with_banner_problems_and_provenance(rendered):
    page = rendered["html"]
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<script" not in page and "<link" not in page and "url(" not in page
    assert 'class="banner"' in page and RANDOM_INIT_NOTE in page
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    figures = len(list((rendered["out"] / "figures").glob("*.png")))
    grids = len(list((rendered["out"] / "grids").glob("*.png")))
    assert len(uris) == figures + grids
    problems = page[page.index('id="cells"'):page.index('id="provenance"')]
    assert "striped_mug" in problems and "RuntimeError: synthetic failure" in problems and "pending" in problems
    provenance = page[page.index('id="provenance"'):]
    assert "0123456789ab" in provenance and "<details><summary>1 package</summary>torch 2.11.0</details>" in provenance
    # the paper spec's headline (dreambench) has no results: the page is named after what it shows
    assert "<h1>varbench report: protocols ablation_distill_tiny, smoke</h1>" in page
    assert rendered["runs"]["dreambooth"].run_id in provenance
    assert "Section &#x27;main&#x27;: no results for protocol(s) dreambench; skipped." in page


def test_grids_show_reference_row_then_one_row_per_arm(rendered):
    grid = np.asarray(Image.open(rendered["out"] / "grids" / "smoke-smoke-red_robot.png").convert("RGB"))
    # Walk down the middle of the first image column (label column 150 px, tiles 96 px in
    # the smoke spec): every tile is a run of non-white pixels about 96 px long.
    column = (grid[:, 150 + 48] != 255).any(axis=1)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], column.astype(int), [0]])))
    runs = edges[1::2] - edges[::2]
    assert (runs >= 90).sum() == 6  # the reference row + 5 arm rows (two arbooth runs)
    assert grid.std() > 20


def test_missing_dataset_draws_grid_without_references_and_says_so(tmp_path: Path):
    write_synthetic_run(tmp_path / "results", "smoke", ARMS[0], SUBJECTS[:1], dataset="no_such_dataset")
    spec = tmp_path / "grid.yaml"
    spec.write_text("sections:\n  - {name: g, protocols: [smoke], tables: [comparison], figures: [],"
                    " grids: {prompts: [0, 1]}}\n", encoding="utf-8")
    page = render_report(tmp_path / "results", tmp_path / "out", spec).read_text(encoding="utf-8")
    assert ("sample grids drawn without reference photos "
            "(dataset &#x27;no_such_dataset&#x27; could not be opened") in page
    assert (tmp_path / "out" / "grids" / "g-smoke-red_robot.png").is_file()


def test_empty_or_missing_results_are_user_errors(tmp_path: Path):
    with pytest.raises(UserError, match="results folder not found"):
        render_report(tmp_path / "nothing", tmp_path / "out", None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no runs found"):
        render_report(tmp_path / "empty", tmp_path / "out", None)


def find_chromium() -> str | None:
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    return next((shutil.which(name) for name in names if shutil.which(name)), None)


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    command = [find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=True)


@pytest.mark.skipif(find_chromium() is None,
                    reason="no chromium binary found: install it with 'apt-get install -y chromium' (.ci/run does)")
def test_page_renders_in_headless_chromium(rendered, tmp_path: Path):
    uri = rendered["index"].as_uri()
    dom = chromium(["--dump-dom", uri], tmp_path / "profile-dom").stdout
    assert dom.count("<table") >= 5  # smoke comparison + split, distill comparison + paired, problems, provenance
    assert "Trainable params ↓" in dom and rendered["runs"]["arbooth"].run_id in dom
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', dom)
    assert len(images) >= 8
    for data in images:
        decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"), dtype=float)
        assert decoded.std() > 10, "an embedded image is blank"
    screenshot = tmp_path / "page.png"
    chromium([f"--screenshot={screenshot}", "--window-size=1200,2400", uri], tmp_path / "profile-shot")
    shot = np.asarray(Image.open(screenshot).convert("RGB"), dtype=float)
    assert shot.shape[:2] == (2400, 1200)
    assert shot.std() > 20 and (shot.min(axis=2) < 200).mean() > 0.02  # text, tables and plots drawn
    banner_red = (np.abs(shot - [178, 34, 34]).max(axis=2) < 40).sum()
    assert banner_red > 500  # the random-init banner's border is on screen
