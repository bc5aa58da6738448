"""lmpbench train: nequip's own trainer on a dataset split; test errors checked against nequip's
ASE calculator and the dataset's labels, computed here independently of lmpbench's code."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase.io import read
from click.testing import CliRunner

from lmpbench.cli.main import cli
from lmpbench.datasets.store import labelled, write_dataset
from lmpbench.deploy import default_dtype, load_source
from lmpbench.models.toy_nequip import emt_frames
from lmpbench.systems import System

SIZES = {"s8": (8, 3), "s12": (12, 3)}  # two split sizes: --size must pick the right one
SYSTEMS_TOML = """
[system.cuau]
category = "periodic"
elements = ["Cu", "Au"]
cutoff_A = 4.0
protocol = "water"
"""


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """CuAu EMT frames as a full dataset and as a forces-only, gzipped one (energies dropped)."""
    root = tmp_path_factory.mktemp("datasets")
    frames = emt_frames(19, seed=5)
    source = {"kind": "engine", "engine": "ase EMT", "seed": 5}
    write_dataset(root / "emt", frames, name="emt_cuau", system=None, source=source, test=4, sizes=SIZES)
    forces_only = [labelled(atoms.copy(), None, atoms.get_forces()) for atoms in frames]
    write_dataset(root / "emt_forces", forces_only, name="emt_cuau_forces", system=None, source=source, test=4,
                  sizes=SIZES, compress=True)  # gzipped splits, as the reference datasets are written
    (root / "systems.toml").write_text(SYSTEMS_TOML)
    return {"full": root / "emt", "forces": root / "emt_forces", "systems": root / "systems.toml"}


def direct_test_errors(checkpoint: Path, test_file: Path) -> tuple[float, float]:
    """Force MAE (meV/Å, every component) and per-atom energy MAE (meV/atom), computed here with
    nequip's ASE calculator against the labels in the file."""
    from nequip.integrations.ase import NequIPCalculator

    force_errors, energy_errors = [], []
    with default_dtype(torch.float64):
        calc = NequIPCalculator._from_saved_model(str(checkpoint), device="cpu",
                                                 chemical_species_to_atom_type_map=True)
        for atoms in read(test_file, ":"):
            reference = atoms.calc.results
            atoms.calc = calc
            force_errors.append(np.abs(atoms.get_forces() - reference["forces"]).ravel())
            if "energy" in reference:
                energy_errors.append(abs(atoms.get_potential_energy() - reference["energy"]) / len(atoms))
    return 1000 * np.concatenate(force_errors).mean(), (1000 * np.mean(energy_errors) if energy_errors else None)


def trainer_config(out: Path) -> dict:
    """The config as nequip-train resolved and saved it (hydra's record of the run)."""
    return yaml.safe_load((out / "run" / ".hydra" / "config.yaml").read_text())


def n_frames(path) -> int:
    return len(read(path, ":"))


