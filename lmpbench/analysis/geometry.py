"""Geometric quantities of frames: dihedral angles and the bond-stability criterion.

``dihedral_deg``: the angle between planes (a, b, c) and (b, c, d), in degrees in
(-180, 180], with the IUPAC sign (ASE's ``get_dihedral`` gives the same angle in [0, 360)).

``BondStability`` (the benchmark's molecule criterion): bonds are the pairs within ASE's
``natural_cutoffs`` in the first frame; a frame is unstable when any bond deviates from its
reference length by more than ``max_deviation_A`` (0.5 Å). The reference lengths are given
(the paper averages them over the reference data) or taken from the first frame.
"""

from __future__ import annotations

import numpy as np

from lmpbench.analysis.trajectory import Frame


def dihedral_deg(positions: np.ndarray, quads: np.ndarray) -> np.ndarray:
    """Dihedrals of atom index quadruples ``quads`` [M, 4] (0-based), degrees."""
    p = positions[np.asarray(quads)]
    b0, b1, b2 = p[:, 0] - p[:, 1], p[:, 2] - p[:, 1], p[:, 3] - p[:, 2]
    b1n = b1 / np.linalg.norm(b1, axis=1, keepdims=True)
    v = b0 - (b0 * b1n).sum(1, keepdims=True) * b1n
    w = b2 - (b2 * b1n).sum(1, keepdims=True) * b1n
    x = (v * w).sum(1)
    y = (np.cross(b1n, v) * w).sum(1)
    return np.degrees(np.arctan2(y, x))


def bonds(symbols: list[str], positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bonded pairs [2, B] (i < j, pairs within ASE's natural_cutoffs) and their lengths (Å)."""
    from ase import Atoms
    from ase.neighborlist import natural_cutoffs, neighbor_list

    # a cell around the molecule: ASE's neighbour list misses pairs in a zero cell
    extent = np.ptp(positions, axis=0).max() + 20.0
    atoms = Atoms(symbols=symbols, positions=positions - positions.min(0) + 10.0, cell=np.eye(3) * extent, pbc=False)
    i, j, d = neighbor_list("ijd", atoms, natural_cutoffs(atoms))
    keep = i < j
    return np.stack([i[keep], j[keep]]), d[keep]


def bond_lengths(positions: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Lengths (Å) of the bonds ``pairs`` [2, B] (no periodic images: molecules)."""
    return np.linalg.norm(positions[pairs[1]] - positions[pairs[0]], axis=1)


class BondStability:
    """Bonds and their reference lengths are given or taken from the first frame seen."""

    def __init__(self, symbols: list[str], max_deviation_A: float = 0.5, reference_lengths: np.ndarray | None = None,
                 pairs: np.ndarray | None = None):
        self.symbols, self.max_deviation_A = symbols, max_deviation_A
        self.reference_lengths = reference_lengths
        self.pairs = pairs
        self.first_unstable_step: int | None = None
        self.frames = 0

    def accumulate(self, frame: Frame) -> "BondStability":
        if self.pairs is None:
            self.pairs, _ = bonds(self.symbols, frame.positions)
        lengths = bond_lengths(frame.positions, self.pairs)
        if self.reference_lengths is None:
            self.reference_lengths = lengths
        if self.first_unstable_step is None and np.any(np.abs(lengths - self.reference_lengths) > self.max_deviation_A):
            self.first_unstable_step = frame.step
        self.frames += 1
        return self
