"""NequIP, trained by nequip's own trainer (``nequip-train``, hydra + lightning), as a registry entry.

``build_config`` is THE nequip training config of lmpbench (``lmpbench train`` and the toy
model of the demo and tests both use it): data from extended XYZ files through nequip's
``ASEDataModule``, the model's type names = the system's elements, float64 by default, an
EMA training module, a CSV log of every epoch, and two checkpoints in the run folder:
``best.ckpt`` (lowest validation weighted sum, the one lmpbench keeps) and ``last.ckpt``.
Forces-only data (no energies) trains on forces alone; the per-type energy shifts are then
zero, since no label fixes the energy's zero.
"""

from __future__ import annotations

import csv
from pathlib import Path

from lmpbench.architectures import Architecture, TrainingRequest, register

VAL_MONITOR = "val0_epoch/weighted_sum"  # nequip's name of the first validation set's weighted metric sum

# The pair style's exactness checks run in float64; small and fast so that CPU training is
# a matter of minutes. Molecules (6 Å: tens of atoms, most of them neighbours) get more
# features; periodic systems (4 Å, hundreds of atoms per frame) fewer and smaller batches.
DEFAULTS = {
    "molecule": {"num_layers": 2, "l_max": 1, "num_features": 32, "radial_mlp_depth": 1, "radial_mlp_width": 32,
                 "batch_size": 4, "learning_rate": 0.01, "model_dtype": "float64"},
    "periodic": {"num_layers": 2, "l_max": 1, "num_features": 16, "radial_mlp_depth": 1, "radial_mlp_width": 16,
                 "batch_size": 2, "learning_rate": 0.01, "model_dtype": "float64"},
}


def _metric(name: str, field, metric: str, coeff: float | None = None) -> dict:
    return {"name": name, "field": field, "coeff": coeff, "metric": {"_target_": f"nequip.train.{metric}"}}


