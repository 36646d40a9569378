"""Measurements of the harness itself, not of a method's accuracy: speed, latency and memory of
every method on this machine (``bench``: `harness bench`) and the memory one training step of an
experiment's runs needs per GPU (``memory_estimate``: `harness plan`).

Imports any folder below it; only the CLI imports it.
"""
