"""`varbench score` / `varbench.score_images`: images made anywhere, scored like a run.

Scoring uses the tiny random-init encoders (values check the pipeline, not images)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import varbench
from runner_helpers import run_cli
from varbench.data.smoke import smoke_dataset
from varbench.errors import UserError
from varbench.report.results import load_results
from varbench.score import phrase_texts

PER_IMAGE = ("dino", "clip_i", "clip_t")


@pytest.fixture
def smoke(isolated_cache):
    return smoke_dataset(None)


def layout_of_references(smoke, folder: Path, prompts: int = 2) -> Path:
    """Each smoke subject's references as its 'generated' images: prompt p, sample i =
    reference i; sample 1 as a JPEG (scored in its own format)."""
    for subject in smoke.subjects:
        (folder / subject.name).mkdir(parents=True)
        for p in range(prompts):
            shutil.copy(subject.image_paths[0], folder / subject.name / f"{p}_0.png")
            Image.open(subject.image_paths[1]).save(folder / subject.name / f"{p}_1.jpg", quality=95)
    return folder


def own_subjects(smoke, folder: Path) -> Path:
    """A folder dataset: each smoke subject with its first reference only."""
    lines = ["prompts: {object: ['a {} on the beach', 'a {} in the snow'],",
             "          live: ['a {} sleeping', 'a {} in the snow']}", "subjects:"]
    for subject in smoke.subjects:
        (folder / subject.name).mkdir(parents=True)
        shutil.copy(subject.image_paths[0], folder / subject.name / "ref.png")
        lines.append(f"  - {{name: {subject.name}, class: {subject.class_noun}, live: {str(subject.live).lower()}}}")
    (folder / "subjects.yaml").write_text("\n".join(lines) + "\n")
    return folder


def score(images: Path, results: Path, **options):
    return varbench.score_images(images, backbones="tiny", results=results, device="cpu", **options)


def test_references_scored_as_generated_match_themselves(smoke, tmp_path):
    subjects = own_subjects(smoke, tmp_path / "subjects")
    generated = tmp_path / "generated"
    for subject in smoke.subjects:  # each subject's one reference, as two prompts' images
        (generated / subject.name).mkdir(parents=True)
        for name in ("0_0.png", "1_0.png"):
            shutil.copy(subjects / subject.name / "ref.png", generated / subject.name / name)
    rows, summary = score(generated, tmp_path / "results", dataset="folder", data_root=str(subjects))
    per_image = rows[rows["metric"].isin(["dino", "clip_i"])]
    assert len(per_image) == 2 * 2 * len(smoke.subjects)
    np.testing.assert_allclose(per_image["value"].to_numpy(dtype=float), 1.0, atol=1e-5)
    assert set(summary["metric"]) >= set(PER_IMAGE)


def test_two_folders_that_differ_by_one_image_differ_in_exactly_its_rows(smoke, tmp_path):
    first = layout_of_references(smoke, tmp_path / "a")
    second = tmp_path / "b"
    shutil.copytree(first, second)
    changed = second / "red_robot" / "1_0.png"
    Image.open(smoke.subjects[1].image_paths[3]).save(changed)  # another subject's photo
    rows_a, _ = score(first, tmp_path / "results", dataset="smoke", name="a")
    rows_b, _ = score(second, tmp_path / "results", dataset="smoke", name="b")
    keys = ["subject", "kind", "prompt_index", "sample_index", "image", "metric"]
    merged = rows_a.merge(rows_b, on=keys, suffixes=("_a", "_b"))
    assert len(merged) == len(rows_a) == len(rows_b)
    differs = merged[merged["value_a"] != merged["value_b"]]
    per_image = differs[differs["metric"].isin(PER_IMAGE)]
    assert set(per_image["image"]) == {"images/p001_s00.png"} and set(per_image["subject"]) == {"red_robot"}
    assert set(per_image["metric"]) == set(PER_IMAGE)
    div = differs[differs["metric"] == "div"]  # the image's prompt's diversity, nothing else
    assert list(zip(div["subject"], div["prompt_index"])) == [("red_robot", 1)]


def test_a_rerun_scores_nothing_again_and_new_images_make_a_new_run(smoke, tmp_path):
    images = layout_of_references(smoke, tmp_path / "images", prompts=1)
    results = tmp_path / "results"
    score(images, results, dataset="smoke")
    (run,) = (results / "smoke").iterdir()
    metrics = sorted(run.glob("cells/*/scores/*/metrics.csv"))
    stamps = [p.stat().st_mtime_ns for p in metrics]
    rows, _ = score(images, results, dataset="smoke")
    assert [p.stat().st_mtime_ns for p in metrics] == stamps and len(rows) > 0
    assert (run / "run.json").read_text().count('"external": true') == 1
    (shown,) = load_results(results)["smoke"].runs  # reports draw it as external images
    assert shown.family == "external" and shown.method == "external"


def test_a_manifest_gives_prompts_as_generated(smoke, tmp_path):
    images = layout_of_references(smoke, tmp_path / "images", prompts=1)
    manifest = tmp_path / "manifest.csv"
    lines = ["image,subject,prompt"] + [f"{s.name}/0_{i}.{'png' if i == 0 else 'jpg'},{s.name},a sks {s.class_noun} in the snow"
                                        for s in smoke.subjects for i in range(2)]
    manifest.write_text("\n".join(lines) + "\n")
    rows, _ = score(images, tmp_path / "results", dataset="smoke", manifest=manifest, identifier="sks",
                    extra=["copy"])
    assert {"copy", "copy_dino", "copy_clip_i"} <= set(rows["metric"])  # extras pass through
    per_image = rows[rows["metric"].isin(PER_IMAGE)]
    assert set(per_image["sample_index"]) == {0, 1} and set(per_image["prompt_index"]) == {0}
    (images_csv,) = (tmp_path / "results").glob("smoke/*/cells/red_robot/images.csv")
    text = images_csv.read_text()
    assert "a toy robot in the snow" in text and "a {} in the snow" in text


def test_phrase_texts_strip_the_identifier():
    assert phrase_texts("a sks dog in the snow", "sks", "dog") == ("a dog in the snow", "a {} in the snow")
    assert phrase_texts("a dog in the snow", None, "dog") == ("a dog in the snow", "a {} in the snow")


def _break(kind: str, folder: Path, tmp_path: Path) -> tuple[dict, str]:
    """Damage a good layout one way; returns (extra score options, what the error names)."""
    if kind == "unknown subject":
        (folder / "red_robto").mkdir()
        return {}, "red_robto"
    if kind == "prompt out of range":
        shutil.copy(folder / "red_robot" / "0_0.png", folder / "red_robot" / "7_0.png")
        return {}, "7_0.png"
    if kind == "unreadable image":
        (folder / "striped_mug" / "0_1.jpg").write_bytes(b"\xff\xd8\xffnot really")
        return {}, "0_1.jpg"
    if kind == "subject without images":
        shutil.rmtree(folder / "spotted_dog")
        (folder / "spotted_dog").mkdir()
        return {}, "spotted_dog"
    if kind == "badly named file":
        (folder / "red_robot" / "first.png").write_bytes(b"")
        return {}, "first.png"
    manifest = tmp_path / "manifest.csv"
    row = "red_robot/0_0.png,red_robot,a toy robot"
    manifest.write_text("image,subject,prompt\n" + row + "\n" + row + "\n")
    return {"manifest": manifest}, "row 3"


@pytest.mark.parametrize("kind", ["unknown subject", "prompt out of range", "unreadable image",
                                  "subject without images", "badly named file", "duplicated row"])
def test_every_problem_is_one_line_naming_the_file_and_nothing_is_written(smoke, tmp_path, kind):
    folder = layout_of_references(smoke, tmp_path / "images", prompts=1)
    options, named = _break(kind, folder, tmp_path)
    with pytest.raises(UserError) as caught:
        score(folder, tmp_path / "results", dataset="smoke", **options)
    assert named in caught.value.where and "\n" not in str(caught.value)
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.png"))


def test_the_cli_prints_one_line_and_exits_2(smoke, tmp_path, isolated_cache):
    folder = layout_of_references(smoke, tmp_path / "images", prompts=1)
    (folder / "red_robto").mkdir()
    done = run_cli("score", str(folder), "--dataset", "smoke", "--backbones", "tiny", "--results",
                   str(tmp_path / "results"), env_extra={"VARBENCH_CACHE": str(isolated_cache)})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "unknown subject 'red_robto'" in done.stderr and "Did you mean 'red_robot'" in done.stderr


def test_staged_copies_are_sealed_with_their_true_digests(smoke, tmp_path, monkeypatch):
    """The seal reuses the digests read while checking: they must be the copies' own."""
    import json

    from varbench.integrity import file_digest

    from varbench import integrity

    images = layout_of_references(smoke, tmp_path / "images", prompts=1)
    hashed = []
    real_digest = integrity.file_digest

    def counting(path):
        hashed.append(Path(path))
        return real_digest(path)

    monkeypatch.setattr(integrity, "file_digest", counting)
    score(images, tmp_path / "results", dataset="smoke", div=False)
    assert not [path for path in hashed if path.parent.name == "images"]  # staged images were not read again
    statuses = sorted((tmp_path / "results").glob("smoke/*/cells/*/status.json"))
    assert len(statuses) == len(smoke.subjects)
    for status in statuses:
        files = json.loads(status.read_text())["files"]
        assert sum(name.startswith("images/") for name in files) == 2
        for name, sealed in files.items():
            assert sealed["sha256"] == file_digest(status.parent / name), name


