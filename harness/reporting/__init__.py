"""Reports built from results files only, never from a model: the report of an experiment folder
(``build``), its tables and sections (``report``, ``sections``, ``intent_sections``,
``tables``), figures (``plots``), the per-query data they read (``data``) and the statistics
(``stats``: bootstrap intervals, paired tests, Holm, MDE).

Imports harness.core and the torch-free part of harness.evaluation (``protocol``, ``results``,
``intent``'s constants); a test checks that `harness report` loads neither torch nor the
training stack.
"""
