"""Allegro (nequip-allegro): trained with lmpbench's allegro entry, deployed, equal in LAMMPS to
nequip's ASE calculator on 1 and 2 ranks (float64, tolerance 1e-8), and NVE as ASE's."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from zoo_helpers import alloy, calculator_state, lammps_state, max_differences, nve_against_ase

from lmpbench.deploy import default_dtype, deploy, read_deployed_metadata

ELEMENTS = ["Cu", "Au"]
TOL = 1e-8


@pytest.fixture(scope="module")
def allegro_ckpt(tmp_path_factory) -> Path:
    """A tiny Allegro model trained for 2 epochs on EMT data, with the registry entry's own config."""
    from ase.io import write

    from lmpbench.architectures import TrainingRequest, config_text, get_architecture
    from lmpbench.models.toy_nequip import TOY_HYPERPARAMETERS, emt_frames

    out = tmp_path_factory.mktemp("allegro")
    write(out / "emt.xyz", emt_frames(40, tuple(ELEMENTS)), format="extxyz")
    arch = get_architecture("allegro")
    request = TrainingRequest(type_names=tuple(ELEMENTS), cutoff_A=4.0, train_file=out / "emt.xyz", val_file=None,
                              has_energy=True, hyperparameters={**TOY_HYPERPARAMETERS, "num_layers": 2}, seed=1,
                              max_epochs=2, split=(35, 5))
    (out / "allegro.yaml").write_text(config_text(arch.build_config(request)))
    proc = subprocess.run([str(Path(sys.executable).parent / arch.train_script),
                           *arch.train_arguments(out, "allegro", out / "run")], cwd=out, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    checkpoint = arch.find_checkpoint(out / "run")
    assert checkpoint is not None
    return checkpoint


@pytest.fixture(scope="module")
def allegro_deployed(allegro_ckpt, tmp_path_factory):
    """target -> deployed file, deployed (and self-checked) on first use."""
    out = tmp_path_factory.mktemp("allegro_deployed")
    deployed: dict[str, Path] = {}

    def get(target: str) -> Path:
        if target not in deployed:
            suffix = ".pt" if target == "torchscript-ghost" else ".pt2"
            deployed[target] = deploy(allegro_ckpt, out / f"allegro_{target}{suffix}", target=target,
                                       echo=lambda *a: None).path
        return deployed[target]

    return get


@pytest.fixture(scope="module")
def allegro_calc(allegro_ckpt):
    from lmpbench.architectures import get_architecture

    with default_dtype(torch.float64):
        return get_architecture("allegro").calculator(allegro_ckpt, "cpu")


def test_deployed_as_allegro_strictly_local(allegro_deployed):
    for target in ("torchscript-ghost",):
        meta = read_deployed_metadata(allegro_deployed(target))
        assert meta["architecture"] == "allegro" and meta["allegro_version"] == "0.8.3", meta
        # two Allegro layers, but no message passing: the ghost shell is one r_max
        assert meta["num_layers"] == "1" and float(meta["r_max"]) == 4.0 and meta["target"] == target


@pytest.mark.mpi
@pytest.mark.parametrize("nprocs", [1, 2])
@pytest.mark.parametrize("triclinic", [False, True], ids=["orthorhombic", "triclinic"])
@pytest.mark.parametrize("target", ["torchscript-ghost", pytest.param("aoti-ghost", marks=pytest.mark.slow)])
def test_parity_with_nequip_calculator(allegro_deployed, allegro_calc, target, triclinic, nprocs, tmp_path):
    atoms = alloy(ELEMENTS, cells=3, triclinic=triclinic)
    with default_dtype(torch.float64):
        reference = calculator_state(atoms, allegro_calc)
    diff = max_differences(lammps_state(allegro_deployed(target), atoms, ELEMENTS, nprocs, tmp_path), reference)
    assert all(value < TOL for value in diff.values()), diff
    assert np.abs(reference["forces"]).max() > 0.05  # a real test: the model gives forces


@pytest.mark.parametrize("target", ["torchscript-ghost", pytest.param("aoti-local", marks=pytest.mark.slow)])
def test_nve_follows_ase_velocity_verlet(allegro_deployed, allegro_calc, target):
    atoms = alloy(ELEMENTS, cells=3, triclinic=True)
    with default_dtype(torch.float64):
        x_lammps, x_ase = nve_against_ase(allegro_deployed(target), atoms, ELEMENTS, allegro_calc, steps=100)
    assert np.abs(x_ase - atoms.positions).max() > 0.05  # the atoms really moved
    np.testing.assert_allclose(x_lammps, x_ase, rtol=0, atol=1e-6)


def test_allegro_entry_trains_allegro_models():
    from lmpbench.architectures import TrainingRequest, get_architecture

    arch = get_architecture("allegro")
    request = TrainingRequest(type_names=("Si",), cutoff_A=5.0, train_file=Path("t.xyz"), val_file=Path("v.xyz"),
                              has_energy=False, hyperparameters=arch.hyperparameters("periodic"))
    model = arch.build_config(request)["training_module"]["model"]
    assert model["_target_"] == "allegro.model.AllegroModel" and model["num_layers"] == 2
    assert model["per_type_energy_shifts"] == 0.0  # forces-only data: no energy zero


def test_lmpbench_train_arch_allegro(tmp_path):
    """`lmpbench train --arch allegro`: the NequIP route's outputs, an Allegro model in the checkpoint."""
    import json

    from click.testing import CliRunner

    from lmpbench.cli.main import cli
    from lmpbench.datasets.store import write_dataset
    from lmpbench.deploy import load_source
    from lmpbench.models.toy_nequip import emt_frames

    write_dataset(tmp_path / "emt", emt_frames(15, seed=5), name="emt_cuau", system=None,
                  source={"kind": "engine", "engine": "ase EMT", "seed": 5}, test=3, sizes={"s8": (8, 3)})
    (tmp_path / "systems.toml").write_text('[system.cuau]\ncategory = "periodic"\nelements = ["Cu", "Au"]\n'
                                           'cutoff_A = 4.0\nprotocol = "water"\n')
    out = tmp_path / "trained"
    result = CliRunner().invoke(cli, ["train", "--system", "cuau", "--systems-file", str(tmp_path / "systems.toml"),
                                      "--data", str(tmp_path / "emt"), "--size", "s8", "-o", str(out), "--arch", "allegro",
                                      "--max-epochs", "1", "--device", "cpu", "--no-package", "--test-frames", "1"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "train.json").read_text())
    assert record["arch"] == "allegro" and record["test"]["forces_mae_meV_A"] > 0
    source = load_source(out / "model.ckpt")
    assert source.architecture == "allegro" and source.metadata.num_layers == 1
    assert source.metadata.type_names == ["Cu", "Au"] and source.metadata.r_max == 4.0
