"""Stage 0: the cached warm starts the tiny backbones begin from, the embedded benchmark's
stand-in for a public pretrained model. ``stage0`` trains a tiny CLIP, then connector and LM
(describing images), then instruction tuning (``instruction_tuning``); ``blip2_stage1``
pre-trains SPRC's Q-Former as BLIP-2's first stage does; ``warm_start`` is what a method asks
for (one object per cached checkpoint: built?, build, summarise); ``perception`` is the linear
probe of what a representation sees of the scenes (stage 0 records it, the evaluation runs it on
what each method's fusion reads) and the dense labels stage 0 can supervise its tower with.

Imports harness.core, harness.data, harness.objectives and harness.backbones; methods import it,
never the reverse.
"""
