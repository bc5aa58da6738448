"""``lmpbench data fetch`` and ``lmpbench data list``: the paper's datasets as dataset folders.

``fetch_dataset`` puts the published file into ``store.user_root() / name`` (downloaded with
resume, or copied from ``--from-file``), checks its sha256 against the one given, known or recorded,
converts it to eV and Å, splits it as the reference code did (``store.mdsim_splits``) and
writes the folder with ``store.write_dataset``, the reference trajectory beside the splits.
The source file stays in the folder: it is the provenance, and a later fetch reuses it.

Which checksum a file must have, first found wins: ``--sha256`` (given), the registry's
(known), the one the previous fetch of this dataset recorded in its manifest (recorded).
Without any, the file is accepted and its checksum recorded for next time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lmpbench.datasets import download as dl
from lmpbench.datasets.loaders import LOADERS
from lmpbench.datasets.sources import DATASET_SOURCES, DatasetSource, get_source
from lmpbench.datasets.store import (MANIFEST, SPLIT_METHODS, Dataset, DatasetError, list_datasets, read_dataset,
                                     user_root, write_dataset, write_frames)
from lmpbench.systems import SYSTEMS

REFERENCE_FILE = "reference.extxyz"
SPLIT_METHOD = "mdsim"  # paper parity: the reference code's own splits


@dataclass(frozen=True)
class FetchResult:
    dataset: Dataset
    status: str  # "fetched" or "present"
    obtained: str  # "download", "resumed download", "--from-file", "already in the folder", "present"


def recorded_sha256(folder: Path) -> str | None:
    """The source checksum the last complete fetch into ``folder`` recorded, if any; refused
    when ``folder`` holds a dataset that no download made (never written over)."""
    try:
        source = json.loads((folder / MANIFEST).read_text())["source"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(source, dict) or source.get("kind") != "download":
        raise DatasetError(f"{folder} holds a dataset that was not downloaded (source kind "
                           f"{source.get('kind') if isinstance(source, dict) else source!r}); move it away to fetch here")
    return source.get("sha256")


def fetch_dataset(name: str, *, from_file: str | Path | None = None, sha256: str | None = None,
                  force: bool = False, source: DatasetSource | None = None,
                  progress: Callable[[int, int | None], None] | None = None, echo: Callable[[str], None] | None = None,
                  timeout_s: float = 60.0) -> FetchResult:
    """Fetch dataset ``name`` (``sources.DATASET_SOURCES``; ``source`` replaces the entry,
    for tests and mirrors) into ``store.user_root() / name``. ``progress(bytes, total)``
    follows the download, ``echo`` gets a line per conversion step (water's take minutes).

    A complete dataset is left as it is unless ``force`` or ``from_file`` is given."""
    source = source or get_source(name)
    if sha256 is not None and not _is_sha256(sha256):
        raise DatasetError(f"--sha256 {sha256!r} is not a sha256 (64 hex digits)")
    folder = user_root() / source.name
    recorded = recorded_sha256(folder)
    if recorded and not force and from_file is None and (folder / source.file_name).is_file():
        dataset = read_dataset(folder)
        if sha256 is None or sha256.lower() == recorded:
            return FetchResult(dataset, "present", "present")
    expected, checked_against = next(((value.lower(), what) for value, what in
                                      ((sha256, "given"), (source.sha256, "known"), (recorded, "recorded")) if value),
                                     (None, None))
    what = f"{checked_against} sha256" if checked_against else "expected sha256"

    raw = folder / source.file_name
    periodic = SYSTEMS[source.system].category == "periodic"
    if from_file is not None:
        # checked and read where the user keeps it, so a wrong file never replaces a good one here
        from_file = Path(from_file)
        checked = dl.verify_sha256(from_file, expected, what)
        loaded = LOADERS[source.format](from_file, periodic, source.split_frames)
        _check_splits(source, loaded)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MANIFEST).unlink(missing_ok=True)  # unfinished from here until write_dataset's manifest
        fetched = dl.copy_verified(from_file, raw, expected_sha256=checked, checksum_what=f"sha256 of {from_file}")
        obtained = "--from-file"
    else:
        if raw.is_file():  # a previous fetch got this far
            fetched = dl.Fetched(raw, raw.stat().st_size, dl.verify_sha256(raw, expected, what), 0)
            obtained = "already in the folder"
        else:
            try:
                fetched = dl.download(source.url, raw, expected_sha256=expected, checksum_what=what,
                                      timeout_s=timeout_s, progress=progress)
            except dl.UnreachableError as err:
                raise DatasetError(f"{err}; download it elsewhere and run `lmpbench data fetch {source.name} "
                                   f"--from-file {source.file_name}`") from None
            obtained = "resumed download" if fetched.resumed_from else "download"
        try:
            loaded = LOADERS[source.format](raw, periodic, source.split_frames)
        except DatasetError as err:
            raise DatasetError(f"{err} (delete {raw} to download it again)") from None
        _check_splits(source, loaded)
        (folder / MANIFEST).unlink(missing_ok=True)  # unfinished from here until write_dataset's manifest
    frames = loaded.frames
    test = source.test_count(len(frames))
    echo = echo or (lambda line: None)
    if loaded.reference_frames is not None:
        echo(f"writing the reference trajectory {folder / REFERENCE_FILE}")
        write_frames(folder / REFERENCE_FILE, loaded.reference_frames)
        reference = REFERENCE_FILE
    else:
        reference = source.file_name
    record = {"kind": "download", "url": source.url, "file": source.file_name, "bytes": fetched.bytes,
              "sha256": fetched.sha256, "sha256_verified": expected is not None,
              "sha256_checked_against": checked_against, "units": source.units, "obtained": obtained}
    if from_file is not None:
        record["from_file"] = str(Path(from_file).resolve())
    notes = dict(loaded.notes)
    if source.split_frames is not None:
        notes["split_frames"] = f"the splits draw from the first {len(frames)} frames (the reference code's n_points)"
    if source.frame_spacing_fs is not None:
        notes["frame_spacing_fs"] = source.frame_spacing_fs
    echo(f"writing the splits of {len(frames)} frames and their checksums")
    write_dataset(folder, frames, name=source.name, system=source.system, source=record, test=test,
                  sizes=source.sizes, reference_trajectory=reference, notes=notes, split_method=SPLIT_METHOD)
    return FetchResult(read_dataset(folder), "fetched", obtained)


def _check_splits(source: DatasetSource, loaded) -> None:
    """Refuse too few frames for the splits before anything is written."""
    frames = len(loaded.frames)
    SPLIT_METHODS[SPLIT_METHOD][0](frames, source.test_count(frames), source.sizes)


@dataclass(frozen=True)
class DatasetSummary:
    name: str
    system: str | None
    state: str  # "complete" or "incomplete"
    frames: int | None
    bytes: int  # every file in the folder
    sha256: str | None  # of the source (download) or None
    folder: Path


def present_datasets() -> list[DatasetSummary]:
    """Every complete dataset (``store.list_datasets``), and the paper's datasets whose
    folder under the user root exists without a manifest (an interrupted fetch)."""
    summaries = []
    for dataset in list_datasets():
        files = dataset.manifest.get("files", {})
        size = sum(record["bytes"] for record in files.values()) + (dataset.folder / MANIFEST).stat().st_size
        summaries.append(DatasetSummary(dataset.name, dataset.system, "complete", dataset.manifest.get("frames"), size,
                                        (dataset.manifest.get("source") or {}).get("sha256"), dataset.folder))
    for name, source in DATASET_SOURCES.items():
        folder = user_root() / name
        if folder.is_dir() and not (folder / MANIFEST).is_file():
            size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
            summaries.append(DatasetSummary(name, source.system, "incomplete", None, size, None, folder))
    return summaries


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)
