"""Diffusion baselines, registered as varbench method plugins through the `varbench.methods`
entry points (as a third-party package would be).

The methods (configs and Method classes; no torch is imported until a method runs):
    dreambooth.py         DreamBooth: full UNet, prior preservation          (Stable Diffusion 1.5)
    custom_diffusion.py   Custom Diffusion: cross-attention K/V + a modifier token
    textual_inversion.py  Textual Inversion: one learnt token embedding
    common.py             what those three share: config fields (speed options too), checks, loading
    dreambooth_lora.py    DreamBooth-LoRA on SD 1.5, SDXL, SD3 Medium or FLUX.1-dev
    ip_adapter.py         IP-Adapter: tuning-free image prompt (SD 1.5, SDXL, FLUX.1-dev)
    families.py           what those two share: the model family, its defaults, loading
    no_fit.py             the floor arm: the pretrained base prompted with the class noun

Their recipes, plain PyTorch and diffusers as the releases run them:
    train_dreambooth.py, train_custom_diffusion.py, train_textual_inversion.py,
    train_dreambooth_lora.py, ip_adapter_model.py
                          each method's training step, loss and fitted model
    training.py           precision, the denoising error, the optimizer, the training loop
    data.py               subject and class images as pixels and latents, prompts as tokens
    sampling.py           SD 1.5 sampling (diffusers' StableDiffusionPipeline call)
    family_sampling.py    a LoRA family pipeline's sampling (its diffusers pipeline call)
    class_images.py       prior-preservation class images, generated once into the shared cache
    tokens.py             new words in the text encoder (trainable rows, diffusers' embedding file)
    reuse.py              a loaded base reused across a worker's cells

fast/                     the speed layer: `accelerated(...)` wraps a fit or a sampling call and
                          swaps in CUDA graphs, torch.compile, NHWC, fused projections, a
                          sync-free sampling loop, fused micro-batches and encoding ahead
synthetic.py              synthetic subjects and the tiny `smoke` configs
bench.py                  GPU benchmark at full SD 1.5 size with random weights, speed-option variants
bench_device.py           its device helpers (ceilings, FLOP counting, attention kernel timings)
bench_report.py           its tables
family_bench.py           GPU benchmark of DreamBooth-LoRA and IP-Adapter per family, random weights
bench_component.py        both benchmarks as `varbench bench` components (rows, floors, targets)

The Stable Diffusion parts themselves (hub/local/tiny loading) are in
`varbench.models.diffusion`.
"""
