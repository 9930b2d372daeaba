"""`varbench report` writes and deletes only what it owns, and reads only inside the results root.

Output side: a user's own file in the output folder survives a render, a non-empty folder
varbench did not make is refused (unless --force), only stale files an earlier render
listed in `.varbench-report.json` are removed, and no symlink in the output folder leads
a write or a delete outside it. Input side: an image path in `images.csv` that resolves
outside the results root (`..`, absolute, symlinked) is never opened or embedded.
"""
from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

import varbench.report.grids as grids
from runner_helpers import run_cli
from varbench.cli import app
from varbench.errors import UserError
from varbench.fileio import write_png
from varbench.report.grids import build_grids
from varbench.report.paths import INDEX_NAME, OutputFolder, digest, write_index
from varbench.report.render import render_report
from varbench.report.results import load_results
from varbench.report.section import build_views
from varbench.report.spec import load_spec
from varbench.report.synthetic_results import SyntheticArm, SyntheticSubject, write_synthetic_run

SUBJECT = SyntheticSubject("red_robot", "robot", live=False)
ARM = SyntheticArm("arbooth", "arbooth", {"dino": 0.4, "clip_i": 0.6, "clip_t": 0.2})
MAGENTA = (255, 0, 255)  # no synthetic image, placeholder or label uses it
SPEC = ("sections:\n  - {{name: {name}, protocols: [smoke], tables: [comparison], figures: [],"
        " grids: {{prompts: [0], references: 0, thumbnail: 32}}}}\n")
TABLE = "tables/g-smoke-comparison.md"
GRID = "grids/g-smoke-red_robot.png"


