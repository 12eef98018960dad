"""Benchmarks of the aurora package (``python benchmarks/adapter_cost.py``); chapter ``book/cost.md``."""
