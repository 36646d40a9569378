"""Experiments end to end: the experiment file's schema and its expansion into runs (``config``),
one run built, trained, evaluated and recorded (``executor``, ``recording``), the runs of an
experiment in order or in parallel workers (``runner``, ``parallel``), optuna sweeps
(``sweep``), the mlflow mirror (``tracking``) and a finished run's folder read back or
evaluated on another split (``finished_run``).

May import every folder below it (core, data, objectives, backbones, pretraining, methods,
training, evaluation, reporting); only harness.measure and the CLI import it.
"""
