"""The shared training loop every method goes through (``loop``: batches, autocast, schedule,
checkpoints after every epoch, resume), its micro-batching with exact in-batch negatives
(``grad_cache``), what a checkpoint holds and how it is read back (``checkpoint``), gradient
checkpointing and activation-memory accounting (``activation_memory``) and the per-step log a
tracker forwards to mlflow (``step_log``), and what feeds a run's frozen vision towers from their
feature table (``frozen_features``).

Imports harness.core, harness.data, harness.objectives, harness.backbones (the vision tower and
its feature table) and the method interface (harness.methods); it knows no method by name.
"""
