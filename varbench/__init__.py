"""varbench: reproducible benchmark suite for subject-driven generation."""
__version__ = "0.1.0"
