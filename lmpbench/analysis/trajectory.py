"""Streaming readers of trajectories, one frame at a time.

``TrajectoryReader`` reads LAMMPS dumps: text (plain or gzip-compressed) with a compiled
number parser (``text_numbers``: exact, about 200 MB/s), binary through ovito's reader. A
frame holds the timestep, the cell (rows a, b, c, LAMMPS's lower-triangular form), the box
origin, atom IDs, types and positions (Å, Cartesian), sorted by ID. Coordinates may be
Cartesian (``x y z``, ``xu yu zu``) or scaled by the cell (``xs ys zs``, the default of
``dump atom``; ``xsu ysu zsu``), in any cell, triclinic too. Positions are unwrapped when the
dump has image flags (``ix iy iz``) or unwrapped columns (``xu yu zu``, ``xsu ysu zsu``);
other columns land in ``Frame.extra`` (an ``element`` column as words). Text is read in
blocks, so memory holds a frame or two, whatever the trajectory's length.

A truncated last frame is reported (``TrajectoryReader.truncated``) and not returned, never
misread: a last frame that lacks atom lines, or whose last line lacks columns, was cut. A
last line that has all its columns but no final newline is read when the file is finished
(``finished=True``, or, by default, when the file has stopped growing: unchanged for
``SETTLE_SECONDS``); while LAMMPS still writes the file it may be a number cut short, so it is
dropped as cut. A malformed frame elsewhere raises ``TrajectoryError`` naming the file and
the frame's timestep.
"""

from __future__ import annotations

import gzip
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from lmpbench.analysis import text_numbers
from lmpbench.datasets.arrays import KCAL_MOL_TO_EV  # noqa: F401  (re-exported: analyze and tests use it)


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