def write_spec(path: Path, name: str = "g") -> Path:
    path.write_text(SPEC.format(name=name), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A results root with one run of one subject (one image), a small spec, and a secret."""
    base = tmp_path_factory.mktemp("hostile")
    write_synthetic_run(base / "results", "smoke", ARM, [SUBJECT], prompts=1, samples=1)
    secret = base / "secret.png"  # outside the results root: must never be read
    write_png(secret, Image.new("RGB", (16, 16), MAGENTA))
    return {"base": base, "results": base / "results", "spec": write_spec(base / "g.yaml"), "secret": secret}


def render(setup, out: Path, **options) -> Path:
    return render_report(setup["results"], out, setup["spec"], **options)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def magenta_pixels(png: bytes) -> int:
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return int((pixels == MAGENTA).all(axis=2).sum())


def index_files(out: Path) -> dict[str, str]:
    return json.loads((out / INDEX_NAME).read_text(encoding="utf-8"))["files"]


# ---- output folder -----------------------------------------------------------------


def test_users_file_in_out_figures_survives_renders(setup, tmp_path: Path):
    out = tmp_path / "report"
    render(setup, out)
    mine = out / "figures" / "fig1.pdf"
    mine.parent.mkdir(exist_ok=True)  # this spec draws no figures; the user adds one
    mine.write_bytes(b"%PDF my own figure")
    render(setup, out)  # an indexed folder: no --force needed
    assert mine.read_bytes() == b"%PDF my own figure"
    # a paper folder varbench never wrote: with --force the render goes in, the user's files stay
    paper = tmp_path / "paper"
    (paper / "figures").mkdir(parents=True)
    (paper / "figures" / "fig1.pdf").write_bytes(b"%PDF paper figure")
    (paper / "tables").mkdir()
    (paper / "tables" / "old.md").write_text("hand-made table")
    render(setup, paper, force=True)
    render(setup, paper)  # the second render has the index of the first: still nothing of theirs deleted
    assert (paper / "figures" / "fig1.pdf").read_bytes() == b"%PDF paper figure"
    assert (paper / "tables" / "old.md").read_text() == "hand-made table"
    assert (paper / TABLE).is_file() and (paper / "index.html").is_file()
    listed = set(index_files(paper))  # what varbench wrote, not the user's files
    assert {TABLE, GRID, "index.html"} <= listed and not {"figures/fig1.pdf", "tables/old.md"} & listed


def test_unknown_nonempty_out_is_refused_without_force(setup, tmp_path: Path):
    out = tmp_path / "paper"
    out.mkdir()
    (out / "draft.tex").write_text("my paper")
    with pytest.raises(UserError, match="not empty"):
        render(setup, out)
    args = ["report", "--results", str(setup["results"]), "--out", str(out), "--spec", str(setup["spec"])]
    refused = run_cli(*args)
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in refused.stderr
    assert str(out) in lines[0] and "--force" in lines[0] and "not empty" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == ["draft.tex"]  # nothing written
    forced = CliRunner().invoke(app, [*args, "--force"])  # in-process: a second interpreter start costs seconds
    assert forced.exit_code == 0, forced.output
    assert (out / "draft.tex").read_text() == "my paper" and (out / "index.html").is_file()


def test_a_folder_with_an_index_html_is_refused_without_force(setup, tmp_path: Path):
    """A user's own site (index.html, figures/) is not mistaken for an earlier report: it
    would be overwritten. With --force the report writes, deleting nothing else."""
    out = tmp_path / "site"
    (out / "figures").mkdir(parents=True)
    (out / "index.html").write_text("<h1>my homepage</h1>")
    (out / "figures" / "old-comparison.png").write_bytes(b"mine")
    with pytest.raises(UserError, match="not empty"):
        render(setup, out)
    assert (out / "index.html").read_text() == "<h1>my homepage</h1>"
    render(setup, out, force=True)
    assert (out / "figures" / "old-comparison.png").read_bytes() == b"mine" and TABLE in index_files(out)


def test_unreadable_index_is_refused_without_force(setup, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / INDEX_NAME).write_text("{not json")
    with pytest.raises(UserError, match="index of this folder is unreadable"):
        render(setup, out)
    render(setup, out, force=True)
    assert TABLE in index_files(out)


def test_stale_files_varbench_wrote_are_removed_edited_ones_kept(setup, tmp_path: Path):
    out = tmp_path / "out"
    render_report(setup["results"], out, write_spec(tmp_path / "first.yaml", "first"))
    old_table = out / "tables" / "first-smoke-comparison.md"
    old_grid = out / "grids" / "first-smoke-red_robot.png"
    edited = out / "tables" / "first-smoke-comparison.tex"
    assert old_table.is_file() and old_grid.is_file() and edited.is_file()
    edited.write_text(edited.read_text() + "% my edit\n")
    with pytest.warns(UserWarning, match="changed since"):
        render(setup, out)  # section "g" now: every "first-*" file is stale
    assert not old_table.exists() and not old_grid.exists()
    assert edited.read_text().endswith("% my edit\n")  # the user's edit is not lost
    assert not any(name.startswith(("tables/first-", "grids/first-")) for name in index_files(out))
    assert (out / TABLE).is_file()


@settings(max_examples=15, deadline=None)
@given(users=st.sets(st.sampled_from(["tables/a.md", "tables/b.csv", "figures/c.pdf", "grids/d.png",
                                      "figures/e.png", "notes.txt", "tables/g.tex"]), max_size=7),
       first=st.sets(st.sampled_from(["tables/x.md", "figures/y.png", "grids/z.png", "index.html"]), min_size=1),
       second=st.sets(st.sampled_from(["tables/x.md", "figures/y.png", "grids/z.png", "index.html"])))
def test_output_folder_deletes_only_its_own_stale_files(tmp_path_factory, users, first, second):
    out = tmp_path_factory.mktemp("owned")
    earlier = OutputFolder(out)
    for name in first:
        earlier.write(name, f"varbench {name}")
    earlier.finish()
    for name in users:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(f"user {name}")
    later = OutputFolder(out)
    for name in second:
        later.write(name, f"varbench again {name}")
    later.finish()
    for name in users:
        assert (out / name).read_text() == f"user {name}"
    for name in first - second:
        assert not (out / name).exists()
    assert index_files(out) == {name: digest(f"varbench again {name}".encode()) for name in second}


def test_symlinked_file_in_out_tables_is_replaced_not_written_through(setup, tmp_path: Path):
    # A guard rather than a fix: varbench.fileio renames over the path, so the link itself is
    # replaced; this keeps it so.
    out = tmp_path / "out"
    render(setup, out)
    important = tmp_path / "home" / "important"
    important.parent.mkdir()
    important.write_text("precious")
    (out / TABLE).unlink()
    (out / TABLE).symlink_to(important)
    stale = out / "tables" / "g-smoke-gone.md"  # a stale name the index lists, now a link
    stale.symlink_to(important)
    files = index_files(out)
    write_index(out, {**files, "tables/g-smoke-gone.md": digest(b"precious")})
    render(setup, out)
    assert important.read_text() == "precious"
    assert not (out / TABLE).is_symlink() and "DINO" in (out / TABLE).read_text()
    assert stale.is_symlink()  # not a regular file varbench wrote: left alone
    # the index itself as a link to an outside file: not trusted, and replaced rather than written through
    outside_index = tmp_path / "home" / "settings.json"
    outside_index.write_text('{"files": {}}')
    (out / INDEX_NAME).unlink()
    (out / INDEX_NAME).symlink_to(outside_index)
    with pytest.raises(UserError, match="unreadable"):
        render(setup, out)
    render(setup, out, force=True)
    assert outside_index.read_text() == '{"files": {}}' and not (out / INDEX_NAME).is_symlink()


def test_symlinked_output_folder_leading_outside_is_refused(setup, tmp_path: Path):
    out = tmp_path / "out"
    render(setup, out)
    elsewhere = tmp_path / "home" / "docs"
    elsewhere.mkdir(parents=True)
    (elsewhere / "important.md").write_text("precious")
    (elsewhere / "g-smoke-comparison.md").write_text("also precious")
    files = index_files(out)
    for path in (out / "tables").iterdir():
        path.unlink()
    (out / "tables").rmdir()
    (out / "tables").symlink_to(elsewhere, target_is_directory=True)
    write_index(out, {**files, "tables/important.md": digest(b"precious")})
    with pytest.raises(UserError, match="leads outside"):
        render(setup, out)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["g-smoke-comparison.md", "important.md"]
    assert (elsewhere / "important.md").read_text() == "precious"
    assert (elsewhere / "g-smoke-comparison.md").read_text() == "also precious"


# ---- image paths from results CSVs --------------------------------------------------


@pytest.fixture(scope="module")
def view(setup):
    """The grid section of the results, built once; tests set the images' `path` column."""
    views, _ = build_views(load_spec(setup["spec"]), load_results(setup["results"]))
    return views[0]


def record_loads(patch: pytest.MonkeyPatch) -> list[Path]:
    """Every image path the grid module opens from now on (it still opens them)."""
    opened: list[Path] = []
    real = grids.load_rgb
    patch.setattr(grids, "load_rgb", lambda path: opened.append(Path(path)) or real(path))
    return opened


RELATIVE_PATHS = st.lists(st.sampled_from(["..", ".", "images", "x"]), max_size=9).map(
    lambda parts: "/".join([*parts, "secret.png"]))


@settings(max_examples=25, deadline=None)
@given(path=st.one_of(RELATIVE_PATHS, st.just("ABSOLUTE")))
@example(path="../../../../../secret.png")  # cells/<subject> -> run -> protocol -> root -> its parent
@example(path="images/../../../../../../secret.png")
@example(path="ABSOLUTE")
def test_images_csv_path_outside_the_results_root_is_not_read(setup, view, path):
    root = setup["results"].resolve()
    hostile = str(setup["secret"]) if path == "ABSOLUTE" else path
    images = view.protocol.images
    original = images["path"].copy()
    images["path"] = hostile
    try:
        with pytest.MonkeyPatch.context() as patch:
            opened = record_loads(patch)
            png = build_grids(view)[0][0].png
    finally:
        images["path"] = original
    assert all(p.resolve().is_relative_to(root) for p in opened), opened
    assert magenta_pixels(png) == 0


def test_symlinked_image_leading_outside_is_not_read_or_embedded(setup, tmp_path: Path):
    results = tmp_path / "results"
    run = write_synthetic_run(results, "smoke", ARM, [SUBJECT], prompts=2, samples=1)
    cell = run.cell(SUBJECT.name).dir
    spec = tmp_path / "g.yaml"
    spec.write_text(SPEC.format(name="g").replace("prompts: [0]", "prompts: [0, 1]"), encoding="utf-8")
    (cell / "images" / "p000_s00.png").unlink()
    (cell / "images" / "p000_s00.png").symlink_to(setup["secret"])  # a file link leading outside
    inside_copy = results / "magenta.png"  # a link that stays inside the root is fine
    write_png(inside_copy, Image.new("RGB", (16, 16), MAGENTA))
    (cell / "images" / "p001_s00.png").unlink()
    (cell / "images" / "p001_s00.png").symlink_to(inside_copy)
    out = tmp_path / "out"
    with pytest.MonkeyPatch.context() as patch:
        opened = record_loads(patch)
        page = render_report(results, out, spec).read_text(encoding="utf-8")
    # A PNG replaced by a link makes the cell damaged (store seal): none of its images is shown.
    grids_written = [p.read_bytes() for p in sorted((out / "grids").glob("*.png"))]
    assert opened == [] and not any(magenta_pixels(g) for g in grids_written)
    with pytest.MonkeyPatch.context() as patch:  # the tile itself: only what resolves inside is opened
        opened = record_loads(patch)
        inside_tile = grids._generated_tile(cell / "images" / "p001_s00.png", results, 32, "x")
        grids._generated_tile(cell / "images" / "p000_s00.png", results, 32, "x")
    assert opened == [inside_copy.resolve()] and magenta_pixels(_png(inside_tile)) > 0
    embedded = [base64.b64decode(d) for d in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]
    assert embedded == grids_written  # the page embeds exactly what this render wrote

    # a whole images folder linked outside: nothing in it is read
    (cell / "images" / "p001_s00.png").unlink()
    (cell / "images" / "p000_s00.png").unlink()
    (cell / "images").rmdir()
    (cell / "images").symlink_to(setup["base"], target_is_directory=True)
    (cell / "images.csv").write_text((cell / "images.csv").read_text().replace("images/p000_s00.png",
                                                                               "images/secret.png"))
    with pytest.MonkeyPatch.context() as patch:
        opened = record_loads(patch)
        render_report(results, out, spec)
    assert opened == [] and not any(magenta_pixels(p.read_bytes()) for p in (out / "grids").glob("*.png"))


def test_a_render_killed_half_way_leaves_a_folder_the_next_render_accepts(tmp_path: Path):
    out = tmp_path / "out"
    first = OutputFolder(out)
    first.write("tables/a.md", "| a |")  # ... and the process dies here, before finish()
    second = OutputFolder(out)  # no "not empty" refusal: the index already lists a.md
    second.write("tables/b.md", "| b |")
    second.finish()
    assert sorted(p.name for p in (out / "tables").iterdir()) == ["b.md"]  # the orphan is cleaned


def test_text_that_the_file_system_could_not_decode_is_written_escaped(tmp_path: Path):
    out = tmp_path / "out"
    folder = OutputFolder(out)
    folder.write("index.html", "results in /data/r\udce9sults")  # os.fsdecode of a latin-1 name
    assert b"\\udce9" in (out / "index.html").read_bytes()
