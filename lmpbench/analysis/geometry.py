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


BOND_MULTIPLIER = 1.2  # topology: pairs within 1.2 x (r_cov_i + r_cov_j) in the first frame are bonded
BREAK_MULTIPLIER = 1.5  # a bond breaks beyond 1.5 x (r_cov_i + r_cov_j)
FORM_MULTIPLIER = 1.0  # a new bond forms within 1.0 x (r_cov_i + r_cov_j) (hysteresis against 1.2)
FLOOR_FRACTION = 0.6  # close contact: closer than 0.6 x the shortest distance of that element pair in the first frame
FLOOR_SEARCH_A = 4.0  # element pairs with no pair this close in the first frame: 0.6 x (r_cov_i + r_cov_j)


class StructuralStability:
    """lmpbench's structural criterion (a labelled addition; the paper's criteria are
    ``BondStability`` and the RDF windows): the first frame where the structure breaks.

    The topology is the first frame's: pairs within ``BOND_MULTIPLIER`` x the sum of their
    covalent radii (ASE's ``covalent_radii``), minimum image in periodic cells, so molecules
    inside a liquid (water) count as molecules. A later frame is broken when
    - a bond is longer than ``BREAK_MULTIPLIER`` x (r_i + r_j) (a molecule breaks), or
    - a pair that was not bonded comes within ``FORM_MULTIPLIER`` x (r_i + r_j) (a bond forms:
      e.g. a hydrogen moved to another oxygen), or
    - any pair comes closer than its element pair's floor: ``FLOOR_FRACTION`` x the shortest
      distance of that element pair in the first frame (within ``FLOOR_SEARCH_A``; else
      ``FLOOR_FRACTION`` x (r_i + r_j)).
    ``first_broken_step`` and ``reason`` say where and why; frames after it are still counted.
    ``elements`` names atom types 1, 2, ...; the atoms' symbols come from the first frame.
    ``fixed_bonds`` False (metals, ion conductors: neighbours change all the time) checks the
    close contacts only.
    """

    def __init__(self, elements: list[str], fixed_bonds: bool = True):
        self.elements = list(elements)
        self.fixed_bonds = fixed_bonds
        self.symbols: list[str] = []
        self.radii = np.zeros(0)
        self.bonds: np.ndarray | None = None  # [2, B], i < j
        self.floors: dict[tuple[str, str], float] = {}
        self.first_broken_step: int | None = None
        self.reason: str | None = None
        self.frames = 0
        self.intact_frames = 0  # frames before the first broken one

    def _pairs(self, frame: Frame, cutoff: float):
        from ase.neighborlist import primitive_neighbor_list

        i, j, d = primitive_neighbor_list("ijd", frame.pbc, frame.cell if any(frame.pbc) else np.eye(3),
                                          frame.positions - frame.origin, cutoff, self_interaction=False)
        keep = i < j
        return i[keep], j[keep], d[keep]

    def _element_pair(self, i: int, j: int) -> tuple[str, str]:
        return tuple(sorted((self.symbols[i], self.symbols[j])))

    def _start(self, frame: Frame) -> None:
        from ase.data import atomic_numbers, covalent_radii

        self.symbols = [self.elements[t - 1] for t in frame.types]
        self.radii = np.array([covalent_radii[atomic_numbers[s]] for s in self.symbols])
        cutoff = max(FLOOR_SEARCH_A, BOND_MULTIPLIER * 2 * self.radii.max())
        i, j, d = self._pairs(frame, cutoff)
        bonded = (d < BOND_MULTIPLIER * (self.radii[i] + self.radii[j])) & self.fixed_bonds
        self.bonds = np.unique(np.stack([i[bonded], j[bonded]]), axis=1) if bonded.any() else np.zeros((2, 0), int)
        shortest: dict[tuple[str, str], float] = {}
        for a, b, dist in zip(i.tolist(), j.tolist(), d.tolist()):
            key = self._element_pair(a, b)
            if dist < FLOOR_SEARCH_A:
                shortest[key] = min(shortest.get(key, np.inf), dist)
        from ase.data import atomic_numbers, covalent_radii

        elements = sorted(set(self.symbols))
        for x, a in enumerate(elements):
            for b in elements[x:]:
                fallback = covalent_radii[atomic_numbers[a]] + covalent_radii[atomic_numbers[b]]
                self.floors[(a, b)] = FLOOR_FRACTION * shortest.get((a, b), fallback)

    def accumulate(self, frame: Frame) -> "StructuralStability":
        if self.bonds is None:
            self._start(frame)
        elif self.first_broken_step is None:
            reason = self._broken(frame)
            if reason:
                self.first_broken_step, self.reason = frame.step, reason
        if self.first_broken_step is None:
            self.intact_frames += 1
        self.frames += 1
        return self

    def record(self, frame_dt_ps: float) -> dict:
        """The metric: time before the first broken frame (ps), with where and why."""
        floor = f"a pair comes closer than {FLOOR_FRACTION} x its element pair's shortest distance in the first frame"
        definition = (f"time before the first saved frame where a bond of the first frame exceeds {BREAK_MULTIPLIER} x "
                      f"(r_cov_i + r_cov_j), a new pair comes within {FORM_MULTIPLIER} x (r_cov_i + r_cov_j), or {floor}"
                      if self.fixed_bonds else f"time before the first saved frame where {floor} (no fixed bonds)")
        return {"value": max(self.intact_frames - 1, 0) * frame_dt_ps, "unit": "ps",
                "label": "lmpbench's structural criterion (an addition beside the paper's)",
                "definition": definition,
                "first_broken_step": self.first_broken_step, "reason": self.reason, "frames_read": self.frames,
                "floors_A": {f"{a}-{b}": round(v, 4) for (a, b), v in self.floors.items()}}

    def _broken(self, frame: Frame) -> str | None:
        """Why ``frame`` is broken (close contacts first, the most severe), or None."""
        from ase.geometry import find_mic

        ids = frame.ids
        cutoff = max(max(self.floors.values()), FORM_MULTIPLIER * 2 * self.radii.max())
        i, j, d = self._pairs(frame, cutoff)
        floors = np.array([self.floors[self._element_pair(a, b)] for a, b in zip(i.tolist(), j.tolist())])
        close = np.flatnonzero(d < floors) if len(d) else np.zeros(0, int)
        if len(close):
            k = close[np.argmin(d[close] / floors[close])]
            a, b = i[k], j[k]
            return (f"close contact {self.symbols[a]}{ids[a]}-{self.symbols[b]}{ids[b]}: {d[k]:.3f} Å < floor "
                    f"{floors[k]:.3f} Å")
        if self.bonds.shape[1]:
            vectors = frame.positions[self.bonds[1]] - frame.positions[self.bonds[0]]
            lengths = find_mic(vectors, frame.cell, frame.pbc)[1] if any(frame.pbc) else np.linalg.norm(vectors, axis=1)
            limit = BREAK_MULTIPLIER * (self.radii[self.bonds[0]] + self.radii[self.bonds[1]])
            over = np.flatnonzero(lengths > limit)
            if len(over):
                k = over[np.argmax(lengths[over] / limit[over])]
                a, b = self.bonds[:, k]
                return (f"bond {self.symbols[a]}{ids[a]}-{self.symbols[b]}{ids[b]} broke: {lengths[k]:.3f} Å > "
                        f"{limit[k]:.3f} Å")
        forming = d < FORM_MULTIPLIER * (self.radii[i] + self.radii[j])
        if self.fixed_bonds and forming.any():
            bonded = set(zip(self.bonds[0].tolist(), self.bonds[1].tolist()))
            for a, b, dist in zip(i[forming].tolist(), j[forming].tolist(), d[forming].tolist()):
                if (a, b) not in bonded:
                    return f"new bond {self.symbols[a]}{ids[a]}-{self.symbols[b]}{ids[b]} formed: {dist:.3f} Å"
        return None
