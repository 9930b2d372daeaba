"""Loading the base model of a fit: the Infinity transformer, the BSQ tokenizer, the T5 encoder.

Released weights (Infinity-2B) come through the backbone's loaders: a local path from the
config (`weights`, `vae_weights`, `text_encoder`), else $VARBENCH_INFINITY_DIR, else the
Hugging Face hub cache, with size checks and strict, pickle-free loading. The tiny sizes
are built in code with deterministic random weights (`init_seed`). The toyworld size
("infinity-toyworld", pretrained by varbench: varbench/toyworld/infinity.py) goes through
the same loaders with local paths: the config's, else its files in the toyworld weights
folder, every one checked against the toyworld manifest first (`local_paths`).

The transformer is loaded in fp32 (the tuned tensors start from exact pretrained values;
`training.prepare_storage` then stores the untuned blocks in bf16 on CUDA), with the
config's `lvl_embed` quirk and drop-path rate.

The base's `identity` names the checkpoint files (name and size) or the random-init seed,
and what loading the transformer file dropped or resized to match the model (legacy
buffers, a null text of another length: see models/infinity/checkpoint.py; absent for a
file that matches exactly); for the toyworld size also a digest of its files' bytes
(retrained weights are another base); artifacts record it so that one made for another base is
refused, and teacher pools are keyed by it. `base_identity` computes it from the config
and those notes alone: the release importer (release.py) loads the transformer only.

Reuse across cells (`snapshot_base` / `restore_base`): a fit trains some block tensors and
stores the others in bf16 (training.prepare_storage, model.to_sampling_storage); the
top-level modules, the tokenizer and T5 keep their values (T5 may wait on the CPU). So a
CPU copy of every block tensor as loaded is what it takes to put the base back, in
place: the module objects stay, and with them what the speed layer compiled for them.

Speed: the Infinity speed layer (varbench.models.infinity.fast) is switched on with one
call, `accelerate`, whose options `speed_options` derives from the config's execution
fields for each phase: the base pipeline for generation (here), the teacher when it is
made (fit.py), the student for each training iteration (training.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from varbench.hashing import content_hash
from varbench.methods.arbooth.config import ARBoothConfig
from varbench.models.infinity.architecture import get_size
from varbench.models.infinity.fast import Accelerated, SpeedOptions, accelerate, release_graphs
from varbench.models.infinity.factory import (
    TRANSFORMER_FILES,
    VAE_FILES,
    build_infinity,
    build_vae,
    load_transformer_noting,
    load_vae,
)
from varbench.models.infinity.pipeline import InfinityPipeline
from varbench.models.infinity.sampler import SamplingConfig
from varbench.models.infinity.schedule import ScaleSchedule, schedule_for_pixels
from varbench.models.infinity.text import RANDOM, TextEncoder, build_random_text_encoder, load_text_encoder
from varbench.models.infinity.transformer import Infinity
from varbench.weights import resolve_file, sha256_file

TOYWORLD = "infinity-toyworld"  # the size whose weights live in the toyworld weights folder


@dataclass
class ARBoothBase:
    pipeline: InfinityPipeline  # model, vae, text encoder, schedule, generation sampling
    identity: dict[str, Any]  # which weights: see the module docstring
    speed: Accelerated | None = None  # what the speed layer swapped in for generation

    @property
    def schedule(self) -> ScaleSchedule:
        return self.pipeline.schedule


def model_overrides(config: ARBoothConfig) -> dict[str, Any]:
    """Transformer config fields the method sets (quirk 1, drop path)."""
    return {"lvl_embed_every_chunk": config.faithful("quirk_lvl_embed"), "drop_path_rate": config.drop_path}


def generation_sampling(config: ARBoothConfig) -> SamplingConfig:
    return SamplingConfig(cfg=config.cfg, tau=config.tau, top_k=config.top_k, top_p=config.top_p,
                          next_input="area" if config.faithful("quirk_next_input") else "trilinear",
                          to_uint8="truncate" if config.faithful("quirk_uint8") else "round",
                          amp=config.amp)


def teacher_sampling(config: ARBoothConfig) -> SamplingConfig:
    attention = "released_teacher" if config.faithful("quirk_teacher_attention") else "kv_cache"
    return SamplingConfig(cfg=config.teacher_cfg, tau=config.teacher_tau, top_k=config.teacher_top_k,
                          top_p=config.teacher_top_p,
                          next_input="area" if config.faithful("quirk_next_input") else "trilinear",
                          attention=attention, amp=config.amp)


def speed_options(config: ARBoothConfig, device: torch.device,
                  phase: Literal["generate", "teacher", "train"]) -> SpeedOptions:
    """The speed layer's options for one phase: CUDA graphs (`cuda_graphs`, CUDA only) for
    both samplers, compiled blocks in the fit (`compile_blocks`: training passes and the
    teacher, which samples inside the fit) and in generation only on request
    (`compile_generation`), the compiled decoder wherever images are decoded."""
    graphs = config.cuda_graphs and device.type == "cuda"
    if phase == "generate":
        return SpeedOptions(compile_blocks=config.compile_generation, cuda_graphs=graphs)
    if phase == "teacher":
        return SpeedOptions(compile_blocks=config.compile_blocks, cuda_graphs=graphs)
    # LoRA's parametrized layers are each of their own generated class, which torch.compile
    # guards on: every block would compile anew. On the H200 a LoRA fit did not finish one
    # warm-up and two iterations in 110 s where the full-tensor variants did, so the LoRA
    # student trains eager (its teacher, without adapters, still compiles).
    return SpeedOptions(compile_blocks=config.compile_blocks and "lora" not in config.layers)


def local_paths(config: ARBoothConfig) -> tuple[str | None, str | None, str | None]:
    """The config's `weights`, `vae_weights` and `text_encoder`; for the toyworld size, those
    left unset are its trained files in the toyworld weights folder, checked against the
    manifest (a missing folder is one `UserError` saying how to train it)."""
    chosen = (config.weights, config.vae_weights, config.text_encoder)
    if config.model != TOYWORLD or None not in chosen:
        return chosen
    from varbench.toyworld.infinity import weight_paths as toyworld_paths

    found = toyworld_paths()
    return tuple(str(path) if local is None else local
                 for local, path in zip(chosen, (found.transformer, found.vae, found.text_encoder)))


def weight_paths(config: ARBoothConfig) -> tuple[Path | None, Path | None]:
    """Transformer and tokenizer files, or None where the weights are random ("random", or
    a random-init size)."""
    paths = []
    for files, local in zip((TRANSFORMER_FILES, VAE_FILES), local_paths(config)[:2]):
        spec = files.get(config.model)
        if local == RANDOM:
            paths.append(None)
        elif spec is not None:  # published weights: local path, env var or hub cache, size-checked
            paths.append(resolve_file(spec, local))
        else:  # a random-init size (random unless a file is given) or the toyworld's files
            paths.append(Path(local).expanduser() if local is not None else None)
    return paths[0], paths[1]


def describe_file(path: Path | None, seed: int) -> dict[str, Any]:
    if path is None:
        return {"random_init_seed": seed}
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    return {"file": path.name, "bytes": size}


def text_encoder_name(config: ARBoothConfig) -> str:
    """The name `load_base` gives the text encoder of `config` (part of the identity)."""
    size = get_size(config.model)
    if size.text_encoder != "tiny" and config.text_encoder == RANDOM:
        return f"{size.text_encoder} ({RANDOM} weights)"  # as the random encoders name themselves
    return size.text_encoder


def load_text(config: ARBoothConfig, device: torch.device) -> TextEncoder:
    """The text encoder of `config`: the tiny one, the real architecture with random weights
    ("random"), or the trained one from its local folder (or the hub cache)."""
    size = get_size(config.model)
    if size.text_encoder == "tiny":
        return load_text_encoder("tiny", device=device)
    if config.text_encoder == RANDOM and config.model == TOYWORLD:
        from varbench.toyworld.infinity import random_text_encoder

        return random_text_encoder(config.init_seed, name=text_encoder_name(config)).to(device)
    if config.text_encoder == RANDOM:
        return build_random_text_encoder(device, config.init_seed)
    return load_text_encoder(size.text_encoder, device=device, local=local_paths(config)[2])


def files_digest(paths: list[Path | None]) -> str:
    """sha256 over the bytes of every file at or under `paths` (None: skipped), each named
    by its path below its folder (a file by its name)."""
    named = sorted((str(p.relative_to(path)) if path.is_dir() else p.name, p) for path in paths if path is not None
                   for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())
    return content_hash([(name, sha256_file(file)) for name, file in named], length=16)


def base_identity(config: ARBoothConfig, paths: tuple[Path | None, Path | None],
                  load_notes: dict[str, Any]) -> dict[str, Any]:
    """Which weights `config` loads (module docstring): `paths` from `weight_paths`,
    `load_notes` what loading the transformer file dropped or resized."""
    transformer_path, vae_path = paths
    identity = {"model": config.model,
                "transformer": {**describe_file(transformer_path, config.init_seed), **load_notes},
                "tokenizer": describe_file(vae_path, config.init_seed), "text_encoder": text_encoder_name(config)}
    if config.model == TOYWORLD:  # small files, retrained at will: their bytes name them
        text = None if config.text_encoder == RANDOM else Path(local_paths(config)[2])
        identity["files_sha256"] = files_digest([transformer_path, vae_path, text])
    return identity


def load_base_transformer(config: ARBoothConfig, path: Path | None,
                          device: torch.device) -> tuple[Infinity, dict[str, Any]]:
    """The transformer of `config` from `path` (None: random init), fp32, with quirk 1 and
    drop path set, and its load notes."""
    overrides = model_overrides(config)
    if path is None:
        return build_infinity(config.model, device=device, seed=config.init_seed, **overrides), {}
    model, notes = load_transformer_noting(config.model, path, device=device, **overrides)
    return model.float(), notes  # the loader adopts the file's tensors: the toyworld's are fp16


def load_base(config: ARBoothConfig, device: torch.device) -> ARBoothBase:
    """The base model of `config` on `device` (module docstring)."""
    size = get_size(config.model)
    paths = weight_paths(config)
    transformer_path, vae_path = paths
    model, load_notes = load_base_transformer(config, transformer_path, device)
    vae = build_vae(config.model, device, config.init_seed) if vae_path is None else load_vae(
        config.model, vae_path, device)
    encoder = load_text(config, device)
    model.eval().requires_grad_(False)
    schedule = schedule_for_pixels(config.resolution, config.resolution, vae.stride)
    # random anywhere: no published transformer, tokenizer or text encoder
    random_init = transformer_path is None or vae_path is None or encoder.name != size.text_encoder
    pipeline = InfinityPipeline(model, vae, encoder, size, random_init=random_init, schedule=schedule,
                                sampling=generation_sampling(config))
    identity = base_identity(config, paths, load_notes)
    return ARBoothBase(pipeline, identity, accelerate(pipeline, speed_options(config, device, "generate")))


def block_tensors(model: Infinity) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of the blocks, by state-dict name."""
    chunks = model.block_chunks
    return {**dict(chunks.named_parameters(prefix="block_chunks")), **dict(chunks.named_buffers(prefix="block_chunks"))}


