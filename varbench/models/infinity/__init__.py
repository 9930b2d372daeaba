"""Infinity (FoundationVision/Infinity): bitwise visual autoregressive text-to-image model.

A clean implementation whose parameter names equal the released checkpoints, readable
top to bottom (plain PyTorch, eager):
  architecture.py sizes ("infinity-2b", "infinity-8b", "infinity-tiny", ...) as dataclasses
  schedule.py     scale schedules (aspect-ratio templates, 0.06M .. 1M)
  rope.py         2D RoPE on the final token grid
  layers.py       attention, FFN, norms, KV cache
  transformer.py  the model: text condition, blocks, teacher-forced forward
  autoencoder.py  the CNN encoder/decoder of the BSQ tokenizer
  bsq.py          multi-scale binary spherical quantization, bitwise self-correction
  text.py         Flan-T5-XL (or a tiny T5) with the placeholder hook
  checkpoint.py   safe, strict checkpoint reading and loading (accepting what the official loader accepts)
  factory.py      build_* (random init) and load_* (released weights)
  sampler.py      next-scale sampling with KV cache, CFG, per-image seeds
  pipeline.py     text -> images: InfinityPipeline, load_infinity
The speed layer lives apart and is switched on by one call, `fast.accelerate(pipeline)`:
  fast/           compiled blocks and decoder, CUDA-graph replay, fused kernels (see its docstring)
  bench.py        GPU benchmark of sampling with and without it (python -m varbench.models.infinity.bench)

Importing this package is cheap (no torch): the names below load their module on first use.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "InfinityConfig": "architecture", "TokenizerConfig": "architecture", "ModelSize": "architecture",
    "get_size": "architecture", "size_names": "architecture", "ScaleSchedule": "schedule",
    "get_schedule": "schedule", "schedule_for_pixels": "schedule", "Infinity": "transformer",
    "Condition": "transformer", "bit_logits": "transformer", "BSQTokenizer": "bsq", "TokenMaps": "bsq",
    "multiscale_quantize": "bsq", "TextEncoder": "text", "TextFeatures": "text", "load_text_encoder": "text",
    "build_tiny_text_encoder": "text", "build_infinity": "factory", "build_vae": "factory",
    "load_transformer": "factory", "load_transformer_noting": "factory", "load_vae": "factory",
    "SamplingConfig": "sampler", "SampleOutput": "sampler", "sample": "sampler", "InfinityPipeline": "pipeline",
    "load_infinity": "pipeline",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
