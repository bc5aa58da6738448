"""lmpbench: simulation-based benchmarks of machine-learning force fields in LAMMPS."""

__version__ = "0.1.0"
