"""What training optimises and how fast, shared by stage 0, the methods and the training loop:
the score every method ranks by and the in-batch contrastive loss (``losses``), and the
learning-rate schedule (``schedule``).

Imports harness.core only.
"""
