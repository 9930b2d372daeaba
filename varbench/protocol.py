"""Protocols: YAML files that declare a whole benchmark (data, prompts, seeds, method arms,
metrics, report tables). Loading validates every key and type (varbench.schema) and the
config of every arm against its method's Config dataclass.

A protocol may `include:` other YAML files (paths relative to it); included mappings are
merged first, in order, then the including file's own keys win (mappings merge deeply,
lists and scalars replace).

A protocol never runs code and never makes a run unbounded: every number has a range
(field metadata, checked by varbench.schema), every prompt template is formatted once at
load, values that reach an sbatch script must match strict patterns, and YAML loading has
budgets (file size, nesting depth, nodes after alias expansion, included files), so a
hostile file fails fast with one UserError instead of hanging or crashing later.
"""
from __future__ import annotations

import dataclasses
import os
import string
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml

from varbench import execution
from varbench.schema import EXECUTION, excerpt, execution_apart, from_dict, identity_dict, to_dict
from varbench.errors import UserError, did_you_mean
from varbench.hashing import content_hash
from varbench.metrics.settings import MetricsConfig, score_id, score_identity
from varbench.seeding import SEED_BITS
from varbench.store import STORE_LAYOUT, check_name

PACKAGE_DIR = Path(__file__).resolve().parent

# --- limits ------------------------------------------------------------------------------
# Published protocols use 4 (DreamBench) or 8 (ViCo) images per prompt; 1000 is far beyond
# any evaluation and keeps `--dry-run` planning instant.
MAX_IMAGES_PER_PROMPT = 1000
# A cell fits, generates and scores all its images in one go: 100,000 images (prompts x
# images per prompt + PRES images) is days of GPU time per cell, so anything bigger is a typo.
MAX_IMAGES_PER_CELL = 100_000
MAX_SEED = 2**SEED_BITS - 1  # torch.Generator.manual_seed takes any non-negative int64
MAX_YAML_BYTES = 2**20  # 1 MiB per file; the largest shipped protocol is ~2 KiB
MAX_YAML_DEPTH = 32  # nesting levels; protocols use about 6
MAX_YAML_NODES = 100_000  # nodes of all files together, counted with aliases expanded
MAX_INCLUDED_FILES = 32  # files read for one protocol (a file included twice counts twice)
MAX_INCLUDE_DEPTH = 8  # a includes b includes c ...

# Values that reach the sbatch script: only characters that shlex.quote leaves alone (so
# the #SBATCH line reads exactly as written) and no '%' (Slurm expands it in some options).
SLURM_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.,-]{0,127}"  # partition or account (a comma list)
SBATCH_KEY = r"[a-z][a-z0-9-]{0,63}"  # an sbatch long option without its "--"
SBATCH_VALUE = r"[A-Za-z0-9_@+=:,./-]{1,256}"
# sbatch options that varbench or submitit set themselves (a second copy would conflict
# with theirs, and --wrap would replace the job script altogether).
RESERVED_SBATCH = {"array", "output", "error", "open-mode", "signal", "wckey", "job-name", "wrap",
                   "partition", "account", "time", "gpus-per-node", "cpus-per-task", "mem"}
# Extra sbatch options a protocol may set: scheduling only. Anything else is refused, since
# options such as export (BASH_ENV, LD_PRELOAD), chdir (a planted module on sys.path),
# get-user-env or container would let a protocol run code of its choosing.
ALLOWED_SBATCH = {"qos", "constraint", "reservation", "exclude", "nodelist", "comment", "mail-type", "mail-user",
                  "gres", "gpus", "gpu-bind", "mem-per-cpu", "mem-per-gpu", "nice", "hint", "tmp", "begin",
                  "deadline", "dependency", "distribution", "exclusive", "cluster", "clusters", "licenses",
                  "priority", "requeue", "no-requeue", "switches", "threads-per-core", "ntasks-per-node"}


