"""Benchmarks: `python -m benchmarks` runs every `*_bench.py` module (see __main__)."""
