"""CIR-LVLM, the method under study: the LVLM as a user-intent-aware encoder (``model``), its
task prompts and chat templates (``chat``) and the learnable prompt pool that picks an
instance-specific soft prompt (``prompt_pool``). Importing this package registers ``cir_lvlm``.
"""

from harness.methods.cir_lvlm import model  # noqa: F401
