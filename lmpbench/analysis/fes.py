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
    phi_deg: np.ndarray  # [n] grid points (bin centres for COLVARS and histograms, -180 + 6k for PLUMED)
    psi_deg: np.ndarray  # [m]
    free_energy_kJ_mol: np.ndarray  # [n, m]
    source: str = ""  # where it came from, for the record
    convention: str = "free_energy"  # plumed.FES_CONVENTIONS: what the surface estimates

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
        return cls(phi, psi, values * energy_to_kJ_mol, source=f"COLVARS {path}")

    def scaled(self, factor: float, convention: str, why: str) -> "FreeEnergySurface":
        """The surface times ``factor`` (zero minimum kept), as another convention."""
        f = self.free_energy_kJ_mol - self.free_energy_kJ_mol.min()
        return FreeEnergySurface(self.phi_deg, self.psi_deg, f * factor, f"{self.source}, {why}", convention)

    def same_grid(self, other: "FreeEnergySurface") -> bool:
        return (self.free_energy_kJ_mol.shape == other.free_energy_kJ_mol.shape
                and np.allclose(self.phi_deg, other.phi_deg, atol=1e-6) and np.allclose(self.psi_deg, other.psi_deg, atol=1e-6))

    def on_grid(self, phi_deg: np.ndarray, psi_deg: np.ndarray) -> "FreeEnergySurface":
        """The surface at other grid points, by periodic bilinear interpolation (period 360 degrees),
        e.g. PLUMED's grid points (-180 + 6k) onto bin centres (-177 + 6k)."""
        def weights(points, grid):
            # index of the grid point at or below each point (periodically) and the fraction past it
            step = 360.0 / len(grid)
            offset = (np.asarray(points) - grid[0]) % 360.0 / step
            below = np.floor(offset).astype(int) % len(grid)
            return below, (below + 1) % len(grid), offset - np.floor(offset)

        for grid in (self.phi_deg, self.psi_deg):
            if not np.allclose(np.diff(grid), 360.0 / len(grid), atol=1e-6):
                raise ValueError("interpolation needs a periodic grid evenly spaced over 360 degrees")
        i0, i1, a = weights(phi_deg, self.phi_deg)
        j0, j1, b = weights(psi_deg, self.psi_deg)
        f = self.free_energy_kJ_mol
        a, b = a[:, None], b[None, :]
        values = ((1 - a) * (1 - b) * f[np.ix_(i0, j0)] + a * (1 - b) * f[np.ix_(i1, j0)]
                  + (1 - a) * b * f[np.ix_(i0, j1)] + a * b * f[np.ix_(i1, j1)])
        return FreeEnergySurface(np.asarray(phi_deg, float), np.asarray(psi_deg, float), values,
                                 f"{self.source}, interpolated onto another grid", self.convention)

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
        return self.accumulate_angles(np.atleast_1d(phi), np.atleast_1d(psi))

    def accumulate_angles(self, phi_deg: np.ndarray, psi_deg: np.ndarray) -> "Ramachandran":
        """Samples given as angles (degrees), e.g. a PLUMED COLVAR's."""
        # angles in (-180, 180]: +180 is the same angle as -180, the first bin
        i, j = ((np.array([phi_deg, psi_deg], float) + 180.0) % 360.0 / (360.0 / len(self.counts))).astype(int)
        np.add.at(self.counts, (i, j), 1)
        self.frames += len(i)
        return self

    @property
    def empty_bins(self) -> int:
        return int((self.counts == 0).sum())

    def surface(self, kbt: float = KBT_KJ_MOL) -> FreeEnergySurface:
        if self.frames == 0:
            raise RuntimeError("Ramachandran has seen no frame: call accumulate() first")
        centres = 0.5 * (self.edges[1:] + self.edges[:-1])
        free_energy = -kbt * np.log(np.maximum(self.counts, 1) / self.frames)
        return FreeEnergySurface(centres, centres.copy(), free_energy - free_energy.min(),
                                 f"histogram of {self.frames} samples ({self.empty_bins} empty bins at one count)")
