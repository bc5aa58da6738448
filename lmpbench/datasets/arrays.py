"""The paper's array datasets, parsed once for every reader of them.

- MD17 ``<molecule>_dft.npz``: keys R [F, N, 3] (Å), z [N], E [F] or [F, 1] (kcal/mol),
  F [F, N, 3] (kcal/mol/Å); molecules in vacuum (no cell).
- MDsim ``water.npy`` / ``alanine_dipeptide.npy``: a pickled dict (numpy's ``np.save`` of a
  dict; read with ``allow_pickle``, so only open files from a source you trust) with
  wrapped_coords, unwrapped_coords or pos [F, N, 3], atom_types or atomic_number [N] (numbers
  or symbols), lengths and angles ([3] or [F, 3], a periodic cell), energy [F], forces or
  force [F, N, 3], kcal/mol units.

``lmpbench analyze --reference`` (``analysis.trajectory.ArrayDatasetReader``) and ``lmpbench
data fetch`` (``datasets.loaders``) both read them through ``read_array_dataset``. Labels stay
in the source's unit in memory and are converted per frame (``energy_eV``, ``forces_eV_A``), so
a 100,001-frame water file is not held twice.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmpbench.datasets.store import DatasetError

KCAL_MOL_PER_EV = 23.06052  # the benchmark's conversion of the MD17 and MDsim labels
KCAL_MOL_TO_EV = 1.0 / KCAL_MOL_PER_EV


@dataclass(frozen=True)
class ArrayDataset:
    """Frames of an MD17 or MDsim array file, in file order."""

    path: Path
    positions: np.ndarray  # [F, N, 3] Å: unwrapped when ``unwrapped``, else as stored
    unwrapped: bool
    wrapped_positions: np.ndarray | None  # [F, N, 3] Å, the source's own wrapped copy (water)
    symbols: list[str]
    energy: np.ndarray | None  # [F] kcal/mol
    forces: np.ndarray | None  # [F, N, 3] kcal/mol/Å
    lengths: np.ndarray | None  # [F, 3] Å (broadcast from [3]); None: no cell
    angles: np.ndarray | None  # [F, 3] degrees

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def periodic(self) -> bool:
        return self.lengths is not None

    def energy_eV(self, frame: int) -> float | None:
        return None if self.energy is None else float(self.energy[frame]) * KCAL_MOL_TO_EV

    def forces_eV_A(self, frame: int) -> np.ndarray | None:
        return None if self.forces is None else np.asarray(self.forces[frame], dtype=float) * KCAL_MOL_TO_EV

    def cell(self, frame: int) -> np.ndarray:
        """Cell rows a, b, c of ``frame`` (zeros when the data has no cell)."""
        from ase.geometry import cellpar_to_cell

        if not self.periodic:
            return np.zeros((3, 3))
        return cellpar_to_cell(np.concatenate([self.lengths[frame], self.angles[frame]]))


def read_array_dataset(path: str | Path) -> ArrayDataset:
    """An MD17 ``.npz`` or MDsim ``.npy`` file, checked for shape; one-line ``DatasetError``s
    name the file and what is wrong."""
    from ase.data import chemical_symbols

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset {path} does not exist")
    try:
        if path.suffix == ".npz":
            with np.load(path) as data:
                arrays = {"positions": data["R"], "numbers": data["z"], "unwrapped": True, "wrapped": None,
                          "energy": data["E"] if "E" in data else None, "forces": data["F"] if "F" in data else None,
                          "lengths": None, "angles": None}
        else:
            data = np.load(path, allow_pickle=True)
            data = data.item() if data.dtype == object and data.shape == () else None
    except (OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as err:
        raise DatasetError(f"{path}: not an MD17 .npz or MDsim .npy dataset: {_first_line(err)}") from None
    if path.suffix != ".npz":
        if not isinstance(data, dict):
            raise DatasetError(f"{path}: not an MDsim dataset (expected a dict saved with np.save)")

        def first(*keys):
            return next((data[k] for k in keys if k in data), None)

        arrays = {"positions": first("unwrapped_coords", "pos", "wrapped_coords"),
                  "numbers": first("atom_types", "atomic_number", "z"), "energy": first("energy"),
                  "forces": first("forces", "force"), "lengths": first("lengths"), "angles": first("angles"),
                  "wrapped": first("wrapped_coords"), "unwrapped": "unwrapped_coords" in data or "pos" in data}
        missing = [k for k in ("positions", "numbers") if arrays[k] is None]
        if missing:
            raise DatasetError(f"{path}: dataset has no {' or '.join(missing)} (keys: {', '.join(sorted(data))})")

    positions = np.asarray(arrays["positions"], dtype=float)
    if positions.ndim != 3 or positions.shape[2] != 3:
        raise DatasetError(f"{path}: positions have shape {positions.shape}, expected [frames, atoms, 3]")
    n_frames, n_atoms = positions.shape[:2]
    numbers = np.asarray(arrays["numbers"]).reshape(-1)
    if len(numbers) != n_atoms:
        raise DatasetError(f"{path}: {len(numbers)} atom types for {n_atoms} atoms")
    try:
        symbols = [chemical_symbols[int(s)] if np.issubdtype(type(s), np.integer) else str(s) for s in numbers.tolist()]
    except IndexError:
        raise DatasetError(f"{path}: atom types {sorted(set(numbers.tolist()))} are not all atomic numbers") from None
    energy = None if arrays["energy"] is None else np.asarray(arrays["energy"], dtype=float).reshape(-1)
    if energy is not None and len(energy) != n_frames:
        raise DatasetError(f"{path}: {len(energy)} energies for {n_frames} frames")
    forces = arrays["forces"]
    if forces is not None and np.shape(forces) != positions.shape:
        raise DatasetError(f"{path}: forces have shape {np.shape(forces)}, positions {positions.shape}")
    wrapped = None if arrays["wrapped"] is None else np.asarray(arrays["wrapped"], dtype=float)
    if wrapped is not None and wrapped.shape != positions.shape:
        raise DatasetError(f"{path}: wrapped_coords have shape {wrapped.shape}, positions {positions.shape}")
    lengths = angles = None
    if arrays["lengths"] is not None:
        try:
            lengths = np.broadcast_to(np.asarray(arrays["lengths"], float).reshape(-1, 3), (n_frames, 3))
            angles = np.broadcast_to(np.asarray(arrays["angles"] if arrays["angles"] is not None else [90.0] * 3,
                                                float).reshape(-1, 3), (n_frames, 3))
        except ValueError:
            raise DatasetError(f"{path}: lengths/angles are not [3] or [frames, 3]") from None
    return ArrayDataset(path, positions, bool(arrays["unwrapped"]), wrapped, symbols, energy, forces, lengths, angles)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
