"""Execution options: how fast a result is computed, never what it is.

A protocol sets them for every arm with a top-level `execution:` mapping and per arm with
`arms[i].execution:` (the arm's value wins); `varbench run --set execution.KEY=VALUE`
(every arm) or `--set ARM.execution.KEY=VALUE` (one arm) overrides both. They are
recorded in each cell's status.json and never hashed into run or score ids, so turning
one on reuses every finished fit, image and score.

Keys the runner honours for every method (RUNNER_KEYS):
    batch_size          images per generate() call (an image never depends on its batch)
    metric_batch_size   images per encoder batch while scoring
    metric_precision    encoder arithmetic on CUDA: fp32 (default) or bf16 autocast
    metric_tf32         TF32 matmuls and convolutions on CUDA while scoring (default off)
    decode_workers      PNG decoding processes while scoring on a GPU
A method honours the fields of its Config marked `metadata={"execution": KEY}` (compile,
cuda_graphs, channels_last, attention_backend, checkpoint_blocks, ...): `varbench list
methods` shows them. A key that neither the runner nor the arm's method honours is an
error naming the arm, with a close match; a top-level key must be honoured by some arm.

`compile: auto` compiles only where it pays: compiling costs minutes per model, batch
size and process, so a worker compiles an arm when it will run at least the method's
`compile_break_even(config)` cells of it (by default its `compile_pays_after`; settle_auto;
a method built outside a worker settles as for one cell), and compiled graphs persist across
processes in the inductor cache under the varbench cache (TORCHINDUCTOR_CACHE_DIR).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from varbench.errors import UserError, did_you_mean
from varbench.schema import convert_field, execution_fields


@dataclass
class RunnerExecution:
    """The execution keys every arm honours, with their types and ranges."""

    batch_size: int | None = field(default=None, metadata={"range": (1, 1024)})
    metric_batch_size: int | None = field(default=None, metadata={"range": (1, 4096)})
    metric_precision: Literal["bf16", "fp32"] | None = None
    metric_tf32: bool | None = None
    decode_workers: int | None = field(default=None, metadata={"range": (1, 1024)})


RUNNER_KEYS = tuple(f.name for f in dataclasses.fields(RunnerExecution))
# Config fields whose value may be "auto" (compile or not, decided per worker: settle_auto).
COMPILE_FIELDS = ("compile", "compile_blocks", "compile_generation")


def honoured(config_class: type) -> tuple[str, ...]:
    """Every execution key an arm of a method with this Config honours."""
    return (*RUNNER_KEYS, *execution_fields(config_class))


def resolve(config_class: type, shared: dict[str, Any], own: dict[str, Any], where: str) -> dict[str, Any]:
    """The arm's execution options: the protocol's `shared` ones it honours, then its `own`
    (every key must be honoured), each value checked against its field's type and range."""
    keys = honoured(config_class)
    for key in own:
        if key not in keys:
            raise UserError(f"execution option {str(key)[:40]!r} is not honoured by this arm's method", where,
                            f"Use one of: {', '.join(keys)}." + did_you_mean(str(key), keys))
    merged = {**{k: v for k, v in shared.items() if k in keys}, **own}
    return {key: _checked(config_class, key, value, where) for key, value in merged.items()}


def check_shared(shared: dict[str, Any], config_classes: list[type], where: str) -> None:
    """A top-level key must be honoured by at least one arm (else it is a typo)."""
    keys = sorted({k for cls in config_classes for k in honoured(cls)})
    for key in shared:
        if key not in keys:
            raise UserError(f"execution option {str(key)[:40]!r} is honoured by no arm", where,
                            f"Use one of: {', '.join(keys)}." + did_you_mean(str(key), keys))


def _checked(config_class: type, key: str, value: Any, where: str) -> Any:
    target = RunnerExecution if key in RUNNER_KEYS else config_class
    name = key if key in RUNNER_KEYS else execution_fields(config_class)[key]
    return convert_field(target, name, value, f"{where}, execution.{key}")


def apply(config: Any, options: dict[str, Any]) -> Any:
    """`config` with the method's execution fields set from `options` (runner keys ignored)."""
    fields = execution_fields(type(config))
    changes = {fields[key]: value for key, value in options.items() if key in fields}
    return dataclasses.replace(config, **changes) if changes else config


def settle_auto(config: Any, cells_here: int, pays_after: dict[str, int]) -> Any:
    """`config` with every `auto` compile field decided for this worker: compile when it will
    run at least `pays_after[field]` cells of the arm (the method's break-even, from the
    measured compile cost and per-cell saving in benchmarks/), else not. A field the
    method states no break-even for never compiles on `auto`."""
    changes = {name: name in pays_after and cells_here >= pays_after[name]
               for name in execution_fields(type(config)).values()
               if name in COMPILE_FIELDS and getattr(config, name) == "auto"}
    return dataclasses.replace(config, **changes) if changes else config


def parse_overrides(pairs: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """`--set execution.KEY=VALUE` and `--set ARM.execution.KEY=VALUE` -> (every arm's
    overrides, {arm: its overrides}); values are read as YAML scalars (true, 4, auto)."""
    import yaml

    shared: dict[str, Any] = {}
    per_arm: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        target, sep, text = pair.partition("=")
        parts = target.split(".")
        if not sep or len(parts) not in (2, 3) or parts[-2] != "execution" or not parts[-1]:
            raise UserError(f"--set expects execution.KEY=VALUE or ARM.execution.KEY=VALUE, got {pair[:60]!r}",
                            "--set", "e.g. --set execution.compile=auto")
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            value = text
        if isinstance(value, (dict, list)):
            raise UserError(f"--set {target} takes one value, got {text[:40]!r}", "--set", "e.g. true, 8, auto")
        (shared if len(parts) == 2 else per_arm.setdefault(parts[0], {}))[parts[-1]] = value
    return shared, per_arm


def decode_workers_env(options: dict[str, Any]) -> None:
    """Hand `decode_workers` to the scoring pool (which reads VARBENCH_DECODE_WORKERS)."""
    if options.get("decode_workers"):
        os.environ["VARBENCH_DECODE_WORKERS"] = str(options["decode_workers"])