def test_train_cli_writes_a_deployable_model_and_its_test_errors(datasets, tmp_path):
    out = tmp_path / "trained"
    result = CliRunner().invoke(cli, ["train", "--system", "cuau", "--systems-file", str(datasets["systems"]),
                                      "--data", str(datasets["full"]), "--size", "s8", "-o", str(out),
                                      "--max-epochs", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "train.json").read_text())
    assert "force MAE" in result.output and str(out / "model.ckpt") in result.output

    # the test errors are those of nequip's calculator on the test split, computed here
    forces_mae, energy_mae = direct_test_errors(out / "model.ckpt", datasets["full"] / "test.extxyz")
    assert record["test"]["frames"] == 4
    assert record["test"]["forces_mae_meV_A"] == pytest.approx(forces_mae, rel=1e-9)
    assert record["test"]["energy_mae_meV_atom"] == pytest.approx(energy_mae, rel=1e-9)

    # --size s8: nequip read the 8-frame training file and the 3-frame validation file
    data = trainer_config(out)["data"]
    assert Path(data["train_file_path"]) == (datasets["full"] / "train_s8.extxyz").resolve()
    assert n_frames(data["train_file_path"]) == 8 and n_frames(data["val_file_path"]) == 3
    assert record["size"] == "s8" and record["train_frames"] == 8

    # one curve row per epoch, with the validation MAEs nequip logged
    with open(out / "training_curve.csv") as f:
        rows = [line.split(",") for line in f.read().splitlines()]
    assert rows[0] == ["epoch", "train_loss", "val_forces_mae_meV_A", "val_energy_mae_meV_atom"]
    assert [r[0] for r in rows[1:]] == ["1", "2"] and all(float(v) > 0 for r in rows[1:] for v in r[1:])
    assert record["epochs_done"] == 2 and (out / "training_curve.png").stat().st_size > 0
    assert yaml.safe_load((out / "config.yaml").read_text())["trainer"]["max_epochs"] == 2 == record["options"]["max_epochs"]

    # deploy's loader takes the checkpoint: the model's own forward equals the calculator of the
    # portable package (a different file, loaded another way)
    from nequip.data import AtomicDataDict, compute_neighborlist_, from_ase
    from nequip.integrations.ase import NequIPCalculator

    source = load_source(out / "model.ckpt")
    assert source.metadata.type_names == ["Cu", "Au"] and source.metadata.r_max == 4.0
    assert source.metadata.model_dtype == "float64"
    atoms = read(datasets["full"] / "test.extxyz", 0)
    with default_dtype(torch.float64):
        graph = compute_neighborlist_(from_ase(atoms), r_max=4.0)
        graph[AtomicDataDict.ATOM_TYPE_KEY] = torch.tensor(
            [source.metadata.type_names.index(s) for s in atoms.get_chemical_symbols()])
        direct = source.load()(graph)
        atoms.calc = NequIPCalculator._from_saved_model(str(out / "model.nequip.zip"), device="cpu",
                                                          chemical_species_to_atom_type_map=True)
        np.testing.assert_allclose(direct[AtomicDataDict.FORCE_KEY].detach().numpy(), atoms.get_forces(), atol=1e-10)
        assert float(direct[AtomicDataDict.TOTAL_ENERGY_KEY]) == pytest.approx(atoms.get_potential_energy(), abs=1e-9)

    # and the package deploys (TorchScript: the quick target; deploy checks LAMMPS against nequip's calculator)
    from lmpbench.deploy import deploy

    deployed = deploy(out / "model.nequip.zip", tmp_path / "trained.pt", echo=lambda *a: None)
    assert deployed.report.passed and deployed.source.metadata.type_names == ["Cu", "Au"]


def test_forces_only_data_trains_on_forces_and_reports_no_energy_error(datasets, tmp_path):
    from lmpbench import training

    out = tmp_path / "forces_only"
    system = System("cuau", "periodic", ("Cu", "Au"), 4.0, "water")
    user_config = tmp_path / "smaller.yaml"  # merged over the defaults: only these keys change
    user_config.write_text("training_module:\n  model:\n    num_features: 8\n")
    record = training.train(system, datasets["forces"], "s12", out, max_epochs=1, device="cpu", package=False,
                            config_file=user_config, echo=lambda *a: None)
    assert record["test"]["energy_mae_meV_atom"] is None and "forces only" in record["test"]["energy_mae_reason"]
    forces_mae, energy_mae = direct_test_errors(out / "model.ckpt", datasets["forces"] / "test.extxyz.gz")
    assert energy_mae is None and record["test"]["forces_mae_meV_A"] == pytest.approx(forces_mae, rel=1e-9)

    resolved = trainer_config(out)
    assert n_frames(resolved["data"]["train_file_path"]) == 12 and record["train_frames"] == 12
    assert [m["name"] for m in resolved["training_module"]["loss"]["metrics"]] == ["forces_mse"]
    model = resolved["training_module"]["model"]
    assert model["num_features"] == 8 and model["num_layers"] == 2  # the file's value, the default kept
    assert record["epochs_done"] == 1 and record["package"] is None and not (out / "model.nequip.zip").exists()
    header, row = (out / "training_curve.csv").read_text().splitlines()
    assert row.startswith("1,") and row.endswith(",")  # no validation energy MAE


