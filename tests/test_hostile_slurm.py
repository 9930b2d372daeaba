"""A protocol never runs code: what reaches an sbatch script is checked and quoted.

Values from a protocol's `slurm:` section and from the run command's Slurm flags are
refused (one UserError naming the file and key, or the flag) unless they match strict
patterns and ranges; a results folder that would need quoting in the script is refused;
and `--dry-run` prints, raw on stdout, exactly the script that `run_slurm` submits.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import submitit
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from runner_helpers import TOY, run_cli
from varbench.cli import app
from varbench.errors import UserError
from varbench.launch import run_slurm, sbatch_script
from varbench.plan import dataset_of, plan_cells
from varbench.protocol import load_protocol
from varbench.runner import RunOptions

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CONTROL = st.sampled_from(["\n", "\r", "\x00", "\x1b", "\t", "\x7f", "\x85", "\u2028"])
FIELDS = ["partition", "account", "extra value", "extra key"]
FLAGS = {"partition": "--partition", "account": "--account", "extra value": "--sbatch", "extra key": "--sbatch"}


@st.composite
def with_control_character(draw) -> str:
    """Printable text with at least one control (or line-breaking) character inside it."""
    text = draw(st.text(alphabet="abcxyz019_-.,;$`'\" ", max_size=10))
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(CONTROL) + text[at:] + draw(st.sampled_from(["", "echo pwned", "#SBATCH --x=y"]))


def slurm_section(field: str, value: str) -> dict:
    if field == "extra value":
        return {"extra": {"qos": value}}
    if field == "extra key":
        return {"extra": {value: "high"}}
    return {field: value}


def write_protocol(tmp_path: Path, slurm: dict) -> Path:
    data = yaml.safe_load(TOY.read_text())
    data["slurm"] = slurm
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def flag_args(field: str, value: str) -> list[str]:
    if field == "extra value":
        return ["--sbatch", f"qos={value}"]
    if field == "extra key":
        return ["--sbatch", f"{value}=high"]
    return [FLAGS[field], value]


def dry_run(tmp_path: Path, *args: str):
    """`varbench run --launcher slurm --dry-run` in-process (a UserError comes back as the exception)."""
    results = tmp_path / "results"
    return CliRunner().invoke(app, ["run", "--protocol", str(TOY), "--results", str(results), "--launcher",
                                    "slurm", "--dry-run", *args])


def options(results: Path, **slurm) -> RunOptions:
    return RunOptions(results=results, device="cpu", launcher="slurm", slurm=slurm)


# --- at protocol load ---------------------------------------------------------------------------
@FAST
@given(st.sampled_from(FIELDS), with_control_character())
def test_control_characters_in_slurm_fields_are_refused_at_load(tmp_path, field, value):
    path = write_protocol(tmp_path, slurm_section(field, value))
    with pytest.raises(UserError) as err:
        load_protocol(path)
    line = err.value.line()
    assert "slurm." in line and str(path) in line
    assert all(c.isprintable() for c in line)


@pytest.mark.parametrize("slurm, key", [
    ({"partition": "gpu; rm -rf ~"}, "slurm.partition"), ({"partition": "$(reboot)"}, "slurm.partition"),
    ({"partition": "-x"}, "slurm.partition"), ({"account": "lab`id`"}, "slurm.account"),
    ({"account": "a b"}, "slurm.account"), ({"extra": {"qos": "high'"}}, "slurm.extra.qos"),
    ({"extra": {"qos": "a b"}}, "slurm.extra.qos"), ({"extra": {"qos": ""}}, "slurm.extra.qos"),
    ({"extra": {"Qos": "high"}}, "slurm.extra key"), ({"extra": {"qos=x --wrap": "y"}}, "slurm.extra key"),
    ({"extra": {"output": "/tmp/x"}}, "sbatch option 'output'"),
    ({"extra": {"wrap": "reboot"}}, "sbatch option 'wrap'"),
    ({"extra": {"job-name": "x"}}, "sbatch option 'job-name'"),
    ({"time_minutes": 0}, "slurm.time_minutes"), ({"gpus_per_job": 10**6}, "slurm.gpus_per_job"),
    ({"mem_gb": -1}, "slurm.mem_gb"), ({"max_parallel": 0}, "slurm.max_parallel"),
])
def test_values_outside_the_strict_patterns_are_refused(tmp_path, slurm, key):
    with pytest.raises(UserError) as err:
        load_protocol(write_protocol(tmp_path, slurm))
    assert key in err.value.line()


@FAST
@given(st.dictionaries(st.text(alphabet="abq-=$ \n'", min_size=1, max_size=6),
                       st.text(alphabet="ab1:/,=$;'\" \n`", max_size=8), max_size=3),
       st.text(alphabet="gpu,-_ ;\n'$", max_size=8))
def test_a_loaded_protocol_adds_exactly_its_own_sbatch_lines(tmp_path, extra, partition):
    """Whatever loads, the script holds one '#SBATCH --key=value' line per option, verbatim,
    and no other line than a clean protocol's script has."""
    slurm = {"extra": extra, **({"partition": partition} if partition else {})}
    try:
        protocol = load_protocol(write_protocol(tmp_path, slurm))
    except UserError as err:
        assert "\n" not in err.line()
        return
    clean = sbatch_script(load_protocol(TOY), options(tmp_path), 3, tmp_path / "s").splitlines()
    script = sbatch_script(protocol, options(tmp_path), 3, tmp_path / "s").splitlines()
    own = [f"#SBATCH --{k}={v}" for k, v in extra.items()] + ([f"#SBATCH --partition={partition}"] * bool(partition))
    assert sorted(script) == sorted(clean + own)


