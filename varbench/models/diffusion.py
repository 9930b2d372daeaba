"""Stable Diffusion 1.x components for the diffusion baselines.

`load_components(base_model, revision, device)` returns the five parts every baseline
needs (tokenizer, text encoder, VAE, UNet, noise-schedule config) from one of:
  - a hub id, e.g. "stable-diffusion-v1-5/stable-diffusion-v1-5" at a pinned commit,
    through the Hugging Face cache (`varbench.weights.resolve_snapshot`); the three
    SD 1.5 weight files are checked against their published size and sha256;
  - a local folder in diffusers layout (unet/, vae/, text_encoder/, tokenizer/, scheduler/);
  - "tiny": the same architectures at toy size, random-initialised from a fixed seed and
    built in code (no download), for tests and the offline `smoke` protocol.
Weights are read from safetensors only, so loading never runs pickled code.

`sd15_components(seed)` builds the same classes at full SD 1.5 size with random weights
(for GPU benchmarks: real shapes and FLOPs, no download).

torch, diffusers and transformers are imported where components are built or used, not
here: method configs name `SD15_ID` and `TINY`, and checking a protocol must stay cheap.
"""
from __future__ import annotations

import inspect
import json
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from varbench.errors import UserError
from varbench.weights import WeightFile, check_file, resolve_snapshot

if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

SD15_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # the runwayml/ id was deleted; same commits
SD15_REVISION = "451f4fe16113bff5a5d2269ed5ad43b0592e9a14"
SD14_ID = "CompVis/stable-diffusion-v1-4"
SD14_REVISION = "133a221b8aa7292a167afc5127cb63fb5005638b"
PINNED_REVISIONS = {SD15_ID: SD15_REVISION, SD14_ID: SD14_REVISION}
TINY = "tiny"
TOYWORLD = "toyworld"  # the toyworld's pretrained toy SD (varbench.toyworld.backbones says where it is read)
SD15_RANDOM = "sd15-random"  # the full SD 1.5 architecture with random weights (rehearsals)
TINY_VERSION = 1  # bump when the tiny architecture changes (it is part of cache keys)
TINY_SEED = 0

# Published sizes and sha256 of the SD 1.5 fp32 weight files at SD15_REVISION.
SD15_WEIGHTS = (
    WeightFile(SD15_ID, "unet/diffusion_pytorch_model.safetensors", SD15_REVISION, 3_438_167_540,
               "19da7aaa4b880e59d56843f1fcb4dd9b599c28a1d9d9af7c1143057c8ffae9f1"),
    WeightFile(SD15_ID, "vae/diffusion_pytorch_model.safetensors", SD15_REVISION, 334_643_276,
               "a2b5134f4dbc140d9c11f11cba3233099e00af40f262f136c691fb7d38d2194c"),
    WeightFile(SD15_ID, "text_encoder/model.safetensors", SD15_REVISION, 492_265_874,
               "d008943c017f0092921106440254dbbe00b6a285f7883ec8ba160c3faad88334"),
)
# Only these files are fetched from the hub (fp32 safetensors; no .bin, no fp16 copies,
# no safety checker).
PIPELINE_FILES = [
    "model_index.json", "scheduler/*", "tokenizer/*",
    "text_encoder/config.json", "text_encoder/model.safetensors",
    "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
]
SUBFOLDERS = ("tokenizer", "text_encoder", "vae", "unet", "scheduler")

# The noise schedule of every SD 1.x release (its scheduler/scheduler_config.json).
SD_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "clip_sample": False, "set_alpha_to_one": False,
    "steps_offset": 1, "prediction_type": "epsilon",
}
SAMPLERS = {"ddim": "DDIMScheduler", "dpm": "DPMSolverMultistepScheduler"}  # diffusers class names


@dataclass
class DiffusionComponents:
    """The parts of a Stable Diffusion 1.x pipeline that the baselines train and sample."""

    tokenizer: Any  # transformers CLIPTokenizer
    text_encoder: CLIPTextModel
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    scheduler_config: dict[str, Any]
    source: str  # what was loaded: "hub-id@revision", an absolute folder, or "tiny-v1-seed0"
    random_init: bool = False

    def to(self, device: torch.device | str) -> DiffusionComponents:
        for module in (self.text_encoder, self.vae, self.unet):
            module.to(device)
        return self

    def noise_scheduler(self) -> DDPMScheduler:
        """The training forward process (DDPM, as in the releases)."""
        from diffusers import DDPMScheduler

        return _scheduler(DDPMScheduler, self.scheduler_config)

    def sampling_scheduler(self, sampler: str) -> Any:
        if sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {sampler!r}", "method config 'sampler'",
                            f"Use one of: {', '.join(SAMPLERS)}.")
        import diffusers

        return _scheduler(getattr(diffusers, SAMPLERS[sampler]), self.scheduler_config)


