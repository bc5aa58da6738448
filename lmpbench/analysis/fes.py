"""Free-energy surfaces from COLVARS metadynamics and their 1-D PMFs (alanine dipeptide).

COLVARS writes the well-tempered metadynamics estimate of F(phi, psi) on the colvars' grid
(``<output>.pmf``; lmpbench sets 60 x 60 bins over [-180, 180) degrees). The benchmark
marginalises it: p(phi) = sum_psi exp(-F / kBT), PMF(phi) = -kBT ln p(phi), shifted to a zero
minimum, with kBT = 2.49 kJ/mol; error = mae(PMF, PMF_ref, 6.28) in kJ/mol rad.
Energies in the file are LAMMPS energy units (eV in metal units); results are in kJ/mol.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
