"""Free-energy surfaces from COLVARS metadynamics and their 1-D PMFs (alanine dipeptide).

COLVARS writes the well-tempered metadynamics estimate of F(phi, psi) on the colvars' grid
(``<output>.pmf``; lmpbench sets 60 x 60 bins over [-180, 180) degrees). The benchmark
marginalises it: p(phi) = sum_psi exp(-F / kBT), PMF(phi) = -kBT ln p(phi), shifted to a zero
minimum, with kBT = 2.49 kJ/mol; error = mae(PMF, PMF_ref, 6.28) in kJ/mol rad.
Energies in the file are LAMMPS energy units (eV in metal units); results are in kJ/mol.

``Ramachandran`` streams frames into the phi/psi histogram on the same 60 x 60 grid; from
unbiased samples (plain MD, a reference dataset) its surface is F = -kBT ln p. A bin no
sample reached gets the free energy of a single count (the histogram's detection limit), so
PMFs stay finite and comparable; ``empty_bins`` says how many there were.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmpbench.analysis.geometry import dihedral_deg
from lmpbench.analysis.trajectory import Frame

EV_TO_KJ_MOL = 96.48533212
KBT_KJ_MOL = 2.49  # the benchmark's value (300 K)


@dataclass
class FreeEnergySurface:
    phi_deg: np.ndarray  # [n] bin centres
    psi_deg: np.ndarray  # [m]
    free_energy_kJ_mol: np.ndarray  # [n, m]

    @classmethod
    def from_colvars_pmf(cls, path: str | Path, energy_to_kJ_mol: float = EV_TO_KJ_MOL) -> "FreeEnergySurface":
        path = Path(path)
        try:
            lines = path.read_text().splitlines()
            if lines[0].split()[:2] != ["#", "2"]:
                raise ValueError("not a two-dimensional COLVARS grid")
            (lo1, w1, n1), (lo2, w2, n2) = [(float(v[1]), float(v[2]), int(v[3])) for v in (lines[1].split(), lines[2].split())]
            data = np.array([ln.split() for ln in lines[3:] if ln.strip() and not ln.startswith("#")], dtype=float)
            values = data[:, 2].reshape(n1, n2)
        except (OSError, IndexError, ValueError) as err:
            raise ValueError(f"cannot read COLVARS free-energy grid {path}: {err}") from None
        phi = lo1 + w1 * (np.arange(n1) + 0.5)
        psi = lo2 + w2 * (np.arange(n2) + 0.5)
        return cls(phi, psi, values * energy_to_kJ_mol)

    def pmf(self, axis: str, kbt: float = KBT_KJ_MOL) -> np.ndarray:
        """1-D PMF along ``"phi"`` or ``"psi"`` (kJ/mol, zero minimum)."""
        f = self.free_energy_kJ_mol - self.free_energy_kJ_mol.min()
        p = np.exp(-f / kbt).sum(axis=1 if axis == "phi" else 0)
        pmf = -kbt * np.log(p)
        return pmf - pmf.min()


class Ramachandran:
    """phi/psi histogram over [-180, 180) degrees of the dihedrals ``phi`` and ``psi`` (0-based atom
    index quadruples)."""

    def __init__(self, phi: tuple[int, int, int, int], psi: tuple[int, int, int, int], bins: int = 60):
        self.quads = np.array([phi, psi])
        self.edges = np.linspace(-180.0, 180.0, bins + 1)
        self.counts = np.zeros((bins, bins), dtype=np.int64)
        self.frames = 0

    def accumulate(self, frame: Frame) -> "Ramachandran":
        phi, psi = dihedral_deg(frame.positions, self.quads)
        # dihedral_deg gives (-180, 180]: +180 is the same angle as -180, the first bin
        i, j = ((np.array([phi, psi]) + 180.0) % 360.0 / (360.0 / len(self.counts))).astype(int)
        self.counts[i, j] += 1
        self.frames += 1
        return self

    @property
    def empty_bins(self) -> int:
        return int((self.counts == 0).sum())

    def surface(self, kbt: float = KBT_KJ_MOL) -> FreeEnergySurface:
        if self.frames == 0:
            raise RuntimeError("Ramachandran has seen no frame: call accumulate() first")
        centres = 0.5 * (self.edges[1:] + self.edges[:-1])
        free_energy = -kbt * np.log(np.maximum(self.counts, 1) / self.frames)
        return FreeEnergySurface(centres, centres.copy(), free_energy - free_energy.min())