def _range(low: int, high: int) -> dict[str, Any]:
    return {"range": (low, high)}


@dataclass
class DataSpec:
    dataset: Literal["dreambench", "vico", "smoke", "toyworld", "folder"] = "dreambench"
    subjects: list[str] | Literal["all"] = "all"
    # local copy of the dataset (else the verified cache); for "folder", your subjects'
    # folder (varbench.data.folder), relative to the protocol file or absolute
    root: str | None = None


@dataclass
class PromptSpec:
    # "dataset": the dataset's own object/live lists; "custom": the lists below.
    source: Literal["dataset", "custom"] = "dataset"
    # keep only the first N templates of each list (a cell never has more images than this bound)
    limit: int | None = field(default=None, metadata=_range(1, MAX_IMAGES_PER_CELL))
    object: list[str] = field(default_factory=list)  # templates with one "{}"
    live: list[str] = field(default_factory=list)


@dataclass
class SeedSpec:
    base: int = field(default=0, metadata=_range(0, MAX_SEED))
    # "derived": hash of (base, subject, prompt index, sample index), the default;
    # "sample_index": seed = base + sample index (the ViCo/ARBooth protocol's seeds 0-7).
    scheme: Literal["derived", "sample_index"] = "derived"


@dataclass
class SlurmSpec:
    partition: str | None = field(default=None, metadata={"pattern": SLURM_NAME})
    account: str | None = field(default=None, metadata={"pattern": SLURM_NAME})
    # GPUs (and cells) per array task, on one node: nodes hold 8, rarely 16 GPUs
    gpus_per_job: int = field(default=1, metadata=_range(1, 64))
    cpus_per_gpu: int = field(default=8, metadata=_range(1, 512))
    mem_gb: int = field(default=64, metadata=_range(1, 65536))  # up to 64 TiB per node
    time_minutes: int = field(default=120, metadata=_range(1, 525_600))  # up to a year
    # cap on concurrently running array tasks (Slurm's own MaxArraySize is at most 4M)
    max_parallel: int = field(default=64, metadata=_range(1, 1_000_000))
    # more sbatch options, e.g. {qos: high}
    extra: dict[str, str] = field(default_factory=dict,
                                  metadata={"key_pattern": SBATCH_KEY, "pattern": SBATCH_VALUE})


@dataclass
class ArmSpec:
    method: str
    name: str | None = None  # defaults to the method name; unique within a protocol
    config: dict[str, Any] = field(default_factory=dict)  # what the method computes (hashed)
    execution: dict[str, Any] = field(default_factory=dict)  # how fast (never hashed): varbench.execution


@dataclass
class ProtocolSpec:
    name: str
    version: int = field(metadata=_range(1, 2**31 - 1))
    arms: list[ArmSpec]
    description: str = ""
    include: list[str] = field(default_factory=list)
    data: DataSpec = field(default_factory=DataSpec)
    prompts: PromptSpec = field(default_factory=PromptSpec)
    images_per_prompt: int = field(default=4, metadata=_range(1, MAX_IMAGES_PER_PROMPT))
    # generation batch (never changes an image, only speed): set as execution.batch_size
    batch_size: int = field(default=4, metadata={**_range(1, 1024), EXECUTION: "batch_size"})
    seeds: SeedSpec = field(default_factory=SeedSpec)
    # overrides `resolution` in every arm config that has one (pixels per side)
    resolution: int | None = field(default=None, metadata=_range(8, 16384))
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    keep_artifacts: bool = True
    report: list[str] = field(default_factory=lambda: ["main"])
    slurm: SlurmSpec = field(default_factory=SlurmSpec)
    execution: dict[str, Any] = field(default_factory=dict)  # every arm's speed options (varbench.execution)


