"""CHGNet training (``lmpbench train --arch chgnet``): chgnet's own ``Trainer``, run by this
module's console script ``lmpbench-train-chgnet CONFIG RUN_DIR``.

chgnet trains from Python and has no command of its own; lmpbench runs every trainer as a
command (its output in trainer.log, its threads and time limit set from outside, a failure
that cannot take lmpbench down with it), so this module is that command. It reads the
config that ``build_config`` writes (``model``: CHGNet's constructor arguments; ``train``:
the trainer's; ``data``: the dataset's extended XYZ splits and elements), then:

- frames become pymatgen structures, molecules boxed (``lmpbench.architectures.chgnet.boxed``);
  labels are energies per atom (CHGNet predicts intensive energies) and forces; CHGNet's
  graphs are built with the model's own cutoffs;
- a CHGNet of the requested size is built from scratch; its AtomRef (the per-element energy
  that CHGNet adds to its network's) is fitted to the training frames by least squares
  (``fit_atom_reference``) and stays fixed, as chgnet advises for new data;
- chgnet's ``Trainer``: energy and force MSE, weight 1:1, Adam, cosine learning-rate decay,
  a checkpoint after each epoch. The one kept is ``bestF_*.pth.tar``, chgnet's copy of the
  epoch with the lowest validation force MAE (forces drive MD);
- after each epoch one row goes to ``curve.csv`` (training loss, validation MAEs in meV);
  ``max_minutes`` is checked there, so the trainer stops between epochs with whole files.

float32 only (chgnet's dtype). Energies are required (CHGNet's training targets start with e).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

import torch

UNLIMITED_EPOCHS = 1_000_000  # --max-minutes without --max-epochs: the runner stops at the time limit
CURVE = "curve.csv"  # one row per epoch, written by the runner
ELEMENTS = "elements.json"  # the training data's elements, folded into the kept checkpoint
BEST_FORCES = "bestF_*.pth.tar"  # chgnet's copy of the epoch with the lowest validation force MAE
CURVE_FIELDS = ("epoch", "train_loss", "val_forces_mae_meV_A", "val_energy_mae_meV_atom")

# lmpbench's hyperparameter names; num_features is CHGNet's atom, bond and angle feature width and
# num_layers its atom convolutions (n_conv; one bond and one angle update between two of them).
# CHGNet's own sizes (64 features, 4 convolutions).
DEFAULTS = {
    "molecule": {"num_layers": 4, "num_features": 64, "batch_size": 4, "learning_rate": 1e-3, "model_dtype": "float32"},
    "periodic": {"num_layers": 4, "num_features": 64, "batch_size": 2, "learning_rate": 1e-3, "model_dtype": "float32"},
}
BOND_CUTOFF_A = 3.0  # CHGNet's bond-graph cutoff (angles between bonds shorter than this)


def build_config(request) -> dict:
    """The runner's config (as a dict) for ``request``."""
    from lmpbench.architectures import ArchitectureError

    hp = request.hyperparameters
    if not request.has_energy:
        raise ArchitectureError("chgnet trains on energies and forces together; this dataset has forces only "
                                "(train it with --arch nequip, which trains on forces alone)")
    if hp.get("model_dtype", "float32") != "float32":
        raise ArchitectureError(f"chgnet trains in float32 only (model_dtype {hp['model_dtype']} asked)")
    if request.val_file is None:
        raise ArchitectureError("chgnet's trainer needs a validation file (the dataset's val split)")
    return {
        "model": {
            "atom_fea_dim": hp["num_features"], "bond_fea_dim": hp["num_features"],
            "angle_fea_dim": hp["num_features"], "n_conv": hp["num_layers"],
            "atom_graph_cutoff": float(request.cutoff_A),
            "bond_graph_cutoff": min(BOND_CUTOFF_A, float(request.cutoff_A)),
        },
        "train": {
            "epochs": request.max_epochs if request.max_epochs is not None else UNLIMITED_EPOCHS,
            "max_minutes": request.max_minutes,
            "learning_rate": hp["learning_rate"],
            "batch_size": hp["batch_size"],
            "seed": request.seed,
            "device": "cuda" if request.accelerator == "gpu" else "cpu",
            "energy_loss_ratio": 1.0,
            "force_loss_ratio": 1.0,
        },
        "data": {"train_file": str(request.train_file), "val_file": str(request.val_file),
                 "type_names": list(request.type_names)},
    }


