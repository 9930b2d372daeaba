"""Fetching from a local folder, verifying, and the errors for missing or changed files."""
from __future__ import annotations

import shutil

import pytest
from conftest import SHARED_DATA

from varbench.data import open_dataset
from varbench.data.fetch import MARKER, DatasetWarning, dataset_folder, fetch_dataset, verify_dataset
from varbench.data.manifest import load_manifest, parse_manifest
from varbench.errors import UserError

DREAMBENCH = SHARED_DATA / "dreambench"
VICO = SHARED_DATA / "vico"


@pytest.fixture
def vico_copy(tmp_path):
    """A writable, fetched (checked) copy of the shared ViCo folder."""
    with pytest.warns(DatasetWarning, match="tortoise_plushy"):
        return fetch_dataset("vico", dest=tmp_path / "vico", source=str(VICO))


def test_manifests_cover_every_shared_file():
    dreambench = {entry.path for entry in load_manifest("dreambench").entries}
    shared = {p.relative_to(DREAMBENCH).as_posix() for p in DREAMBENCH.rglob("*") if p.is_file()}
    assert dreambench == shared - {"LICENSE.md", "SHA256SUMS"}
    assert len(dreambench) == 160
    vico = {entry.path for entry in load_manifest("vico").entries}
    shared = {p.relative_to(VICO).as_posix() for p in VICO.rglob("*") if p.is_file()}
    assert vico - shared == {f"tortoise_plushy/{n}.png" for n in range(1, 13)}
    assert shared <= vico


def test_dreambench_manifest_agrees_with_the_published_checksums():
    published = {}
    for line in (DREAMBENCH / "SHA256SUMS").read_text().splitlines():
        digest, path = line.split(maxsplit=1)
        published[path.removeprefix("./")] = digest
    ours = {entry.path: entry.digest for entry in load_manifest("dreambench").entries if entry.path.endswith(".jpg")}
    assert ours == published


def test_fetch_from_a_local_folder_then_verify(tmp_path):
    dest = fetch_dataset("dreambench", dest=tmp_path / "db", source=str(DREAMBENCH))
    assert dest == tmp_path / "db"
    for entry in load_manifest("dreambench").entries:
        assert (dest / entry.path).read_bytes() == (DREAMBENCH / entry.path).read_bytes()
    assert (dest / MARKER).is_file()
    report = verify_dataset("dreambench", root=dest)
    assert report.ok and report.checked_files == 160 and report.absent_subjects == []
    assert report.checked_bytes == sum(entry.size for entry in load_manifest("dreambench").entries)
    dataset = open_dataset("dreambench", str(dest))
    assert dataset.subject("dog8").image_paths[0].parent == dest / "dog8"


def test_fetch_of_the_vico_copy_without_tortoise_plushy_warns_and_verifies(vico_copy):
    assert not (vico_copy / "tortoise_plushy").exists()
    report = verify_dataset("vico", root=vico_copy)
    assert report.ok and report.checked_files == 84 and report.absent_subjects == ["tortoise_plushy"]
    assert str(report).splitlines() == [
        f"vico: 84 files (24.7 MB) match the manifest ({vico_copy})",
        "  absent from this copy (left out): tortoise_plushy",
    ]


def test_a_changed_byte_is_one_error_naming_the_file(vico_copy):
    target = vico_copy / "black_cat" / "02.jpg"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.warns(DatasetWarning):
        open_dataset("vico", str(vico_copy))  # same size: opening only stats files, so it still opens
    with pytest.raises(UserError) as caught:
        verify_dataset("vico", root=vico_copy)
    message = caught.value.line()
    assert "black_cat/02.jpg" in message and "sha256 differs" in message
    assert "varbench data fetch vico" in message
    assert "\n" not in message
    assert not (vico_copy / MARKER).exists()  # a failed verify withdraws the "checked" marker
    report = verify_dataset("vico", root=vico_copy, raise_on_problems=False)
    assert [problem.path for problem in report.problems] == ["black_cat/02.jpg"]


def test_a_missing_file_fails_on_open_and_on_verify(vico_copy):
    (vico_copy / "red_teapot" / "3.jpeg").unlink()
    (vico_copy / "fat_dog" / "05.jpg").unlink()
    with pytest.raises(UserError, match=r"fat_dog/05.jpg is missing \(and 1 more files"):
        open_dataset("vico", str(vico_copy))
    with pytest.raises(UserError, match=r"file fat_dog/05.jpg is missing"):
        verify_dataset("vico", root=vico_copy)


def test_only_tortoise_plushy_may_be_absent_from_a_vico_copy(vico_copy):
    shutil.rmtree(vico_copy / "brown_dog")
    with pytest.raises(UserError, match=r"file brown_dog/00.jpg is missing \(and 4 more"):
        open_dataset("vico", str(vico_copy))