@dataclass
class Arm:
    """A method arm resolved against the registry: its method class, its typed config
    (execution options applied) and the execution options themselves."""

    name: str
    method_name: str
    config: Any
    protocol: Protocol
    execution: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def method_class(self) -> type:
        from varbench.registry import get_method

        return get_method(self.method_name)

    def make_method(self, cells_here: int = 1) -> Any:
        """The method with this arm's config; `compile: auto` decided for a worker that
        runs `cells_here` cells of the arm (varbench.execution.settle_auto)."""
        config = execution.settle_auto(self.config, cells_here,
                                        self.method_class.compile_break_even(self.config))
        return self.method_class(config)

    def identity(self) -> dict[str, Any]:
        """What determines this arm's fits and images (hashed into the run id): the method,
        its config without execution options, data, prompts, seeds, images per prompt and
        the PRES images. Metrics are the score id's (a run can be scored in several modes)."""
        spec = self.protocol.spec
        return {
            "layout": STORE_LAYOUT,
            "protocol": spec.name,
            "protocol_version": spec.version,
            "arm": self.name,
            "method": self.method_name,
            "method_version": self.method_class.version,
            "config": identity_dict(self.config),
            "dataset": spec.data.dataset,
            **self._data_fingerprint(),
            "prompts": to_dict(spec.prompts),
            "images_per_prompt": spec.images_per_prompt,
            "pres_images": spec.metrics.pres_images,
            "seeds": to_dict(spec.seeds),
            **self._toyworld_weights(),
        }

    def _toyworld_weights(self) -> dict[str, Any]:
        """A toyworld generator's weights are named by their digests: retrained weights make
        other images, so another run (the method config says only "toyworld")."""
        backbone = self.make_method().toy_backbone()
        if backbone is None:
            return {}
        from varbench.toyworld.backbones import folder_digest

        return {"toyworld_weights": folder_digest(backbone)}

    def _data_fingerprint(self) -> dict[str, Any]:
        """Your own subjects are hashed (names, prompts, every image); the published
        datasets are fixed by their shipped manifests."""
        data = self.protocol.spec.data
        if data.dataset != "folder":
            return {}
        from varbench.data.folder import fingerprint

        return {"data_fingerprint": fingerprint(data.root)}

    @cached_property
    def run_id(self) -> str:
        return f"{self.name}-{content_hash(self.identity(), length=10)}"

    def score_identity(self) -> dict[str, Any]:
        """What determines the scores of this arm's images (hashed into the score id)."""
        return score_identity(self.protocol.spec.metrics)

    @cached_property
    def score_id(self) -> str:
        return score_id(self.protocol.spec.metrics)

    @cached_property
    def metrics(self) -> MetricsConfig:
        """The protocol's metrics with this arm's metric execution options applied."""
        return execution.apply(self.protocol.spec.metrics, self.execution)

    @property
    def batch_size(self) -> int:
        """Images per generate() call."""
        return self.execution.get("batch_size") or self.protocol.spec.batch_size


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