def test_an_image_changed_after_checking_is_refused_and_not_sealed(smoke, tmp_path, monkeypatch):
    """A file rewritten between its check and its copy would make the seal's digest (taken
    from the check) wrong: the copy is refused with one line, nothing is sealed done."""
    import os
    import shutil as shell

    from varbench import score as scoring

    images = layout_of_references(smoke, tmp_path / "images", prompts=1)
    victim = sorted(images.rglob("0_0.png"))[0]
    real_copy = shell.copyfile

    def copy_then_touch(source, target, *args, **kwargs):
        result = real_copy(source, target, *args, **kwargs)
        if Path(source) == victim:  # another program rewrites the file meanwhile
            stat = os.stat(victim)
            os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
        return result

    monkeypatch.setattr(shell, "copyfile", copy_then_touch)
    with pytest.raises(UserError, match="changed while varbench read it") as raised:
        scoring.score_external(scoring.ScoreRequest(images=images, dataset="smoke", backbones="tiny",
                                                    results=tmp_path / "results", device="cpu", div=False))
    assert str(victim) in raised.value.line()
    subject_dir = next(p for p in (tmp_path / "results").rglob(victim.parent.name) if p.is_dir())
    status = subject_dir / "status.json"
    assert not status.exists() or '"done"' not in status.read_text()


def test_a_report_of_external_images_alone_names_no_unknown_protocol_version(smoke, tmp_path):
    from varbench.report.render import _protocol_lines, add_default_sections
    from varbench.report.section import build_views
    from varbench.report.spec import load_spec

    score(layout_of_references(smoke, tmp_path / "images", prompts=1), tmp_path / "results", dataset="smoke")
    results = load_results(tmp_path / "results")
    spec = load_spec(None)
    add_default_sections(spec, results)
    views, _ = build_views(spec, results)
    [line] = _protocol_lines(views)
    assert line.startswith("Protocol smoke") and "version" not in line
