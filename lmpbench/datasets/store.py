"""The dataset folder: the one format every producer writes and every consumer reads.

A dataset is a folder::

    dataset.json            manifest (format below)
    test.extxyz             the test split (``.extxyz.gz`` when written compressed)
    train_<size>.extxyz     training frames of each split size ("1k", "10k", ...)
    val_<size>.extxyz       validation frames of that size
    <reference trajectory>  optional: what ``lmpbench analyze --reference`` reads

Frames are extended XYZ written by ASE with a single-point calculator: the energy in eV (in
the comment line as ``energy=``; absent when the source has forces only) and forces in eV/Å
(the ``forces`` column); positions in Å, the cell and ``pbc`` for periodic systems. nequip's
``ASEDataModule`` and ``ase.io.read`` read them as they are.

Splits are random with a fixed seed (the paper's 123): one permutation of all frames,
``numpy.random.RandomState(seed).permutation(n)``; the test split is its first ``test``
frames, and every split size takes its training frames, then its validation frames, from the
start of the rest, so a smaller training set is a subset of a larger one. The paper's
downloaded datasets (``lmpbench data fetch``) are split as the reference code split them
(``mdsim_splits``, the same seed, test and train+val sets; see ``SPLIT_METHODS``); the
manifest records which.

The manifest records what the data is and where it came from (a download with its URL, size
and sha256, or a reference engine with its version, parameters, seed and wall time), the
command line that made it, and the size and sha256 of every file in the folder, so that a
dataset can be checked after it is copied (``verify_files``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from lmpbench.files import write_atomic

DATASET_FORMAT = 1
MANIFEST = "dataset.json"
SPLIT_SEED = 123  # the paper's
UNITS = {"energy": "eV", "length": "Å", "forces": "eV/Å"}
DATA_ENV = "LMPBENCH_DATA"  # overrides the user's dataset folder


class DatasetError(ValueError):
    """A dataset folder is missing, incomplete or not what was asked for; the message says why."""


def user_root() -> Path:
    """Where ``lmpbench data`` and ``lmpbench reference`` put datasets by default."""
    return Path(os.environ.get(DATA_ENV) or Path.home() / ".local" / "share" / "lmpbench" / "datasets")


def shipped_root() -> Path:
    """Small datasets shipped inside lmpbench for the demo and the tests."""
    return Path(str(resources.files("lmpbench.data"))) / "datasets"


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def _check_split_sizes(n_frames: int, test: int, sizes: dict[str, tuple[int, int]]) -> None:
    for name, (train, val) in sizes.items():
        if test + train + val > n_frames:
            raise DatasetError(f"split {name!r} needs {test} test + {train} train + {val} validation frames, "
                               f"the data has {n_frames}")
        if train < 1 or val < 1 or test < 1:
            raise DatasetError(f"split {name!r}: every split needs at least one frame")


def random_splits(n_frames: int, test: int, sizes: dict[str, tuple[int, int]],
                  seed: int = SPLIT_SEED) -> dict:
    """Indices of the test split and of each size's (train, val) split (see the module doc).

    ``sizes`` maps a size name to (train frames, validation frames). Refused, naming the
    size, when the frames do not suffice."""
    _check_split_sizes(n_frames, test, sizes)
    order = np.random.RandomState(seed).permutation(n_frames)
    rest = order[test:]
    return {"test": order[:test],
            "sizes": {name: {"train": rest[:train], "val": rest[train:train + val]}
                      for name, (train, val) in sizes.items()}}


def mdsim_splits(n_frames: int, test: int, sizes: dict[str, tuple[int, int]],
                 seed: int = SPLIT_SEED) -> dict:
    """The reference code's splits (MDsim ``preprocessing/*.py``), index for index.

    MDsim draws them with scikit-learn's ``train_test_split(..., random_state=seed)``, which
    permutes with ``RandomState(seed).permutation(n)`` and takes the *second* part's frames
    first: the test split is the first ``test`` of one permutation of all frames and the pool
    the rest, in that order; each size takes the first ``train + val`` frames of the pool and
    splits them with a fresh ``RandomState(seed).permutation(train + val)``, validation first.
    A size's train+val set is therefore the same as ``random_splits``' (and a smaller one a
    subset of a larger one), but its division into train and val differs."""
    _check_split_sizes(n_frames, test, sizes)
    order = np.random.RandomState(seed).permutation(n_frames)
    pool = order[test:]
    split_sizes = {}
    for name, (train, val) in sizes.items():
        chosen = pool[:train + val]
        shuffled = np.random.RandomState(seed).permutation(train + val)
        split_sizes[name] = {"train": chosen[shuffled[val:]], "val": chosen[shuffled[:val]]}
    return {"test": order[:test], "sizes": split_sizes}


# how a dataset is split: the function and the words the manifest records
SPLIT_METHODS = {
    "nested": (random_splits, "numpy RandomState(seed).permutation; test first, then train and val from the rest "
                              "(smaller sizes are subsets of larger ones)"),
    "mdsim": (mdsim_splits, "the reference code's (MDsim): sklearn train_test_split(random_state=seed) twice: test = "
                            "first frames of RandomState(seed).permutation(n), each size's train+val = the next "
                            "train+val frames, split by RandomState(seed).permutation(train+val), validation first"),
}


def _open_text_for_writing(path: Path, gzipped: bool):
    """A text file, gzipped with a zero timestamp when asked (the same frames give the same bytes)."""
    if not gzipped:
        return open(path, "w")
    return io.TextIOWrapper(gzip.GzipFile(path, "wb", mtime=0), encoding="utf-8")


def write_frames(path: str | Path, frames) -> Path:
    """Frames (ASE Atoms with energy and/or forces attached) as extended XYZ, replaced whole."""
    import ase.io

    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    frames = iter(frames)
    try:
        with _open_text_for_writing(tmp, gzipped=path.suffix == ".gz") as f:
            # in chunks, so a 100,000-frame split is never held as Atoms all at once
            while chunk := list(itertools.islice(frames, 1000)):
                ase.io.write(f, chunk, format="extxyz")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def labelled(atoms, energy: float | None, forces) -> "object":
    """``atoms`` with its energy (eV, or None) and forces (eV/Å) attached as ASE stores results."""
    from ase.calculators.singlepoint import SinglePointCalculator

    results = {"forces": np.asarray(forces, dtype=float)}
    if energy is not None:
        results["energy"] = float(energy)
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def command_line() -> str:
    """The command that is running, as a user would type it again."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("lmpbench", "__main__.py"):
        argv[0] = "lmpbench"
    return shlex.join(argv)


