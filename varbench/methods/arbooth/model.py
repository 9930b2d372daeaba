"""The personalized ARBooth model: the base with its trained tensors, generating images.

Generation uses the KV-cached sampler (CFG 4, tau 0.5, top-k 900, top-p 0.97 by default),
one torch.Generator per image seeded with its seed, so image i depends only on
(prompts[i], seeds[i]). Prompts hold the placeholder ("a <placeholder> dog in the snow");
T5's output at the placeholder is replaced by the learned identifier vectors.

Storage for sampling: on CUDA with bf16 autocast every block tensor is stored in bf16
(as the release samples); the fp32 trained tensors are kept on the CPU for `save`.
A model restored from an artifact goes through the very same steps (training storage,
copy of the trained tensors, sampling storage), so it generates exactly what the model
fresh from the fit generates.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from PIL import Image

from varbench.schema import to_dict
from varbench.hashing import content_hash
from varbench.method import PersonalizedModel
from varbench.methods.arbooth.artifact import load_artifact_tensors, save_artifact
from varbench.methods.arbooth.base import ARBoothBase, bring_back
from varbench.methods.arbooth.config import ARBoothConfig
from varbench.methods.arbooth.lora import LowRankUpdate, adapter_tensors, artifact_shapes, merge_adapters, merge_tensors
from varbench.methods.arbooth.tuned_layers import IDENTIFIER_KEY, select_tensors, trains_identifier
from varbench.methods.arbooth.training import prepare_storage, uses_amp
from varbench.models.infinity.transformer import Infinity


def tuned_tensor_names(model: Infinity, config: ARBoothConfig) -> list[str]:
    """Names of the transformer parameters `config` trains (see `layers`)."""
    names = [name for name, _ in model.named_parameters()]
    return select_tensors(names, config.layers, model.config.depth, model.config.blocks_per_chunk,
                          config.block_range)


def identifier_shape(model: Infinity, config: ARBoothConfig) -> tuple[int, int]:
    return config.identifier_vectors, model.config.text_channels


def expected_artifact_shapes(model: Infinity, config: ARBoothConfig) -> dict[str, tuple[int, ...]]:
    shapes = {name: tuple(model.get_parameter(name).shape) for name in tuned_tensor_names(model, config)}
    shapes.update(artifact_shapes(model, config))
    if trains_identifier(config.layers):
        shapes[IDENTIFIER_KEY] = identifier_shape(model, config)
    return shapes


def to_sampling_storage(model: Infinity, config: ARBoothConfig, device: torch.device) -> None:
    if uses_amp(config, device):
        model.cast_blocks(torch.bfloat16)


class ARBoothModel(PersonalizedModel):
    def __init__(self, base: ARBoothBase, config: ARBoothConfig, identifier: torch.Tensor,
                 trained: Mapping[str, torch.Tensor]):
        self.base, self.config = base, config
        self.identifier = identifier.detach()  # (K, C) fp32 on the model's device
        self.trained = dict(trained)  # what `save` writes: tuned tensors (+ special_token)

    @classmethod
    def after_fit(cls, base: ARBoothBase, config: ARBoothConfig, tuned: Sequence[str],
                  identifier: torch.Tensor, adapters: Mapping[str, LowRankUpdate] | None = None) -> ARBoothModel:
        model, device = base.pipeline.model, base.pipeline.device
        trained = {name: model.get_parameter(name).detach() for name in tuned}
        if adapters:
            trained.update(adapter_tensors(adapters))
            merge_adapters(model, adapters)
        if trains_identifier(config.layers):
            trained[IDENTIFIER_KEY] = identifier.detach()
        if device.type != "cpu":  # keep the trained values (fp32 masters) off the GPU for saving
            trained = {name: tensor.to("cpu", copy=True) for name, tensor in trained.items()}
        to_sampling_storage(model, config, device)
        return cls(base, config, identifier, trained)

    @classmethod
    def from_artifact(cls, base: ARBoothBase, config: ARBoothConfig, folder: Path) -> ARBoothModel:
        model, device = base.pipeline.model, base.pipeline.device
        tensors = load_artifact_tensors(folder, base.identity, expected_artifact_shapes(model, config))
        tuned = tuned_tensor_names(model, config)
        prepare_storage(model, tuned, config, device)  # the fit's storage, then its values
        with torch.no_grad():
            for name in tuned:
                model.get_parameter(name).copy_(tensors[name])
        merge_tensors(model, config, tensors)  # LoRA's updates, merged as after the fit
        identifier = tensors.get(IDENTIFIER_KEY, torch.zeros(identifier_shape(model, config)))
        to_sampling_storage(model, config, device)
        return cls(base, config, identifier.to(device=device, dtype=torch.float32), tensors)

    @property
    def trainable_parameters(self) -> int:
        return sum(int(tensor.numel()) for tensor in self.trained.values())

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image]:
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        if not prompts:
            return []
        pipeline = self.base.pipeline
        bring_back(pipeline)  # T5 and the tokenizer, offloaded during the fit
        return pipeline.generate(list(prompts), list(seeds), batch_size=len(prompts),
                                 placeholder=self.config.placeholder, placeholder_vectors=self.identifier)

    def save(self, artifact_dir: Path) -> None:
        save_artifact(Path(artifact_dir), self.trained, self.base.identity, content_hash(to_dict(self.config)))
