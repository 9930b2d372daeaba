"""Diffusion baselines on Stable Diffusion 1.x, registered as varbench method plugins
through the `varbench.methods` entry points (as a third-party package would be).

    dreambooth.py         DreamBooth: full UNet, prior preservation
    custom_diffusion.py   Custom Diffusion: cross-attention K/V + a modifier token
    textual_inversion.py  Textual Inversion: one learnt token embedding
    common.py             what they share: config fields (speed options too), precision, data, loss,
                          training loop, the sampling model
    sampling.py           the sampling loop (the pipeline's arithmetic without host syncs; CUDA graphs)
    speed.py              speed options: cuDNN/SDPA settings, memory format, compile / CUDA graphs
                          with a fallback that never fails a cell
    class_images.py       prior-preservation class images, generated once into the shared cache
    tokens.py             new words in the text encoder (trainable rows, diffusers' embedding file)
    synthetic.py          synthetic subjects and the tiny `smoke` configs
    bench.py              GPU benchmark at full SD 1.5 size with random weights, speed-option variants
    bench_device.py       its device helpers (ceilings, FLOP counting, attention kernel timings)
    bench_report.py       its tables

The Stable Diffusion parts themselves (hub/local/tiny loading) are in
`varbench.models.diffusion`.
"""
