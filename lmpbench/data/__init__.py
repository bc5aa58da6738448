"""Data shipped with lmpbench: starting structures of the benchmark systems (see systems.py)."""
