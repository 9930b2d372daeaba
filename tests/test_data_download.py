"""The download paths, offline: GitHub raw files from an HTTP server on loopback, the
Hugging Face hub through a stand-in `snapshot_download`, and git blob ids."""
from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading

import pytest
from conftest import SHARED_DATA

from varbench.data import fetch, sources
from varbench.data.fetch import DatasetWarning, fetch_dataset, verify_dataset
from varbench.data.manifest import Manifest, ManifestEntry, bytes_digest, load_manifest
from varbench.errors import UserError

DREAMBENCH = SHARED_DATA / "dreambench"
VICO = SHARED_DATA / "vico"


def small_manifest(name: str, paths: list[str]) -> Manifest:
    full = {entry.path: entry for entry in load_manifest(name).entries}
    return Manifest(name, tuple(full[path] for path in paths), fingerprint="test-" + "-".join(paths))


SMALL_DREAMBENCH = ["dog/00.jpg", "dog/01.jpg", "can/03.jpg", "prompts_and_classes.txt"]


@pytest.fixture
def github_server(tmp_path, monkeypatch):
    """Serves <repo>/<revision>/dataset/... like raw.githubusercontent.com, on loopback."""
    upstream = sources.DREAMBENCH.upstreams["github"]
    served = tmp_path / "served"
    repo_dir = served / upstream.repo / upstream.revision
    repo_dir.mkdir(parents=True)
    (repo_dir / upstream.folder).symlink_to(DREAMBENCH)
    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(sources, "GITHUB_RAW", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the server is local; only "downloads" are allowed
    monkeypatch.delenv("VARBENCH_OFFLINE", raising=False)
    yield repo_dir / upstream.folder
    server.shutdown()
    thread.join()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        return


def test_github_download_fetches_and_checks_each_file(github_server, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "load_manifest", lambda name: small_manifest(name, SMALL_DREAMBENCH))
    dest = fetch_dataset("dreambench", dest=tmp_path / "dest", source="github")
    for path in SMALL_DREAMBENCH:
        assert (dest / path).read_bytes() == (DREAMBENCH / path).read_bytes()
    assert verify_dataset("dreambench", root=dest).checked_files == len(SMALL_DREAMBENCH)


def test_a_missing_upstream_file_names_the_url(github_server, tmp_path, monkeypatch):
    manifest = small_manifest("dreambench", ["dog/00.jpg"])
    ghost = ManifestEntry("dog/99.jpg", manifest.entries[0].digest, manifest.entries[0].size)
    monkeypatch.setattr(fetch, "load_manifest", lambda name: Manifest(name, manifest.entries + (ghost,), "x"))
    with pytest.raises(UserError, match=r"cannot download dataset file dog/99.jpg: HTTP 404 \(http://127.0.0.1"):
        fetch_dataset("dreambench", dest=tmp_path / "dest", source="github")
    assert (tmp_path / "dest" / "dog" / "00.jpg").is_file()  # finished files stay: a rerun resumes


def test_a_tampered_download_is_never_written(github_server, tmp_path, monkeypatch):
    manifest = small_manifest("dreambench", ["can/03.jpg"])
    entry = manifest.entries[0]
    wrong = ManifestEntry(entry.path, "0" * 64, entry.size)  # the server's bytes will not match this
    monkeypatch.setattr(fetch, "load_manifest", lambda name: Manifest(name, (wrong,), "x"))
    with pytest.raises(UserError, match="source file can/03.jpg does not match the manifest"):
        fetch_dataset("dreambench", dest=tmp_path / "dest", source="github")
    assert not (tmp_path / "dest" / "can" / "03.jpg").exists()
    assert [p.name for p in (tmp_path / "dest").rglob("*") if ".tmp-" in p.name] == []


def test_hub_source_reads_the_pinned_snapshot(tmp_path, monkeypatch):
    import huggingface_hub

    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "dataset").symlink_to(DREAMBENCH)
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setattr(fetch, "load_manifest", lambda name: small_manifest(name, SMALL_DREAMBENCH))
    dest = fetch_dataset("dreambench", dest=tmp_path / "dest")  # the default source is the hub
    assert calls == [("google/dreambooth", {
        "local_files_only": True, "repo_type": "dataset",
        "revision": "3512f046fbf17154239ad6a63f21c7d3537f39e0", "allow_patterns": ["dataset/*"],
    })]
    assert (dest / "dog" / "01.jpg").read_bytes() == (DREAMBENCH / "dog" / "01.jpg").read_bytes()


def test_git_blob_ids_match_the_upstream_tree():
    # Blob id of inputs/pink_sunglasses/01.jpg in jiwoogit/ARBooth at the pinned commit
    # (from 'git ls-tree'), i.e. a value computed by git, not by this code.
    entry = ManifestEntry("pink_sunglasses/01.jpg", "gitsha1:c8447771d20bc908c7361101591382878b011219", None)
    data = (VICO / "pink_sunglasses" / "01.jpg").read_bytes()
    assert bytes_digest(data, entry) == entry.digest
    assert bytes_digest(data[:-1] + b"\x00", entry) != entry.digest


def test_fetch_checks_git_blob_entries(tmp_path, monkeypatch):
    data = (VICO / "red_vase" / "00.jpg").read_bytes()
    blob_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    entry = ManifestEntry("red_vase/00.jpg", "gitsha1:" + blob_id, None)
    monkeypatch.setattr(fetch, "load_manifest", lambda name: Manifest(name, (entry,), "x"))
    with pytest.warns(DatasetWarning, match="tortoise_plushy"):
        dest = fetch_dataset("vico", dest=tmp_path / "good", source=str(VICO))
    assert (dest / "red_vase" / "00.jpg").read_bytes() == data
    source = tmp_path / "source" / "red_vase"
    source.mkdir(parents=True)
    (source / "00.jpg").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.warns(DatasetWarning), pytest.raises(UserError, match="git blob id differs"):
        fetch_dataset("vico", dest=tmp_path / "bad", source=str(tmp_path / "source"))


def test_every_upstream_is_pinned_to_a_full_commit():
    for spec in sources.SOURCES.values():
        for upstream in spec.upstreams.values():
            assert len(upstream.revision) == 40 and int(upstream.revision, 16) >= 0
    url = sources.VICO.upstreams["github"].url("brown_teddybear/x y.jpg")
    assert url == ("https://raw.githubusercontent.com/jiwoogit/ARBooth/febf8f4f80ae3e7692aa6e231dce2ebcc6b848b2"
                   "/inputs/brown_teddybear/x%20y.jpg")


def test_no_network_is_one_clear_error(tmp_path, monkeypatch):
    with socket.socket() as probe:  # a loopback port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(sources, "GITHUB_RAW", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(fetch, "load_manifest", lambda name: small_manifest(name, SMALL_DREAMBENCH))
    with pytest.raises(UserError, match="cannot download dataset file dog/00.jpg.*Check the network"):
        fetch_dataset("dreambench", dest=tmp_path / "dest", source="github")
