"""Importing a subject model of the ARBooth release (jiwoogit/ARBooth) as a varbench artifact.

The release's training (booth_train_final.py, `TXTSaver.sav` in infinity/utils/
save_and_load.py) saves one dict with `torch.save`: "args" (the training flags), "epoch",
"iter", ... and "model", the state dict of the whole fine-tuned transformer: the 694
Infinity-2B tensors under the checkpoint names plus the identifier vectors
"special_token" (text_prefix_length x 2048, default 4 rows, fp32). With the release's
default bf16=1 the blocks are stored in bf16. Which block parts were tuned is in the
flags: enable_sa_layer / enable_ca_layer / enable_ffn_layer / enable_all_layer (released:
cross-attention and FFN).

    varbench import arbooth CKPT --class-noun dog --name rex      # -> imports/arbooth/rex/

`import_release` keeps what a varbench artifact holds: the tensors of the tuned layers (by
the checkpoint's own flags) and `special_token`, in the checkpoint's dtype. It refuses a
file that is not the release's layout, a checkpoint of another model size (strict keys
and shapes, loaded as the official loader would: checkpoint.release_compatible), and one
not fine-tuned from the base this config loads: every tensor the release does not tune
must equal the base's (cast to the checkpoint's dtype), or the imported model would not
be the released one. The folder:

    <out>/<name>/
      artifact/arbooth.safetensors   what `load_artifact` reads (artifact.py), tied to the base
      import.json                    the source file, class noun, and the config to load it with

`load_imported(folder, device)` gives the personalized model: `generate(prompts, seeds)`
with prompts naming the subject "<placeholder> <class noun>". Its images are scored by
`varbench score` beside varbench's own fits (`next_steps` prints how).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from varbench.errors import UserError
from varbench.fileio import atomic_dir, read_json_or_none, write_json
from varbench.hashing import content_hash
from varbench.methods.arbooth.artifact import ARTIFACT_FILE, save_artifact
from varbench.methods.arbooth.base import base_identity, load_base, load_base_transformer, weight_paths
from varbench.methods.arbooth.config import ARBoothConfig, check_config
from varbench.methods.arbooth.model import ARBoothModel, tuned_tensor_names
from varbench.methods.arbooth.tuned_layers import IDENTIFIER, IDENTIFIER_KEY
from varbench.models.infinity.checkpoint import check_keys, read_checkpoint, release_compatible
from varbench.models.infinity.architecture import get_size
from varbench.models.infinity.factory import build_infinity
from varbench.models.infinity.schedule import get_schedule
from varbench.schema import from_dict, to_dict
from varbench.store import check_name

MODEL_ENTRY = "model"  # TXTSaver.sav: {"model": trainer.gpt.state_dict(), ...}
IMPORT_FILE = "import.json"
ARTIFACT_DIR = "artifact"
DEFAULT_OUT = Path("imports") / "arbooth"
NOT_RELEASE = ("Pass a checkpoint that the ARBooth release's training saved (txt_emb-...-last.pth): "
               "a dict whose 'model' entry is the fine-tuned state dict.")
# The release's layer flags and their defaults (infinity/utils/arg_util.py, Args).
LAYER_FLAGS = (("sa", "enable_sa_layer", 0), ("ca", "enable_ca_layer", 1), ("ffn", "enable_ffn_layer", 1))


def import_release(checkpoint: str | Path, class_noun: str, name: str, out: str | Path = DEFAULT_OUT,
                   **config_fields: Any) -> Path:
    """Write `<out>/<name>/` from a release checkpoint (module docstring). `config_fields`:
    ARBoothConfig fields that choose the base (model, weights, vae_weights, text_encoder);
    None means the default."""
    check_name(name, "import", "--name")
    if not class_noun.strip():
        raise UserError("the class noun is empty", "--class-noun", "Name the subject's class, e.g. --class-noun dog.")
    path, folder = Path(checkpoint), Path(out) / name
    if folder.exists():
        raise UserError("an imported model of this name exists", str(folder), "Choose another --name or delete it.")
    data = read_checkpoint(path)
    state, special = release_state(data, path)
    args = data.get("args") if isinstance(data.get("args"), Mapping) else {}
    fields = {key: value for key, value in config_fields.items() if value is not None}
    model = fields.get("model", ARBoothConfig.model)
    values = {"layers": released_layers(args, path), "identifier_vectors": int(special.shape[0]),
              "resolution": default_resolution(model), **fields}
    config = from_dict(ARBoothConfig, values, "varbench import arbooth")
    check_config(config, "varbench import arbooth")
    tensors, identity = tuned_tensors(config, state, special, str(path))
    record = {"source": {"file": path.name, "bytes": path.stat().st_size, **release_facts(data, args)},
              "class_noun": class_noun, "subject_phrase": f"{config.placeholder} {class_noun}", "config": values,
              "tuned_tensors": len(tensors), "tuned_values": sum(int(t.numel()) for t in tensors.values()),
              "base": identity}

    def build(tmp: Path) -> None:
        (tmp / ARTIFACT_DIR).mkdir()
        save_artifact(tmp / ARTIFACT_DIR, tensors, identity, content_hash(to_dict(config)))
        write_json(tmp / IMPORT_FILE, record)

    atomic_dir(folder, build)
    return folder


def default_resolution(model: str) -> int:
    """Pixels of the size's default schedule: 1024 for Infinity-2B (the release's pn 1M)."""
    size = get_size(model)
    return get_schedule(*size.default_schedule).final[0] * size.tokenizer.stride


def release_state(data: Any, path: Path) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The transformer tensors of a release checkpoint and its `special_token`."""
    model = data.get(MODEL_ENTRY) if isinstance(data, Mapping) else None
    if not isinstance(model, Mapping) or not all(torch.is_tensor(v) for v in model.values()):
        found = sorted(map(str, data))[:6] if isinstance(data, Mapping) else type(data).__name__
        raise UserError(f"not a checkpoint of the ARBooth release: no '{MODEL_ENTRY}' state dict (found {found})",
                        str(path), NOT_RELEASE)
    state = dict(model)
    special = state.pop(IDENTIFIER_KEY, None)
    if special is None:
        raise UserError(f"checkpoint has no '{IDENTIFIER_KEY}' (the learned identifier vectors)", str(path),
                        "Pass the checkpoint of an ARBooth fit; a plain Infinity state dict holds no subject.")
    if special.dim() != 2 or special.shape[0] < 1:
        raise UserError(f"{IDENTIFIER_KEY} has shape {tuple(special.shape)}, not (vectors, text channels)",
                        str(path), NOT_RELEASE)
    return state, special


