"""LAMMPS input deck templates, shipped as package data (``lmpbench.lammps_inputs``); plain
LAMMPS syntax driven by ``-var`` variables, so each can also be run by hand."""
