"""Methods cir-harness compares CIR-LVLM with; importing this package registers them."""

from baselines import reference  # noqa: F401  (registers image_only, text_only, sum)
