"""Force and energy errors of a deployed model on labelled frames (the benchmark's "forces"
column): each frame evaluated in LAMMPS through pair style mlff, compared with its labels.

MAE of forces over every component of every atom (meV/Å) and of the energy per atom
(meV/atom). Energies of a model and of a dataset can differ by a constant reference per
element; the raw energy MAE is reported as the paper does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmpbench.analysis.trajectory import TrajectoryError, open_trajectory


def force_energy_errors(model_file: str | Path, frames_file: str | Path, max_frames: int | None = None) -> dict:
    from ase import Atoms

    from lmpbench.deploy import lammps_evaluate, read_deployed_metadata

    type_names = read_deployed_metadata(model_file)["type_names"].split()
    force_abs, energy_abs, n = [], [], 0
    for frame in open_trajectory(frames_file, stop=max_frames):
        if "forces" not in frame.extra or "energy" not in frame.extra:
            raise TrajectoryError(f"{frames_file}: frame {frame.step} has no energy and forces labels")
        atoms = Atoms(symbols=frame.extra["symbols"], positions=frame.positions, cell=frame.cell, pbc=frame.pbc)
        result = lammps_evaluate(Path(model_file), atoms, type_names)
        # lammps_evaluate rotates the cell into LAMMPS's orientation; rotate its forces back,
        # since a per-component MAE is not rotation invariant
        rotation = np.linalg.solve(atoms.cell.array, result["atoms"].cell.array) if atoms.cell.rank == 3 else np.eye(3)
        force_abs.append(np.abs(result["forces"] @ rotation.T - frame.extra["forces"]).ravel())
        energy_abs.append(abs(result["energy"] - frame.extra["energy"]) / len(atoms))
        n += 1
    if n == 0:
        raise TrajectoryError(f"{frames_file}: no frame")
    return {"forces_mae_meV_A": 1000.0 * float(np.concatenate(force_abs).mean()),
            "energy_mae_meV_atom": 1000.0 * float(np.mean(energy_abs)), "frames": n}

