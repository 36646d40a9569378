"""Reports built from results files only, never from a model: the report of an experiment folder
(``build``), its tables and sections (``report``, ``sections``, ``intent_sections``,
``tables``), the regime gate printed before any comparison (``gate``: can these runs test a claim
about how the caption is read at all?), figures (``plots``), the per-query data they read
(``data``), the statistics (``stats``: bootstrap intervals, paired tests, Holm, MDE; ``seed_level``:
t-tests with seeds as the unit, Holm-adjusted MDE, TOST) and the experiment's pre-registered
analysis (``analysis``: its contrasts and their verdicts), the claims table of a reports folder
generated from those analyses (``verdicts``), Figure 5 against uniform attention
(``attention``), whether the prompt pool is instance-specific (``specificity``), and the
composition gap (``composition``: the queries one modality already solves, and each run on the
rest).

Imports harness.core and the torch-free part of harness.evaluation (``protocol``, ``results``,
``intent``'s constants); a test checks that `harness report` loads neither torch nor the
training stack.
"""
