"""ARBooth (Chung et al., ICCV 2025, arXiv 2504.02612) on Infinity-2B, as method "arbooth".

  config.py         ARBoothConfig: every knob with its released default; quirk flags
  layers.py         selective layer tuning: which tensors are trained (sa/ca/ffn/identifier/all)
  scale_weights.py  per-scale CE weights (released step, uniform, step, geometric), normalisation
  losses.py         scale-weighted bitwise CE, soft/hard prior distillation
  data.py           subject images -> latents (once), fixed prompts -> T5 features (once)
  teacher.py        the frozen teacher (shares untuned tensors), on-the-fly samples or a pool
  training.py       one iteration (two-step as released, or one joint step), storage plan
  base.py           loading Infinity-2B / the tiny stand-ins, base identity
  fit.py            one subject's fit from start to end
  model.py          the personalized model: generate, save; restore from an artifact
  artifact.py       arbooth.safetensors: trained tensors + base identity
  release.py        importing a subject model of the ARBooth release as an artifact (varbench import arbooth)
  method.py         the Method plugin
  flops.py, bench.py  FLOP count and GPU benchmark of one iteration
See README.md for the released-code quirks ("Fidelity").
"""
from __future__ import annotations

from varbench.methods.arbooth.method import ARBooth

__all__ = ["ARBooth"]
