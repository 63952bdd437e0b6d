"""Benchmarks: task suite, baselines and measurement scripts (not part of the distribution)."""
