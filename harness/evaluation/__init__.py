"""Evaluation and what it stores: the published protocols and the metric catalogue
(``protocol``, no torch), the metric functions and metrics from ranks (``metrics``), the ranking
engine over a gallery in blocks (``ranking``) and exact top-K (``retrieval``), the shared
evaluation loop that encodes gallery and queries (``evaluate``), gallery embeddings kept across
runs (``embedding_cache``) or on disk during one (``embedding_file``), the embedded benchmark's
intent measures and query groups (``intent``), the result.json schema and rankings files
(``results``), re-scoring saved rankings without a model (``saved_rankings``), test-server
submission files (``submission``) and query subsets an evaluation can be restricted to
(``subsets``, no torch).

Imports harness.core, harness.data, harness.objectives and the method interface
(harness.methods); ``protocol`` and ``results`` import no torch, so reports read them alone.
"""