def write_dataset(folder: str | Path, frames: list, *, name: str, system: str | None, source: dict,
                  test: int, sizes: dict[str, tuple[int, int]], seed: int = SPLIT_SEED,
                  reference_trajectory: str | None = None, notes: dict | None = None,
                  command: str | None = None, split_method: str = "nested", compress: bool = False) -> dict:
    """Write ``frames`` (labelled ASE Atoms, eV and Å) as a dataset folder and return its manifest.

    ``source`` says where the data came from (``{"kind": "download", "url", "sha256", ...}`` or
    ``{"kind": "engine", "engine", "version", "parameters", "seed", "wall_s"}``).
    ``reference_trajectory`` names a file already written into ``folder``. ``split_method``
    names the procedure in ``SPLIT_METHODS``. ``compress`` writes the splits gzipped
    (``.extxyz.gz``: ASE and nequip read them as they are). The manifest is written last, so a
    folder without one is an unfinished dataset."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)  # unfinished until the new manifest is written
    if not frames:
        raise DatasetError(f"dataset {name}: no frames")
    if split_method not in SPLIT_METHODS:
        raise DatasetError(f"unknown split method {split_method!r} (known: {', '.join(SPLIT_METHODS)})")
    split, method = SPLIT_METHODS[split_method]
    splits = split(len(frames), test, sizes, seed)
    suffix = ".extxyz.gz" if compress else ".extxyz"
    write_frames(folder / f"test{suffix}", (frames[i] for i in splits["test"]))
    split_record = {"seed": seed, "procedure": split_method, "method": method,
                    "test": {"file": f"test{suffix}", "frames": int(len(splits["test"]))}, "sizes": {}}
    for size, parts in splits["sizes"].items():
        record = {}
        for part, indices in parts.items():
            file = f"{part}_{size}{suffix}"
            write_frames(folder / file, (frames[i] for i in indices))
            record[part] = {"file": file, "frames": int(len(indices))}
        split_record["sizes"][size] = record
    first = frames[0]
    has_energy = "energy" in (first.calc.results if first.calc else {})
    manifest = {
        "dataset_format": DATASET_FORMAT, "name": name, "system": system, "units": UNITS,
        "frames": len(frames), "natoms": len(first), "elements": sorted(set(first.get_chemical_symbols())),
        "periodic": bool(first.pbc.any()), "has_energy": has_energy, "source": source, "split": split_record,
        "reference_trajectory": reference_trajectory, "notes": notes or {},
        "command": command or command_line(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    manifest["files"] = {p.name: {"bytes": p.stat().st_size, "sha256": sha256_of(p)}
                         for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST
                         and not p.name.startswith(".")}
    write_atomic(folder / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return manifest


@dataclass(frozen=True)
class Dataset:
    """A dataset folder as its consumers see it."""

    folder: Path
    manifest: dict

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def system(self) -> str | None:
        return self.manifest.get("system")

    @property
    def test_file(self) -> Path:
        return self.folder / self.manifest["split"]["test"]["file"]

    @property
    def sizes(self) -> list[str]:
        return list(self.manifest["split"]["sizes"])

    def split_file(self, size: str, part: str) -> Path:
        """The ``part`` ("train" or "val") file of split ``size``."""
        sizes = self.manifest["split"]["sizes"]
        if size not in sizes:
            raise DatasetError(f"dataset {self.name} has no split {size!r} (it has {', '.join(sizes)})")
        return self.folder / sizes[size][part]["file"]

    @property
    def reference_trajectory(self) -> Path | None:
        name = self.manifest.get("reference_trajectory")
        return self.folder / name if name else None

    def verify_files(self) -> list[str]:
        """Files whose size or sha256 differ from the manifest's (empty: all intact)."""
        bad = []
        for file, record in self.manifest["files"].items():
            path = self.folder / file
            if not path.is_file() or path.stat().st_size != record["bytes"] or sha256_of(path) != record["sha256"]:
                bad.append(file)
        return bad


