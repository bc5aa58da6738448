"""The paper's datasets as data: where each is published, in what format and units, and how
the reference code (MDsim, Fu et al. 2023) split it.

One entry per dataset; ``lmpbench data fetch NAME`` downloads ``url`` (or takes the same file
with ``--from-file``), reads it with the loader named by ``format`` (``datasets.loaders``),
converts it to eV and Å and writes a dataset folder (``datasets.store``) named ``name``.

The URLs, file names, split sizes and ``split_frames`` are those of MDsim's
``preprocessing/{md17,water,alanine_dipeptide,lips}.py``. No publisher gives a sha256 for these
files (Zenodo and Materials Cloud list md5 only), so ``sha256`` is None: the checksum of the
first fetch is recorded in the dataset's manifest and later fetches are checked against it.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmpbench.datasets.store import DatasetError

MD17_URL = "http://www.quantum-machine.org/gdml/data/npz/{file}"  # the sGDML site's original MD17 files
MDSIM_ZENODO_URL = "https://zenodo.org/record/7196767/files/{file}?download=1"  # the paper's data record
LIPS_URL = "https://archive.materialscloud.org/record/file?filename=lips.xyz&record_id=1302"  # NequIP's LiPS record

KCAL = "energy kcal/mol, forces kcal/mol/Å, positions Å"


@dataclass(frozen=True)
class DatasetSource:
    """A published dataset and how the benchmark splits it.

    ``test_frames`` None: every frame that no split size draws is a test frame (LiPS).
    ``split_frames``: the reference code split only the first N frames of the file (the rest
    still belong to the reference trajectory). ``sha256``: a checksum from a trustworthy
    source, or None (then the first fetch's is recorded). ``frame_spacing_fs``: the time
    between frames where the publisher states it (None: not stated)."""

    name: str
    system: str  # a name in systems.SYSTEMS
    url: str
    file_name: str
    format: str  # a loader in datasets.loaders.LOADERS
    units: str  # as the source stores them
    sizes: dict  # size name -> (train frames, validation frames)
    test_frames: int | None
    split_frames: int | None = None
    sha256: str | None = None
    frame_spacing_fs: float | None = None

    def test_count(self, n_frames: int) -> int:
        """Test frames of a file of ``n_frames`` frames."""
        if self.test_frames is not None:
            return self.test_frames
        return max(0, n_frames - max(train + val for train, val in self.sizes.values()))


def _md17(molecule: str, file_name: str) -> DatasetSource:
    return DatasetSource(f"md17_{molecule}", f"md17_{molecule}", MD17_URL.format(file=file_name), file_name,
                         "md17_npz", KCAL, {"10k": (9500, 500)}, test_frames=10000)


def _registry(items) -> dict[str, DatasetSource]:
    table = {}
    for item in items:
        if item.name in table:
            raise DatasetError(f"duplicate dataset name {item.name!r}")
        table[item.name] = item
    return table


DATASET_SOURCES = _registry([
    _md17("ethanol", "ethanol_dft.npz"),
    _md17("aspirin", "aspirin_dft.npz"),
    _md17("naphthalene", "naphthalene_dft.npz"),
    _md17("salicylic_acid", "salicylic_dft.npz"),  # the sGDML site's name has no "_acid"
    DatasetSource("water", "water", MDSIM_ZENODO_URL.format(file="water.npy"), "water.npy", "mdsim_npy", KCAL,
                  {"1k": (950, 50), "10k": (9500, 500), "90k": (85500, 4500)}, test_frames=10000),
    # MDsim splits the first 50,000 frames (its n_points) of the file
    DatasetSource("alanine_dipeptide", "alanine_dipeptide", MDSIM_ZENODO_URL.format(file="alanine_dipeptide.npy"),
                  "alanine_dipeptide.npy", "mdsim_npy", "forces kcal/mol/Å (no energies), positions Å",
                  {"40k": (38000, 2000)}, test_frames=10000, split_frames=50000),
    DatasetSource("lips", "lips", LIPS_URL, "lips.xyz", "extxyz", "energy eV, forces eV/Å, positions Å",
                  {"20k": (19000, 1000)}, test_frames=None),
])


def get_source(name: str) -> DatasetSource:
    if name not in DATASET_SOURCES:
        raise DatasetError(f"unknown dataset {name!r}; the paper's datasets are {', '.join(DATASET_SOURCES)}")
    return DATASET_SOURCES[name]