@pytest.mark.parametrize("args, message", [
    (["--arch", "allegro9"], "unknown architecture 'allegro9'; known: "),
    (["--size", "1k"], "dataset emt_cuau has no split '1k' (it has s8, s12)"),
    (["--system", "water"], "dataset emt_cuau has element(s) Au, Cu that system water lacks"),
    (["--system", "nosuch"], "unknown system 'nosuch'"),
    (["--data", "no_such_dataset"], "no dataset 'no_such_dataset'"),
    (["--data", "PARENT"], "it holds the datasets emt, emt_forces"),  # a folder of datasets (one per seed)
])
def test_bad_input_is_one_line_and_writes_nothing(datasets, tmp_path, args, message):
    out = tmp_path / "never"
    base = {"--system": "cuau", "--data": str(datasets["full"]), "--size": "s8"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = str(datasets["full"].parent) if value == "PARENT" else value
    argv = ["train", "--systems-file", str(datasets["systems"]), "-o", str(out), "--max-epochs", "1"]
    argv += [item for pair in base.items() for item in pair]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and not out.exists()
    if "PARENT" in args:
        assert f"give one, e.g. --data {datasets['full']}" in " ".join(result.output.split())


def test_occupied_folder_and_failing_trainer(datasets, tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    common = ["train", "--systems-file", str(datasets["systems"]), "--system", "cuau", "--data", str(datasets["full"]),
              "--size", "s8", "--max-epochs", "1", "--no-package"]
    result = CliRunner().invoke(cli, [*common, "-o", str(occupied)])
    assert result.exit_code == 2 and "is not empty" in result.output
    result = CliRunner().invoke(cli, [*common, "-o", str(occupied), "--force"])
    assert result.exit_code == 2 and "also holds notes.txt" in result.output
    assert (occupied / "notes.txt").read_text() == "mine"

    # a config nequip cannot use: the trainer fails, the error names the log, no train.json
    bad = tmp_path / "bad.yaml"
    bad.write_text("training_module:\n  model:\n    l_max: -3\n")
    out = tmp_path / "failed"
    result = CliRunner().invoke(cli, [*common, "-o", str(out), "--config", str(bad)])
    assert result.exit_code == 1, result.output
    error = result.output.strip().splitlines()[-1]
    assert error.startswith("Error: nequip-train failed (exit 1") and error.endswith(f"see {out / 'trainer.log'}")
    assert (out / "trainer.log").stat().st_size > 0 and not (out / "train.json").exists()


def test_force_replaces_only_a_previous_training(tmp_path):
    from lmpbench.architectures import get_architecture
    from lmpbench.training import TrainingError, _prepare_folder

    nequip = get_architecture("nequip")
    previous = tmp_path / "previous"
    (previous / "run").mkdir(parents=True)
    for name in ("train.json", "config.yaml", "model.ckpt", "trainer.log"):
        (previous / name).write_text("old")
    with pytest.raises(TrainingError, match="is not empty"):
        _prepare_folder(previous, nequip, force=False)
    _prepare_folder(previous, nequip, force=True)
    assert previous.is_dir() and not list(previous.iterdir())
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(TrainingError, match="is not a folder"):
        _prepare_folder(tmp_path / "a_file", nequip, force=True)


def test_architecture_registry():
    import dataclasses

    from lmpbench.architectures import ArchitectureError, architecture_for_checkpoint, get_architecture, register

    nequip = get_architecture("nequip")
    assert architecture_for_checkpoint("a/model.ckpt") is nequip is architecture_for_checkpoint("m.nequip.zip")
    with pytest.raises(ArchitectureError, match=r"no architecture reads this file type \(known: \.ckpt \(nequip\)"):
        architecture_for_checkpoint("model.pt2")
    with pytest.raises(ArchitectureError, match="duplicate architecture name 'nequip'"):
        register(nequip)
    with pytest.raises(ArchitectureError, match="unknown hyperparameter"):
        register(dataclasses.replace(nequip, name="other", defaults={"molecule": {"depth": 3}}))
    with pytest.raises(ArchitectureError, match="no defaults for system category 'gas'"):
        nequip.hyperparameters("gas")
