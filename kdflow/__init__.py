"""kdflow: a reproducible knowledge-distillation pipeline."""

__version__ = "0.1.0"