def option_overrides(max_epochs: int | None, max_minutes: float | None, seed: int | None) -> dict:
    train = {}
    if max_epochs is not None:
        train["epochs"] = max_epochs
    elif max_minutes is not None:
        train["epochs"] = UNLIMITED_EPOCHS
    if max_minutes is not None:
        train["max_minutes"] = max_minutes
    if seed is not None:
        train["seed"] = seed
    return {"train": train} if train else {}


def train_arguments(config_dir: Path, config_name: str, run_dir: Path) -> list[str]:
    return [str(config_dir / f"{config_name}.yaml"), str(run_dir)]


def find_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(Path(run_dir).glob(BEST_FORCES))
    return found[-1] if found else None


def read_curve(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / CURVE
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                rows.append({"epoch": int(row["epoch"]), **{k: float(row[k]) for k in CURVE_FIELDS[1:]}})
            except (KeyError, TypeError, ValueError):  # a line being written
                continue
    return rows


def checkpoint_epoch(checkpoint: Path) -> int | None:
    """The epochs done when chgnet saved ``checkpoint`` (its history has one entry per epoch)."""
    from lmpbench.architectures.chgnet import read_checkpoint

    history = read_checkpoint(checkpoint).get("training_history", {})
    return len(history["f"]["val"]) if "f" in history else None


def finish_checkpoint(model: Path, run_dir: Path) -> None:
    """Record the training data's elements in the kept checkpoint (deploy's type names; CHGNet's
    embedding has rows for 94 elements, trained for these only). Written beside it, then moved."""
    from lmpbench.architectures.chgnet import TRAINED_ELEMENTS, read_checkpoint

    state = read_checkpoint(model)
    state[TRAINED_ELEMENTS] = json.loads((Path(run_dir) / ELEMENTS).read_text())
    partial = model.with_name(model.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, model)


def calculator(checkpoint: Path, device: str = "cpu"):
    from lmpbench.architectures.chgnet import calculator as chgnet_calculator

    return chgnet_calculator(checkpoint, device)


# ---------------------------------------------------------------------------------------------
# the runner (the console script)


class TimeLimitReached(Exception):
    """Raised after an epoch's files are written once ``max_minutes`` have passed."""


def _frames(path: str, cutoff: float):
    """pymatgen structures, energies per atom and forces of an extended XYZ file."""
    from ase.io import read
    from pymatgen.io.ase import AseAtomsAdaptor

    from lmpbench.architectures.chgnet import boxed

    structures, energies, forces = [], [], []
    for atoms in read(path, ":"):
        structures.append(AseAtomsAdaptor.get_structure(boxed(atoms, cutoff)))
        energies.append(atoms.get_potential_energy() / len(atoms))
        forces.append(atoms.get_forces().tolist())
    return structures, energies, forces


def fit_atom_reference(atom_reference, structures, energies_per_atom) -> None:
    """CHGNet's AtomRef (energy per atom = element fractions · weights) fitted to the frames by
    least squares in float64 (numpy's lstsq; the minimum-norm weights when the frames do not fix
    every element's, as one molecule's frames do not). chgnet's own ``AtomRef.fit`` inverts
    FᵀF in float32 with a pseudo-inverse, and on frames of one composition (a rank-one F) its
    weights missed the mean energy by 3.8 eV/atom."""
    import numpy as np

    fractions = np.zeros((len(structures), atom_reference.max_num_elements))
    for row, structure in enumerate(structures):
        for site in structure:
            fractions[row, site.specie.Z - 1] += 1.0 / len(structure)
    weights = np.linalg.lstsq(fractions, np.asarray(energies_per_atom, dtype=float), rcond=None)[0]
    with torch.no_grad():
        atom_reference.fc.weight.copy_(torch.tensor(weights, dtype=atom_reference.fc.weight.dtype).view(1, -1))
    atom_reference.fitted = True


def _trainer_class():
    from chgnet.trainer import Trainer

    class LoggedTrainer(Trainer):
        """chgnet's Trainer that writes a curve row after each epoch and stops at a deadline."""

        def start_log(self, run_dir: Path, deadline: float | None, train_batches: int):
            self.run_dir, self.deadline, self.train_batches = run_dir, deadline, train_batches
            self.batch_losses = []
            criterion = self.criterion

            def recorded(targets, prediction):
                out = criterion(targets, prediction)
                self.batch_losses.append(float(out["loss"].detach()))
                return out

            self.criterion = recorded

        def save_checkpoint(self, epoch: int, mae_error: dict, save_dir: str) -> None:
            # validation losses pass through the criterion too: the training ones come first in each epoch
            train_batches = self.batch_losses[:self.train_batches]
            self.batch_losses = []
            super().save_checkpoint(epoch, mae_error, save_dir)
            row = {"epoch": epoch + 1, "train_loss": sum(train_batches) / max(1, len(train_batches)),
                   "val_forces_mae_meV_A": 1000.0 * mae_error["f"], "val_energy_mae_meV_atom": 1000.0 * mae_error["e"]}
            path = self.run_dir / CURVE
            new = not path.is_file()
            with open(path, "a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=CURVE_FIELDS)
                if new:
                    writer.writeheader()
                writer.writerow(row)
            if self.deadline is not None and time.time() >= self.deadline:
                raise TimeLimitReached

    return LoggedTrainer


def run(config: dict, run_dir: Path) -> None:
    import random

    import numpy as np
    from chgnet.data.dataset import StructureData, collate_graphs
    from chgnet.model import CHGNet
    from torch.utils.data import DataLoader

    started = time.time()
    model_args, train, data = config["model"], config["train"], config["data"]
    seed = int(train["seed"])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ELEMENTS).write_text(json.dumps(data["type_names"]))

    model = CHGNet(**model_args)
    cutoff = float(model_args["atom_graph_cutoff"])
    train_frames, val_frames = _frames(data["train_file"], cutoff), _frames(data["val_file"], cutoff)
    fit_atom_reference(model.composition_model, train_frames[0], train_frames[1])

    def loader(frames, shuffle: bool) -> DataLoader:
        dataset = StructureData(*frames, graph_converter=model.graph_converter, shuffle=False)
        return DataLoader(dataset, batch_size=int(train["batch_size"]), shuffle=shuffle, collate_fn=collate_graphs,
                          generator=torch.Generator().manual_seed(seed))

    train_loader, val_loader = loader(train_frames, True), loader(val_frames, False)
    trainer = _trainer_class()(
        model, targets="ef", energy_loss_ratio=float(train["energy_loss_ratio"]),
        force_loss_ratio=float(train["force_loss_ratio"]), optimizer="Adam", scheduler="CosLR", criterion="MSE",
        epochs=int(train["epochs"]), learning_rate=float(train["learning_rate"]), torch_seed=seed, data_seed=seed,
        use_device=train["device"], print_freq=max(1, len(train_loader) // 4))
    max_minutes = train.get("max_minutes")
    trainer.start_log(run_dir, started + 60 * float(max_minutes) if max_minutes else None, len(train_loader))
    try:
        trainer.train(train_loader, val_loader, save_dir=str(run_dir))
    except TimeLimitReached:
        print(f"max_minutes ({max_minutes}) reached: stopped after epoch {len(read_curve(run_dir))}")


def main(argv: list[str] | None = None) -> None:
    import yaml

    parser = argparse.ArgumentParser(prog="lmpbench-train-chgnet",
                                     description="Train CHGNet with chgnet's Trainer from a config lmpbench train writes.")
    parser.add_argument("config", type=Path, help="the YAML config (model, train, data)")
    parser.add_argument("run_dir", type=Path, help="folder for chgnet's checkpoints and the learning curve")
    args = parser.parse_args(argv)
    run(yaml.safe_load(args.config.read_text()), args.run_dir)


def _register():
    from lmpbench.architectures import Architecture, register

    return register(Architecture(
        name="chgnet",
        description="CHGNet (atom, bond and angle graphs; AtomRef), chgnet 0.4 and its Trainer (float32)",
        checkpoint_suffixes=(".pth.tar",),
        train_script="lmpbench-train-chgnet",
        defaults=DEFAULTS,
        build_config=build_config,
        option_overrides=option_overrides,
        train_arguments=train_arguments,
        find_checkpoint=find_checkpoint,
        read_curve=read_curve,
        calculator=calculator,
        checkpoint_epoch=checkpoint_epoch,
        finish_checkpoint=finish_checkpoint,
        checkpoint_note="chgnet's own checkpoint (model_args, weights, optimizer, history) plus the trained elements; "
                        "CHGNet.from_file(FILE) loads it, lmpbench deploy takes it",
    ))


CHGNET = _register()
