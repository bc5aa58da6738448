"""Streaming readers of trajectories, one frame at a time.

``TrajectoryReader`` reads LAMMPS dumps (text, gzip-compressed text, or binary) through
ovito's file reader (compiled, about 3 ms per 20,000-atom frame; frames are located once,
then read on demand, so memory does not grow with the trajectory). A frame holds the
timestep, the cell (rows a, b, c, LAMMPS's lower-triangular form), the box origin, atom IDs,
types and positions, sorted by ID. Positions are unwrapped when the dump has image flags
(``ix iy iz``) or unwrapped columns (``xu yu zu``).

A truncated last frame is reported (``TrajectoryReader.truncated``) and not returned, never
misread: LAMMPS ends every line with a newline, so a text dump whose last frame lacks atom
lines or its final newline was cut while written (checked here on the last frame itself,
since a number cut short still parses). A malformed frame elsewhere raises
``TrajectoryError`` naming the file and the frame.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass, field
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
    cache: dict = field(default_factory=dict, repr=False)  # per-frame results shared by compute objects

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


_WRAPPED, _IMAGES, _UNWRAPPED = ("x", "y", "z"), ("ix", "iy", "iz"), ("xu", "yu", "zu")
_OVITO_NAMES = {"id": "Particle Identifier", "type": "Particle Type", **{f"i{a}": f"Periodic Image.{a.upper()}" for a in "xyz"}}


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _text_tail(path: Path, size: int) -> tuple[bytes, bool]:
    """At least the last ``size`` bytes of the (decompressed) file, and whether a gzip stream ended early."""
    if not _is_gzip(path):
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - size))
            return f.read(), False
    tail = b""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            tail = (tail + decompressor.decompress(chunk))[-size:]
    return tail, not decompressor.eof


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class TrajectoryReader:
    """``for frame in TrajectoryReader(path, start, stop, step)``: frames in file order."""

    def __init__(self, path: str | Path, start: int = 0, stop: int | None = None, step: int = 1):
        self.path = Path(path)
        if not self.path.is_file():
            raise TrajectoryError(f"trajectory {self.path} does not exist")
        self.start, self.stop, self.step = start, stop, step
        self.truncated: str | None = None  # why the last frame was dropped, when it was
        self._pipeline = None
        self._frames = 0
        self._unwrapped_columns = False  # positions read from xu yu zu

    def _head(self) -> bytes:
        opener = gzip.open if _is_gzip(self.path) else open
        try:
            with opener(self.path, "rb") as f:
                return f.read(1 << 16)
        except (OSError, EOFError) as err:
            raise TrajectoryError(f"{self.path}: cannot read: {err}") from None

    def _open(self) -> None:
        """Locate the frames once (ovito scans the file) and check the last one ourselves."""
        from ovito.io import import_file

        head = self._head()
        binary = not head.startswith(b"ITEM: TIMESTEP")
        if binary and (not head or b"\n" in head[:64] and head[:64].isascii()):
            first = head.split(b"\n")[0].decode(errors="replace").strip()[:40]
            raise TrajectoryError(f"{self.path}: frame 0 does not start with 'ITEM: TIMESTEP' (found {first!r})")
        try:
            if binary:
                self._pipeline = import_file(str(self.path), input_format="lammps/dump/bin")
            else:
                self._pipeline = import_file(str(self.path), input_format="lammps/dump", columns=self._columns(head))
        except Exception as err:  # ovito raises RuntimeError for any file it cannot parse (it reads frame 0 here)
            raise TrajectoryError(f"{self.path}: cannot read its first frame: {_first_line(err)}") from None
        self._frames = self._pipeline.source.num_frames
        if not binary:
            self._check_last_frame(head)

    def _columns(self, head: bytes) -> list[str]:
        """Dump columns -> ovito property names; positions from x y z (plus images) or xu yu zu."""
        for line in head.decode(errors="replace").splitlines():
            if line.startswith("ITEM: ATOMS"):
                columns = line.split()[2:]
                break
        else:
            raise TrajectoryError(f"{self.path}: no 'ITEM: ATOMS' line in the first frame")
        for needed in ("id", "type"):
            if needed not in columns:
                raise TrajectoryError(f"{self.path}: dump has no '{needed}' column")
        position = _WRAPPED if set(_WRAPPED) <= set(columns) else _UNWRAPPED
        if not set(position) <= set(columns):
            raise TrajectoryError(f"{self.path}: dump has no x y z or xu yu zu columns")
        names = {**_OVITO_NAMES, **{c: f"Position.{a}" for c, a in zip(position, "XYZ")}}
        if position == _UNWRAPPED:  # image flags beside unwrapped positions are not applied twice
            names = {k: v for k, v in names.items() if k not in _IMAGES}
        self._unwrapped_columns = position == _UNWRAPPED
        return [names.get(c, c) for c in columns]

    def _check_last_frame(self, head: bytes) -> None:
        lines = head.split(b"\n")
        try:
            natoms = int(lines[3])
        except (IndexError, ValueError):
            natoms = 0
        longest = max((len(ln) for ln in lines[9:-1]), default=80)
        size = natoms * (2 * longest + 8) + 4096  # more than one frame
        while True:
            tail, gzip_cut = _text_tail(self.path, size)
            start = tail.rfind(b"ITEM: TIMESTEP")
            if start >= 0 or len(tail) < size:
                break
            size *= 4
        if start < 0:
            raise TrajectoryError(f"{self.path}: no 'ITEM: TIMESTEP' in its last part")
        lines = tail[start:].decode(errors="replace").split("\n")
        try:
            step = int(lines[1])
            natoms = int(lines[3])
            complete = len(lines) == 9 + natoms + 1 and lines[-1] == "" and all(lines[9:-1]) and not gzip_cut
        except (IndexError, ValueError):
            step, complete = None, False
        if complete:
            return
        present = sum(1 for ln in lines[9:] if ln.strip())
        where = "an incomplete header" if step is None else f"step {step} is truncated ({present} of {natoms} atom lines, the last one possibly cut)"
        self.truncated = f"{self.path}: last frame {where}; ignored"
        if self._frames:
            last = self._timestep(self._frames - 1)
            if last is None or last == step:
                self._frames -= 1  # ovito kept it (a number cut short still parses): drop it

    def _timestep(self, index: int) -> int | None:
        try:
            return int(self._pipeline.source.compute(index).attributes["Timestep"])
        except Exception:  # an unparsable frame
            return None

    def __len__(self) -> int:
        if self._pipeline is None:
            self._open()
        return len(range(self._frames)[self.start:self.stop:self.step])

    def __iter__(self) -> Iterator[Frame]:
        if self._pipeline is None:
            self._open()
        for index in range(self._frames)[self.start:self.stop:self.step]:
            try:
                data = self._pipeline.source.compute(index)
            except Exception as err:
                raise TrajectoryError(f"{self.path}: frame {index} is malformed: {_first_line(err)}") from None
            yield self._frame(data)

    def _frame(self, data) -> Frame:
        particles = data.particles
        ids = np.asarray(particles.identifiers, dtype=np.int64)
        order = None if np.all(ids[1:] > ids[:-1]) else np.argsort(ids, kind="stable")
        def column(name):
            values = np.asarray(particles[name])
            return values if order is None else values[order]
        matrix = np.asarray(data.cell[...])
        cell, origin = matrix[:, :3].T.copy(), matrix[:, 3].copy()
        positions = column("Position").astype(np.float64, copy=True)
        names = set(particles.keys())
        unwrapped = self._unwrapped_columns or "Periodic Image" in names
        if "Periodic Image" in names:
            positions += column("Periodic Image") @ cell
        extra = {name: column(name) for name in names - {"Particle Identifier", "Particle Type", "Position", "Periodic Image"}}
        return Frame(int(data.attributes["Timestep"]), cell, origin, ids if order is None else ids[order],
                     column("Particle Type").astype(np.int64), positions, unwrapped, tuple(bool(p) for p in data.cell.pbc), extra)


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
