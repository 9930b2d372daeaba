"""varbench: reproducible benchmark suite for subject-driven generation.

`score_images` and `run_protocol` are the Python API (varbench.api); they import their
heavy modules only when called, so `import varbench` stays light.
"""
from varbench.api import run_protocol, score_images

__version__ = "0.1.0"
__all__ = ["run_protocol", "score_images"]
