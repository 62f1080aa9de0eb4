"""Evaluation and benchmarks: datasets, metrics, `sourcebook eval` and `sourcebook bench`."""
