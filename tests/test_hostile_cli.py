"""Hostile command lines: a user's mistake is one line on stderr and exit code 2, anywhere.

Bad devices, results roots that are files or unwritable, caches under a file, terminals
that cannot print the paths: none of these may end in a traceback.
"""
from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import varbench.cli
from runner_helpers import write_protocol
from varbench.devices import DEVICE_NAME, gpu_names, resolve_device
from varbench.errors import UserError


def assert_one_line(result, *words):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0]


def main_in_process(monkeypatch, capsys, *args, env=None):
    """`varbench ARGS` through the real entry point, in this process (no interpreter start)."""
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["varbench", *args])
    code = 0
    try:
        varbench.cli.main()
    except SystemExit as stopped:
        code = stopped.code
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=12) | st.sampled_from(["cuda", "cuda:0", "cuda:99", "mps", "cpu:0", "CUDA", "meta"]))
def test_every_device_string_resolves_or_is_one_user_error(name):
    try:
        device = resolve_device(name)
    except UserError as err:
        assert "\n" not in err.line()
    else:
        assert DEVICE_NAME.fullmatch(name) and device.type in ("cpu", "cuda")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=6), max_size=4))
def test_every_gpu_list_maps_or_is_one_user_error(gpus):
    try:
        names = gpu_names(gpus)
    except UserError as err:
        assert "\n" not in err.line()
    else:
        assert all(n == "cpu" or n.startswith("cuda") for n in names)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks a machine without a GPU")
@pytest.mark.parametrize("device, words", [("banana", ["unknown device", "--device"]),
                                           ("cuda", ["no CUDA GPU", "--device cpu"])])
def test_run_with_a_bad_device(tmp_path, monkeypatch, capsys, device, words):
    protocol = write_protocol(tmp_path)
    result = main_in_process(monkeypatch, capsys, "run", "--protocol", str(protocol), "--results", str(tmp_path / "r"), "--device", device)
    assert_one_line(result, *words)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", ["run", "status", "report"])
def test_results_root_that_is_a_file(tmp_path, monkeypatch, capsys, command):
    protocol = write_protocol(tmp_path)
    a_file = tmp_path / "results.txt"
    a_file.write_text("mine")
    extra = ["--protocol", str(protocol), "--device", "cpu"] if command == "run" else []
    for results in (a_file, "/dev/null"):
        result = main_in_process(monkeypatch, capsys, command, "--results", str(results), *extra)
        assert_one_line(result, str(results))
    assert a_file.read_text() == "mine"


def test_results_and_cache_under_a_file(tmp_path, monkeypatch, capsys):
    protocol = write_protocol(tmp_path)
    a_file = tmp_path / "plain-file"
    a_file.write_text("mine")
    result = main_in_process(monkeypatch, capsys, "run", "--protocol", str(protocol), "--results",
                             str(a_file / "results"), "--device", "cpu")
    assert_one_line(result, str(a_file))
    for env in ({"VARBENCH_CACHE": str(a_file / "cache")}, {"VARBENCH_CACHE": "", "HOME": str(a_file)}):
        result = main_in_process(monkeypatch, capsys, "run", "--protocol", str(protocol), "--results",
                                 str(tmp_path / "r"), "--device", "cpu", env=env)
        assert_one_line(result, str(a_file))
    assert not (tmp_path / "r").exists() and a_file.read_text() == "mine"


def test_unwritable_folder_is_one_line(tmp_path, monkeypatch, capsys):
    """Permission errors (here simulated: tests run as root) reach the user as one line."""
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "results" / "toy"))

    monkeypatch.setattr("varbench.fileio.atomic_write", refuse)
    monkeypatch.setattr(sys, "argv", ["varbench", "run", "--protocol", str(write_protocol(tmp_path)),
                                      "--results", str(tmp_path / "results"), "--device", "cpu"])
    with pytest.raises(SystemExit) as stopped:
        varbench.cli.main()
    assert stopped.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "Permission denied" in line and str(tmp_path / "results" / "toy") in line


def test_a_terminal_that_cannot_print_the_path(tmp_path):
    results = tmp_path / "résultats-日本"
    results.mkdir()
    env = {**os.environ, "PYTHONIOENCODING": "latin-1", "PYTHONUTF8": "0"}
    result = subprocess.run([sys.executable, "-m", "varbench", "status", "--results", str(results)],
                            capture_output=True, env=env, timeout=120)
    assert result.returncode == 1 and b"Traceback" not in result.stderr  # no cells yet: exit 1, printed
    assert b"no cells yet" in result.stdout + result.stderr


@pytest.mark.parametrize("gpus", [["²"], ["cuda:²"], ["٣"]])
def test_non_ascii_digits_are_not_gpu_numbers(gpus):
    # hypothesis found "²": str.isdigit accepts it, int() does not (a traceback, not a user error)
    with pytest.raises(UserError, match="unknown device"):
        gpu_names(gpus)
