"""Methods that live inside varbench itself (the baselines live in the `baselines` package).

  arbooth/   ARBooth (Chung et al., ICCV 2025, arXiv 2504.02612): subject-driven fine-tuning
             of the visual autoregressive Infinity-2B, registered as method "arbooth".

Every method is a `varbench.method.Method` registered through the `varbench.methods`
entry-point group (pyproject.toml), exactly as a third-party plugin would be.
"""