# --- reading YAML within budgets -----------------------------------------------------------
@dataclass
class _Budget:
    """What is left for one protocol and its includes (shared by every file read)."""

    files: int = MAX_INCLUDED_FILES
    nodes: int = MAX_YAML_NODES


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses deep nesting while composing, before Python's recursion
    limit does (`[[[[...]]]]` 10,000 levels deep would otherwise be a RecursionError)."""

    def __init__(self, stream: str, where: str):
        super().__init__(stream)
        self.where = where
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise UserError(f"YAML nested more than {MAX_YAML_DEPTH} levels deep",
                                f"{self.where}, line {line}", "Flatten it.")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def read_yaml(path: Path, seen: tuple[Path, ...] = (), budget: _Budget | None = None) -> dict[str, Any]:
    """Parse a protocol file with its includes merged in."""
    budget = budget or _Budget()
    path = path.resolve()
    if path in seen:
        raise UserError("include cycle", " -> ".join(str(p) for p in (*seen, path)), "Remove the cycle.")
    if len(seen) > MAX_INCLUDE_DEPTH:
        raise UserError(f"includes nested more than {MAX_INCLUDE_DEPTH} levels deep", str(path),
                        "Include fewer levels of files.")
    budget.files -= 1
    if budget.files < 0:
        raise UserError(f"protocol reads more than {MAX_INCLUDED_FILES} files through its includes", str(path),
                        "Include each file once, and fewer files.")
    data = _parse(path, budget, included=bool(seen))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError("a protocol must be a YAML mapping", str(path), "Start it with 'name:' and 'version:'.")
    if seen:
        _check_fragment(data, path)
    includes = data.get("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise UserError("include should be a list of file paths", str(path))
    merged: dict[str, Any] = {}
    for include in includes:
        target = path.parent / include
        if not target.is_file():
            raise UserError(f"included file {excerpt(include)} not found", str(path), "Fix the include path.")
        if target.resolve().suffix not in (".yaml", ".yml"):  # never parse (and quote) other files
            raise UserError(f"included file {excerpt(include)} is not a .yaml or .yml file", str(path),
                            "Include only protocol files.")
        merged = deep_merge(merged, read_yaml(target, (*seen, path), budget))
    return deep_merge(merged, data)


def load_yaml_file(path: Path) -> Any:
    """One YAML file (no includes) within the same budgets: size, nesting, nodes, aliases."""
    return _parse(Path(path), _Budget(), included=False)


def _parse(path: Path, budget: _Budget, included: bool) -> Any:
    """One YAML document within the budgets; an included file's errors never quote it."""
    text = _read_text(path)
    loader = None
    try:
        loader = _BoundedLoader(text, str(path))  # its reader already refuses some characters
        node = loader.get_single_node()
        if node is None:
            return None
        _charge_nodes(node, budget, str(path))  # before construction, which would expand aliases
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        shown = " in an included file" if included else f": {_plain(problem)}"
        raise UserError(f"malformed YAML{shown}", where, "Fix the syntax.") from None
    except (ValueError, OverflowError) as err:  # an impossible date, an int of 5000 digits
        shown = " in an included file" if included else f": {_plain(str(err))}"
        raise UserError(f"malformed YAML: a value cannot be read{shown}", str(path), "Fix the value.") from None
    finally:
        if loader is not None:
            loader.dispose()


