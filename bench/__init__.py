"""Benchmarks (DESIGN.md §8): each `bench/bench_*.py` prints one JSON object; `make bench` runs them all.

Run one alone with `python -m bench.bench_regulation` (etc.); the runner is `python -m bench`.
"""
