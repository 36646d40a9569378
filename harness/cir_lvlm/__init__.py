"""CIR-LVLM, the method under study; importing this package registers ``cir_lvlm``."""

from harness.cir_lvlm import model  # noqa: F401
