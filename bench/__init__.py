"""Benchmarks that print ratios against named baselines (run from the repo root: ``python -m bench.NAME``)."""
