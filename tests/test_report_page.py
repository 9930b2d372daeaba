"""The page around the tables: titled by the spec or by the protocols shown, each protocol
described by its own YAML, provenance package lists collapsed."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from varbench.report.html import Page, render_page
from varbench.report.render import _protocol_lines, add_default_sections, page_title
from varbench.report.results import load_results
from varbench.report.section import build_views
from varbench.report.spec import ReportSpec
from varbench.report.synthetic_results import SyntheticArm, SyntheticSubject, write_synthetic_run
from varbench.schema import from_dict

REPO = Path(__file__).resolve().parent.parent
SUBJECTS = [SyntheticSubject("dog", "dog", live=True)]
PAPER_LIKE = {"title": "VAR vs diffusion on DreamBench", "sections": [
    {"name": "main", "protocols": ["dreambench"], "tables": ["comparison"], "figures": []},
    {"name": "smoke", "protocols": ["smoke"], "tables": ["comparison"], "figures": []}]}


def smoke_description() -> str:
    text = yaml.safe_load((REPO / "protocols" / "smoke.yaml").read_text(encoding="utf-8"))["description"]
    return " ".join(text.split())


def views_of(root: Path, spec_data: dict):
    spec = from_dict(ReportSpec, spec_data, "test spec")
    results = load_results(root)
    add_default_sections(spec, results)
    views, _ = build_views(spec, results)
    return spec, views


def test_smoke_results_under_the_paper_spec_are_titled_by_their_protocol(tmp_path: Path):
    write_synthetic_run(tmp_path, "smoke", SyntheticArm("arbooth", "arbooth", {"dino": 0.5}), SUBJECTS)
    spec, views = views_of(tmp_path, PAPER_LIKE)
    assert page_title(spec, views) == "varbench report: protocol smoke"
    assert _protocol_lines(views) == [f"Protocol smoke (version 1): {smoke_description()}"]
    write_synthetic_run(tmp_path, "dreambench", SyntheticArm("arbooth", "arbooth", {"dino": 0.5}), SUBJECTS)
    spec, views = views_of(tmp_path, PAPER_LIKE)
    assert page_title(spec, views) == "VAR vs diffusion on DreamBench"  # the spec's headline has results


def test_a_protocol_no_section_names_is_described_by_its_own_yaml(tmp_path: Path):
    write_synthetic_run(tmp_path, "smoke", SyntheticArm("arbooth", "arbooth", {"dino": 0.5}), SUBJECTS)
    write_synthetic_run(tmp_path, "my_protocol", SyntheticArm("arbooth", "arbooth", {"dino": 0.5}), SUBJECTS)
    spec, views = views_of(tmp_path, {"sections": [{"name": "main", "protocols": ["dreambench"]}]})
    sections = {section.name: section for section in spec.sections}
    assert sections["auto-smoke"].description.startswith(smoke_description())
    assert sections["auto-my_protocol"].description == "(Not named in the report spec: default tables and plots.)"
    # any protocol's report shows its methods' loss curves and what they drew
    assert "loss" in sections["auto-smoke"].figures and sections["auto-smoke"].grids is not None
    assert page_title(spec, views) == "varbench report: protocols my_protocol, smoke"
    assert _protocol_lines(views)[0] == "Protocol my_protocol (version 1)."


def test_provenance_package_lists_are_collapsed(tmp_path: Path):
    run = write_synthetic_run(tmp_path, "smoke", SyntheticArm("arbooth", "arbooth", {"dino": 0.5}), SUBJECTS)
    run.add_session({"session": "second", "started": "2026-01-02T00:00:00+00:00",
                     "packages": {"torch": "2.11.0", "numpy": "<2.4>"}})
    runs = load_results(tmp_path)["smoke"].runs
    page = render_page(Page(title="t", meta={}, units=[], skipped=[], problems=pd.DataFrame(), runs=runs,
                            random_init=False, description=["Protocol smoke (version 1)."]))
    provenance = page[page.index('id="provenance"'):]
    assert "<details><summary>1 package</summary>torch 2.11.0</details>" in provenance
    assert "<details><summary>2 packages</summary>numpy &lt;2.4&gt;<br>torch 2.11.0</details>" in provenance
    assert "<p>Protocol smoke (version 1).</p>" in page
