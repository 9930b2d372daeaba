"""The toyworld backbones: the real architectures at toy size, pretrained by varbench on
the toyworld (`varbench toyworld train`) and shipped in the package.

    name   architecture (built by the same code as the real one)          trained as
    clip   open_clip CLIP, OpenAI BPE tokenizer, QuickGELU (TOY_CLIP)       image-text contrastive
    dino   timm ViT of the DINO ViT-S/16 family (TOY_DINO)                  instance discrimination
    sd     Stable Diffusion 1.x in diffusers layout (diffusion.py)          VAE, then text-to-image
    infinity  Infinity: BSQ tokenizer, transformer, T5 (infinity.py)        tokenizer, then next-scale text-to-image

Weights live in `varbench/toyworld/weights/` (fp16 safetensors; `manifest.sha256` holds
each file's digest and size), or in the folder `$VARBENCH_TOYWORLD_DIR` names (a fresh
`varbench toyworld train --out DIR`). A missing or damaged file is one clear error.
Numbers computed with them are toyworld numbers: meaningful inside the miniature world,
never comparable with real-model numbers.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from varbench.errors import UserError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = "manifest.sha256"
ENV_VAR = "VARBENCH_TOYWORLD_DIR"
NOTE = "toyworld backbones: a miniature world; not comparable with real-model numbers"

# CLIP ViT-B/32's layout at toy width: 224 px input, 7 x 7 patches, the real 49,408-token
# vocabulary and 77-token context (the real tokenizer applies); a narrow text tower keeps
# the token table small (1.6 M values).
TOY_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 224, "layers": 4, "width": 128, "patch_size": 32, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 3},
}
# DINO ViT-S/16's layout (224 px, 16 px patches, class token) at toy width and depth.
TOY_DINO = {"embed_dim": 96, "depth": 4, "num_heads": 3}
FILES = {"clip": "clip.safetensors", "dino": "dino.safetensors"}
FOLDERS = {"sd": "sd", "infinity": "infinity"}  # backbones stored as a folder (every file in the manifest)
BACKBONES = (*FILES, *FOLDERS)


def weights_folder() -> Path:
    """Where the toyworld weights are read: $VARBENCH_TOYWORLD_DIR, else the package's."""
    return Path(os.environ[ENV_VAR]).expanduser() if os.environ.get(ENV_VAR) else WEIGHTS_DIR


def weight_path(name: str) -> Path:
    """The checked file of backbone `name`: present, and of the digest its folder's
    manifest records."""
    folder = weights_folder()
    path = folder / FILES[name]
    fix = (f"Train them with 'varbench toyworld train --out DIR' and set {ENV_VAR}=DIR, "
           "or reinstall varbench (the package ships them).")
    if not path.is_file():
        raise UserError(f"toyworld {name} weights not found", str(path), fix)
    expected = read_manifest(folder).get(FILES[name])
    data = path.read_bytes()
    if expected is None or hashlib.sha256(data).hexdigest() != expected:
        raise UserError(f"toyworld {name} weights do not match {MANIFEST}", str(path), fix)
    return path


def folder_path(name: str) -> Path:
    """The checked folder of backbone `name` (FOLDERS): every file its folder's manifest
    lists under it present with its digest, and no file missing from the list."""
    folder = weights_folder()
    path = folder / FOLDERS[name]
    fix = (f"Train it with 'varbench toyworld train --out DIR --only {name}' and set {ENV_VAR}=DIR, "
           "or reinstall varbench (the package ships it).")
    if not path.is_dir():
        raise UserError(f"toyworld {name} weights not found", str(path), fix)
    expected = {key: digest for key, digest in read_manifest(folder).items() if key.startswith(f"{FOLDERS[name]}/")}
    present = {str(p.relative_to(folder)) for p in path.rglob("*") if p.is_file()}
    if not expected or set(expected) != present:
        raise UserError(f"toyworld {name} files do not match {MANIFEST}", str(path), fix)
    for key, digest in expected.items():
        if hashlib.sha256((folder / key).read_bytes()).hexdigest() != digest:
            raise UserError(f"toyworld {name} file does not match {MANIFEST}", str(folder / key), fix)
    return path


def shipped_digests() -> dict[str, str]:
    """file -> sha256 of every toyworld weight file in use."""
    return read_manifest(weights_folder())


def folder_digest(name: str) -> str:
    """One digest of backbone folder `name`'s files as the manifest in use lists them
    (reading the manifest only: planning stays fast; loading checks the files)."""
    from varbench.hashing import content_hash

    prefix = f"{FOLDERS[name]}/"
    return content_hash(sorted((k, v) for k, v in shipped_digests().items() if k.startswith(prefix)), length=16)


def metric_digests() -> dict[str, str]:
    """file -> sha256 of the metric encoders in use (clip, dino): hashed into toyworld score
    ids, so other encoder weights make other scores while a retrained generator does not."""
    return {name: digest for name, digest in shipped_digests().items() if name in FILES.values()}


def read_manifest(folder: Path) -> dict[str, str]:
    """file name -> sha256 from `folder/manifest.sha256` (lines: digest, size, name)."""
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    entries = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, _, name = line.split()
            entries[name] = digest
    return entries


def write_manifest(folder: Path) -> Path:
    """Record the digest and size of every weight file present in `folder`."""
    lines = ["# sha256, size in bytes, file: the toyworld backbones (varbench.toyworld.backbones)"]
    names = [name for name in FILES.values() if (folder / name).is_file()]
    for sub in FOLDERS.values():
        names += [str(p.relative_to(folder)) for p in (folder / sub).rglob("*") if p.is_file()]
    for name in sorted(names):
        data = (folder / name).read_bytes()
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {len(data)}  {name}")
    path = folder / MANIFEST
    path.write_text("\n".join(lines) + "\n")
    return path
