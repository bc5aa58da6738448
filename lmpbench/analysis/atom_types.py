"""Which element each LAMMPS atom type is, and its mass: from a list, a data file or a dump.

A LAMMPS dump knows atom types (1, 2, ...), not elements; the analysis needs elements (to
pick O-O pairs, the diffusing species) and masses (the centre of mass of an MSD). Sources,
each giving ``TypeMap``:

- ``from_elements(["O", "H"])``: type k is the k-th element; masses from ASE's table.
- ``from_data_file(path)``: a LAMMPS data file's ``Masses`` section; the element of a type is
  the comment after its mass when that is an element symbol (``1 15.9994 # O``, as
  ``write_data`` and most builders write it), else the element whose standard atomic mass is
  within ``MASS_MATCH`` u of it, when exactly one is.
- ``from_element_column(frame)``: a dump with an ``element`` column; masses from ASE's table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MASS_MATCH = 0.1  # u: a data-file mass names an element when exactly one standard mass is this close


class TypeMapError(ValueError):
    """Elements or masses of the atom types cannot be known; the message says what to give."""


@dataclass(frozen=True)
class TypeMap:
    elements: tuple[str, ...]  # element of type 1, 2, ...
    masses: dict[int, float]  # u, by type
    source: str  # where they came from, for the record

    def type_of(self, element: str) -> int:
        if element not in self.elements:
            raise TypeMapError(f"the trajectory has no {element} atoms (its types are {' '.join(self.elements)})")
        return self.elements.index(element) + 1

    def record(self) -> dict:
        return {"elements": list(self.elements), "masses": {str(t): m for t, m in self.masses.items()},
                "source": self.source}


def _standard_mass(symbol: str) -> float:
    from ase.data import atomic_masses, atomic_numbers

    return float(atomic_masses[atomic_numbers[symbol]])


def _check_symbols(symbols, where: str) -> None:
    from ase.data import atomic_numbers

    unknown = [s for s in symbols if s not in atomic_numbers or s == "X"]
    if unknown:
        raise TypeMapError(f"{where}: {', '.join(unknown)} is not an element symbol")


def from_elements(elements, masses: dict[int, float] | None = None, source: str = "--elements") -> TypeMap:
    elements = tuple(elements)
    _check_symbols(elements, source)
    masses = masses or {k + 1: _standard_mass(e) for k, e in enumerate(elements)}
    return TypeMap(elements, masses, source)


def from_data_file(path: str | Path, elements=None) -> TypeMap:
    """Masses (and, unless ``elements`` is given, elements) of a LAMMPS data file."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise TypeMapError(f"cannot read data file {path}: {getattr(err, 'strerror', None) or err}") from None
    ntypes = next((int(m.group(1)) for line in lines[:60] if (m := re.match(r"\s*(\d+)\s+atom\s+types", line))), None)
    if ntypes is None:
        raise TypeMapError(f"{path}: not a LAMMPS data file (no 'N atom types' line in its header)")
    start = next((k for k, line in enumerate(lines) if line.split("#")[0].strip() == "Masses"), None)
    if start is None:
        raise TypeMapError(f"{path}: has no Masses section; give the elements with --elements")
    masses, comments = {}, {}
    rows = [line for line in lines[start + 1:] if line.strip()][:ntypes]
    try:
        for row in rows:
            values, _, comment = row.partition("#")
            atom_type, mass = values.split()[:2]
            masses[int(atom_type)], comments[int(atom_type)] = float(mass), comment.strip()
    except ValueError:
        raise TypeMapError(f"{path}: malformed Masses line {row.strip()!r}") from None
    if sorted(masses) != list(range(1, ntypes + 1)):
        raise TypeMapError(f"{path}: Masses section lists types {sorted(masses)}, expected 1..{ntypes}")
    if elements is not None:
        if len(elements) != ntypes:
            raise TypeMapError(f"--elements names {len(elements)} types but {path} has {ntypes}")
        return from_elements(elements, masses, source=f"--elements, masses from {path}")
    return from_elements([_element_of(t, masses[t], comments[t], path) for t in range(1, ntypes + 1)], masses,
                         source=f"data file {path}")


def _element_of(atom_type: int, mass: float, comment: str, path: Path) -> str:
    from ase.data import atomic_masses, atomic_numbers, chemical_symbols

    word = comment.split()[0] if comment else ""
    if word in atomic_numbers and word != "X":
        return word
    close = [chemical_symbols[z] for z in range(1, len(atomic_masses)) if abs(atomic_masses[z] - mass) < MASS_MATCH]
    if len(close) != 1:
        found = f"{len(close)} elements ({', '.join(close)})" if close else "no element"
        raise TypeMapError(f"{path}: type {atom_type} (mass {mass:g}) matches {found}; give the elements with --elements")
    return close[0]


def from_element_column(frame, path) -> TypeMap | None:
    """Elements from a dump's ``element`` column, or the symbols a file in an ASE format holds
    (None when the frame has neither)."""
    words = frame.extra.get("element", frame.extra.get("symbols"))
    if words is None:
        return None
    ntypes = int(frame.types.max())
    elements = []
    for t in range(1, ntypes + 1):
        names = set(np.asarray(words)[frame.types == t].tolist())
        if len(names) != 1:
            raise TypeMapError(f"{path}: atom type {t} has element(s) {sorted(names) or 'none'} in the element column")
        elements.append(names.pop())
    return from_elements(elements, source=f"element symbols in {path}")
