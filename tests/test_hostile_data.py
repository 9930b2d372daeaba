"""Never write into a data root: a user-given root (data.root, --data-root), and the
folder a symlinked root points to, are only read; procedural smoke images are drawn into
varbench's own cache only, and only when first read, so `varbench run --dry-run` writes
nothing anywhere."""
from __future__ import annotations

import contextlib
import pickle
import shutil
from pathlib import Path

import pytest
from conftest import SHARED_DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runner_helpers import run_cli

from varbench.data import open_dataset
from varbench.data.fetch import DatasetWarning
from varbench.data.manifest import load_manifest, verify_folder
from varbench.data.smoke import write_smoke_images
from varbench.errors import UserError
from varbench.runner import RunOptions, run_protocol

SMOKE_FILES = [entry.path for entry in load_manifest("smoke").entries]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A correct smoke copy, drawn once; tests copy it before changing anything."""
    folder = tmp_path_factory.mktemp("pristine")
    write_smoke_images(folder)
    return folder


def snapshot(folder: Path) -> dict[str, tuple[bytes, int] | None]:
    """Every entry under `folder`: the bytes and mtime of each file, None for each folder."""
    return {path.relative_to(folder).as_posix(): (path.read_bytes(), path.stat().st_mtime_ns) if path.is_file()
            else None for path in sorted(folder.rglob("*"))}


def assert_refused(call, root: Path) -> None:
    with pytest.raises(UserError) as caught:
        call()
    line = caught.value.line()
    assert "\n" not in line and str(root) in line
    assert "never writes into a given data root" in line and "remove data.root" in line


def damage(folder: Path, kind: str, index: int, offset: int, xor: int) -> None:
    path = folder / SMOKE_FILES[index]
    data = bytearray(path.read_bytes())
    if kind == "truncated":
        path.write_bytes(bytes(data[:offset % len(data)]))
    elif kind == "missing":
        path.unlink()
    else:  # a wrong file of the right size: a size check alone would pass it
        data[offset % len(data)] ^= xor
        path.write_bytes(bytes(data))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["truncated", "missing", "same size, other bytes"]),
       index=st.integers(0, len(SMOKE_FILES) - 1), offset=st.integers(0, 10**6), xor=st.integers(1, 255))
def test_a_wrong_given_root_is_refused_and_left_byte_identical(tmp_path_factory, isolated_cache, pristine,
                                                               kind, index, offset, xor):
    root = tmp_path_factory.mktemp("root") / "smoke"
    shutil.copytree(pristine, root)
    damage(root, kind, index, offset, xor)
    before = snapshot(root)
    assert_refused(lambda: open_dataset("smoke", str(root)), root)
    results = root.parent / "results"
    # planning, as `varbench run --dry-run --data-root ROOT` does (the CLI calls this)
    assert_refused(lambda: run_protocol("smoke", RunOptions(results=results, data_root=str(root), dry_run=True)),
                   root)
    assert snapshot(root) == before
    assert not results.exists() and not isolated_cache.exists()


def test_symlinked_roots_are_only_read(tmp_path, isolated_cache, pristine):
    # DreamBench and ViCo: the shared copies are read-only folders, so any write through
    # the link would raise.
    for name, subject_name in (("dreambench", "dog2"), ("vico", "red_teapot")):
        link = tmp_path / name
        link.symlink_to(SHARED_DATA / name, target_is_directory=True)
        # the shared ViCo copy lacks tortoise_plushy
        with pytest.warns(DatasetWarning) if name == "vico" else contextlib.nullcontext():
            dataset = open_dataset(name, str(link))
        assert dataset.subject(subject_name).load_images()
    # smoke: a correct copy is read through the link; a damaged one is refused, not redrawn
    real = tmp_path / "elsewhere" / "smoke"
    shutil.copytree(pristine, real)
    link = tmp_path / "data"
    link.symlink_to(real, target_is_directory=True)
    before = snapshot(real)
    dataset = open_dataset("smoke", str(link))
    for subject in dataset.subjects:
        assert all(path.parent.parent == link for path in subject.image_paths)
        assert len(subject.load_images()) == 5
    assert snapshot(real) == before and link.is_symlink()
    (real / SMOKE_FILES[4]).write_bytes(b"\x89PNG\r\n\x1a\n")  # damaged where the link points
    before = snapshot(real)
    assert_refused(lambda: open_dataset("smoke", str(link)), link)
    assert snapshot(real) == before and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "dreambench", "elsewhere", "vico"]
    assert not isolated_cache.exists()


def test_smoke_images_are_drawn_into_the_cache_when_first_read(isolated_cache):
    dataset = open_dataset("smoke")
    assert [s.name for s in dataset.subjects] == ["red_robot", "striped_mug", "spotted_dog"]
    assert not isolated_cache.exists()  # opening (all that planning does) wrote nothing
    subject = pickle.loads(pickle.dumps(dataset.subject("spotted_dog")))  # subjects cross processes
    assert not isolated_cache.exists()
    assert [image.size for image in subject.load_images()] == [(128, 128)] * 5
    folder = subject.image_paths[0].parent.parent
    assert isolated_cache in folder.parents and verify_folder(load_manifest("smoke"), folder).ok
    assert open_dataset("smoke").subject("red_robot").image_paths[0].parent.parent == folder


def test_dry_run_of_the_smoke_protocol_writes_nothing(tmp_path):
    cache, results = tmp_path / "cache", tmp_path / "results"
    cache.mkdir()
    result = run_cli("run", "--protocol", "smoke", "--dry-run", "--results", str(results),
                     env_extra={"VARBENCH_CACHE": str(cache)})
    assert result.returncode == 0, result.stderr
    assert "red_robot" in result.stdout + result.stderr and "pending" in result.stdout + result.stderr
    assert list(cache.iterdir()) == [] and not results.exists()


def test_a_dry_run_never_downloads_a_dataset(tmp_path, isolated_cache, monkeypatch):
    """Planning a dataset that is not in the cache is one line, not a download (the hub
    is made unreachable here: a dry run must not even try it)."""
    import varbench.data.fetch as fetch

    def no_download(*args, **kwargs):
        raise AssertionError("a dry run tried to download")

    monkeypatch.setattr(fetch, "fetch_dataset", no_download)
    options = RunOptions(results=tmp_path / "results", device="cpu", dry_run=True)
    with pytest.raises(UserError, match="not fetched yet"):
        run_protocol("dreambench", options)
    assert not isolated_cache.exists() or not any(isolated_cache.rglob("*"))
    options.data_root = str(SHARED_DATA / "dreambench")
    assert run_protocol("dreambench", options) == 0
    assert not (tmp_path / "results").exists()
