"""Diffusion baselines registered as varbench method plugins."""
