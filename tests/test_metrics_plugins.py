"""Metric plugins: the registry, the interface a metric implements, extras in a config and
in the score id, `varbench list metrics`, and the installable example package."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TESTS_DIR
from runner_helpers import run_cli
from varbench.data.subject import Subject
from varbench.errors import UserError
from varbench.metrics import registry
from varbench.metrics.copy_guard import CopyGuard
from varbench.metrics.encoder_specs import CLIP, DINO
from varbench.metrics.plugin import Encoder, Metric
from varbench.metrics.registry import get_metric, register_metric
from varbench.metrics.scoring import GeneratedImage, Scorer
from varbench.metrics.settings import MetricsConfig, score_id, score_identity
from varbench.protocol import load_protocol

STANDARD = {"dino", "clip_i", "clip_t", "div", "pres"}
EXTRAS = ["dinov2_s", "dinov2_l", "clip_l_i", "clip_l_t", "copy"]
PROMPTS = ["a {} in the jungle", "a {} on the beach", "a red {}"]
DEFAULT_SCORE_ID = "canonical-4fd4812e"  # MetricsConfig() before extras existed


def write_png(path, seed, size=(48, 40)):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    """3 references; prompts with 3, 3 and 1 samples; 2 PRES images."""
    folder = tmp_path_factory.mktemp("plugin-cell")
    (folder / "images").mkdir()
    (folder / "pres").mkdir()
    subject = Subject("toy", "toy", False, tuple(write_png(folder / f"ref{i}.png", 100 + i, (52, 44))
                                                 for i in range(3)))
    images = []
    for prompt, samples in enumerate([3, 3, 1]):
        for sample in range(samples):
            name = f"images/p{prompt:03d}_s{sample:02d}.png"
            images.append(GeneratedImage(write_png(folder / name, 10 * prompt + sample), name, "eval", prompt,
                                         sample, PROMPTS[prompt].format("toy"), PROMPTS[prompt]))
    for sample in range(2):
        name = f"pres/s{sample:02d}.png"
        images.append(GeneratedImage(write_png(folder / name, 50 + sample), name, "pres", -1, sample,
                                     "a photo of toy", "a photo of {}"))
    return subject, images


def scorer_for(**options) -> Scorer:
    return Scorer(MetricsConfig(backbones="tiny", batch_size=4, **options), "cpu", threads=2)


@pytest.fixture
def fresh_registry(monkeypatch):
    """Decorated test metrics never leak into other tests."""
    monkeypatch.setattr(registry.METRICS, "decorated", {})


# --- the built-ins on the interface ---------------------------------------------------------
def test_builtins_are_entry_points_and_planning_loads_no_model_library():
    code = ("import sys\n"
            "from varbench.metrics.registry import available, get_metric\n"
            "from varbench.metrics.settings import MetricsConfig, score_identity\n"
            "names = available(); [get_metric(name) for name in names]\n"
            f"score_identity(MetricsConfig(extra={EXTRAS!r}))\n"
            "print(sorted(names)); print(sorted(m for m in ('torch', 'timm', 'open_clip', 'torchvision',"
            " 'torchmetrics') if m in sys.modules))")
    env = {key: value for key, value in os.environ.items() if key != "VARBENCH_PLUGINS"}  # the toy method imports torch
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=env).stdout.splitlines()
    assert set(eval(out[0])) >= STANDARD | set(EXTRAS)
    assert out[1] == "[]"
    assert registry.available()["dino"] == "varbench.metrics.standard:Dino"


def test_standard_rows_are_unchanged_by_extras_and_each_image_keeps_its_rows_together(cell):
    subject, images = cell
    plain, extended = scorer_for(), scorer_for(extra=EXTRAS)
    try:
        before, after = plain.score_cell(subject, images), extended.score_cell(subject, images)
    finally:
        plain.close()
        extended.close()
    assert [row for row in after if row["metric"] in STANDARD] == before  # bit for bit, same order
    counts = Counter(row["metric"] for row in after)
    assert counts == {"dino": 7, "clip_i": 7, "clip_t": 7, "div": 2, "pres": 2, "dinov2_s": 7, "dinov2_l": 7,
                      "clip_l_i": 7, "clip_l_t": 7, "copy_dino": 7, "copy_clip_i": 7, "copy": 7}
    first = [row["metric"] for row in after if row["image"] == images[0].name]
    assert first == ["dino", "clip_i", "clip_t", "clip_l_i", "clip_l_t", "copy_dino", "copy_clip_i", "copy",
                     "dinov2_l", "dinov2_s"]  # standard, then the extras by name
    kinds = [row["kind"] for row in after]
    assert kinds == sorted(kinds, key=lambda kind: kind != "eval")  # eval rows, then PRES rows
    assert [row["metric"] for row in after if row["image"] == ""] == ["div", "div"]


def test_each_encoder_runs_once_per_batch_whatever_reads_it(cell):
    """dino + pres + copy read one DINO pass, clip_i + clip_t + copy one CLIP pass, clip_l_i
    + clip_l_t one CLIP ViT-L/14 pass: 9 images in batches of 4 plus one reference batch."""
    subject, images = cell
    scorer = scorer_for(extra=["copy", "clip_l_i", "clip_l_t"], div=False)
    calls = Counter()
    towers = {"dino": scorer.models["dino"], "clip": scorer.models["clip"].model.visual,
              "clip_l": scorer.models["clip_l"].model.visual,
              "clip_text": scorer.models["clip"].model.transformer}
    for name, module in towers.items():
        module.register_forward_hook(lambda *args, name=name: calls.update([name]))
    try:
        scorer.score_cell(subject, images)
    finally:
        scorer.close()
    assert calls == {"dino": 3 + 1, "clip": 3 + 1, "clip_l": 3 + 1, "clip_text": 1}
    assert list(scorer.encoders) == ["dino", "clip", "clip_l"]


# --- extras in a config and in the score id --------------------------------------------------
def test_extras_enter_the_score_id_only_when_present(monkeypatch):
    assert score_id(MetricsConfig()) == DEFAULT_SCORE_ID
    assert "extra" not in score_identity(MetricsConfig())
    both = MetricsConfig(extra=["copy", "dinov2_s"])
    assert score_id(both) != DEFAULT_SCORE_ID
    assert score_id(both) == score_id(MetricsConfig(extra=["dinov2_s", "copy"]))  # order is not a result
    identity = score_identity(both)["extra"]
    assert identity["dinov2_s"]["weights"] == [
        "timm/vit_small_patch14_dinov2.lvd142m/model.safetensors@0686a689726076609b20e80d263cb5aa7be945f5"]
    assert identity["copy"]["version"] == "1"
    assert "weights" not in score_identity(MetricsConfig(backbones="tiny", extra=["copy"]))["extra"]["copy"]
    before = score_id(both)
    monkeypatch.setattr(CopyGuard, "version", "2")
    assert score_id(both) != before  # a new version of an extra is a new score


def test_extra_names_are_checked_when_the_protocol_loads(tmp_path):
    toy = (TESTS_DIR / "protocols" / "toy.yaml").read_text()
    path = tmp_path / "typo.yaml"
    path.write_text(toy.replace("pres_images: 1}", "pres_images: 1, extra: [dinov2s]}"))
    with pytest.raises(UserError) as caught:
        load_protocol(path)
    line = caught.value.line()
    assert "unknown metric 'dinov2s'" in line and "Did you mean 'dinov2_s'" in line and "\n" not in line
    path.write_text(toy.replace("pres_images: 1}", "pres_images: 1, extra: [copy]}"))
    (arm,) = load_protocol(path).arms
    assert arm.metrics.extra == ["copy"] and arm.score_id != "canonical-cef96f9f"
    with pytest.raises(UserError, match="standard metric.*div: true"):
        MetricsConfig(extra=["div"])
    with pytest.raises(UserError, match="listed twice"):
        MetricsConfig(extra=["copy", "copy"])


def test_list_metrics_shows_source_needs_and_direction():
    result = run_cli("list", "metrics")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if not line.startswith(" ")}
    assert set(lines) >= STANDARD | set(EXTRAS)
    assert "standard" in lines["clip_t"] and "needs prompt " in lines["clip_t"]
    assert "varbench.metrics.standard:ClipT" in lines["clip_t"] and "higher is better" in lines["clip_t"]
    assert "lower is better" in lines["pres"] and "pres images" in lines["pres"]
    assert "extra" in lines["copy"] and "lower is better" in lines["copy"]
    assert "rows: copy_dino, copy_clip_i, copy" in result.stdout
    assert "needs prompt_images" in lines["div"]
    assert registry.row_directions(["pres", "copy", "dinov2_s"]) == {
        "pres": "lower", "copy_dino": "lower", "copy_clip_i": "lower", "copy": "lower", "dinov2_s": "higher"}


# --- writing a metric -------------------------------------------------------------------------
def _mean_brightness(model, views):
    return views.float().mean(dim=(1, 2, 3)) / 255


BRIGHTNESS = Encoder("test_brightness", "square", lambda setup: None, encode=_mean_brightness)


def test_a_decorated_metric_is_scored_per_prompt(fresh_registry, cell):
    """A plugin with per-prompt rows of its own names, reading the LPIPS views."""

    @register_metric
    class Spread(Metric):
        name, version = "spread", "1"
        needs = frozenset({"prompt_images"})
        encoders = (BRIGHTNESS,)
        rows = ("spread", "spread_max")

        def score(self, cell):
            brightness, groups = cell.embeddings(BRIGHTNESS), sorted(cell.prompt_groups().items())
            spread = [float(brightness[rows].max() - brightness[rows].min()) for _, rows in groups]
            highest = torch.stack([brightness[rows].max() for _, rows in groups])
            prompts = [prompt for prompt, _ in groups]
            return [cell.per_prompt(prompts, spread), cell.per_prompt(prompts, highest, "spread_max")]

    assert get_metric("spread") is Spread and "spread" in registry.available()
    subject, images = cell
    scorer = scorer_for(div=False, extra=["spread"])
    try:
        rows = scorer.score_cell(subject, images)
    finally:
        scorer.close()
    spread = [row for row in rows if row["metric"] == "spread"]
    assert [(row["prompt_index"], row["sample_index"], row["image"]) for row in spread] == \
        [(0, -1, ""), (1, -1, ""), (2, -1, "")]
    assert spread[2]["value"] == 0.0  # one image: no spread
    means = [np.asarray(Image.open(image.path).convert("RGB").resize((256, 256), Image.BICUBIC)).mean() / 255
             for image in images[:3]]
    assert spread[0]["value"] == pytest.approx(max(means) - min(means), abs=1e-6)
    eval_rows = [row["metric"] for row in rows if row["kind"] == "eval"]
    assert eval_rows[-6:] == ["spread"] * 3 + ["spread_max"] * 3  # per-prompt rows after the per-image ones
    assert [row["metric"] for row in rows[-2:]] == ["pres", "pres"]


def _metric(name, score, needs=frozenset(), encoders=(DINO,)):
    return type(name.title(), (Metric,), {"name": name, "version": "1", "needs": needs, "encoders": encoders,
                                          "score": score})


@pytest.mark.parametrize("score,needs,encoders,message", [
    (lambda self, cell: [cell.per_image(cell.similarity(DINO))], frozenset(), (DINO,), "does not declare"),
    (lambda self, cell: [cell.per_image(cell.embeddings(CLIP)[:, 0])], frozenset(), (DINO,), "does not list"),
    (lambda self, cell: [cell.per_image(cell.embeddings(DINO)[:, 0], "other")], frozenset(), (DINO,),
     "returned rows named 'other'"),
    (lambda self, cell: [cell.per_image([0.5])], frozenset(), (DINO,), "1 values for 7 keys"),
])
def test_a_metric_reads_only_what_it_declares(fresh_registry, cell, score, needs, encoders, message):
    register_metric(_metric("careless", score, needs, encoders))
    subject, images = cell
    scorer = scorer_for(div=False, extra=["careless"])
    try:
        with pytest.raises(RuntimeError, match=message):
            scorer.score_cell(subject, images)
    finally:
        scorer.close()


def test_registration_rejects_what_breaks_the_interface(fresh_registry):
    with pytest.raises(UserError, match="not a varbench Metric"):
        register_metric(int)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="unknown need"):
        register_metric(_metric("typo", None, needs=frozenset({"refs"})))
    upward = _metric("upward", None)
    upward.better = "up"
    with pytest.raises(UserError, match="better='up'"):
        register_metric(upward)
    register_metric(_metric("twice", None))
    with pytest.raises(UserError, match="registered twice"):
        register_metric(_metric("twice", None))
    with pytest.raises(UserError, match="unknown metric 'nothing'"):
        get_metric("nothing")


def test_two_encoders_may_not_share_a_name(fresh_registry):
    impostor = Encoder("dino", "clip", lambda setup: None)
    register_metric(_metric("impostor", None, encoders=(impostor,)))
    with pytest.raises(UserError, match="two different encoders are named 'dino'"):
        scorer_for(extra=["impostor"])


@pytest.mark.slow
def test_example_metric_package_installs_lists_and_scores(tmp_path, example_site):
    """The README's 'Adding a metric' route: pip-install a package that declares an entry
    point in group varbench.metrics (the example_site fixture); `varbench list metrics`
    shows it and a cell is scored."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(example_site), os.environ["PYTHONPATH"]])}
    refs = [write_png(tmp_path / f"ref{i}.png", i, (60, 50)) for i in range(3)]
    shots = [write_png(tmp_path / f"shot{i}.png", 10 + i) for i in range(2)]
    script = (
        "import json, sys\nfrom pathlib import Path\n"
        "from varbench.data.subject import Subject\n"
        "from varbench.metrics.scoring import GeneratedImage, Scorer\n"
        "from varbench.metrics.settings import MetricsConfig\n"
        "from varbench.metrics.registry import describe\n"
        "print('\\n'.join(describe()))  # what `varbench list metrics` prints\n"
        "refs, shots = json.loads(sys.argv[1]), json.loads(sys.argv[2])\n"
        "scorer = Scorer(MetricsConfig(backbones='tiny', div=False, extra=['brightness_gap']), 'cpu', threads=1)\n"
        "images = [GeneratedImage(Path(p), Path(p).name, 'eval', 0, i, 'a toy', 'a {}') for i, p in enumerate(shots)]\n"
        "rows = scorer.score_cell(Subject('toy', 'toy', False, tuple(Path(p) for p in refs)), images)\n"
        "print(json.dumps([row['value'] for row in rows if row['metric'] == 'brightness_gap']))\n"
        "scorer.close()\n")
    out = subprocess.run([sys.executable, "-c", script, json.dumps([str(p) for p in refs]),
                          json.dumps([str(p) for p in shots])], env=env, capture_output=True, text=True, check=True)
    line = next(line for line in out.stdout.splitlines() if line.startswith("brightness_gap"))
    assert "varbench_example_metric:BrightnessGap" in line and "lower is better" in line and "references" in line
    values = json.loads(out.stdout.splitlines()[-1])

    def brightness(path):
        return np.asarray(Image.open(path).convert("RGB").resize((256, 256), Image.BICUBIC), dtype=np.float64).mean() / 255

    reference = np.mean([brightness(path) for path in refs])
    assert values == pytest.approx([abs(brightness(path) - reference) for path in shots], abs=1e-6)
