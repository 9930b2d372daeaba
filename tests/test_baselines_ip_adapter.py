"""IP-Adapter on the tiny random-init parts of SD 1.5, SDXL and FLUX.1-dev with a tiny adapter
built in code in the releases' safetensors layouts and loaded by diffusers' own
`load_ip_adapter` (CPU, fp32): nothing trains, the artifact is the reference embeddings
(a resumed cell reads them, never the image encoder), `scale` and the number of references
act, and the runner records a fit of zero steps."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open

from baselines.family_sampling import generate_images
from baselines.ip_adapter import RELEASES, IPAdapter, IPAdapterConfig
from baselines.ip_adapter_model import EMBEDS_FILE, STAND_IN_ENCODER
from baselines.synthetic import synthetic_subject
from varbench.errors import UserError
from varbench.method import CellContext
from varbench.schema import from_dict

FAMILY_NAMES = ["sd15", "sdxl", "flux"]
PROMPTS = ["a photo of dog", "a dog on the beach"]
SEEDS = [11, 12]


def make_method(base_model: str, **overrides) -> IPAdapter:
    settings = {"base_model": base_model, "weights": "tiny", "resolution": 64, "sample_steps": 3, **overrides}
    return IPAdapter(from_dict(IPAdapterConfig, settings, "test"))


def make_context(tmp_path) -> CellContext:
    return CellContext(device=torch.device("cpu"), fit_seed=7, workdir=tmp_path / "work", cache_dir=tmp_path / "cache")


def max_difference(first, second) -> int:
    return int(np.abs(np.asarray(first, dtype=np.int16) - np.asarray(second, dtype=np.int16)).max())


def plain_images(method: IPAdapter, ctx: CellContext) -> list:
    """The same family pipeline without an IP-Adapter."""
    base = super(IPAdapter, method).load_base(ctx)
    return generate_images(base.pipeline, PROMPTS, SEEDS, method.config)


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def fitted(request, tmp_path_factory):
    family = request.param
    tmp = tmp_path_factory.mktemp(f"ip-{family}")
    method = make_method(family, num_references=2)
    ctx = make_context(tmp)
    base = method.load_base(ctx)
    model = method.fit(base, synthetic_subject(tmp / "subject", count=3), ctx)
    ctx.flush_losses()
    artifact = tmp / "artifact"
    artifact.mkdir()
    model.save(artifact)
    return SimpleNamespace(family=family, method=method, ctx=ctx, base=base, model=model, artifact=artifact, tmp=tmp,
                           images=model.generate(PROMPTS, SEEDS))


def test_the_stand_in_adapter_has_the_releases_layout_and_loads_through_load_ip_adapter(fitted):
    release = RELEASES[fitted.family]
    (folder,) = [path for path in (fitted.tmp / "cache" / "ip_adapter_stand_in").iterdir() if path.is_dir()]
    assert (folder / STAND_IN_ENCODER / "model.safetensors").is_file()
    with safe_open(str(folder / release.weight_name), framework="pt") as weights:
        keys = set(weights.keys())
    denoiser = getattr(fitted.base.pipeline, fitted.base.family.denoiser)
    processors = [type(p).__name__ for p in denoiser.attn_processors.values()]
    if fitted.family == "flux":  # XLabs-AI/flux-ip-adapter keys; one IP processor per double-stream block
        assert {"ip_adapter_proj_model.proj.weight",
                "double_blocks.0.processor.ip_adapter_double_stream_k_proj.bias"} <= keys
        assert processors.count("FluxIPAdapterAttnProcessor") == len(denoiser.transformer_blocks)
    else:  # h94/IP-Adapter keys; one IP processor per cross-attention layer, numbered 1, 3, 5, ...
        cross = [name for name in denoiser.attn_processors if name.endswith("attn2.processor")]
        assert {"image_proj.proj.weight", "image_proj.norm.bias"} <= keys
        assert {f"ip_adapter.{2 * i + 1}.to_k_ip.weight" for i in range(len(cross))} <= keys
        assert processors.count("IPAdapterAttnProcessor2_0") == len(cross) > 0
    assert fitted.base.pipeline.image_encoder is not None


def test_nothing_trains_and_the_artifact_is_the_reference_embeddings(fitted):
    assert fitted.ctx.losses == [] and fitted.model.trainable_parameters == 0
    assert sorted(p.name for p in fitted.artifact.iterdir()) == [EMBEDS_FILE]
    with safe_open(str(fitted.artifact / EMBEDS_FILE), framework="pt") as embeds:
        positive = embeds.get_tensor("image_embeds")
    projection = fitted.base.pipeline.image_encoder.config.projection_dim
    assert positive.shape == (1, 2, projection)  # two references, side by side


def test_a_resumed_cell_reads_the_embeddings_instead_of_encoding(fitted):
    method = make_method(fitted.family, num_references=2)
    base = method.load_base(fitted.ctx)
    base.pipeline.image_encoder.forward = lambda *args, **kwargs: pytest.fail("the references were encoded again")
    model = method.load_artifact(base, fitted.artifact, fitted.ctx)
    assert [max_difference(a, b) for a, b in zip(model.generate(PROMPTS, SEEDS), fitted.images)] == [0, 0]
    assert model.trainable_parameters == 0


def test_the_image_prompt_changes_the_images_and_scale_zero_turns_it_off(fitted, tmp_path):
    ctx = make_context(tmp_path)
    settings = {"num_references": 2, "true_cfg_scale": 1.0} if fitted.family == "flux" else {"num_references": 2}
    off = make_method(fitted.family, scale=0.0, **settings)
    plain = plain_images(off, ctx)
    model = off.fit(off.load_base(ctx), synthetic_subject(tmp_path / "subject", count=3), ctx)
    assert [max_difference(a, b) for a, b in zip(model.generate(PROMPTS, SEEDS), plain)] == [0, 0]
    on = make_method(fitted.family, **settings)
    model = on.fit(on.load_base(ctx), synthetic_subject(tmp_path / "subject", count=3), ctx)
    assert min(max_difference(a, b) for a, b in zip(model.generate(PROMPTS, SEEDS), plain)) > 10


def test_the_number_of_references_is_used(fitted, tmp_path):
    ctx = make_context(tmp_path)
    one = make_method(fitted.family, num_references=1)
    model = one.fit(one.load_base(ctx), synthetic_subject(fitted.tmp / "subject", count=3), ctx)
    assert model.positive.shape[1] == 1
    assert max(max_difference(a, b) for a, b in zip(model.generate(PROMPTS, SEEDS), fitted.images)) > 0


def test_family_defaults_and_supported_families():
    expected = {"sd15": (512, "shipped", 50, 7.5, 0.5, 1.0), "sdxl": (1024, "shipped", 50, 5.0, 0.5, 1.0),
                "flux": (1024, "shipped", 28, 3.5, 1.0, 4.0)}
    for family, values in expected.items():
        config = IPAdapter(IPAdapterConfig(base_model=family)).config
        assert (config.resolution, config.sampler, config.sample_steps, config.guidance_scale, config.scale,
                config.true_cfg_scale) == values
        assert config.num_references == 1
    with pytest.raises(UserError, match="Stable Diffusion 3 Medium is not supported"):
        IPAdapter(IPAdapterConfig(base_model="sd3"))
    with pytest.raises(UserError, match="FLUX.1-dev only"):
        IPAdapter(IPAdapterConfig(base_model="sdxl", true_cfg_scale=3.0))
    assert IPAdapter().subject_phrase("dog") == "dog" and IPAdapter.fit_steps_field is None


def test_weights_needed_lists_the_base_the_adapter_and_its_image_encoder(tmp_path):
    labels = {}
    for family in FAMILY_NAMES:
        rows = IPAdapter(IPAdapterConfig(base_model=family)).weights_needed()
        assert len(rows) == 3
        labels[family] = [label for label, _, _ in rows]
        (_, adapter, _), (_, encoder, _) = rows[1:]
        release = RELEASES[family]
        assert (adapter.repo_id, adapter.filename, adapter.revision) == (release.repo_id, release.weight_name,
                                                                         release.revision)
        assert encoder.revision is not None and "model.safetensors" in " ".join(encoder.allow_patterns)
    assert RELEASES["sd15"].revision == "018e402774aeeddd60609b4ecdb7e298259dc729"
    assert "gated" in labels["flux"][0]
    local = IPAdapter(IPAdapterConfig(base_model="sd15", adapter=str(tmp_path))).weights_needed()[1]
    assert local[2] == str(tmp_path) and local[1].filename == "models/ip-adapter_sd15.safetensors"
    assert IPAdapter(IPAdapterConfig(base_model="sdxl", weights="random")).weights_needed() == []


def test_a_local_adapter_folder_without_the_file_is_a_user_error(tmp_path):
    method = make_method(str(tmp_path / "sd"), family="sd15", weights="pretrained", adapter=str(tmp_path / "adapter"))
    from baselines.ip_adapter_model import adapter_folders

    (tmp_path / "adapter").mkdir()
    with pytest.raises(UserError, match="lacks models/ip-adapter_sd15.safetensors") as caught:
        adapter_folders(None, method.config, method.release(), make_context(tmp_path))
    assert "\n" not in caught.value.line()


def test_the_runner_records_a_fit_of_zero_steps_and_resumes_from_the_embeddings(tmp_path):
    from runner_helpers import run_api

    protocol = tmp_path / "ip.yaml"
    protocol.write_text("""
name: ip_tiny
version: 1
data: {dataset: smoke, subjects: [red_robot]}
prompts: {source: dataset, limit: 1}
images_per_prompt: 1
seeds: {base: 0}
metrics: {mode: canonical, backbones: tiny, div: false, pres_images: 0}
arms:
  - {method: ip_adapter, config: {base_model: sd15, weights: tiny, resolution: 64, sample_steps: 2}}
""")
    results = tmp_path / "results"
    assert run_api(protocol, results) == 0
    (cell,) = results.glob("ip_tiny/*/cells/red_robot")
    timings = pd.read_csv(cell / "timings.csv")
    fit = timings[timings.phase == "fit"].iloc[0]
    assert fit["items"] == 0 and not (cell / "losses.csv").exists()
    assert json.loads((cell / "cell.json").read_text())["trainable_parameters"] == 0
    assert (cell / "artifact" / EMBEDS_FILE).is_file()
    for image in cell.glob("images/*.png"):
        image.unlink()  # a lost image: the cell loads its artifact and generates it again
    assert run_api(protocol, results) == 0
    assert "load_artifact" in pd.read_csv(cell / "timings.csv").phase.tolist()
