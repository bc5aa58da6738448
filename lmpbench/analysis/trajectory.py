"""Streaming readers of LAMMPS text dumps (plain or gzip), one frame at a time.

A frame holds the timestep, the cell (rows a, b, c, LAMMPS's lower-triangular form), the
box origin, atom IDs, types and positions, sorted by ID. Positions are unwrapped when the
dump has image flags (``ix iy iz``) or unwrapped columns (``xu yu zu``). A truncated last
frame is reported (``TrajectoryReader.truncated``) and not returned; a malformed frame
elsewhere raises ``TrajectoryError`` naming the file and the frame's timestep.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np


class TrajectoryError(ValueError):
    """A dump cannot be read; the message names the file and where."""


@dataclass
class Frame:
    step: int
    cell: np.ndarray  # [3, 3], rows a, b, c
    origin: np.ndarray  # [3]
    ids: np.ndarray  # [N]
    types: np.ndarray  # [N]
    positions: np.ndarray  # [N, 3], unwrapped when the dump allows it
    unwrapped: bool
    pbc: tuple[bool, bool, bool]
    extra: dict  # any other per-atom column, by name

    @property
    def volume(self) -> float:
        return float(abs(np.linalg.det(self.cell)))


def _cell(bounds: list[list[float]], tilted: bool) -> tuple[np.ndarray, np.ndarray]:
    """LAMMPS ITEM: BOX BOUNDS (with tilt factors for triclinic) -> cell rows and origin."""
    if tilted:
        (xlo_b, xhi_b, xy), (ylo_b, yhi_b, xz), (zlo, zhi, yz) = bounds
        xlo = xlo_b - min(0.0, xy, xz, xy + xz)
        xhi = xhi_b - max(0.0, xy, xz, xy + xz)
        ylo = ylo_b - min(0.0, yz)
        yhi = yhi_b - max(0.0, yz)
    else:
        (xlo, xhi), (ylo, yhi), (zlo, zhi) = [b[:2] for b in bounds]
        xy = xz = yz = 0.0
    cell = np.array([[xhi - xlo, 0.0, 0.0], [xy, yhi - ylo, 0.0], [xz, yz, zhi - zlo]])
    return cell, np.array([xlo, ylo, zlo])


class TrajectoryReader:
    """``for frame in TrajectoryReader(path, start, stop, step)``: frames in file order."""

    def __init__(self, path: str | Path, start: int = 0, stop: int | None = None, step: int = 1):
        self.path = Path(path)
        if not self.path.is_file():
            raise TrajectoryError(f"trajectory {self.path} does not exist")
        self.start, self.stop, self.step = start, stop, step
        self.truncated: str | None = None  # why the last frame was dropped, when it was

    def _open(self):
        with open(self.path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        return gzip.open(self.path, "rt") if gz else open(self.path)

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        with self._open() as f:
            while True:
                try:
                    frame = self._read_frame(f, index)
                except EOFError as why:
                    if str(why):
                        self.truncated = f"{self.path}: last frame {why}; ignored"
                    return
                if frame is None:
                    return
                if index >= self.start and (self.stop is None or index < self.stop) and (index - self.start) % self.step == 0:
                    yield frame
                index += 1
                if self.stop is not None and index >= self.stop:
                    return

    def _read_frame(self, f, index: int) -> Frame | None:
        line = f.readline()
        if not line:
            return None
        if not line.startswith("ITEM: TIMESTEP"):
            raise TrajectoryError(f"{self.path}: frame {index} does not start with 'ITEM: TIMESTEP' (found {line.strip()[:40]!r})")
        try:
            step = int(f.readline())
            assert f.readline().startswith("ITEM: NUMBER OF ATOMS")
            natoms = int(f.readline())
            header = f.readline()
            assert header.startswith("ITEM: BOX BOUNDS")
            bounds = [[float(v) for v in f.readline().split()] for _ in range(3)]
            atoms_header = f.readline()
            assert atoms_header.startswith("ITEM: ATOMS")
        except (ValueError, AssertionError, IndexError):
            raise EOFError(f"(frame {index}) has an incomplete header") from None
        columns = atoms_header.split()[2:]
        lines = [f.readline() for _ in range(natoms)]
        if natoms and not lines[-1].endswith("\n"):  # LAMMPS ends every line; a cut file does not
            present = sum(1 for ln in lines if ln.strip())
            raise EOFError(f"at step {step} is truncated ({present} of {natoms} atom lines, the last one cut)")
        try:
            data = np.array(" ".join(lines).split(), dtype=float).reshape(natoms, len(columns))
        except ValueError:
            if sum(1 for ln in lines if ln.strip()) < natoms:
                raise EOFError(f"at step {step} is truncated ({sum(1 for ln in lines if ln.strip())} of {natoms} atoms)") from None
            raise TrajectoryError(f"{self.path}: frame at step {step} has malformed atom lines") from None
        return self._frame(step, bounds, "xy" in header, header.split()[3:], columns, data)

    def _frame(self, step, bounds, tilted, boundary_words, columns, data) -> Frame:
        col = {name: k for k, name in enumerate(columns)}
        for needed in ("id", "type"):
            if needed not in col:
                raise TrajectoryError(f"{self.path}: dump has no '{needed}' column")
        order = np.argsort(data[:, col["id"]], kind="stable")
        data = data[order]
        cell, origin = _cell(bounds, tilted)
        pbc = tuple(word.startswith("pp") for word in (boundary_words[-3:] if boundary_words else ["pp"] * 3))
        wrapped, images, unwrapped_cols = ("x", "y", "z"), ("ix", "iy", "iz"), ("xu", "yu", "zu")
        if all(k in col for k in wrapped + images):
            used = wrapped + images
            positions = data[:, [col[k] for k in wrapped]] + data[:, [col[k] for k in images]] @ cell
            unwrapped = True
        elif all(k in col for k in unwrapped_cols):
            used, unwrapped = unwrapped_cols, True
            positions = data[:, [col[k] for k in unwrapped_cols]]
        elif all(k in col for k in wrapped):
            used, unwrapped = wrapped, False
            positions = data[:, [col[k] for k in wrapped]]
        else:
            raise TrajectoryError(f"{self.path}: dump has no x y z or xu yu zu columns")
        extra = {name: data[:, k] for name, k in col.items() if name not in {"id", "type", *used}}
        return Frame(step, cell, origin, data[:, col["id"]].astype(np.int64), data[:, col["type"]].astype(np.int64),
                     positions, unwrapped, pbc, extra)


class ASETrajectoryReader:
    """Frames of any file ASE reads (extxyz, ASE .traj, ...), streamed with ``ase.io.iread``.

    Positions are as stored (extxyz datasets are usually wrapped); types are 1-based indices
    into ``elements`` (default: the elements in order of first appearance); labels in the
    file (energy, forces) land in ``Frame.extra`` as ``energy`` and ``forces``, the chemical
    symbols as ``symbols``.
    """

    def __init__(self, path: str | Path, elements: list[str] | None = None, index: str = ":"):
        self.path, self.elements, self.index = Path(path), elements, index
        if not self.path.is_file():
            raise TrajectoryError(f"trajectory {self.path} does not exist")
        self.truncated = None

    def __iter__(self) -> Iterator[Frame]:
        from ase.io import iread

        elements = list(self.elements or [])
        try:
            for k, atoms in enumerate(iread(self.path, index=self.index)):
                for symbol in atoms.get_chemical_symbols():
                    if symbol not in elements:
                        if self.elements is not None:
                            raise TrajectoryError(f"{self.path}: frame {k} has element {symbol}, not in {elements}")
                        elements.append(symbol)
                extra = {"symbols": atoms.get_chemical_symbols()}
                if atoms.calc is not None:
                    results = atoms.calc.results
                    if "energy" in results:
                        extra["energy"] = float(results["energy"])
                    if "forces" in results:
                        extra["forces"] = np.asarray(results["forces"])
                types = np.array([elements.index(s) + 1 for s in atoms.get_chemical_symbols()])
                yield Frame(k, atoms.cell.array.copy(), np.zeros(3), np.arange(1, len(atoms) + 1), types,
                            atoms.positions.copy(), False, tuple(bool(p) for p in atoms.pbc), extra)
        except TrajectoryError:
            raise
        except Exception as err:  # ASE raises many kinds for files it cannot parse
            raise TrajectoryError(f"{self.path}: cannot read as an ASE trajectory: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
        self.elements = elements