def released_layers(args: Mapping[str, Any], path: Path) -> list[str]:
    """The checkpoint's layer flags as a `layers` list (the release's defaults where absent)."""
    if args.get("enable_lora"):
        raise UserError("the checkpoint was trained with LoRA (enable_lora), which the release does not support",
                        str(path), "Import a checkpoint of the released method (no LoRA).")
    if args.get("enable_all_layer"):
        return ["all", IDENTIFIER]
    return [part for part, flag, default in LAYER_FLAGS if args.get(flag, default)] + [IDENTIFIER]


def tuned_tensors(config: ARBoothConfig, state: dict[str, torch.Tensor], special: torch.Tensor,
                  where: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The artifact's tensors (tuned layers + identifier) and the base identity, after
    checking the checkpoint's layout, then its base (module docstring)."""
    layout = build_infinity(config.model, device="meta")  # shapes only: no weights needed yet
    state = release_compatible(state, tuple(layout.cfg_uncond.shape))[0]
    check_keys({k: v.shape for k, v in layout.state_dict().items()}, state, where,
               f"Pass --model with the size the checkpoint was fine-tuned from (this is {config.model}).")
    width = layout.config.text_channels
    if special.shape[1] != width:
        raise UserError(f"{IDENTIFIER_KEY} has shape {tuple(special.shape)}, {config.model} needs (vectors, {width})",
                        where, "Pass --model with the size the checkpoint was fine-tuned from.")
    tuned = tuned_tensor_names(layout, config)
    paths = weight_paths(config)
    base, load_notes = load_base_transformer(config, paths[0], torch.device("cpu"))
    chosen, base_state = set(tuned), base.state_dict()
    changed = [k for k in base_state if k not in chosen and not torch.equal(base_state[k].to(state[k].dtype), state[k])]
    if changed:
        raise UserError(f"{len(changed)} tensors the release does not tune differ from the base (e.g. {changed[0]}): "
                        f"not fine-tuned from {_base_file(paths[0], config)}", where,
                        "Pass the base it was fine-tuned from (--weights), or check the layer flags in its args.")
    return {**{k: state[k] for k in tuned}, IDENTIFIER_KEY: special}, base_identity(config, paths, load_notes)


def release_facts(data: Mapping[str, Any], args: Mapping[str, Any]) -> dict[str, Any]:
    """What the checkpoint says about its fit (for the record; plain values only)."""
    facts = {"epoch": data.get("epoch"), "iter": data.get("iter"), **{key: args.get(key) for key in (
        "instance_prompt", "class_prompt", "train_iter", "text_prefix_length", "model_type", "bf16")}}
    return {key: value for key, value in facts.items() if isinstance(value, (str, int, float, bool))}


def load_imported(folder: str | Path, device: torch.device | str = "cpu", **overrides: Any) -> ARBoothModel:
    """The personalized model of an imported folder on `device`. `overrides`: ARBoothConfig
    fields (a local `text_encoder` folder, generation settings, `quirk_uint8`, ...)."""
    folder = Path(folder)
    record = read_json_or_none(folder / IMPORT_FILE)
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise UserError(f"not an imported ARBooth model (no readable {IMPORT_FILE})", str(folder),
                        "Import one with 'varbench import arbooth CHECKPOINT --class-noun NOUN --name NAME'.")
    config = from_dict(ARBoothConfig, {**record["config"], **overrides}, str(folder / IMPORT_FILE))
    check_config(config, str(folder / IMPORT_FILE))
    base = load_base(config, torch.device(device))
    return ARBoothModel.from_artifact(base, config, folder / ARTIFACT_DIR)


def next_steps(folder: Path) -> list[str]:
    """What the CLI prints after an import: what was written, how to generate and score."""
    record = read_json_or_none(Path(folder) / IMPORT_FILE) or {}
    phrase, layers = record.get("subject_phrase", "<placeholder> ..."), record.get("config", {}).get("layers", [])
    return [
        f"imported {record.get('source', {}).get('file')} -> {folder}: {record.get('tuned_tensors')} tensors, "
        f"{record.get('tuned_values', 0):,} values (layers {', '.join(layers)}; {ARTIFACT_DIR}/{ARTIFACT_FILE})",
        "generate (Python):",
        "  from varbench.methods.arbooth.release import load_imported",
        f"  model = load_imported({str(folder)!r}, device='cuda')",
        f"  images = model.generate(['a {phrase} in the snow'], seeds=[0])",
        "save them as IMAGES/<subject>/<prompt index>_<sample index>.png and score them beside varbench's fits:",
        f"  varbench score IMAGES --dataset dreambench --name {Path(folder).name}",
    ]


def _base_file(path: Path | None, config: ARBoothConfig) -> str:
    return path.name if path is not None else f"the random-init {config.model} (seed {config.init_seed})"
