"""Backbones of the LVLM methods: a vision tower and a causal language model, each from a
``tiny`` transformers config (random init, warm-started by stage 0) or from a local
``pretrained`` directory, plus LoRA on the language model."""
