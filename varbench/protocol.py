"""Protocols: YAML files that declare a whole benchmark (data, prompts, seeds, method arms,
metrics, report tables). Loading validates every key and type (varbench.config) and the
config of every arm against its method's Config dataclass.

A protocol may `include:` other YAML files (paths relative to it); included mappings are
merged first, in order, then the including file's own keys win (mappings merge deeply,
lists and scalars replace).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml

from varbench.config import from_dict, to_dict
from varbench.errors import UserError, did_you_mean
from varbench.hashing import content_hash
from varbench.metrics.config import MetricsConfig
from varbench.store import check_name

PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass
class DataSpec:
    dataset: Literal["dreambench", "vico", "smoke"] = "dreambench"
    subjects: list[str] | Literal["all"] = "all"
    root: str | None = None  # local copy of the dataset (else the verified cache)


@dataclass
class PromptSpec:
    # "dataset": the dataset's own object/live lists; "custom": the lists below.
    source: Literal["dataset", "custom"] = "dataset"
    limit: int | None = None  # keep only the first N templates of each list
    object: list[str] = field(default_factory=list)  # templates with one "{}"
    live: list[str] = field(default_factory=list)


@dataclass
class SeedSpec:
    base: int = 0
    # "derived": hash of (base, subject, prompt index, sample index), the default;
    # "sample_index": seed = base + sample index (the ViCo/ARBooth protocol's seeds 0-7).
    scheme: Literal["derived", "sample_index"] = "derived"


@dataclass
class SlurmSpec:
    partition: str | None = None
    account: str | None = None
    gpus_per_job: int = 1
    cpus_per_gpu: int = 8
    mem_gb: int = 64
    time_minutes: int = 120
    max_parallel: int = 64  # cap on concurrently running array tasks
    extra: dict[str, str] = field(default_factory=dict)  # more sbatch options


@dataclass
class ArmSpec:
    method: str
    name: str | None = None  # defaults to the method name; unique within a protocol
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProtocolSpec:
    name: str
    version: int
    arms: list[ArmSpec]
    description: str = ""
    include: list[str] = field(default_factory=list)
    data: DataSpec = field(default_factory=DataSpec)
    prompts: PromptSpec = field(default_factory=PromptSpec)
    images_per_prompt: int = 4
    batch_size: int = 4  # generation batch (never changes an image, only speed)
    seeds: SeedSpec = field(default_factory=SeedSpec)
    resolution: int | None = None  # overrides `resolution` in every arm config that has one
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    keep_artifacts: bool = True
    report: list[str] = field(default_factory=lambda: ["main"])
    slurm: SlurmSpec = field(default_factory=SlurmSpec)


@dataclass
class Arm:
    """A method arm resolved against the registry: its method class and typed config."""

    name: str
    method_name: str
    config: Any
    protocol: Protocol

    @cached_property
    def method_class(self) -> type:
        from varbench.registry import get_method

        return get_method(self.method_name)

    def make_method(self) -> Any:
        return self.method_class(self.config)

    def identity(self) -> dict[str, Any]:
        """Everything that determines this arm's results (hashed into the run id)."""
        spec = self.protocol.spec
        return {
            "protocol": spec.name,
            "protocol_version": spec.version,
            "arm": self.name,
            "method": self.method_name,
            "method_version": self.method_class.version,
            "config": to_dict(self.config),
            "dataset": spec.data.dataset,
            "prompts": to_dict(spec.prompts),
            "images_per_prompt": spec.images_per_prompt,
            "seeds": to_dict(spec.seeds),
            "metrics": to_dict(spec.metrics),
        }

    @cached_property
    def run_id(self) -> str:
        return f"{self.name}-{content_hash(self.identity(), length=10)}"


@dataclass
class Protocol:
    spec: ProtocolSpec
    path: Path
    arms: list[Arm] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        names = [a.name for a in self.arms]
        raise UserError(f"no arm or method named {name!r} in protocol {self.name}", str(self.path),
                        f"Choose from: {', '.join(names)}." + did_you_mean(name, names))


