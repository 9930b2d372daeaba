"""Probe (issue 22): does a toy SD whose captions can name an instance's colours let the
text-side methods (Textual Inversion, Custom Diffusion) learn a subject? The shipped toy
SD's UNet and text encoder are trained on for a few hundred more steps on captions that,
half the time, name the pictured instance's body and pattern colours ("a yellow and green
can in the snow"; colour names: the nearest palette entry), and the result is written as
a toyworld weights folder (the shipped encoders and Infinity beside it) for
VARBENCH_TOYWORLD_DIR. The shipped pretraining captions name only two colours ("red",
"purple", the world's recolouring modifiers).

    python benchmarks/toyworld_described_captions.py --out /tmp/described --steps 600
    VARBENCH_TOYWORLD_DIR=/tmp/described varbench run --protocol <toyworld without ARBooth>.yaml ...

The steps follow train_sd.train_denoiser (same noise schedule, 10% empty captions,
AdamW, warm-up then cosine), from the shipped weights, with the shipped latent scale.
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from varbench.models.diffusion import load_components, save_folder
from varbench.toyworld.backbones import WEIGHTS_DIR, write_manifest
from varbench.toyworld.instances import FUR, VIVID, draw_instance
from varbench.toyworld.pool import render_pool, step_random
from varbench.toyworld.train_encoders import Schedule, _step
from varbench.toyworld.train_sd import CAPTION_DROP, encode_pool, token_ids
from varbench.toyworld.world import Scene, caption, class_spec

COLOUR_NAMES = {
    **dict(zip(VIVID, ("red", "orange", "yellow", "green", "teal", "blue", "navy", "purple", "pink", "brown",
                       "black", "white", "grey", "beige", "lime", "maroon"))),
    **dict(zip(FUR, ("tan", "brown", "dark brown", "black", "white", "cream", "grey", "ginger", "golden"))),
}
RECOLOURING = ("red", "purple")  # modifiers whose caption already names the body's colour


def colour_name(colour: tuple[int, int, int], palette: tuple) -> str:
    nearest = min(palette, key=lambda entry: sum((a - b) ** 2 for a, b in zip(entry, colour)))
    return COLOUR_NAMES[nearest]


def described_caption(scene: Scene, rng: np.random.Generator, tokenizer, share: float) -> str:
    """The scene's caption, with the instance's colours named before it with probability
    `share` (body only where both do not fit the tokenizer's length; none if neither does)."""
    text = caption(scene)
    if scene.modifier in RECOLOURING or rng.random() >= share:
        return text
    spec = class_spec(scene.class_name)
    instance = draw_instance(spec, scene.instance_id)
    body, second = colour_name(instance.body, spec.palette), colour_name(instance.secondary, spec.palette)
    lead = "a photo of a " if text.startswith("a photo of a ") else "a "
    for colours in ((f"{body} and {second}",) if instance.pattern != "plain" else ()) + (body,):
        candidate = f"{lead}{colours} {text[len(lead):]}"
        if len(tokenizer(candidate).input_ids) <= tokenizer.model_max_length:
            return candidate
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--pool", type=int, default=8192)
    parser.add_argument("--share", type=float, default=0.5, help="captions that name the colours")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        if not args.force:
            parser.error(f"{args.out} exists and is not empty; pass --force to replace it")
        shutil.rmtree(args.out)
    shutil.copytree(WEIGHTS_DIR, args.out, dirs_exist_ok=True)
    components = load_components("toyworld", None, "cpu")
    pool = render_pool(args.pool, 1, workers=2)
    rng = np.random.default_rng(5)
    captions = [described_caption(scene, rng, components.tokenizer, args.share) for scene in pool.scenes]
    print("captions, e.g.:", captions[:6], flush=True)
    means, stds = encode_pool(components, pool, torch.device("cpu"))
    scale = float(components.vae.config.scaling_factor)
    unet, text_encoder = components.unet.train().requires_grad_(True), components.text_encoder.train().requires_grad_(True)
    optimizer = torch.optim.AdamW([*unet.parameters(), *text_encoder.parameters()], lr=args.learning_rate,
                                  weight_decay=0.01)
    schedule = Schedule(steps=args.steps, batch=args.batch, learning_rate=args.learning_rate, warmup=50)
    alphas = components.noise_scheduler().alphas_cumprod
    ids, empty = token_ids(components, captions), token_ids(components, [""])
    started, losses = time.time(), []
    for step in range(args.steps):
        draws, generator = step_random(3, 9, step, torch.device("cpu"))
        rows = torch.from_numpy(draws.integers(len(captions), size=args.batch))
        dropped = torch.from_numpy(draws.random(args.batch) < CAPTION_DROP)[:, None]
        latents = (means[rows] + stds[rows] * torch.randn(means[rows].shape, generator=generator)) * scale
        noise = torch.randn(latents.shape, generator=generator)
        t = torch.randint(0, len(alphas), (args.batch,), generator=generator)
        a = alphas[t].view(-1, 1, 1, 1)
        states = text_encoder(torch.where(dropped, empty, ids[rows]))[0]
        loss = F.mse_loss(unet(a.sqrt() * latents + (1 - a).sqrt() * noise, t, encoder_hidden_states=states).sample,
                          noise)
        _step(optimizer, loss, schedule.rate(step))
        losses.append(loss.item())
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step}: loss {np.mean(losses[-50:]):.4f} ({time.time() - started:.0f} s)", flush=True)
    unet.eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)
    for module in (components.text_encoder, components.vae, components.unet):
        module.half()  # stored as the shipped SD is
    shutil.rmtree(args.out / "sd")
    save_folder(components, args.out / "sd")
    write_manifest(args.out)
    print(f"written {args.out} ({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