def _data_section(request: TrainingRequest, batch_size: int) -> dict:
    dataloader = {"_target_": "torch.utils.data.DataLoader", "batch_size": batch_size}
    section = {
        "_target_": "nequip.data.datamodule.ASEDataModule",
        "seed": "${seed}",
        "transforms": [
            {"_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper",
             "model_type_names": "${model_type_names}",
             "chemical_species_to_atom_type_map": "${list_to_identity_dict:${chemical_species}}"},
            {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": "${cutoff_radius}"},
        ],
        "train_dataloader": {**dataloader, "shuffle": True},
        "val_dataloader": dataloader,
    }
    if request.val_file is None:
        n_train, n_val = request.split
        section["split_dataset"] = {"file_path": str(request.train_file), "train": n_train, "val": n_val}
    else:
        section["train_file_path"] = str(request.train_file)
        section["val_file_path"] = str(request.val_file)
    if request.has_energy:
        section["stats_manager"] = {"_target_": "nequip.data.CommonDataStatisticsManager",
                                    "type_names": "${model_type_names}"}
    else:  # CommonDataStatisticsManager needs energies; these two are all the model below uses
        section["stats_manager"] = {"_target_": "nequip.data.DataStatisticsManager", "metrics": [
            {"name": "num_neighbors_mean", "field": {"_target_": "nequip.data.NumNeighbors"},
             "metric": {"_target_": "nequip.data.Mean"}},
            {"name": "forces_rms", "field": "forces", "metric": {"_target_": "nequip.data.RootMeanSquare"}},
        ]}
    return section


def _loss_and_metrics(has_energy: bool) -> tuple[dict, dict]:
    if has_energy:
        loss = {"_target_": "nequip.train.EnergyForceLoss", "per_atom_energy": True,
                "coeffs": {"total_energy": 1.0, "forces": 1.0}}
        metrics = {"_target_": "nequip.train.EnergyForceMetrics",
                   "coeffs": {"per_atom_energy_mae": 1.0, "forces_mae": 1.0}}
        return loss, metrics
    loss = {"_target_": "nequip.train.MetricsManager",
            "metrics": [_metric("forces_mse", "forces", "MeanSquaredError", 1.0)]}
    metrics = {"_target_": "nequip.train.MetricsManager",
               "metrics": [_metric("forces_mae", "forces", "MeanAbsoluteError", 1.0),
                           _metric("forces_rmse", "forces", "RootMeanSquaredError")]}
    return loss, metrics


def max_time(minutes: float) -> str:
    """lightning's "DD:HH:MM:SS" (a dict would reach it as an omegaconf DictConfig, which it refuses)."""
    seconds = max(1, round(minutes * 60))
    return f"{seconds // 86400:02d}:{seconds // 3600 % 24:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def build_config(request: TrainingRequest) -> dict:
    """The nequip-train config (a hydra config, as a dict) for ``request``."""
    hp = request.hyperparameters
    loss, metrics = _loss_and_metrics(request.has_energy)
    max_epochs = request.max_epochs if request.max_epochs is not None else -1  # -1: until max_time
    trainer = {
        "_target_": "lightning.Trainer",
        "accelerator": request.accelerator,
        "devices": 1,
        "max_epochs": max_epochs,
        "check_val_every_n_epoch": 1,
        "log_every_n_steps": 10,  # the CSV log is flushed at every logged step
        "enable_progress_bar": False,
        # one row per logged step and per epoch; lmpbench's training curve is read from it
        "logger": {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": "${hydra:runtime.output_dir}",
                   "name": "csv_log", "version": 0},
        "callbacks": [
            {"_target_": "lightning.pytorch.callbacks.ModelCheckpoint", "dirpath": "${hydra:runtime.output_dir}",
             "filename": "best", "monitor": VAL_MONITOR, "mode": "min", "save_top_k": 1, "save_last": False},
            {"_target_": "lightning.pytorch.callbacks.ModelCheckpoint", "dirpath": "${hydra:runtime.output_dir}",
             "filename": "last", "save_top_k": 1, "save_last": False},
        ],
    }
    if request.max_minutes is not None:
        trainer["max_time"] = max_time(request.max_minutes)
    return {
        "run": ["train"],
        "seed": request.seed,
        "cutoff_radius": float(request.cutoff_A),
        "model_type_names": list(request.type_names),
        "chemical_species": "${model_type_names}",
        "data": _data_section(request, hp["batch_size"]),
        "trainer": trainer,
        "training_module": {
            "_target_": "nequip.train.EMALightningModule",
            "loss": loss,
            "val_metrics": metrics,
            "optimizer": {"_target_": "torch.optim.Adam", "lr": hp["learning_rate"]},
            "lr_scheduler": {
                "scheduler": {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "factor": 0.6, "patience": 5},
                "monitor": VAL_MONITOR, "interval": "epoch", "frequency": 1},
            "model": {
                "_target_": "nequip.model.NequIPGNNModel",
                "seed": "${seed}",
                "model_dtype": hp["model_dtype"],
                "type_names": "${model_type_names}",
                "r_max": "${cutoff_radius}",
                "l_max": hp["l_max"],
                "parity": True,
                "num_layers": hp["num_layers"],
                "num_features": hp["num_features"],
                "radial_mlp_depth": hp["radial_mlp_depth"],
                "radial_mlp_width": hp["radial_mlp_width"],
                "avg_num_neighbors": "${training_data_stats:num_neighbors_mean}",
                # forces-only data: no energy label fixes the zero, so no shift
                "per_type_energy_shifts": ("${training_data_stats:per_atom_energy_mean}" if request.has_energy else 0.0),
                "per_type_energy_scales": "${training_data_stats:forces_rms}",
            },
        },
    }


def option_overrides(max_epochs: int | None, max_minutes: float | None, seed: int | None) -> dict:
    trainer = {}
    if max_epochs is not None:
        trainer["max_epochs"] = max_epochs
    if max_minutes is not None:
        trainer["max_time"] = max_time(max_minutes)
        if max_epochs is None:
            trainer["max_epochs"] = -1  # until the time is up
    overrides = {"trainer": trainer} if trainer else {}
    if seed is not None:
        overrides["seed"] = seed
    return overrides


def train_arguments(config_dir: Path, config_name: str, run_dir: Path) -> list[str]:
    return ["-cp", str(config_dir), "-cn", config_name, f"hydra.run.dir={run_dir}"]


def find_checkpoint(run_dir: Path) -> Path | None:
    for name in ("best.ckpt", "last.ckpt"):
        if (run_dir / name).is_file():
            return run_dir / name
    return None


def _number(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def read_curve(run_dir: Path) -> list[dict]:
    """One row per epoch from lightning's CSV log: the epoch's mean training loss (nequip's
    weighted sum of the loss terms, eV² units) and the validation MAEs in meV."""
    log = run_dir / "csv_log" / "version_0" / "metrics.csv"
    if not log.is_file():
        return []
    epochs: dict[int, dict] = {}
    with open(log, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("epoch") in (None, ""):
                continue
            entry = epochs.setdefault(int(float(row["epoch"])), {})
            for column, key, factor in (("train_loss_epoch/weighted_sum", "train_loss", 1.0),
                                        ("val0_epoch/forces_mae", "val_forces_mae_meV_A", 1000.0),
                                        ("val0_epoch/per_atom_energy_mae", "val_energy_mae_meV_atom", 1000.0)):
                value = _number(row.get(column))
                if value is not None:
                    entry[key] = value * factor
    # an epoch cut short by max_time has a training loss but no validation: not a finished epoch
    return [{"epoch": epoch + 1, "train_loss": values.get("train_loss"),
             "val_forces_mae_meV_A": values.get("val_forces_mae_meV_A"),
             "val_energy_mae_meV_atom": values.get("val_energy_mae_meV_atom")}
            for epoch, values in sorted(epochs.items()) if "val_forces_mae_meV_A" in values]


def calculator(checkpoint: Path, device: str):
    """nequip's own ASE calculator; call it under a float64 default dtype (nequip converts
    positions in the default dtype, and float32 input to a float64 model gives NaN)."""
    from nequip.integrations.ase import NequIPCalculator

    # the model's type names are chemical elements (the system's), so the identity map is right
    return NequIPCalculator._from_saved_model(str(checkpoint), device=device, chemical_species_to_atom_type_map=True)


def checkpoint_epoch(checkpoint: Path) -> int | None:
    """The (1-based) epoch after which lightning saved ``checkpoint``."""
    import torch

    state = torch.load(str(checkpoint), map_location="cpu", weights_only=False)
    epoch = state.get("epoch")
    return int(epoch) + 1 if epoch is not None else None


NEQUIP = register(Architecture(
    name="nequip",
    description="NequIP (E(3)-equivariant message passing), nequip 0.19 and its trainer nequip-train",
    checkpoint_suffixes=(".ckpt", ".nequip.zip"),
    train_script="nequip-train",
    defaults=DEFAULTS,
    build_config=build_config,
    option_overrides=option_overrides,
    train_arguments=train_arguments,
    find_checkpoint=find_checkpoint,
    read_curve=read_curve,
    calculator=calculator,
    checkpoint_epoch=checkpoint_epoch,
    # nequip rebuilds a checkpoint's data module on load, so a .ckpt needs its training files;
    # a package holds the model alone and loads anywhere
    package_script="nequip-package",
    package_suffix=".nequip.zip",
    package_arguments=lambda checkpoint, out: ["build", str(checkpoint), str(out)],
    checkpoint_note="nequip rebuilds a checkpoint's data module when it loads one: the .ckpt needs the dataset's "
                    "training files where they were; the .nequip.zip package loads anywhere",
))