def protocol_dirs() -> list[Path]:
    """Where protocol names are looked up: $VARBENCH_PROTOCOLS, the checkout, the package."""
    dirs = [Path(p) for p in os.environ.get("VARBENCH_PROTOCOLS", "").split(os.pathsep) if p]
    dirs += [PACKAGE_DIR.parent / "protocols", PACKAGE_DIR / "_bundled" / "protocols"]
    return [d for d in dirs if d.is_dir()]


def available_protocols() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in protocol_dirs():
        for path in sorted(folder.glob("*.yaml")):
            found.setdefault(path.stem, path)
    return found


def find_protocol(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise UserError("protocol file not found", str(path), "Check the path.")
        return path
    found = available_protocols()
    if name_or_path in found:
        return found[name_or_path]
    raise UserError(f"unknown protocol {name_or_path!r}", None,
                    "Run 'varbench list protocols' or pass a YAML path."
                    + did_you_mean(name_or_path, found))


def read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Parse a protocol file with its includes merged in."""
    path = path.resolve()
    if path in seen:
        raise UserError("include cycle", " -> ".join(str(p) for p in (*seen, path)), "Remove the cycle.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UserError(f"malformed YAML: {problem}", where, "Fix the syntax.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read protocol: {err}", str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError("a protocol must be a YAML mapping", str(path), "Start it with 'name:' and 'version:'.")
    includes = data.get("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise UserError("include should be a list of file paths", str(path))
    merged: dict[str, Any] = {}
    for include in includes:
        target = path.parent / include
        if not target.is_file():
            raise UserError(f"included file {include!r} not found", str(path), "Fix the include path.")
        merged = deep_merge(merged, read_yaml(target, (*seen, path)))
    return deep_merge(merged, data)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_protocol(name_or_path: str | Path) -> Protocol:
    """Find, parse, validate and resolve a protocol (arms against the method registry)."""
    path = find_protocol(str(name_or_path))
    source = str(path)
    spec = from_dict(ProtocolSpec, read_yaml(path), source)
    check_name(spec.name, "protocol", source)
    _check_positive(spec, source)
    protocol = Protocol(spec=spec, path=path)
    seen: set[str] = set()
    for index, arm_spec in enumerate(spec.arms):
        protocol.arms.append(_resolve_arm(protocol, arm_spec, f"arms[{index}]", source, seen))
    if not protocol.arms:
        raise UserError("protocol declares no arms", source, "Add at least one entry under 'arms:'.")
    return protocol


def _resolve_arm(protocol: Protocol, arm_spec: ArmSpec, key: str, source: str, seen: set[str]) -> Arm:
    from varbench.registry import get_method

    name = arm_spec.name or arm_spec.method
    check_name(name, "arm", f"{source}, {key}")
    if name in seen:
        raise UserError(f"arm name {name!r} used twice", f"{source}, {key}",
                        "Give each arm of the same method a distinct 'name:'.")
    seen.add(name)
    method_class = get_method(arm_spec.method, f"{source}, {key}.method")
    raw = dict(arm_spec.config)
    config_fields = {f.name for f in dataclasses.fields(method_class.Config)}
    if protocol.spec.resolution is not None and "resolution" in config_fields:
        raw.setdefault("resolution", protocol.spec.resolution)
    config = from_dict(method_class.Config, raw, source, f"{key}.config")
    return Arm(name=name, method_name=arm_spec.method, config=config, protocol=protocol)


def _check_positive(spec: ProtocolSpec, source: str) -> None:
    for key in ("images_per_prompt", "batch_size", "version"):
        if getattr(spec, key) < 1:
            raise UserError(f"{key} must be at least 1, got {getattr(spec, key)}", source)
    for key in ("pres_images", "reference_index"):
        if getattr(spec.metrics, key) < 0:
            raise UserError(f"metrics.{key} must be 0 or more, got {getattr(spec.metrics, key)}", source)
    if spec.metrics.batch_size < 1:
        raise UserError(f"metrics.batch_size must be at least 1, got {spec.metrics.batch_size}", source)
    if spec.prompts.limit is not None and spec.prompts.limit < 1:
        raise UserError(f"prompts.limit must be at least 1, got {spec.prompts.limit}", source)
    for text in (*spec.prompts.object, *spec.prompts.live):
        if text.count("{}") != 1:
            raise UserError(f"prompt template {text!r} must contain exactly one '{{}}'", source,
                            "Write the subject's place as {}, e.g. 'a {} in the snow'.")
