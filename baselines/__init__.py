"""Diffusion baselines on Stable Diffusion 1.x, registered as varbench method plugins
through the `varbench.methods` entry points (as a third-party package would be).

The methods (configs and Method classes; no torch is imported until a method runs):
    dreambooth.py         DreamBooth: full UNet, prior preservation
    custom_diffusion.py   Custom Diffusion: cross-attention K/V + a modifier token
    textual_inversion.py  Textual Inversion: one learnt token embedding
    common.py             what they share: config fields (speed options too), checks, loading

Their recipes, plain PyTorch and diffusers as the releases run them:
    train_dreambooth.py, train_custom_diffusion.py, train_textual_inversion.py
                          each method's training step, loss and fitted model
    training.py           precision, the denoising error, the optimizer, the training loop
    data.py               subject and class images as pixels and latents, prompts as tokens
    sampling.py           the sampling pipeline (diffusers' StableDiffusionPipeline call)
    class_images.py       prior-preservation class images, generated once into the shared cache
    tokens.py             new words in the text encoder (trainable rows, diffusers' embedding file)

fast/                     the speed layer: `accelerated(...)` wraps a fit or a sampling call and
                          swaps in CUDA graphs, torch.compile, NHWC, fused projections, a
                          sync-free sampling loop, fused micro-batches and encoding ahead
synthetic.py              synthetic subjects and the tiny `smoke` configs
bench.py                  GPU benchmark at full SD 1.5 size with random weights, speed-option variants
bench_device.py           its device helpers (ceilings, FLOP counting, attention kernel timings)
bench_report.py           its tables

The Stable Diffusion parts themselves (hub/local/tiny loading) are in
`varbench.models.diffusion`.
"""
