"""Model architectures lmpbench can train (``lmpbench train``) and, later, deploy: a registry of data.

One ``Architecture`` entry per architecture says how to train it with its own trainer (the
config builder, the console script and its arguments, where the checkpoint lands), its
default hyperparameters per system category (``System.category``), the checkpoint suffixes
that identify its files, and how to evaluate a checkpoint independently of LAMMPS (an ASE
calculator). Entries are added with ``register``; duplicate names are refused.

The hyperparameter names of ``defaults`` are lmpbench's (``HYPERPARAMETERS``), the same for
every architecture; each entry's config builder maps them into its trainer's own config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


class ArchitectureError(ValueError):
    """Unknown architecture, or a checkpoint no architecture claims; the message says which are known."""


# lmpbench's hyperparameter names, in words (every entry's ``defaults`` uses these keys)
HYPERPARAMETERS = {
    "num_layers": "message-passing layers (the ghost shell of a multi-rank run grows with num_layers x cutoff)",
    "l_max": "highest rotation order of the equivariant features",
    "num_features": "features per rotation order",
    "radial_mlp_depth": "hidden layers of the radial network",
    "radial_mlp_width": "width of the radial network",
    "batch_size": "frames per training batch",
    "learning_rate": "initial learning rate (Adam), reduced on validation plateaus",
    "model_dtype": "float64 keeps the pair style's exactness checks meaningful",
}


@dataclass(frozen=True)
class TrainingRequest:
    """What to train, independent of the architecture: the builder turns it into a config.

    Data files are extended XYZ (eV, Å). ``val_file`` None means nequip-style splitting of
    ``train_file`` into ``split`` = (train frames, validation frames)."""

    type_names: tuple[str, ...]  # model types, one chemical element each (the system's elements)
    cutoff_A: float
    train_file: Path
    val_file: Path | None
    has_energy: bool  # False: forces-only data, trained on forces alone
    hyperparameters: dict
    seed: int = 1
    max_epochs: int | None = None  # None with max_minutes: as many as time allows
    max_minutes: float | None = None
    accelerator: str = "cpu"  # "cpu" or "gpu" (lightning's names)
    split: tuple[int, int] | None = None


@dataclass(frozen=True)
class Architecture:
    name: str
    description: str
    checkpoint_suffixes: tuple[str, ...]  # files of this architecture that deploy reads
    train_script: str  # console script of this environment that trains it
    defaults: dict[str, dict]  # system category -> hyperparameters (keys of HYPERPARAMETERS)
    build_config: Callable[[TrainingRequest], dict] = field(repr=False)  # -> the trainer's config
    # (config folder, config name, run folder) -> arguments of train_script
    train_arguments: Callable[[Path, str, Path], list[str]] = field(repr=False)
    # (max_epochs, max_minutes, seed), each None when not given -> the part of the config they set,
    # merged last so that command-line options win over a user's config file
    option_overrides: Callable[[int | None, float | None, int | None], dict] = field(repr=False)
    # run folder -> the checkpoint to keep (None if training wrote none)
    find_checkpoint: Callable[[Path], Path | None] = field(repr=False)
    # run folder -> per-epoch rows {"epoch", "train_loss", "val_forces_mae_meV_A", "val_energy_mae_meV_atom"}
    read_curve: Callable[[Path], list[dict]] = field(repr=False)
    # (checkpoint, device) -> an ASE calculator of the trained model, for the test-set errors
    calculator: Callable[[Path, str], object] = field(repr=False)
    # checkpoint -> the (1-based) epoch after which it was saved
    checkpoint_epoch: Callable[[Path], int | None] = field(repr=False)
    # a checkpoint may name files of the machine it was trained on; the portable form does not
    package_script: str | None = None  # console script that writes the portable form
    package_suffix: str = ""
    package_arguments: Callable[[Path, Path], list[str]] | None = field(default=None, repr=False)  # (ckpt, out)
    checkpoint_note: str = ""  # what a user of the checkpoint must know, recorded with it
    # trainers that read their own data format: request -> a writer of the converted data into the run
    # folder (called with it before the trainer starts); the reading and checking happen before any file is written
    prepare_data: Callable[[TrainingRequest], Callable[[Path], None]] | None = field(default=None, repr=False)
    # (kept checkpoint, run folder) -> None: completes the kept checkpoint in place (e.g. folds in what prepare_data
    # took out of the labels), so that the file alone is the trained model
    finish_checkpoint: Callable[[Path, Path], None] | None = field(default=None, repr=False)
    # accelerator ("cpu" or "gpu") -> environment variables of the trainer (e.g. hiding the GPU of a cpu run)
    train_environment: Callable[[str], dict] | None = field(default=None, repr=False)
    # False: the trainer has no time limit of its own, and lmpbench interrupts it at --max-minutes (keeping the
    # best checkpoint it has written by then)
    stops_at_max_minutes: bool = True

    def hyperparameters(self, category: str) -> dict:
        if category not in self.defaults:
            raise ArchitectureError(f"architecture {self.name} has no defaults for system category {category!r} "
                                    f"(it has {', '.join(self.defaults)})")
        return dict(self.defaults[category])


ARCHITECTURES: dict[str, Architecture] = {}


def register(architecture: Architecture) -> Architecture:
    if architecture.name in ARCHITECTURES:
        raise ArchitectureError(f"duplicate architecture name {architecture.name!r}")
    unknown = {key for values in architecture.defaults.values() for key in values} - set(HYPERPARAMETERS)
    if unknown:
        raise ArchitectureError(f"architecture {architecture.name}: unknown hyperparameter(s) {', '.join(sorted(unknown))}")
    ARCHITECTURES[architecture.name] = architecture
    return architecture


def get_architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ArchitectureError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[name]


def architecture_for_checkpoint(path: str | Path) -> Architecture:
    """The architecture whose checkpoint suffix ``path`` has (the question deploy asks)."""
    name = Path(path).name
    for architecture in ARCHITECTURES.values():
        if name.endswith(architecture.checkpoint_suffixes):
            return architecture
    known = ", ".join(f"{s} ({a.name})" for a in ARCHITECTURES.values() for s in a.checkpoint_suffixes)
    raise ArchitectureError(f"{path}: no architecture reads this file type (known: {known})")


def checkpoint_pickle_holds(path: str | Path, *markers: bytes) -> bool:
    """Whether ``path`` is a torch zip whose pickle holds every one of ``markers`` (names of a
    trainer's state): how a checkpoint is told from another kind with the same suffix, read
    without unpickling anything."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            pickle = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
            data = archive.read(pickle) if pickle is not None else b""
    except (zipfile.BadZipFile, OSError):
        return False
    return all(marker in data for marker in markers)


def config_text(config: dict) -> str:
    """A trainer config as YAML, interpolations (``${...}``) kept as written."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(config))


from lmpbench.architectures import nequip as _nequip  # noqa: E402,F401  (registers the built-in entries)
from lmpbench.architectures import allegro as _allegro  # noqa: E402,F401
from lmpbench.architectures import sevenn as _sevenn  # noqa: E402,F401
from lmpbench.architectures import torchmdnet as _torchmdnet  # noqa: E402,F401
from lmpbench.architectures import chgnet_training as _chgnet_training  # noqa: E402,F401