def snapshot_blocks(base: ARBoothBase) -> dict[str, torch.Tensor]:
    """CPU copies of the block tensors as loaded (module docstring, "Reuse")."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in block_tensors(base.pipeline.model).items()}


def restore_blocks(base: ARBoothBase, snapshot: dict[str, torch.Tensor]) -> None:
    """Put `base` back as `load_base` returned it: block tensors' values and dtypes from
    `snapshot`, no gradients, eval mode, T5 on the device."""
    pipeline = base.pipeline
    model = pipeline.model
    with torch.no_grad():
        for name, tensor in block_tensors(model).items():
            saved = snapshot[name]
            if tensor.dtype == saved.dtype:
                tensor.copy_(saved)
            else:  # stored in bf16 by the fit: the same object gets its fp32 storage back
                tensor.data = saved.to(tensor.device, copy=True)
    for param in model.parameters():
        param.grad = None
    model.eval().requires_grad_(False)
    # Captured CUDA graphs read the blocks' old storage: capture anew on the next sampling.
    release_graphs(model)
    bring_back(pipeline)


def bring_back(pipeline: InfinityPipeline) -> None:
    """Move what a fit parks on the CPU (T5, the BSQ tokenizer) back to the pipeline's device."""
    if pipeline.text_encoder.device != pipeline.device:
        pipeline.text_encoder.to(pipeline.device)
    if next(pipeline.vae.parameters()).device != pipeline.device:
        pipeline.vae.to(pipeline.device)
