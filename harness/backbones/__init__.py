"""The networks methods are built from: vision towers (``vision``; a frozen tower's outputs cached
by image in ``feature_table``), causal language models and
LoRA (``language``), the CLIP / SigLIP dual encoder (``dual_encoder``), BLIP-2's Q-Former
(``qformer``), the LVLM connector (``connector``), tokenizers (``tokenization``), each from a
``tiny`` transformers config or a local ``pretrained`` directory (``loading``, ``params``).

Imports harness.core only: where a tiny backbone's weights come from (stage 0) is the method's
question, not the backbone's.
"""
