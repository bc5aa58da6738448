"""Structures into LAMMPS: orientation, boxes for molecules, data files (through ASE)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms


def lammps_oriented(atoms: Atoms, vacuum: float = 10.0) -> Atoms:
    """A copy of ``atoms`` that LAMMPS stores as is: a lower-triangular cell with positive
    diagonal (a along x, b in the xy plane), positions rotated with it. A structure without
    a cell (a molecule) gets an orthorhombic box with ``vacuum`` Å around it.
    """
    atoms = atoms.copy()
    if atoms.cell.rank < 3:
        atoms.center(vacuum=vacuum)
    lower, _ = atoms.cell.standard_form()
    atoms.set_cell(lower, scale_atoms=True)  # a rotation: fractional coordinates are kept
    return atoms


def boundary(atoms: Atoms) -> str:
    """LAMMPS ``boundary`` for the periodicity of ``atoms``: shrink-wrapped with the given box
    as minimum where not periodic ("m"), so a planar molecule keeps a box of finite height."""
    return " ".join("p" if periodic else "m" for periodic in atoms.pbc)


def write_lammps_data(path: str | Path, atoms: Atoms, elements: list[str]) -> Path:
    """Write ``atoms`` (already ``lammps_oriented``) as an atomic-style data file whose atom
    type k is ``elements[k - 1]``; atom IDs follow the order of ``atoms``."""
    from ase.io.lammpsdata import write_lammps_data as ase_write

    missing = sorted(set(atoms.get_chemical_symbols()) - set(elements))
    if missing:
        raise ValueError(f"structure has element(s) {', '.join(missing)} that are not in {' '.join(elements)}")
    if not np.allclose(atoms.cell.array, np.tril(atoms.cell.array)):
        raise ValueError("cell is not lower triangular: pass the structure through lammps_oriented() first")
    import io

    from lmpbench.files import write_atomic

    text = io.StringIO()
    ase_write(text, atoms, specorder=list(elements), masses=True, units="metal", atom_style="atomic", force_skew=True)
    return write_atomic(path, text.getvalue())


def copy_data_file(source: str | Path, path: str | Path) -> Path:
    """Copy a LAMMPS data file for a metal-units run, its header line (a comment LAMMPS
    ignores, which ``write_data`` fills with the writer's units) replaced by one that says so:
    positions in Å and masses in g/mol read the same in real and metal units."""
    source, path = Path(source), Path(path)
    lines = source.read_text().splitlines(keepends=True)
    header = f"LAMMPS data file {source.name}, read by lmpbench in metal units (Å, g/mol)\n"
    from lmpbench.files import write_atomic

    return write_atomic(path, header + "".join(lines[1:]))