@FAST
@given(st.sampled_from(["gpus_per_job", "cpus_per_gpu", "mem_gb", "time_minutes", "max_parallel"]),
       st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True), st.sampled_from([0, -1, 2**63, 10**12])))
def test_slurm_numbers_load_in_range_or_fail_at_load(tmp_path, field, value):
    try:
        protocol = load_protocol(write_protocol(tmp_path, {field: value}))
    except UserError as err:
        assert f"slurm.{field}" in err.line()
        return
    assert isinstance(value, int) and 1 <= value <= 1_000_000
    clean = sbatch_script(load_protocol(TOY), options(tmp_path), 2, tmp_path / "s")
    assert sbatch_script(protocol, options(tmp_path), 2, tmp_path / "s").count("#SBATCH") == clean.count("#SBATCH")


# --- on the command line ---------------------------------------------------------------------
@FAST
@given(st.sampled_from(FIELDS), with_control_character())
def test_control_characters_in_flags_are_refused_naming_the_flag(tmp_path, field, value):
    result = dry_run(tmp_path, *flag_args(field, value))
    assert isinstance(result.exception, UserError), result.output
    assert FLAGS[field] in result.exception.line()
    assert "#SBATCH" not in result.output  # refused before any script is printed


@FAST
@given(st.sampled_from(["--time-minutes", "--gpus-per-job"]), st.integers(-10**9, 10**9))
def test_number_flags_have_ranges(tmp_path, flag, value):
    result = dry_run(tmp_path, flag, str(value))
    limit = 525_600 if flag == "--time-minutes" else 64
    if 1 <= value <= limit:
        assert result.exit_code == 0, result.output
    else:
        assert isinstance(result.exception, UserError) and flag in result.exception.line()


@pytest.mark.parametrize("args", [["--sbatch", "wrap=reboot"], ["--sbatch", "output=/tmp/x"],
                                  ["--sbatch", "qos=a", "--sbatch", "qos=b"],
                                  ["--partition", "gpu;id"], ["--account", "$(id)"]])
def test_bad_flags_are_refused_naming_the_flag(tmp_path, args):
    result = dry_run(tmp_path, *args)
    assert isinstance(result.exception, UserError) and args[0] in result.exception.line()


def test_cli_refuses_a_newline_in_partition_with_one_line(tmp_path):
    result = run_cli("run", "--protocol", str(TOY), "--results", str(tmp_path / "r"), "--launcher", "slurm",
                     "--dry-run", "--partition", "gpu\ntouch /tmp/pwned")
    assert result.returncode == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--partition" in lines[0] and "touch" not in result.stdout


# --- the results folder and the script as submitted ----------------------------------------------
@pytest.mark.parametrize("name", ["a\nb", "it's", 'say"x"', "a\\b", "%j", "a b", "$(id)"])
def test_results_paths_that_need_quoting_are_refused(tmp_path, name):
    protocol = load_protocol(TOY)
    results = tmp_path / name
    with pytest.raises(UserError, match="--results"):
        sbatch_script(protocol, options(results), 2, results / ".slurm" / "x")
    with pytest.raises(UserError, match="--results"):
        run_slurm(protocol, plan_cells(protocol, dataset_of(protocol)), options(results), cluster="local")
    assert not results.exists()  # refused before anything was written


def test_dry_run_prints_the_raw_script_on_stdout(tmp_path):
    results = tmp_path / ("long-" + "x" * 150)  # longer than any terminal: rich would wrap it
    result = run_cli("run", "--protocol", str(TOY), "--results", str(results), "--launcher", "slurm",
                     "--dry-run", "--partition", "gpu", "--sbatch", "qos=high")
    assert result.returncode == 0, result.stderr
    expected = sbatch_script(load_protocol(TOY), options(results, partition="gpu", extra={"qos": "high"}), 3,
                             results / ".slurm" / "dry-run")
    assert result.stdout == expected + "\n"


@pytest.mark.parametrize("subjects", [None, ["red_robot"]])  # an array, and a single task
def test_dry_run_script_is_the_submitted_script(tmp_path, monkeypatch, subjects):
    """run_slurm through submitit's real Slurm executor, with sbatch replaced by echo."""
    from submitit.slurm import slurm

    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    monkeypatch.setattr(slurm.SlurmExecutor, "_make_submission_command",
                        lambda self, path: ["echo", "Submitted batch job 4242"])
    protocol = load_protocol(TOY)
    cells = plan_cells(protocol, dataset_of(protocol), subjects=subjects)
    opts = options(tmp_path / "results", partition="gpu", account="lab", extra={"qos": "high"})
    jobs = run_slurm(protocol, cells, opts, cluster="slurm")
    assert len(jobs) == len(cells)
    (submitted,) = (tmp_path / "results" / ".slurm").rglob("4242_submission.sh")
    folder = submitted.parent
    assert submitted.read_text() == sbatch_script(protocol, opts, len(cells), folder)
    assert isinstance(jobs[0], submitit.Job)


@pytest.mark.parametrize("key, value", [("export", "ALL,BASH_ENV=/tmp/evil.sh"), ("chdir", "/tmp/evil"),
                                        ("get-user-env", "L"), ("container", "/tmp/c"), ("export-file", "/tmp/e")])
def test_sbatch_options_that_could_run_code_are_refused(tmp_path, key, value):
    path = tmp_path / "p.yaml"
    path.write_text(TOY.read_text() + f"slurm: {{extra: {{{key}: '{value}'}}}}\n")
    with pytest.raises(UserError, match="not allowed in a protocol"):
        load_protocol(path)
