"""Methods cir-harness compares CIR-LVLM with; importing this package registers them."""

from baselines import clip4cir, lower_bounds, pic2word, searle, sprc  # noqa: F401  (registers the methods)