def cast_module(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast `module`'s floating-point tensors to `dtype` in place, except the submodules its
    class lists in `_keep_in_fp32_modules`, which stay fp32: what loading with
    `from_pretrained(torch_dtype=dtype)` gives. (diffusers' own `ModelMixin.to(dtype)`
    casts everything and warns at every call, even when that list is empty.)"""
    import torch

    keep = getattr(module, "_keep_in_fp32_modules", None) or []
    torch.nn.Module.to(module, dtype)
    if dtype != torch.float32 and keep:
        for name, submodule in module.named_modules():
            if any(part in keep for part in name.split(".")):
                torch.nn.Module.to(submodule, torch.float32)


def _scheduler(cls: type, config: dict[str, Any]) -> Any:
    # Keep only the keys this scheduler takes: a PNDM config (what SD ships) would
    # otherwise log a warning about every key that DDPM/DDIM do not know.
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in config.items() if k in accepted})


# --- loading real checkpoints ---------------------------------------------------------

def load_components(base_model: str, revision: str | None, device: torch.device | str = "cpu") -> DiffusionComponents:
    """Components of `base_model` (hub id, local folder, "tiny", "toyworld" or "sd15-random")
    in fp32 on `device`."""
    if base_model == TINY:
        return tiny_components().to(device)
    if base_model == TOYWORLD:
        from varbench.hashing import content_hash
        from varbench.toyworld.backbones import folder_path, shipped_digests

        folder = folder_path("sd")  # checked against the manifest first
        files = sorted((name, digest) for name, digest in shipped_digests().items() if name.startswith("sd/"))
        return load_folder(folder, f"toyworld-sd@{content_hash(files, length=16)}").to(device)
    if base_model == SD15_RANDOM:
        return sd15_components().to(device)
    folder, source = model_folder(base_model, revision)
    return load_folder(folder, source).to(device)


def model_folder(base_model: str, revision: str | None) -> tuple[Path, str]:
    """The diffusers folder of `base_model` and a string naming what it is (for cache keys)."""
    local = Path(base_model).expanduser()
    if local.exists() or base_model.startswith((".", "/", "~")):
        folder = resolve_snapshot(base_model, None, local=local)
        return folder, str(folder.resolve())
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", base_model):
        raise UserError(f"base_model {base_model!r} is neither an existing folder nor a hub id",
                        "method config 'base_model'",
                        f"Use a hub id like '{SD15_ID}', a local diffusers folder, or 'tiny'.")
    for other_id, pinned in PINNED_REVISIONS.items():
        if revision == pinned and other_id != base_model:
            raise UserError(f"revision {revision[:12]}... is the pinned commit of {other_id}, not of {base_model}",
                            "method config 'revision'",
                            f"Set revision to {PINNED_REVISIONS.get(base_model, 'null')!r}.")
    folder = resolve_snapshot(base_model, revision, allow_patterns=PIPELINE_FILES)
    if base_model == SD15_ID and revision == SD15_REVISION:
        for spec in SD15_WEIGHTS:
            if not (folder / spec.filename).is_file():  # a cached snapshot from a partial download
                raise UserError(f"{spec.filename} is missing from the cached {base_model} snapshot", str(folder),
                                spec.download_hint())
            check_file(folder / spec.filename, spec)
    return folder, f"{base_model}@{revision or 'main'}"


def load_folder(folder: Path, source: str) -> DiffusionComponents:
    """Load the five parts from a diffusers-layout folder (safetensors weights only)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from safetensors import SafetensorError
    from transformers import CLIPTextModel, CLIPTokenizer
    from transformers.utils import logging as transformers_logging

    # transformers draws a tqdm bar per load: one per cell in a run's log; varbench's own
    # rich bars already show progress
    transformers_logging.disable_progress_bar()
    missing = [name for name in SUBFOLDERS if not (folder / name).is_dir()]
    if missing:
        raise UserError(f"model folder lacks {', '.join(missing)}", str(folder),
                        "Point base_model at a Stable Diffusion 1.x folder in diffusers layout.")
    try:
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", use_safetensors=True)
        # fp32 whatever the files hold (the toyworld's are fp16): the methods cast from here
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", use_safetensors=True, torch_dtype=torch.float32)
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", use_safetensors=True,
                                                    torch_dtype=torch.float32)
        scheduler_config = dict(DDPMScheduler.load_config(folder, subfolder="scheduler"))
    except (OSError, ValueError, SafetensorError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot load Stable Diffusion components: {first_line}", str(folder),
                        "Re-download the model (safetensors weights are required).") from None
    text_encoder.to(torch.float32)  # transformers 5 keeps a checkpoint's dtype
    for module in (text_encoder, vae, unet):
        module.requires_grad_(False).eval()
    return DiffusionComponents(tokenizer, text_encoder, vae, unet, scheduler_config, source)


