"""Methods cir-harness compares CIR-LVLM with; importing this package registers them."""

from baselines import clip4cir, pic2word, reference, searle  # noqa: F401  (registers the methods)
