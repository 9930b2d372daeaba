"""Decoding for scoring: libspng and PIL give the same pixels, and the worker-process
loader (the GPU path, run here on the CPU) gives the views the thread loader gives, in
order, across image sizes and formats, and survives a corrupt file."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from varbench.errors import UserError
from varbench.metrics.decode import ViewLoader
from varbench.metrics.imagefile import decode_array, decode_image, decoded_size

CPU = torch.device("cpu")


def noise(width: int, height: int, seed: int, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


@pytest.fixture
def mixed_images(tmp_path: Path) -> list[Path]:
    """RGB PNGs of two sizes, an RGBA PNG with EXIF rotation, a grey and a palette PNG, a JPEG."""
    paths = []
    for index in range(6):
        paths.append(tmp_path / f"rgb{index}.png")
        Image.fromarray(noise(64 if index % 3 else 41, 40, index)).save(paths[-1])
    rotated = tmp_path / "rgba_rotated.png"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(noise(30, 45, 7, channels=4), "RGBA").save(rotated, exif=exif)
    grey, palette, jpeg = tmp_path / "grey.png", tmp_path / "palette.png", tmp_path / "photo.jpg"
    Image.fromarray(noise(33, 21, 8)).convert("L").save(grey)
    Image.fromarray(noise(33, 21, 9)).convert("P").save(palette)
    Image.fromarray(noise(50, 70, 10)).save(jpeg, quality=90)
    return paths[:3] + [rotated, grey] + paths[3:] + [palette, jpeg]


def test_decode_array_gives_the_pixels_pil_gives(mixed_images):
    for exif_and_alpha in (False, True):
        for path in mixed_images:
            pixels = decode_array(path, exif_and_alpha)
            expected = np.asarray(decode_image(path, exif_and_alpha))
            assert pixels.dtype == np.uint8 and np.array_equal(pixels, expected), (path.name, exif_and_alpha)
            width, height = decoded_size(path, exif_and_alpha)
            assert width * height == expected.shape[0] * expected.shape[1]
    assert decoded_size(mixed_images[3]) == (30, 45)  # the header's size: EXIF rotation not applied


def test_decode_array_and_size_report_bad_files_as_user_errors(tmp_path, mixed_images):
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(mixed_images[0].read_bytes()[:200])  # header intact, pixels cut
    with pytest.raises(UserError, match="cannot read image") as caught:
        decode_array(truncated)
    assert str(truncated) in caught.value.line()
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all" * 4)
    with pytest.raises(UserError, match="cannot read image"):
        decoded_size(garbage)
    with pytest.raises(UserError, match="not found"):
        decoded_size(tmp_path / "absent.png")


def test_user_error_keeps_its_parts_across_processes():
    error = pickle.loads(pickle.dumps(UserError("cannot read image: x", "/data/a.png", "Replace it.")))
    assert (error.what, error.where, error.fix) == ("cannot read image: x", "/data/a.png", "Replace it.")
    assert error.line() == "cannot read image: x (/data/a.png). Replace it."


def _views(loader: ViewLoader, paths: list[Path], batch_size: int) -> list[dict[str, torch.Tensor]]:
    return list(loader.batches(paths, batch_size, CPU, with_square=True))


def _assert_same(batches: list[dict[str, torch.Tensor]], expected: list[dict[str, torch.Tensor]]) -> None:
    assert [len(batch["clip224"]) for batch in batches] == [len(batch["clip224"]) for batch in expected]
    for batch, reference in zip(batches, expected):
        assert sorted(batch) == sorted(reference)
        for name in reference:
            assert torch.equal(batch[name], reference[name]), name


def _joined(batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {name: torch.cat([batch[name] for batch in batches]) for name in batches[0]}


@pytest.mark.parametrize("exif_and_alpha", [False, True])
def test_process_loader_gives_the_thread_loaders_views(mixed_images, exif_and_alpha):
    reference = ViewLoader("canonical", exif_and_alpha, threads=2, resize_on_device=False)
    expected = _views(reference, mixed_images, 4)
    reference.close()
    loader = ViewLoader("canonical", exif_and_alpha, resize_on_device=True, workers=2)
    try:
        _assert_same(_views(loader, mixed_images, 4), expected)
        # again, through the reused shared buffers, batched differently
        _assert_same([_joined(_views(loader, mixed_images, 3))], [_joined(expected)])
    finally:
        loader.close()


def test_process_loader_reports_a_corrupt_file_then_keeps_working(tmp_path, mixed_images):
    broken = tmp_path / "broken.png"
    broken.write_bytes(mixed_images[0].read_bytes()[:300])
    paths = mixed_images[:5] + [broken] + mixed_images[5:]
    reference = ViewLoader("canonical", threads=2, resize_on_device=False)
    expected = _views(reference, mixed_images, 3)
    reference.close()
    loader = ViewLoader("canonical", resize_on_device=True, workers=2)
    try:
        with pytest.raises(UserError, match="cannot read image") as caught:
            _views(loader, paths, 3)
        assert str(broken) in caught.value.line()
        first = next(loader.batches(mixed_images, 3, CPU, with_square=True))  # stop after one batch
        _assert_same([first], expected[:1])
        _assert_same(_views(loader, mixed_images, 3), expected)
        names = [arena.memory.name for arena in loader.processes.arenas if arena is not None]
    finally:
        loader.close()
    assert names and not any((Path("/dev/shm") / name).exists() for name in names)  # buffers freed


def test_a_dead_worker_is_reported_not_waited_for(mixed_images, monkeypatch):
    from varbench.metrics import decode_pool

    monkeypatch.setattr(decode_pool, "WORKER_CHECK_SECONDS", 0.2)
    loader = ViewLoader("canonical", resize_on_device=True, workers=1)
    try:
        loader.start(CPU)
        worker = loader.processes.processes[0]
        worker.kill()
        worker.join()
        with pytest.raises(RuntimeError, match="varbench-decode-0 died"):
            _views(loader, mixed_images, 4)
    finally:
        loader.close()


def test_workers_exit_when_their_parent_is_killed(tmp_path):
    import subprocess
    import sys
    import time

    script = ("import os, sys\n"
              "from varbench.metrics.decode_pool import DecodePool\n"
              "if __name__ == '__main__':\n"
              "    pool = DecodePool(2, False, 3)\n"
              "    print(' '.join(str(p.pid) for p in pool.processes), flush=True)\n"
              "    os._exit(0)  # no close(), no atexit: as if killed\n")
    (tmp_path / "parent.py").write_text(script)
    done = subprocess.run([sys.executable, str(tmp_path / "parent.py")], capture_output=True, text=True,
                          timeout=120, check=True)
    pids = [int(pid) for pid in done.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.2)
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
