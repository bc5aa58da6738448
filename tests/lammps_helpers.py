"""Shared by the tests and by ``mpi_eval.py`` (which runs under mpirun): decks and readback."""

from __future__ import annotations

import numpy as np

PRESSURE_KEYS = ["pxx", "pyy", "pzz", "pxy", "pxz", "pyz"]
NKTV2P_METAL = 1.6021765e6  # LAMMPS metal units: eV/Å^3 -> bar


def structure_lines(triclinic: bool = False, boundary: str = "p p p", cells: int = 4, lattice: float = 4.0,
                    ntypes: int = 2, jitter: float = 0.15, seed: int = 4928) -> list[str]:
    """An fcc box (cells^3 unit cells) of ``ntypes`` species with randomly displaced atoms.

    Atom IDs and type choices depend on the number of MPI ranks; write a data file on one
    rank (``data_file``) to compare runs on several.
    """
    lines = [
        f"boundary {boundary}",
        f"lattice fcc {lattice}",
        f"region box block 0 {cells} 0 {cells} 0 {cells}",
        f"create_box {ntypes} box",
        "create_atoms 1 box",
        *[f"mass {t} {20.0 + 10 * t}" for t in range(1, ntypes + 1)],
    ]
    if ntypes > 1:
        lines.append(f"set type 1 type/fraction 2 0.4 {seed}")
    lines.append(f"displace_atoms all random {jitter} {jitter} {jitter} {seed + 1} units box")
    if triclinic:
        length = cells * lattice
        lines.append(f"change_box all triclinic xy final {0.13 * length} xz final {-0.07 * length} "
                     f"yz final {0.11 * length} remap units box")
    return lines


def system_deck(pair_lines: str, structure: list[str] | None = None, **structure_options) -> str:
    """Units, structure (built, or ``read_data`` lines), pair lines and a precise thermo line."""
    structure = structure if structure is not None else structure_lines(**structure_options)
    return "\n".join(["units metal", "atom_modify map array", *structure, pair_lines,
                      "thermo_style custom step pe ke etotal " + " ".join(PRESSURE_KEYS),
                      "thermo_modify format float %.16g"])


def data_file(path, **structure_options) -> list[str]:
    """Write the structure to a LAMMPS data file on one rank; returns the lines that read it."""
    from lmpbench.engine import open_lammps

    lmp = open_lammps()
    lmp.commands_string("\n".join(["units metal", "atom_modify map array", *structure_lines(**structure_options),
                                   f"write_data {path}"]))
    lmp.close()
    return [f"read_data {path}"]


def nve_lines(steps: int, dt: float = 0.002, temp: float = 300.0, seed: int = 87287) -> str:
    return "\n".join([
        f"timestep {dt}",
        f"velocity all create {temp} {seed} loop geom",
        "fix integrate all nve",
        f"run {steps}",
    ])


def state(lmp) -> dict:
    """Energy, pressure tensor, per-atom energies and forces (ordered by atom ID) of ``lmp``."""
    natoms = lmp.get_natoms()
    lmp.command("compute lmpbench_pe_atom all pe/atom")
    lmp.command("run 0 post no")
    out = {
        "pe": lmp.get_thermo("pe"),
        "pressure": np.array([lmp.get_thermo(k) for k in PRESSURE_KEYS]),
        "volume": lmp.get_thermo("vol"),
        "forces": np.ctypeslib.as_array(lmp.gather_atoms("f", 1, 3)).reshape(natoms, 3).copy(),
        "positions": np.ctypeslib.as_array(lmp.gather_atoms("x", 1, 3)).reshape(natoms, 3).copy(),
        "types": np.ctypeslib.as_array(lmp.gather_atoms("type", 0, 1)).copy(),
        "pe_atom": np.ctypeslib.as_array(lmp.gather("c_lmpbench_pe_atom", 1, 1)).copy(),
    }
    boxlo, boxhi, xy, yz, xz, periodicity, _ = lmp.extract_box()
    lx, ly, lz = (hi - lo for hi, lo in zip(boxhi, boxlo))
    out["cell"] = np.array([[lx, 0, 0], [xy, ly, 0], [xz, yz, lz]])
    out["pbc"] = np.array(periodicity, dtype=bool)
    lmp.command("uncompute lmpbench_pe_atom")
    return out


def run_in_folder(folder, deck: str):
    """Run ``deck`` with an in-process LAMMPS whose working folder is ``folder`` (its dumps and
    files land there); returns the folder."""
    import os

    from lmpbench.engine import open_lammps

    cwd = os.getcwd()
    os.chdir(folder)
    try:
        lmp = open_lammps()
        lmp.commands_string(deck)
        lmp.close()
    finally:
        os.chdir(cwd)
    return folder
