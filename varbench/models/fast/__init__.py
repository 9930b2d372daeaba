"""The speed layer's pieces shared by the Infinity tokenizer and the Stable Diffusion baselines.

Each piece computes what a plain PyTorch module computes, in another order or with other
kernels, and is swapped in from outside: the model code never imports it.

  groupnorm.py  GroupNorm from per-channel statistics. `ChannelStatsGroupNorm` is an
                `nn.GroupNorm` (same parameters, same state-dict keys) that runs torch's own
                kernel when eager and, while torch.compile traces it, reduces each channel
                first and combines the channels of a group exactly (the pooled-variance
                identity), a reduction order that compiles well for channels-last
                activations. Equal to `F.group_norm` up to fp32 rounding.
                `use_channel_stats(model)` swaps the class of every plain `nn.GroupNorm`
                in place.
  upsample.py   Nearest 2x upsampling + 3x3 convolution computed on the small input:
                four 2x2 convolutions whose taps are the 3x3 taps that land on the same
                input pixel, summed, then interleaved. The same sum of products, with the
                taps added before the multiplication instead of after, so only rounding
                differs; 16 instead of 36 multiply-adds per input pixel and channel pair.

How they are switched on: the Infinity speed layer (`varbench.models.infinity.fast.accelerate`)
swaps them into the BSQ decoder; the diffusion baselines call `use_channel_stats` on the
networks they compile. The tests (tests/test_models_fast_*.py) check each piece against
the plain computation. Measured effects are in benchmarks/NOTES-*.md.
"""