def test_a_truncated_file_fails_on_open_with_its_size(vico_copy):
    target = vico_copy / "duck_toy" / "01.jpg"
    target.write_bytes(target.read_bytes()[:1000])
    with pytest.raises(UserError, match=r"duck_toy/01.jpg has 1,000 bytes, expected"):
        open_dataset("vico", str(vico_copy))


def test_a_corrupt_jpeg_is_one_error_naming_the_file(vico_copy):
    target = vico_copy / "brown_cat" / "00.jpg"
    data = bytearray(target.read_bytes())
    data[0:2] = b"\x00\x00"  # the JPEG start-of-image marker; the size stays the same
    target.write_bytes(bytes(data))
    with pytest.warns(DatasetWarning):
        dataset = open_dataset("vico", str(vico_copy))
    with pytest.raises(UserError, match="cannot read image") as caught:
        dataset.subject("brown_cat").load_images()
    assert caught.value.where == str(target)
    with pytest.raises(UserError, match="brown_cat/00.jpg is corrupt or changed"):
        verify_dataset("vico", root=vico_copy)


def test_fetch_repairs_a_damaged_cache_copy_and_keeps_good_files(isolated_cache):
    with pytest.warns(DatasetWarning):
        cached = fetch_dataset("vico", source=str(VICO))
    assert cached == isolated_cache / "data" / "vico"
    damaged, untouched = cached / "alarm_clock" / "1.jpeg", cached / "alarm_clock" / "2.jpeg"
    damaged.write_bytes(b"not a jpeg")
    untouched_inode = untouched.stat().st_ino
    with pytest.raises(UserError, match="alarm_clock/1.jpeg.*Run 'varbench data fetch vico' to fetch those"):
        verify_dataset("vico")
    with pytest.warns(DatasetWarning):
        fetch_dataset("vico", source=str(VICO))
    assert damaged.read_bytes() == (VICO / "alarm_clock" / "1.jpeg").read_bytes()
    assert untouched.stat().st_ino == untouched_inode  # already right: not copied again
    assert verify_dataset("vico").ok


def test_a_changed_source_file_is_rejected_before_it_is_written(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(VICO, source)
    target = source / "red_vase" / "03.jpg"
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.warns(DatasetWarning), pytest.raises(UserError, match="source file red_vase/03.jpg does not match"):
        fetch_dataset("vico", dest=tmp_path / "dest", source=str(source))
    assert not (tmp_path / "dest" / "red_vase" / "03.jpg").exists()
    assert not (tmp_path / "dest" / MARKER).exists()


def test_dreambench_source_must_have_every_subject(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(DREAMBENCH, source)
    shutil.rmtree(source / "candle")  # unlike ViCo, no DreamBench subject may be absent
    with pytest.raises(UserError, match="source lacks dataset file candle/00.jpg"):
        fetch_dataset("dreambench", dest=tmp_path / "dest", source=str(source))


def test_unknown_source_and_dataset_names_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown source 'gitlab'.*Use one of: hf, github"):
        fetch_dataset("dreambench", dest=tmp_path, source="gitlab")
    with pytest.raises(UserError, match="Did you mean 'dreambench'"):
        fetch_dataset("dreambenc")
    with pytest.raises(UserError, match="generated locally"):
        verify_dataset("smoke")


def test_root_then_environment_variable_then_cache(tmp_path, monkeypatch, isolated_cache):
    checkout = tmp_path / "dreambooth"  # a clone of the upstream repository: files under dataset/
    checkout.mkdir()
    (checkout / "dataset").symlink_to(DREAMBENCH)
    assert dataset_folder("dreambench", root=checkout) == checkout / "dataset"
    monkeypatch.setenv("VARBENCH_DREAMBENCH_DIR", str(DREAMBENCH))
    assert dataset_folder("dreambench") == DREAMBENCH
    assert open_dataset("dreambench").subject("cat").image_paths[0].parent == DREAMBENCH / "cat"
    monkeypatch.setenv("VARBENCH_DREAMBENCH_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match=r"dreambench folder not found.*\$VARBENCH_DREAMBENCH_DIR"):
        open_dataset("dreambench")
    monkeypatch.delenv("VARBENCH_DREAMBENCH_DIR")
    with pytest.raises(UserError, match="is not fetched yet"):
        dataset_folder("dreambench", fetch_missing=False)


def test_first_use_offline_without_a_copy_says_how_to_get_one(isolated_cache, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(isolated_cache / "hub"))  # empty
    with pytest.raises(UserError, match="google/dreambooth is not in the hub cache and downloads are off"):
        open_dataset("dreambench")
    with pytest.raises(UserError, match="dataset vico is not fetched and downloads are off.*--source DIR"):
        open_dataset("vico")


def test_malformed_manifest_lines_are_rejected():
    with pytest.raises(UserError, match="malformed manifest line 2"):
        parse_manifest("x", "# comment\nabc  12  a/b.jpg\n", "x.sha256")
    manifest = parse_manifest("x", "gitsha1:" + "0" * 40 + "  -  a/1.png\n", "x.sha256")
    assert manifest.entries[0].size is None and manifest.subjects() == ["a"]
