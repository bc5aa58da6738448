"""Benchmark metrics from trajectories: readers that stream frames, and small compute objects
that accumulate per frame and normalise once (``docs/benchmark.md`` has the formulas)."""