def _read_text(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_YAML_BYTES + 1)  # never more, whatever the file claims
    except OSError as err:
        raise UserError(f"cannot read protocol: {_plain(err.strerror or str(err))}", str(path)) from None
    if len(data) > MAX_YAML_BYTES:
        raise UserError(f"protocol file is larger than {MAX_YAML_BYTES // 2**20} MiB", str(path),
                        "A protocol is a short YAML file; check the path.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError("cannot read protocol: it is not UTF-8 text", str(path), "Save it as UTF-8.") from None


def _charge_nodes(root: yaml.Node, budget: _Budget, where: str) -> None:
    """Count the document's nodes and depth as if every alias were expanded, without
    expanding anything (each node is visited once), and take them from the budget."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, levels below it)
    active: set[int] = set()

    def visit(node: yaml.Node, depth: int) -> tuple[int, int]:
        key = id(node)
        if key in active:
            raise UserError("YAML alias inside its own anchor", where, "An anchor cannot contain itself.")
        if key not in sizes:
            active.add(key)
            count, height = 1, 0
            for child in _children(node):
                child_count, child_height = visit(child, depth + 1)
                count, height = count + child_count, max(height, child_height + 1)
                if count > budget.nodes:
                    raise UserError(f"YAML has more than {MAX_YAML_NODES} values once aliases are expanded",
                                    where, "Write the protocol out without alias chains.")
            active.discard(key)
            sizes[key] = (count, height)
        if depth + sizes[key][1] > MAX_YAML_DEPTH:  # an alias can sit deep and hold deep nesting
            raise UserError(f"YAML nested more than {MAX_YAML_DEPTH} levels deep once aliases are expanded",
                            where, "Flatten it.")
        return sizes[key]

    budget.nodes -= visit(root, 1)[0]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_fragment(data: dict[str, Any], path: Path) -> None:
    """An included file must be a piece of a protocol. One without a single protocol key
    is some other file, and is refused without quoting any of it; a fragment's misspelt
    keys are reported (with a "did you mean") when the merged protocol is checked."""
    known = {f.name for f in dataclasses.fields(ProtocolSpec)}
    if data and not any(isinstance(key, str) and key in known for key in data):
        raise UserError("included file is not a protocol: none of its keys is a protocol key", str(path),
                        "Include only protocol files (with keys such as prompts:, seeds:, arms:).")


def _plain(text: str, limit: int = 80) -> str:
    """Text for an error message: printable characters only, cut to `limit`."""
    text = "".join(c if c.isprintable() else " " for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# --- loading and checking --------------------------------------------------------------------
def load_protocol(name_or_path: str | Path, overrides: list[str] | None = None,
                  random_weights: bool = False) -> Protocol:
    """Find, parse, validate and resolve a protocol (arms against the method registry).
    `overrides` are `--set` pairs (execution.KEY=VALUE, ARM.execution.KEY=VALUE).
    `random_weights`: the protocol's rehearsal (`--backbones random`): every arm and metric
    encoder at its real size with random weights, results under `<name>-random`."""
    path = find_protocol(str(name_or_path))
    source = str(path)
    data = read_yaml(path)
    if random_weights:
        data = deep_merge(data, {"name": f"{data.get('name', path.stem)}-random",
                                 "metrics": {"backbones": "random"}})
    with execution_apart():  # speed options belong under execution:, never in a section
        spec = from_dict(ProtocolSpec, data, source)
    check_name(spec.name, "protocol", source)
    if spec.data.dataset == "folder" and spec.data.root and not Path(spec.data.root).expanduser().is_absolute():
        spec.data.root = str(path.parent / spec.data.root)  # your subjects' folder, beside the protocol
    for index, subject in enumerate(spec.data.subjects if isinstance(spec.data.subjects, list) else []):
        check_name(subject, "subject", f"{source}, data.subjects[{index}]")
    _check_subject_list(spec.data.subjects, source)
    _check_templates(spec.prompts, source)
    _check_sizes(spec, source)
    check_sbatch_keys(spec.slurm.extra, f"{source}, slurm.extra")
    protocol = Protocol(spec=spec, path=path)
    seen: set[str] = set()
    for index, arm_spec in enumerate(spec.arms):
        protocol.arms.append(_resolve_arm(protocol, arm_spec, f"arms[{index}]", source, seen, random_weights))
    if not protocol.arms:
        raise UserError("protocol declares no arms", source, "Add at least one entry under 'arms:'.")
    _resolve_execution(protocol, overrides or [], source)
    return protocol


def _resolve_execution(protocol: Protocol, overrides: list[str], source: str) -> None:
    """Each arm's execution options (protocol's, then its own, then --set) applied to its config."""
    shared, per_arm = execution.parse_overrides(overrides)
    classes = [arm.method_class.Config for arm in protocol.arms]
    execution.check_shared(protocol.spec.execution, classes, f"{source}, execution")
    execution.check_shared(shared, classes, "--set")
    for name in per_arm:
        protocol.arm(name)  # an unknown arm in --set: the usual error with a close match
    for arm, arm_spec in zip(protocol.arms, protocol.spec.arms):
        arm.execution = execution.resolve(arm.method_class.Config, {**protocol.spec.execution, **shared},
                                          {**arm_spec.execution, **per_arm.get(arm.name, {})},
                                          f"{source}, arm {arm.name}")
        arm.config = execution.apply(arm.config, arm.execution)
        _check_method_config(arm, f"{source}, arm {arm.name} config")


def _check_method_config(arm: Arm, where: str) -> None:
    """The method's own value checks (they run when it is built), at load time, so that
    `validate` rejects what `run` would, naming the file and arm."""
    try:
        arm.make_method()
    except UserError as err:
        raise UserError(err.what, where, err.fix) from None


def _resolve_arm(protocol: Protocol, arm_spec: ArmSpec, key: str, source: str, seen: set[str],
                 random_weights: bool = False) -> Arm:
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
    if random_weights:
        if method_class.random_weights is None:
            raise UserError(f"method {arm_spec.method!r} has no random-weights stand-in at its real size",
                            f"{source}, {key}", "Rehearse a protocol without this arm, or give the method class a "
                            "'random_weights' mapping (varbench.method.Method).")
        raw.update(method_class.random_weights)
    with execution_apart():
        config = from_dict(method_class.Config, raw, source, f"{key}.config")
    return Arm(name=name, method_name=arm_spec.method, config=config, protocol=protocol)


def _check_subject_list(subjects: list[str] | str, source: str) -> None:
    if isinstance(subjects, list) and not subjects:
        raise UserError("data.subjects is empty: the protocol would run nothing", source,
                        "List some subjects, or write 'subjects: all'.")
    if isinstance(subjects, list) and len(set(subjects)) != len(subjects):
        twice = sorted({s for s in subjects if subjects.count(s) > 1})
        raise UserError(f"data.subjects lists {', '.join(twice)} more than once", source, "List each subject once.")


def check_template(text: str, where: str) -> None:
    """A prompt template has exactly one bare '{}' (the subject's place) and nothing else
    that str.format interprets ('{{' and '}}' write literal braces); it is formatted once
    here so that planning never fails on it."""
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(text)
                  if name is not None]
    except ValueError:  # a stray '{' or '}'
        fields = None
    if fields != [("", "", None)]:
        raise UserError(f"prompt template {excerpt(text)} must contain exactly one '{{}}' and no other braces",
                        where, "Write the subject's place as {}, e.g. 'a {} in the snow' ({{ and }} for braces).")
    text.format("subject")


def _check_templates(prompts: PromptSpec, source: str) -> None:
    for kind in ("object", "live"):
        for index, text in enumerate(getattr(prompts, kind)):
            check_template(text, f"{source}, prompts.{kind}[{index}]")


def _check_sizes(spec: ProtocolSpec, source: str) -> None:
    """Bound what one cell plans (custom prompt lists are known at load) and the seeds."""
    prompts = spec.prompts
    if prompts.source == "custom":
        templates = max(len(prompts.object), len(prompts.live))
        templates = min(templates, prompts.limit or templates)
        images = templates * spec.images_per_prompt + spec.metrics.pres_images
        if images > MAX_IMAGES_PER_CELL:
            raise UserError(f"each cell would plan {images} images, more than {MAX_IMAGES_PER_CELL}", source,
                            "Use fewer prompts (prompts.limit) or a smaller images_per_prompt.")
    if spec.seeds.scheme == "sample_index":  # seed = base + sample index must stay a valid seed
        last = spec.seeds.base + max(spec.images_per_prompt, spec.metrics.pres_images, 1) - 1
        if last > MAX_SEED:
            raise UserError(f"seeds.base {spec.seeds.base} + sample index exceeds the largest seed {MAX_SEED}",
                            source, "Use a smaller seeds.base.")


def check_sbatch_keys(extra: dict[str, str], where: str) -> None:
    """Extra sbatch options may not repeat or undo the ones varbench sets."""
    for key in extra:
        if key in RESERVED_SBATCH:
            raise UserError(f"sbatch option {excerpt(key)} is set by varbench", where,
                            "Use the slurm: fields (partition, account, time_minutes, gpus_per_job, "
                            "cpus_per_gpu, mem_gb) or the matching run flags instead.")
        if key not in ALLOWED_SBATCH:
            raise UserError(f"sbatch option {excerpt(key)} is not allowed in a protocol (it could change what "
                            "the job runs)", where, f"Allowed: {', '.join(sorted(ALLOWED_SBATCH))}.")
