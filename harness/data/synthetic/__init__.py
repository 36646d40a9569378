"""The embedded benchmark's generator: scenes of shapes on a grid (``scene``), edit programs and
their captions (``programs``, ``phrasing``, ``captions``, ``caption_parser``), the query families
(``families``, ``reference_families``, ``query``), rendering (``render``), the learning-free
scorers and ceilings (``additive``, ``oracle``, ``ceilings``) and the writer of a benchmark in
CIRR's layout (``generate``, version 2's queries in ``generate_v2``).

Imports harness.core only.
"""