def save_folder(components: DiffusionComponents, folder: Path) -> None:
    """Write `components` in the diffusers layout that `load_folder` reads (safetensors),
    e.g. to put the tiny components on disk as a local model."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # transformers 5 draws a bar per saved model
    folder = Path(folder)
    components.tokenizer.save_pretrained(str(folder / "tokenizer"))
    components.text_encoder.save_pretrained(str(folder / "text_encoder"), safe_serialization=True)
    components.vae.save_pretrained(str(folder / "vae"), safe_serialization=True)
    components.unet.save_pretrained(str(folder / "unet"), safe_serialization=True)
    components.noise_scheduler().save_pretrained(str(folder / "scheduler"))


# --- random-init components: tiny (tests, smoke) and full SD 1.5 size (benchmarks) -----

def tiny_components(seed: int = TINY_SEED) -> DiffusionComponents:
    """Toy-size SD parts, identical on every machine for a given seed.

    UNet: two down blocks with cross-attention (32, 64 channels); VAE with SD's stride 8
    (four levels of 8-16 channels); a 2-layer CLIP text encoder of width 32; a real byte-level
    BPE CLIP tokenizer with a small vocabulary (so adding tokens and
    `load_textual_inversion` behave as with the real one). 64 px images -> 8x8 latents.
    """
    tokenizer = build_tiny_tokenizer()
    unet_config = dict(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=32, cross_attention_dim=32, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )
    vae_config = dict(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(8, 16, 16, 16), sample_size=64,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    text_config = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                       projection_dim=32)
    return _random_components(tokenizer, unet_config, vae_config, text_config, seed,
                              source=f"tiny-v{TINY_VERSION}-seed{seed}")


def sd15_components(seed: int = 0) -> DiffusionComponents:
    """Full SD 1.5 architecture with random weights: real shapes and FLOPs, no download.

    The tokenizer is the small offline one (token ids < 49408 fit the full embedding table);
    it only affects which ids a prompt becomes, not the cost of any step.
    """
    unet_config = dict(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280), norm_num_groups=32, cross_attention_dim=768,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    vae_config = dict(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
        block_out_channels=(128, 256, 512, 512), sample_size=512,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    text_config = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                       projection_dim=768, vocab_size=49408)
    return _random_components(build_tiny_tokenizer(), unet_config, vae_config, text_config, seed,
                              source=f"sd15-random-seed{seed}")


def _random_components(tokenizer: Any, unet_config: dict, vae_config: dict, text_config: dict, seed: int,
                       source: str) -> DiffusionComponents:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    text_config = {"vocab_size": len(tokenizer), **text_config}
    # Seed a forked RNG so building components never disturbs the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**unet_config)
        vae = AutoencoderKL(**vae_config)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **text_config))
    for module in (text_encoder, vae, unet):
        module.requires_grad_(False).eval()
    return DiffusionComponents(tokenizer, text_encoder, vae, unet, dict(SD_SCHEDULER_CONFIG), source,
                               random_init=True)


# --- an offline CLIP tokenizer --------------------------------------------------------

# Words the tiny tokenizer learns merges from: prompt vocabulary of DreamBench and the
# Textual Inversion templates, so typical prompts become short token sequences.
TINY_CORPUS = """
a an the of in on with and photo rendering cropped close up good nice cool small large weird
clean dirty dark bright my one rendition far away very zoomed sks dog cat backpack bear plushie
bowl can candle clock sneaker duck toy boot sloth monster sunglasses poop emoji car cartoon robot
teapot vase wolf stuffed animal glasses statue teddybear barn jungle snow beach city background
mountain forest purple rug water street red blue green shiny wheat field eiffel tower chef outfit
police floating top sidewalk crowded cube shaped wearing santa hat rainbow scarf sleeping sitting
""".split()


def build_tiny_tokenizer(merge_count: int = 300, corpus: list[str] | None = None) -> Any:
    """A byte-level BPE CLIP tokenizer written to a temp folder and loaded by transformers.

    Same file format and classes as the real CLIP tokenizer (vocab.json + merges.txt,
    "</w>" word ends, <|startoftext|>/<|endoftext|>), learnt deterministically from
    TINY_CORPUS (or `corpus`), so it works on every transformers version without a download.
    """
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols]
    merges = _learn_merges(TINY_CORPUS if corpus is None else corpus, merge_count)
    vocab += ["".join(pair) for pair in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory(prefix="varbench-tiny-tokenizer-") as folder:
        root = Path(folder)
        (root / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}), encoding="utf-8")
        merge_lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
        (root / "merges.txt").write_text("\n".join(merge_lines) + "\n", encoding="utf-8")
        return CLIPTokenizer.from_pretrained(root, model_max_length=77)


def _byte_symbols() -> list[str]:
    """One printable character per byte value (byte-level BPE's alphabet): printable
    Latin-1 bytes stand for themselves, the others are shifted above 255."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    shifted = 0
    symbols = []
    for byte in range(256):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols


def _learn_merges(words: list[str], count: int) -> list[tuple[str, str]]:
    """Greedy BPE: repeatedly merge the most frequent adjacent pair (ties: smallest pair)."""
    spelled = Counter(tuple(word[:-1]) + (word[-1] + "</w>",) for word in words)
    merges: list[tuple[str, str]] = []
    while len(merges) < count:
        pairs: Counter = Counter()
        for word, freq in spelled.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += freq
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        spelled = Counter({_merge_pair(word, best): freq for word, freq in spelled.items()})
    return merges


def _merge_pair(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    merged: list[str] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            merged.append(word[i] + word[i + 1])
            i += 2
        else:
            merged.append(word[i])
            i += 1
    return tuple(merged)
