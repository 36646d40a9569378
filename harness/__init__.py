"""cir-harness: a benchmark and ablation harness for Composed Image Retrieval (CIR)."""

__version__ = "0.1.0"