def read_dataset(folder: str | Path) -> Dataset:
    """The dataset in ``folder``; one-line errors for a missing or unreadable manifest."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise DatasetError(f"{folder} is not a dataset (no {MANIFEST}; an interrupted write leaves none)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: unreadable ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("dataset_format") != DATASET_FORMAT:
        raise DatasetError(f"{path}: not a dataset manifest of format {DATASET_FORMAT}")
    return Dataset(folder, manifest)


def roots() -> list[Path]:
    """Where datasets are looked up by name: the user's folder, then the shipped ones."""
    return [user_root(), shipped_root()]


def _seed_folders(folder: Path) -> list[Path]:
    """The seed datasets of a reference set (``lmpbench reference``: seed1/, seed2/, ...), in seed order."""
    seeds = [d for d in folder.glob("seed*") if (d / MANIFEST).is_file() and d.name[4:].isdigit()]
    return sorted(seeds, key=lambda d: int(d.name[4:]))


def find_dataset(name_or_path: str | Path) -> Dataset:
    """A dataset given as a folder or by name (its folder name or manifest name) in ``roots()``.
    A reference set (a folder of seed datasets) stands for its first seed."""
    path = Path(name_or_path)
    candidates = [path] if path.is_dir() else [root / str(name_or_path) for root in roots()]
    for folder in candidates:
        if (folder / MANIFEST).is_file():
            return read_dataset(folder)
        if seeds := _seed_folders(folder):
            return read_dataset(seeds[0])
    for dataset in list_datasets():
        if dataset.name == str(name_or_path):
            return dataset
    names = sorted({d.name for d in list_datasets()})
    raise DatasetError(f"no dataset {name_or_path!r} (present: {', '.join(names) or 'none'}; "
                       "see `lmpbench data list`)")


def list_datasets() -> list[Dataset]:
    """Every readable dataset under ``roots()``, the seeds of reference sets included."""
    found = []
    for root in roots():
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            for candidate in [folder] if (folder / MANIFEST).is_file() else _seed_folders(folder):
                try:
                    found.append(read_dataset(candidate))
                except DatasetError:
                    continue
    return found
