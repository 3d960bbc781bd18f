"""Benchmark harness: `make bench` (see benchmarks/run.py and docs/BENCHMARKS.md)."""
