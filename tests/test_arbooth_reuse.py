"""ARBooth's base restored for a worker's next cell (restore_blocks): everything a fit
changes on a GPU (bf16 block storage, trained values, gradients, training mode, T5 on
the CPU, CUDA graphs over the old storage) is put back, in the same module objects. The
worker-level check that images stay bit-identical is tests/test_core_reuse.py."""
from __future__ import annotations

import torch

from varbench.methods.arbooth.base import load_base, restore_blocks, snapshot_blocks
from varbench.methods.arbooth.config import ARBoothConfig
from varbench.models.infinity.fast import SpeedOptions, accelerate, graphs

CONFIG = ARBoothConfig(model="infinity-tiny", resolution=64, iterations=2)
CPU = torch.device("cpu")


def test_restore_puts_back_every_block_tensor_in_the_same_objects():
    base, fresh = load_base(CONFIG, CPU), load_base(CONFIG, CPU)
    snapshot = snapshot_blocks(base)
    model = base.pipeline.model
    objects = {name: id(tensor) for name, tensor in model.named_parameters()}
    # What a CUDA fit leaves (training.prepare_storage, the optimizer, to_sampling_storage),
    # done here on the CPU.
    model.train()
    with torch.no_grad():
        for param in model.block_chunks.parameters():
            param.add_(1.0)
    tuned = next(model.block_chunks.parameters()).requires_grad_(True)
    tuned.grad = torch.ones_like(tuned)
    model.cast_blocks(torch.bfloat16)
    restore_blocks(base, snapshot)
    restored, loaded = model.state_dict(), fresh.pipeline.model.state_dict()
    assert restored.keys() == loaded.keys()
    for name, tensor in loaded.items():
        assert restored[name].dtype == tensor.dtype and torch.equal(restored[name], tensor), name
    assert {name: id(tensor) for name, tensor in model.named_parameters()} == objects
    assert not model.training
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())


def test_restore_drops_the_graphs_captured_over_the_old_storage():
    base = load_base(CONFIG, CPU)
    snapshot = snapshot_blocks(base)
    pipeline = base.pipeline
    accelerate(pipeline, SpeedOptions(cuda_graphs=True))  # on the CPU: the same buffers, no capture
    pipeline.generate(["a <placeholder> dog"], [3], batch_size=1, placeholder=CONFIG.placeholder,
                      placeholder_vectors=torch.zeros(CONFIG.identifier_vectors, pipeline.model.config.text_channels))
    assert pipeline.model in graphs._CACHES
    restore_blocks(base, snapshot)
    assert pipeline.model not in graphs._CACHES


def test_restore_brings_an_offloaded_text_encoder_back(monkeypatch):
    base = load_base(CONFIG, CPU)
    snapshot = snapshot_blocks(base)
    moved = []
    encoder = base.pipeline.text_encoder
    monkeypatch.setattr(type(encoder), "device", property(lambda self: torch.device("meta")))  # "elsewhere"
    monkeypatch.setattr(type(encoder), "to", lambda self, device: moved.append(device) or self)
    restore_blocks(base, snapshot)
    assert moved == [base.pipeline.device]