_IMAGES = ("ix", "iy", "iz")
# (columns, scaled by the cell, unwrapped, needs image flags to unwrap), best first
_POSITION_COLUMNS = (
    (("x", "y", "z"), False, True, True),
    (("xs", "ys", "zs"), True, True, True),
    (("xu", "yu", "zu"), False, True, False),
    (("xsu", "ysu", "zsu"), True, True, False),
    (("x", "y", "z"), False, False, False),
    (("xs", "ys", "zs"), True, False, False),
)
SETTLE_SECONDS = 2.0  # a file unchanged this long is taken as finished (no writer appends to it)
BLOCK_BYTES = 1 << 23  # text read per refill; a frame larger than this grows the buffer
_TEXT_COLUMNS = ("element",)  # dump columns holding words, not numbers


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class _GzipStream:
    """Decompressed bytes of a gzip file, block by block; one that ends early sets ``cut``
    and gives what came before (Python's gzip raises and drops that part). Concatenated
    gzip members are read one after another."""

    def __init__(self, path: Path):
        self.name, self.raw = str(path), open(path, "rb")
        self.decompressor, self.started, self.pending, self.cut = zlib.decompressobj(31), False, b"", False

    def read(self, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            raw, self.pending = self.pending or self.raw.read(1 << 20), b""
            if not raw:
                self.cut = self.started
                break
            self.started = True
            try:
                out += self.decompressor.decompress(raw)
            except zlib.error as err:
                raise OSError(f"corrupt gzip data: {err}") from None
            if self.decompressor.eof:  # a member ends: another may follow
                self.pending, self.decompressor, self.started = self.decompressor.unused_data, zlib.decompressobj(31), False
        return bytes(out)

    def close(self) -> None:
        self.raw.close()


class _TextBuffer:
    """The decompressed text of a dump, read in blocks; ``data[pos:]`` is what is left."""

    def __init__(self, path: Path, finished, byte_offset: int = 0):
        self.path, self.finished = path, finished  # finished: a callable, asked once at the end
        self.file = _GzipStream(path) if _is_gzip(path) else open(path, "rb")
        if byte_offset:
            if isinstance(self.file, _GzipStream):
                raise TrajectoryError(f"{path}: a gzip dump is read from its start")
            self.file.seek(byte_offset)
        self.data, self.pos, self.eof = b"", 0, False
        self.read_bytes = byte_offset  # file bytes read into data so far, from the file's start
        self.added_newline = False  # the file lacked its final newline and one was added

    @property
    def consumed(self) -> int:
        """File offset of the first byte not consumed yet (plain files)."""
        return self.read_bytes - (len(self.data) - self.pos)

    @property
    def cut_stream(self) -> bool:
        return getattr(self.file, "cut", False)

    def more(self) -> bool:
        """Read another block (dropping what was consumed); False at the end of the file."""
        if self.eof:
            return False
        try:
            block = self.file.read(max(BLOCK_BYTES, len(self.data) - self.pos))
        except OSError as err:
            raise TrajectoryError(f"{self.file.name}: cannot read: {err}") from None
        self.data, self.pos = self.data[self.pos:] + block, 0
        self.read_bytes += len(block)
        self.eof = not block
        if self.eof and self.data[self.pos:] and not self.data.endswith(b"\n") and not self.cut_stream \
                and self.finished():
            self.data, self.added_newline = self.data + b"\n", True  # a finished file: its last line is whole
            return True
        return bool(block)

    def lines(self, count: int) -> list[bytes] | None:
        """The next ``count`` lines (consumed), or None if the file ends first."""
        while True:
            end = text_numbers.skip_rows(np.frombuffer(self.data, np.uint8), self.pos, count) if self.data else -1
            if end >= 0:
                lines = self.data[self.pos:end].split(b"\n")[:count]
                self.pos = end
                return lines
            if not self.more():
                return None

    def close(self) -> None:
        self.file.close()


class TrajectoryReader:
    """``for frame in TrajectoryReader(path, start, stop, step)``: frames in file order."""

    def __init__(self, path: str | Path, start: int = 0, stop: int | None = None, step: int = 1,
                 finished: bool | None = None, byte_offset: int = 0):
        """``finished``: True when no program writes the file any more (a finished run), False
        while one may, None to decide from the file (unchanged for ``SETTLE_SECONDS``).
        ``byte_offset``: read from there (a frame's start: a previous reader's ``byte_end``),
        for following a file that grows; frame indices count from there."""
        self.path = Path(path)
        if not self.path.is_file():
            raise TrajectoryError(f"trajectory {self.path} does not exist")
        self.start, self.stop, self.step, self.finished = start, stop, step, finished
        self.byte_offset = self.byte_end = byte_offset  # byte_end: just after the last whole frame read
        self.truncated: str | None = None  # why the last frame was dropped, when it was

    def _is_finished(self) -> bool:
        """Whether the file is complete: as told, or unchanged (size and time) for SETTLE_SECONDS."""
        if self.finished is not None:
            return self.finished
        before = os.stat(self.path)
        wait = SETTLE_SECONDS - (time.time() - before.st_mtime)
        if wait <= 0:
            return True
        time.sleep(wait)
        after = os.stat(self.path)
        return (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)

    def _wanted(self, index: int) -> bool:
        return index >= self.start and (index - self.start) % self.step == 0

    def __iter__(self) -> Iterator[Frame]:
        opener = gzip.open if _is_gzip(self.path) else open
        try:
            with opener(self.path, "rb") as f:
                head = f.read(14)
        except (OSError, EOFError) as err:
            raise TrajectoryError(f"{self.path}: cannot read: {err}") from None
        if self.byte_offset or head == b"ITEM: TIMESTEP":
            yield from self._text_frames()
        elif head and (not head.isascii() or b"\x00" in head):
            yield from self._binary_frames()
        else:
            first = head.split(b"\n")[0].decode(errors="replace").strip()
            raise TrajectoryError(f"{self.path}: frame 0 does not start with 'ITEM: TIMESTEP' (found {first!r})")

    # ------------------------------------------------------------ text dumps

    def _text_frames(self) -> Iterator[Frame]:
        text = _TextBuffer(self.path, self._is_finished, self.byte_offset)
        try:
            index = 0
            while self.stop is None or index < self.stop:
                frame = self._text_frame(text, index, parse=self._wanted(index))
                if frame is None:
                    return
                self.byte_end = text.consumed
                if self._wanted(index):
                    yield frame
                index += 1
        finally:
            text.close()

    def _cut(self, what: str) -> None:
        """The file ended inside a frame: note it (the last frame is dropped)."""
        self.truncated = f"{self.path}: last frame {what}; ignored"

    def _text_frame(self, text: _TextBuffer, index: int, parse: bool):
        header = text.lines(9)
        if header is None:
            if text.pos < len(text.data) or text.cut_stream:
                self._cut(f"(frame {index}) has an incomplete header")
            return None
        if not header[0].startswith(b"ITEM: TIMESTEP"):
            found = header[0].decode(errors="replace").strip()[:40]
            raise TrajectoryError(f"{self.path}: frame {index} does not start with 'ITEM: TIMESTEP' (found {found!r})")
        try:
            step, natoms, bounds, header_words, columns = self._header(header)
        except (ValueError, AssertionError, IndexError, UnicodeDecodeError):
            raise TrajectoryError(f"{self.path}: frame {index} has a malformed header") from None
        if natoms > self._most_atoms():
            raise TrajectoryError(f"{self.path}: frame at step {step} claims {natoms} atoms, more lines than the "
                                  "file holds")
        if not parse:  # a frame not asked for: find its end only
            while (end := text_numbers.skip_rows(np.frombuffer(text.data, np.uint8), text.pos, natoms)) < 0:
                if not text.more():
                    self._cut(f"at step {step} is truncated")
                    return None
            text.pos = end
            return True
        if any(c in _TEXT_COLUMNS for c in columns):
            return self._frame_with_text_columns(text, step, natoms, columns, bounds, header_words)
        data = np.empty((natoms, len(columns)))
        while True:
            end, status = text_numbers.parse_rows(np.frombuffer(text.data, np.uint8), text.pos, natoms, len(columns), data)
            if status != text_numbers.NEED_MORE:
                break
            if not text.more():
                present = text.data[text.pos:].count(b"\n")
                self._cut(f"at step {step} is truncated ({present} of {natoms} atom lines, the last one cut)")
                return None
        if status == text_numbers.MALFORMED and text.added_newline and text.data.find(b"\n", end) == len(text.data) - 1:
            self._cut(f"at step {step} is truncated (its last line, without a final newline, lacks columns)")
            return None
        if status == text_numbers.MALFORMED:
            line = text.data[text.pos:end].count(b"\n") + 1
            raise TrajectoryError(f"{self.path}: frame at step {step} has malformed atom lines (atom line {line})")
        if status == text_numbers.INEXACT:  # beyond the exact fast path: Python's float, exact
            data = np.array(text.data[text.pos:end].split(), dtype=float).reshape(natoms, len(columns))
        text.pos = end
        return self._frame(step, bounds, "xy" in header_words, header_words[3:], columns, data)

    @staticmethod
    def _header(header: list[bytes]):
        """(step, atoms, box bounds, BOX BOUNDS words, column names) of a frame's nine header
        lines; AssertionError or ValueError when they are not what LAMMPS writes."""
        step = int(header[1])
        assert header[2].startswith(b"ITEM: NUMBER OF ATOMS")
        natoms = int(header[3])
        assert natoms >= 0 and header[4].startswith(b"ITEM: BOX BOUNDS")
        header_words = header[4].decode("ascii").split()
        tilted = "xy" in header_words
        bounds = [[float(v) for v in line.split()] for line in header[5:8]]
        assert all(len(b) == (3 if tilted else 2) or (not tilted and len(b) >= 2) for b in bounds)
        assert header[8].startswith(b"ITEM: ATOMS")
        columns = header[8].decode("ascii").split()[2:]
        assert columns and len(set(columns)) == len(columns)
        return step, natoms, bounds, header_words, columns

    def _most_atoms(self) -> float:
        """An upper bound on the atoms a frame of this file can hold (two bytes an atom line),
        so a corrupt count is refused before memory is allocated for it."""
        size = self.path.stat().st_size
        return size / 2 if not _is_gzip(self.path) else size * 1100  # gzip compresses at most ~1030:1

    def _frame_with_text_columns(self, text, step, natoms, columns, bounds, header_words) -> Frame | None:
        """A dump with words among its columns (``element``): Python's split, slower; the words
        land in ``Frame.extra``."""
        lines = text.lines(natoms)
        if lines is None:
            self._cut(f"at step {step} is truncated")
            return None
        rows = [line.split() for line in lines]
        if text.added_newline and text.pos == len(text.data) and len(rows[-1]) != len(columns):
            self._cut(f"at step {step} is truncated (its last line, without a final newline, lacks columns)")
            return None
        numeric = [k for k, c in enumerate(columns) if c not in _TEXT_COLUMNS]
        try:
            for k, row in enumerate(rows):
                if len(row) != len(columns):
                    raise ValueError(k)
            data = np.array([[row[k] for k in numeric] for row in rows], dtype=float).reshape(natoms, len(numeric))
        except ValueError:
            bad = next((k for k, row in enumerate(rows) if len(row) != len(columns)), None)
            where = f" (atom line {bad + 1})" if bad is not None else ""
            raise TrajectoryError(f"{self.path}: frame at step {step} has malformed atom lines{where}") from None
        words = {c: np.array([row[k].decode() for row in rows]) for k, c in enumerate(columns) if c in _TEXT_COLUMNS}
        numeric_columns = [columns[k] for k in numeric]
        if "id" in numeric_columns:  # sort the words as _frame sorts the numbers
            order = np.argsort(data[:, numeric_columns.index("id")], kind="stable")
            data, words = data[order], {c: w[order] for c, w in words.items()}
        frame = self._frame(step, bounds, "xy" in header_words, header_words[3:], numeric_columns, data)
        frame.extra.update(words)
        return frame

    def _frame(self, step, bounds, tilted, boundary_words, columns, data) -> Frame:
        col = {name: k for k, name in enumerate(columns)}
        for needed in ("id", "type"):
            if needed not in col:
                raise TrajectoryError(f"{self.path}: dump has no '{needed}' column")
        ids = data[:, col["id"]]
        if not np.all(ids[1:] > ids[:-1]):
            data = data[np.argsort(ids, kind="stable")]
        cell, origin = _cell(bounds, tilted)
        pbc = tuple(word.startswith("pp") for word in (boundary_words[-3:] if boundary_words else ["pp"] * 3))
        for names, scaled, unwrapped, with_images in _POSITION_COLUMNS:
            used = names + (_IMAGES if with_images else ())
            if all(k in col for k in used):
                break
        else:
            raise TrajectoryError(f"{self.path}: dump has no position columns (x y z, xu yu zu, xs ys zs or xsu ysu zsu)")
        positions = data[:, [col[k] for k in names]]
        if with_images:
            positions = positions + data[:, [col[k] for k in _IMAGES]] @ (np.eye(3) if scaled else cell)
        if scaled:  # fractions of the cell vectors, from the box's lower corner
            positions = origin + positions @ cell
        extra = {name: data[:, k] for name, k in col.items() if name not in {"id", "type", *used}}
        return Frame(step, cell, origin, data[:, col["id"]].astype(np.int64), data[:, col["type"]].astype(np.int64),
                     positions, unwrapped, pbc, extra)

    # ------------------------------------------------------------ binary dumps (ovito's reader)

    def _binary_frames(self) -> Iterator[Frame]:
        from ovito.io import import_file

        try:
            pipeline = import_file(str(self.path), input_format="lammps/dump/bin")
        except Exception as err:  # ovito raises RuntimeError for a file it cannot parse (it reads frame 0 here)
            raise TrajectoryError(f"{self.path}: cannot read as a LAMMPS binary dump: {_first_line(err)}") from None
        for index in range(pipeline.source.num_frames)[self.start:self.stop:self.step]:
            try:
                data = pipeline.source.compute(index)
            except Exception as err:
                raise TrajectoryError(f"{self.path}: frame {index} is malformed: {_first_line(err)}") from None
            particles = data.particles
            names = set(particles.keys())
            ids = np.asarray(particles.identifiers, dtype=np.int64)
            order = np.argsort(ids, kind="stable")
            matrix = np.asarray(data.cell[...])
            cell, origin = matrix[:, :3].T.copy(), matrix[:, 3].copy()
            positions = np.asarray(particles.positions, dtype=np.float64)[order]
            if "Periodic Image" in names:
                positions = positions + np.asarray(particles["Periodic Image"])[order] @ cell
            extra = {name: np.asarray(particles[name])[order]
                     for name in names - {"Particle Identifier", "Particle Type", "Position", "Periodic Image"}}
            yield Frame(int(data.attributes["Timestep"]), cell, origin, ids[order],
                        np.asarray(particles.particle_types, dtype=np.int64)[order], positions,
                        "Periodic Image" in names, tuple(bool(p) for p in data.cell.pbc), extra)


class ASETrajectoryReader:
    """Frames of any file ASE reads (extxyz, ASE .traj, ...), streamed with ``ase.io.iread``.

    Types are 1-based indices into ``elements`` (default: the elements in order of first
    appearance); labels in the file (energy, forces) land in ``Frame.extra`` as ``energy`` and
    ``forces``, the chemical symbols as ``symbols``.

    Periodic positions: such files carry no image flags. ``wrapped`` says whether the positions
    were wrapped into the cell; None decides from the data (``unwrap.WrapEvidence``: positions
    outside the cell mean unwrapped, e.g. ASE MD output; jumps of more than half a cell between
    consecutive frames mean wrapped, e.g. most extxyz datasets), in one extra pass over the
    file. Wrapped positions are unwrapped from consecutive frames (``unwrap.Unwrapper``). When
    the data cannot be unwrapped (frames too far apart in time, or contradictory evidence) the
    positions are given as stored, ``Frame.unwrapped`` False and the reason in
    ``Frame.extra["positions_note"]``: RDFs need no unwrapping, an MSD refuses with the reason.
    A file declared wrapped that is too coarse to unwrap raises. ``positions_kind`` and
    ``positions_reason`` say what was decided and why.
    """

    def __init__(self, path: str | Path, elements: list[str] | None = None, index: str = ":",
                 wrapped: bool | None = None, drop_repeats: bool = False):
        """``drop_repeats``: skip a frame whose positions and cell equal the previous frame's
        exactly (MDsim writes the last frame again when it restarts a run); frame numbers and
        ``index`` then count the frames kept."""
        self.path, self.elements, self.index, self.wrapped = Path(path), elements, index, wrapped
        self.drop_repeats = drop_repeats
        if not self.path.is_file():
            raise TrajectoryError(f"trajectory {self.path} does not exist")
        self.truncated = None
        self.positions_kind: str | None = None  # "unwrapped", "wrapped" (then unwrapped here), ...
        self.positions_reason: str | None = None
        self.repeats_dropped = 0

    def _slice(self) -> slice:
        parts = (self.index.split(":") + ["", ""])[:3]
        start, stop, step = (int(p) if p.strip() else None for p in parts)
        return slice(start or 0, stop, step or 1)

    def _atoms(self, index: str):
        from ase.io import iread

        try:
            yield from iread(self.path, index=index)
        except TrajectoryError:
            raise
        except Exception as err:  # ASE raises many kinds for files it cannot parse
            raise TrajectoryError(f"{self.path}: cannot read as an ASE trajectory: {_first_line(err)}") from None

    def _decide_wrapped(self, first) -> bool | None:
        """Whether to unwrap: the user's word, else the data's (cached per file version)."""
        from lmpbench.analysis import unwrap

        if not unwrap.is_periodic_cell(first.cell.array, first.pbc):
            self.positions_kind, self.positions_reason = "not periodic", "no periodic axis with a full cell"
            return False
        if self.wrapped is not None:
            self.positions_kind = "wrapped" if self.wrapped else "unwrapped"
            self.positions_reason = "as told (--wrapped / --unwrapped)"
            return self.wrapped
        stat = self.path.stat()
        key = (str(self.path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in _WRAP_VERDICTS:
            evidence = unwrap.WrapEvidence()
            for atoms in self._atoms(":"):
                evidence.accumulate(atoms.positions, atoms.cell.array, atoms.pbc)
            kind = evidence.verdict
            if kind == "wrapped" and not evidence.unwrappable:
                kind = "wrapped, too far apart to unwrap"
            _WRAP_VERDICTS[key] = (kind, evidence.reason)
        self.positions_kind, self.positions_reason = _WRAP_VERDICTS[key]
        return self.positions_kind == "wrapped"

    def __iter__(self) -> Iterator[Frame]:
        from lmpbench.analysis import unwrap

        wanted = self._slice()
        elements = list(self.elements or [])
        first = next(iter(self._atoms(f"{wanted.start}:{wanted.start + 1}")), None)
        if first is None:
            return
        unwrapper = unwrap.Unwrapper(str(self.path)) if self._decide_wrapped(first) else None
        # unwrapping needs every frame from the first wanted one, dropping repeats every frame from
        # the file's start (frames are counted after the drop); otherwise only the wanted ones are read
        stop = "" if wanted.stop is None else wanted.stop
        if self.drop_repeats:
            index, number, step = ":", 0, 1
        elif unwrapper is not None:
            index, number, step = f"{wanted.start}:{stop}", wanted.start, 1
        else:
            index, number, step = f"{wanted.start}:{stop}:{wanted.step}", wanted.start, wanted.step
        number -= step
        previous = None
        self.repeats_dropped = 0
        for atoms in self._atoms(index):
            if self.drop_repeats:
                if previous is not None and np.array_equal(atoms.positions, previous[0]) \
                        and np.array_equal(atoms.cell.array, previous[1]):
                    self.repeats_dropped += 1
                    continue
                previous = (atoms.positions.copy(), atoms.cell.array.copy())
            number += step
            if wanted.stop is not None and number >= wanted.stop:
                break
            positions = atoms.positions.copy()
            if unwrapper is not None and number >= wanted.start:
                try:
                    positions = unwrapper.unwrap(positions, atoms.cell.array, atoms.pbc)
                except unwrap.UnwrapError as err:
                    raise TrajectoryError(str(err)) from None
            if number < wanted.start or (number - wanted.start) % wanted.step:
                continue
            for symbol in atoms.get_chemical_symbols():
                if symbol not in elements:
                    if self.elements is not None:
                        raise TrajectoryError(f"{self.path}: frame {number} has element {symbol}, not in {elements}")
                    elements.append(symbol)
            extra = {"symbols": atoms.get_chemical_symbols()}
            unwrapped = self.positions_kind in _UNWRAPPED_KINDS
            if not unwrapped and self.positions_kind != "not periodic":
                extra["positions_note"] = f"{self.path}: {self.positions_reason}"
            if atoms.calc is not None:
                results = atoms.calc.results
                if "energy" in results:
                    extra["energy"] = float(results["energy"])
                if "forces" in results:
                    extra["forces"] = np.asarray(results["forces"])
            types = np.array([elements.index(s) + 1 for s in atoms.get_chemical_symbols()])
            periodic = tuple(bool(p) for p in atoms.pbc)
            yield Frame(number, atoms.cell.array.copy(), np.zeros(3), np.arange(1, len(atoms) + 1), types,
                        positions, unwrapped, periodic, extra)
        self.elements = elements


_WRAP_VERDICTS: dict = {}  # (file, size, mtime) -> (verdict, reason): one classification pass per file version
_UNWRAPPED_KINDS = ("unwrapped", "wrapped", "no boundary crossing")  # "wrapped": unwrapped here


class ArrayDatasetReader:
    """Frames of the paper's array datasets (MD17 ``.npz``, MDsim ``.npy``; parsed by
    ``lmpbench.datasets.arrays``), positions in Å (unwrapped when the data has them), labels
    converted to eV and eV/Å. Types are 1-based indices into ``elements`` (default: elements in
    order of appearance). ``start, stop, step`` select frames; the arrays are opened once and
    frames built on demand (an .npz member is read whole, as numpy stores it; .npy datasets are
    pickled, read whole).
    """

    def __init__(self, path: str | Path, elements: list[str] | None = None, start: int = 0, stop: int | None = None,
                 step: int = 1):
        self.path, self.elements = Path(path), list(elements) if elements else None
        if not self.path.is_file():
            raise TrajectoryError(f"dataset {self.path} does not exist")
        self.start, self.stop, self.step = start, stop, step
        self.truncated = None

    def __iter__(self) -> Iterator[Frame]:
        from lmpbench.datasets.arrays import read_array_dataset
        from lmpbench.datasets.store import DatasetError

        try:
            data = read_array_dataset(self.path)
        except DatasetError as err:
            raise TrajectoryError(str(err)) from None
        symbols = data.symbols
        elements = self.elements or list(dict.fromkeys(symbols))
        unknown = sorted(set(symbols) - set(elements))
        if unknown:
            raise TrajectoryError(f"{self.path}: has element(s) {', '.join(unknown)}, not in {elements}")
        types = np.array([elements.index(s) + 1 for s in symbols])
        for k in range(len(data))[self.start:self.stop:self.step]:
            extra = {"symbols": symbols}
            if data.energy is not None:
                extra["energy"] = data.energy_eV(k)
            if data.forces is not None:
                extra["forces"] = data.forces_eV_A(k)
            yield Frame(k, data.cell(k), np.zeros(3), np.arange(1, len(types) + 1), types, data.positions[k].copy(),
                        data.unwrapped, (data.periodic,) * 3, extra)


def open_trajectory(path: str | Path, elements: list[str] | None = None, start: int = 0, stop: int | None = None,
                    step: int = 1, finished: bool | None = None, wrapped: bool | None = None,
                    drop_repeats: bool = False):
    """The reader for ``path``: LAMMPS dumps (text, gzip, binary), the paper's .npz/.npy
    datasets, anything else through ASE (extxyz, .traj, ...). ``elements`` maps element
    symbols to type numbers for the readers that see symbols; ``finished`` is for dumps
    (``TrajectoryReader``); ``wrapped`` and ``drop_repeats`` for ASE files
    (``ASETrajectoryReader``)."""
    path = Path(path)
    if path.suffix in (".npz", ".npy"):
        return ArrayDatasetReader(path, elements, start, stop, step)
    if path.suffix in (".xyz", ".extxyz", ".traj") or (path.is_file() and path.suffix not in (".dump", ".bin", ".gz", ".lammpstrj")
                                                       and not _is_gzip(path) and not _is_dump_text(path)):
        return ASETrajectoryReader(path, elements, index=f"{start}:{'' if stop is None else stop}:{step}",
                                   wrapped=wrapped, drop_repeats=drop_repeats)
    return TrajectoryReader(path, start, stop, step, finished=finished)


def _is_dump_text(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(14)
    return head == b"ITEM: TIMESTEP" or not head.isascii()


def write_first_frames(path: str | Path, frames: int, out: str | Path) -> Path:
    """The first ``frames`` frames of trajectory ``path`` as a new file ``out``, in the same
    format (LAMMPS text dumps, plain or gzip, are copied line by line; ASE formats are re-written
    as extended XYZ): a reference cut to a run's length is analysed like the run."""
    path, out = Path(path), Path(out)
    if frames < 1:
        raise TrajectoryError(f"{path}: cannot keep {frames} frames")
    if _is_gzip(path) or _is_dump_text(path) or path.suffix in (".dump", ".lammpstrj"):
        opener = gzip.open if _is_gzip(path) else open
        seen = 0
        with opener(path, "rt") as source, opener(out, "wt") as target:
            for line in source:
                if line.startswith("ITEM: TIMESTEP"):
                    seen += 1
                    if seen > frames:
                        break
                target.write(line)
        return out
    import ase.io

    ase.io.write(out, ase.io.read(path, index=f":{frames}"), format="extxyz")
    return out
