"""Datasets: the data model (``triplet``: queries and splits; ``images``: the image store), a reader
per dataset in its official layout (``cirr``, ``fashioniq``, ``shoes``, ``circo``) declared in
one table (``datasets``, ``spec``), caption joining conventions (``caption_join``), `harness
data check` (``check``) and the embedded benchmark's generator (``synthetic/``).

Imports harness.core only.
"""
