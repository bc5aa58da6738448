"""Allegro (``nequip-allegro`` 0.8), trained by nequip's trainer, as a registry entry.

Allegro is built on nequip's framework: the same trainer (``nequip-train``), the same
checkpoints (``.ckpt``) and packages (``.nequip.zip``), the same ASE calculator and the same
deploy route (``lmpbench.deploy`` loads an Allegro file exactly as a NequIP one). What
differs is the model section of the config, and the model itself: Allegro is strictly
local (its layers refine edge features of one atom's environment, no message passes
between atoms), so a deployed Allegro model has ``num_layers`` 1 in the contract's sense
and its multi-rank ghost shell is one r_max deep, however many Allegro layers it has.

Hyperparameters (lmpbench's names): ``num_layers`` Allegro layers, ``l_max`` of the
tensor track, ``num_features`` scalar features (tensor features: a quarter of them, at
least 4), ``radial_mlp_depth``/``radial_mlp_width`` the hidden layers of the two-body,
Allegro and readout MLPs.
"""

from __future__ import annotations

from lmpbench.architectures import Architecture, TrainingRequest, register
from lmpbench.architectures import nequip as _nequip

DEFAULTS = {
    "molecule": {"num_layers": 2, "l_max": 1, "num_features": 32, "radial_mlp_depth": 1, "radial_mlp_width": 32,
                 "batch_size": 4, "learning_rate": 0.004, "model_dtype": "float64"},
    "periodic": {"num_layers": 2, "l_max": 1, "num_features": 16, "radial_mlp_depth": 1, "radial_mlp_width": 16,
                 "batch_size": 2, "learning_rate": 0.004, "model_dtype": "float64"},
}


def model_section(request: TrainingRequest) -> dict:
    """The ``training_module.model`` of an Allegro config (nequip's interpolations kept)."""
    hp = request.hyperparameters
    width, depth = hp["radial_mlp_width"], hp["radial_mlp_depth"]
    return {
        "_target_": "allegro.model.AllegroModel",
        "seed": "${seed}",
        "model_dtype": hp["model_dtype"],
        "type_names": "${model_type_names}",
        "r_max": "${cutoff_radius}",
        "l_max": hp["l_max"],
        "parity": True,
        "radial_chemical_embed": {"_target_": "allegro.nn.TwoBodyBesselScalarEmbed", "num_bessels": 8,
                                  "bessel_trainable": False, "polynomial_cutoff_p": 6},
        "radial_chemical_embed_dim": hp["num_features"],
        "scalar_embed_mlp_hidden_layers_depth": depth,
        "scalar_embed_mlp_hidden_layers_width": width,
        "scalar_embed_mlp_nonlinearity": "silu",
        "num_layers": hp["num_layers"],
        "num_scalar_features": hp["num_features"],
        "num_tensor_features": max(4, hp["num_features"] // 4),
        "allegro_mlp_hidden_layers_depth": depth,
        "allegro_mlp_hidden_layers_width": width,
        "allegro_mlp_nonlinearity": "silu",
        "tp_path_channel_coupling": True,
        "readout_mlp_hidden_layers_depth": depth,
        "readout_mlp_hidden_layers_width": width,
        "readout_mlp_nonlinearity": "silu",
        "avg_num_neighbors": "${training_data_stats:num_neighbors_mean}",
        "per_type_energy_shifts": ("${training_data_stats:per_atom_energy_mean}" if request.has_energy else 0.0),
        "per_type_energy_scales": "${training_data_stats:forces_rms}",
    }


def build_config(request: TrainingRequest) -> dict:
    """nequip's config of lmpbench (data, trainer, loss, checkpoints) with Allegro's model."""
    config = _nequip.build_config(request)
    config["training_module"]["model"] = model_section(request)
    return config


ALLEGRO = register(Architecture(
    name="allegro",
    description="Allegro (strictly local equivariant model), nequip-allegro 0.8 on nequip 0.19, trained by nequip-train",
    checkpoint_suffixes=(".ckpt", ".nequip.zip"),  # nequip's files; deploy reads them through nequip
    train_script="nequip-train",
    defaults=DEFAULTS,
    build_config=build_config,
    option_overrides=_nequip.option_overrides,
    train_arguments=_nequip.train_arguments,
    find_checkpoint=_nequip.find_checkpoint,
    read_curve=_nequip.read_curve,
    calculator=_nequip.calculator,
    checkpoint_epoch=_nequip.checkpoint_epoch,
    package_script="nequip-package",
    package_suffix=".nequip.zip",
    package_arguments=_nequip.NEQUIP.package_arguments,
    checkpoint_note=_nequip.NEQUIP.checkpoint_note,
))
