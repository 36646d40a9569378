"""The embedded benchmark's generator: scenes of shapes on a grid (``scene``), edit programs and
their captions (``programs``, ``phrasing``, ``captions``, ``caption_parser``), the query families
(``families``, ``reference_families``, version 3's mirror pairs in ``twins``, ``query``),
rendering (``render``), the learning-free scorers and ceilings (``additive``, ``oracle``,
``ceilings``), the adversarial additive scorer (``adversary``) and the caption-free structure of
groups (``structure``), and the writer of a benchmark in CIRR's layout (``generate``; version 2's
queries in ``generate_v2``, version 3's in ``generate_v3``).

Imports harness.core only.
"""
