"""Readers of the published dataset formats into labelled ASE frames in eV and Å.

A loader returns the frames to split (file order, at most ``split_frames`` of them) and the
frames of the reference trajectory (all of the file, in time order), or None when the source
file already is a trajectory ``lmpbench analyze --reference`` reads as it is (LiPS's extxyz).

``periodic`` comes from the benchmark system (``systems.System.category``): a molecule's frames
carry no cell even when the source stores a box around it (MDsim's alanine dipeptide and
its MD17 graphs use a nominal box), so nequip never sees periodic images of a molecule.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lmpbench.datasets.arrays import KCAL_MOL_PER_EV, ArrayDataset, read_array_dataset
from lmpbench.datasets.store import DatasetError, labelled


@dataclass(frozen=True)
class LoadedData:
    frames: Sequence  # labelled ASE Atoms (eV, eV/Å, Å), file order: what the splits draw from
    reference_frames: Iterator | None  # Atoms in time order; None: the source file is the reference trajectory
    notes: dict = field(default_factory=dict)


class ArrayFrames(Sequence):
    """Labelled ASE Atoms built on demand from an ``ArrayDataset`` (so 100,000 frames are
    never held as Atoms at once). Training frames use the source's wrapped copy of the
    positions when it has one (MDsim trained on wrapped_coords)."""

    def __init__(self, data: ArrayDataset, periodic: bool, count: int | None = None):
        self.data, self.periodic = data, periodic
        self.count = len(data) if count is None else min(count, len(data))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, frame):
        if isinstance(frame, slice):
            return [self[k] for k in range(self.count)[frame]]
        frame = int(frame)
        if not -self.count <= frame < self.count:
            raise IndexError(frame)
        frame %= self.count
        positions = self.data.wrapped_positions if self.data.wrapped_positions is not None else self.data.positions
        atoms = _atoms(self.data, frame, positions[frame], self.periodic)
        if self.periodic and self.data.wrapped_positions is None:
            atoms.wrap()
        return labelled(atoms, self.data.energy_eV(frame), self.data.forces_eV_A(frame))


def _atoms(data: ArrayDataset, frame: int, positions, periodic: bool):
    from ase import Atoms

    if periodic and not data.periodic:
        raise DatasetError(f"{data.path}: the system is periodic but the data has no cell (lengths, angles)")
    if periodic:
        return Atoms(data.symbols, positions=positions, cell=data.cell(frame), pbc=True)
    return Atoms(data.symbols, positions=positions)


def _array_reference(data: ArrayDataset, periodic: bool) -> Iterator:
    for frame in range(len(data)):
        atoms = _atoms(data, frame, data.positions[frame], periodic)
        if data.unwrapped and periodic:
            atoms.info["unwrapped"] = True  # said in the file, for readers that compute MSDs
        yield atoms


def load_array_file(path: Path, periodic: bool, split_frames: int | None = None) -> LoadedData:
    """MD17 ``.npz`` and MDsim ``.npy`` (``datasets.arrays``): labels in kcal/mol converted to eV."""
    data = read_array_dataset(path)
    if data.forces is None:
        raise DatasetError(f"{path}: has no forces (F, forces or force)")
    notes = {"label_conversion": f"kcal/mol -> eV: divided by {KCAL_MOL_PER_EV}",
             "reference_positions": "unwrapped" if data.unwrapped else "as stored (the source has no unwrapped copy)"}
    if data.periodic and not periodic:
        notes["source_box_dropped"] = "the source's lengths/angles box is not written: the system is a molecule"
    if data.wrapped_positions is not None:
        notes["split_positions"] = "the source's wrapped_coords"
    return LoadedData(ArrayFrames(data, periodic, split_frames), _array_reference(data, periodic), notes)


def load_extxyz(path: Path, periodic: bool, split_frames: int | None = None) -> LoadedData:
    """Extended XYZ with energies and forces already in eV and eV/Å (LiPS); the file itself is
    the reference trajectory."""
    from ase.io import iread

    frames = []
    try:
        for k, atoms in enumerate(iread(path, index=":", format="extxyz")):
            results = atoms.calc.results if atoms.calc is not None else {}
            if "forces" not in results:
                raise DatasetError(f"{path}: frame {k} has no forces")
            if periodic and not atoms.pbc.all():
                raise DatasetError(f"{path}: frame {k} is not periodic (pbc {atoms.pbc.tolist()}); the system is")
            frames.append(atoms)
    except DatasetError:
        raise
    except Exception as err:  # ASE raises many kinds for files it cannot parse
        text = str(err).strip()
        reason = text.splitlines()[0] if text else type(err).__name__
        raise DatasetError(f"{path}: not an extended XYZ dataset: {reason}") from None
    if not frames:
        raise DatasetError(f"{path}: no frames")
    if len({len(a) for a in frames}) != 1:
        raise DatasetError(f"{path}: frames have different atom counts")
    return LoadedData(frames[:split_frames] if split_frames else frames, None,
                      {"label_conversion": "none (the source is in eV and eV/Å)",
                       "reference_positions": "as stored in the source file"})


# one per DatasetSource.format
LOADERS = {
    "md17_npz": load_array_file,
    "mdsim_npy": load_array_file,
    "extxyz": load_extxyz,
}
