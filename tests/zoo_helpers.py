"""Shared by the model-zoo tests (tests/test_zoo_*.py): LAMMPS through pair style mlff on 1 or
K ranks against an architecture's own ASE calculator, and NVE against ASE's velocity Verlet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms, units
from conftest import run_mpi
from lammps_helpers import NKTV2P_METAL, system_deck

from lmpbench.structures import lammps_oriented, write_lammps_data

VOIGT_FROM_LAMMPS = [0, 1, 2, 5, 4, 3]  # lammps_helpers' pxx pyy pzz pxy pxz pyz -> ASE's xx yy zz yz xz xy


def alloy(elements, cells: int = 3, a: float = 3.8, triclinic: bool = True, seed: int = 3, lattice: str = "fcc"):
    """A rattled crystal of ``elements`` in LAMMPS orientation, sheared when ``triclinic``."""
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", lattice, a=a, cubic=True).repeat((cells, cells, cells))
    atoms.symbols[:] = rng.choice(list(elements), size=len(atoms))
    if triclinic:
        atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0.08, -0.05], [0, 0.98, 0.07], [0, 0, 1.02]]), scale_atoms=True)
    atoms.rattle(0.06, seed=seed)
    return lammps_oriented(atoms)


def lammps_state(model_file: Path, atoms: Atoms, elements: list[str], nprocs: int, tmp_path: Path) -> dict:
    """Energy, forces (in the order of ``atoms``) and stress (eV/Å³, ASE's Voigt order) in LAMMPS on ``nprocs`` ranks."""
    data = write_lammps_data(tmp_path / f"zoo_{nprocs}.data", atoms, elements)
    deck = system_deck(f"pair_style mlff\npair_coeff * * {model_file} {' '.join(elements)}", structure=[f"read_data {data}"])
    state = run_mpi(deck, nprocs, tmp_path)
    return {"energy": float(state["pe"]), "forces": state["forces"],
            "stress": -np.asarray(state["pressure"])[VOIGT_FROM_LAMMPS] / NKTV2P_METAL}


def calculator_state(atoms: Atoms, calc) -> dict:
    atoms = atoms.copy()
    atoms.calc = calc
    return {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(), "stress": atoms.get_stress(voigt=True)}


def max_differences(a: dict, b: dict) -> dict:
    return {key: float(np.abs(np.asarray(a[key]) - np.asarray(b[key])).max()) for key in ("energy", "forces", "stress")}


def nve_against_ase(model_file: Path, atoms: Atoms, elements: list[str], calc, steps: int = 100, dt_fs: float = 1.0,
                    seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Unwrapped LAMMPS positions and ASE velocity-Verlet positions after ``steps`` from the same state."""
    import tempfile

    from ase.md.verlet import VelocityVerlet

    from lmpbench.engine import open_lammps

    rng = np.random.default_rng(seed)
    velocities_A_ps = rng.normal(0, 3.0, (len(atoms), 3))
    velocities_A_ps -= velocities_A_ps.mean(0)
    with tempfile.TemporaryDirectory() as tmp:
        data = write_lammps_data(Path(tmp) / "start.data", atoms, elements)
        lmp = open_lammps()
        try:
            lmp.commands_string("\n".join(["units metal", "atom_modify map array", f"read_data {data}", "pair_style mlff",
                                           f"pair_coeff * * {model_file} {' '.join(elements)}",
                                           f"timestep {dt_fs / 1000}", "fix nve all nve"]))
            v = (lmp.gather_atoms("v", 1, 3)._type_ * (3 * len(atoms)))(*velocities_A_ps.ravel())
            lmp.scatter_atoms("v", 1, 3, v)
            lmp.command(f"run {steps}")
            x = np.ctypeslib.as_array(lmp.gather_atoms("x", 1, 3)).reshape(-1, 3).copy()
            image = np.ctypeslib.as_array(lmp.gather_atoms("image", 0, 1)).copy()
        finally:
            lmp.close()
    flags = np.stack([(image & 1023) - 512, ((image >> 10) & 1023) - 512, (image >> 20) - 512], axis=1)
    x_lammps = x + flags @ atoms.cell.array
    ase_atoms = atoms.copy()
    ase_atoms.calc = calc
    ase_atoms.set_velocities(velocities_A_ps / (1000 * units.fs))
    VelocityVerlet(ase_atoms, timestep=dt_fs * units.fs).run(steps)
    return x_lammps, ase_atoms.positions.copy()
