"""Where each downloadable dataset comes from: pinned upstream revisions and overrides.

Every upstream is pinned to one commit, so a fetch today and a fetch next year give the
same bytes (and the shipped manifests say which bytes those are).

- DreamBench: the Hugging Face hub dataset `google/dreambooth` (default) or the GitHub
  repository `google/dreambooth`; both hold the 30 subject folders and the two text
  files under `dataset/`. The hub copy was uploaded from the GitHub one (same file
  names and sizes); the manifest checks every byte either way.
- ViCo/DreamMatcher concepts: the `inputs/` folder of the ARBooth repository on GitHub
  (`jiwoogit/ARBooth`). DreamMatcher's repository holds the same images under other
  folder names (e.g. `cat-toy` for `cat_statue`), so it is not a drop-in source.
"""
from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Literal

from varbench.data import DRAWN_DATASETS
from varbench.errors import UserError, did_you_mean

# Base of GitHub's raw-file server; tests point it at a server on loopback.
GITHUB_RAW = "https://raw.githubusercontent.com"


@dataclass(frozen=True)
class Upstream:
    kind: Literal["hf", "github"]
    repo: str  # "owner/name"
    revision: str  # a full commit id: never a branch, so the bytes cannot move
    folder: str  # the dataset folder inside the repository

    def describe(self) -> str:
        host = "huggingface.co/datasets" if self.kind == "hf" else "github.com"
        return f"{host}/{self.repo}@{self.revision[:12]} ({self.folder}/)"

    def url(self, path: str) -> str:
        """Raw download URL of one dataset file (GitHub upstreams only)."""
        quoted = urllib.parse.quote(f"{self.folder}/{path}")
        return f"{GITHUB_RAW}/{self.repo}/{self.revision}/{quoted}"


@dataclass(frozen=True)
class DatasetSource:
    name: str
    env_var: str  # a local folder that replaces the cache copy, e.g. VARBENCH_DREAMBENCH_DIR
    upstreams: dict[str, Upstream]  # by source name; the first is the default
    # The folder that holds the dataset in a checkout of its repository: a local root
    # pointing at the checkout itself also works.
    checkout_folder: str
    # Subjects a local copy may lack entirely: a widely shared copy of the ViCo set has
    # no tortoise_plushy folder, and still opens (without it, with a warning). Any other
    # missing file is an error.
    optional_subjects: tuple[str, ...] = ()

    @property
    def default_source(self) -> str:
        return next(iter(self.upstreams))


DREAMBENCH = DatasetSource(
    name="dreambench",
    env_var="VARBENCH_DREAMBENCH_DIR",
    upstreams={
        # 3512f04: the hub commit after the upload of the 160 dataset files (4f3f625);
        # later commits there only edit the dataset card.
        "hf": Upstream("hf", "google/dreambooth", "3512f046fbf17154239ad6a63f21c7d3537f39e0", "dataset"),
        "github": Upstream("github", "google/dreambooth", "4f887af7970a06fc0cd3adaa1d0b368547d6a1d0", "dataset"),
    },
    checkout_folder="dataset",
)

VICO = DatasetSource(
    name="vico",
    env_var="VARBENCH_VICO_DIR",
    upstreams={
        # febf8f4: ARBooth's main branch; inputs/ is unchanged since the initial release
        # caa1196c4743ea47bd9be8a134357515f08d46c0.
        "github": Upstream("github", "jiwoogit/ARBooth", "febf8f4f80ae3e7692aa6e231dce2ebcc6b848b2", "inputs"),
    },
    checkout_folder="inputs",
    optional_subjects=("tortoise_plushy",),
)

SOURCES = {source.name: source for source in (DREAMBENCH, VICO)}


def dataset_source(name: str) -> DatasetSource:
    if name in SOURCES:
        return SOURCES[name]
    if name in DRAWN_DATASETS:
        raise UserError(f"the {name} dataset is generated locally by varbench, there is nothing to fetch or verify",
                        None, "Use 'dreambench' or 'vico'.")
    raise UserError(f"unknown dataset {name!r}", None,
                    f"Use one of: {', '.join(SOURCES)}." + did_you_mean(name, SOURCES))
