"""lmpbench train --arch sevenn / tensornet / equivariant-transformer: each package's own trainer (`sevenn`,
`torchmd-train`) on a few ethanol frames of the shipped GFN2-xTB reference. The test errors in
train.json are recomputed here with the package's own model, loaded fresh from the kept
checkpoint by the package's code (not lmpbench's), against the labels in the test file; the kept
checkpoint deploys with `lmpbench deploy`, whose check compares LAMMPS with the package's model."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase.io import read, write
from click.testing import CliRunner

from lmpbench.cli.main import cli
from lmpbench.datasets.store import labelled, write_dataset

SHIPPED = Path(__file__).resolve().parents[1] / "lmpbench/data/datasets/md17_ethanol-reference-short/seed1"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """13 frames of the shipped ethanol reference: 8 train, 2 val, 3 test; and a forces-only copy."""
    root = tmp_path_factory.mktemp("zoo_data")
    frames = read(SHIPPED / "train_40.extxyz.gz", ":13")
    source = {"kind": "engine", "engine": "frames of the shipped md17_ethanol-reference-short"}
    write_dataset(root / "ethanol", frames, name="ethanol_tiny", system="md17_ethanol", source=source, test=3,
                  sizes={"s8": (8, 2)})
    forces_only = [labelled(a.copy(), None, a.get_forces()) for a in frames]
    write_dataset(root / "forces", forces_only, name="ethanol_forces", system="md17_ethanol", source=source, test=3,
                  sizes={"s8": (8, 2)})
    write(root / "molecule.xyz", read(root / "ethanol" / "test.extxyz", 0))  # the deploy check's structure
    return {"full": root / "ethanol", "forces": root / "forces", "molecule": root / "molecule.xyz"}


def train(data: Path, out: Path, arch: str, *extra: str):
    return CliRunner().invoke(cli, ["train", "--system", "md17_ethanol", "--data", str(data), "--size", "s8",
                                    "-o", str(out), "--arch", arch, "--device", "cpu", *extra])


def mae(calc, test_file: Path) -> tuple[float, float]:
    """Force MAE (meV/Å, every component) and energy MAE (meV/atom) of an ASE calculator on the file's labels."""
    force_errors, energy_errors = [], []
    for atoms in read(test_file, ":"):
        reference = dict(atoms.calc.results)
        atoms.calc = calc
        force_errors.append(np.abs(atoms.get_forces() - reference["forces"]).ravel())
        energy_errors.append(abs(atoms.get_potential_energy() - reference["energy"]) / len(atoms))
    return 1000 * float(np.concatenate(force_errors).mean()), 1000 * float(np.mean(energy_errors))


def check_common_outputs(out: Path, model_name: str, epochs: int) -> dict:
    record = json.loads((out / "train.json").read_text())
    for name in ("config.yaml", "trainer.log", model_name, "training_curve.csv", "training_curve.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert record["checkpoint"]["file"] == model_name and record["test"]["frames"] == 3
    assert record["train_frames"] == 8 and record["val_frames"] == 2 and record["epochs_done"] == epochs
    rows = (out / "training_curve.csv").read_text().splitlines()
    assert rows[0] == "epoch,train_loss,val_forces_mae_meV_A,val_energy_mae_meV_atom"
    assert [r.split(",")[0] for r in rows[1:]] == [str(e) for e in range(1, epochs + 1)]
    assert all(float(v) > 0 for r in rows[1:] for v in r.split(",")[1:])
    assert not record["stopped_at_max_minutes"]
    return record


def deploy_cli(model: Path, structure: Path, out: Path, *extra: str):
    result = CliRunner().invoke(cli, ["deploy", str(model), str(structure), "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "ok" in result.output
    return result


@pytest.fixture(scope="module")
def sevenn_trained(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sevenn") / "trained"
    result = train(data["full"], out, "sevenn", "--max-epochs", "2")
    assert result.exit_code == 0, result.output
    return out


def test_sevenn_trains_and_its_test_errors_are_sevenn_calculator_s(sevenn_trained, data):
    out = sevenn_trained
    record = check_common_outputs(out, "model.pth", 2)
    assert record["arch"] == "sevenn" and record["hyperparameters"]["model_dtype"] == "float32"
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["train"]["epoch"] == 2 and config["model"]["chemical_species"] == ["C", "H", "O"]
    assert config["model"]["cutoff"] == 6.0
    # sevenn's own learning curve, as lmpbench's curve reads it
    lc = (out / "run" / "lc.csv").read_text().splitlines()
    assert len(lc) == 3 and "validset_Force_MAE" in lc[0]

    # sevenn's calculator, loaded fresh from the kept file (float32 model: default dtype float32)
    from sevenn.calculator import SevenNetCalculator

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        forces_mae, energy_mae = mae(SevenNetCalculator(model=str(out / "model.pth"), device="cpu"),
                                     data["full"] / "test.extxyz")
    finally:
        torch.set_default_dtype(previous)
    assert record["test"]["forces_mae_meV_A"] == pytest.approx(forces_mae, rel=1e-6)
    assert record["test"]["energy_mae_meV_atom"] == pytest.approx(energy_mae, rel=1e-6)
    # the kept checkpoint is sevenn's best epoch (its own record of the epoch)
    state = torch.load(str(out / "model.pth"), map_location="cpu", weights_only=False)
    assert record["checkpoint"]["epoch"] == state["epoch"] in (1, 2)


def test_sevenn_checkpoint_is_read_by_deploy(sevenn_trained):
    from lmpbench.deploy import load_source

    source = load_source(sevenn_trained / "model.pth")
    assert source.kind == "sevenn" and source.architecture == "sevenn"
    meta = source.metadata
    assert meta.type_names == ["C", "H", "O"] and meta.r_max == 6.0 and meta.num_layers == 2
    assert meta.model_dtype == "float32" and source.targets == ("aoti-local", "aoti-exchange", "torchscript-exchange")


@pytest.mark.slow
def test_sevenn_checkpoint_deploys(sevenn_trained, data, tmp_path):
    """AOTInductor (about a minute or two on 2 cores); the check is LAMMPS against sevenn's calculator."""
    result = deploy_cli(sevenn_trained / "model.pth", data["molecule"], tmp_path / "sevenn.pt2")
    assert "sevenn's ASE calculator" in result.output


@pytest.mark.slow
@pytest.mark.mpi
def test_sevenn_checkpoint_deploys_for_several_ranks(sevenn_trained, tmp_path):
    """`--ranks 2` takes the compiled exchange layout; on 2 ranks (a 108-atom C/H/O test crystal,
    its subdomains thinner than two cutoffs) LAMMPS equals sevenn's calculator to float32 precision."""
    assert_two_rank_deploy_matches_calculator(sevenn_trained / "model.pth", tmp_path)


def assert_two_rank_deploy_matches_calculator(checkpoint: Path, tmp_path: Path) -> None:
    """``checkpoint`` deployed with --ranks 2 (the exchange layout) equals its architecture's calculator
    on 2 ranks, on deploy's check structure of the checkpoint's elements (float32 tolerances)."""
    from zoo_helpers import calculator_state, lammps_state, max_differences

    from lmpbench.deploy import TOLERANCES, check_structure, deploy, load_source

    result = deploy(checkpoint, tmp_path / "exchange.pt2", ranks=2, echo=lambda *a: None)
    assert result.target.name == "aoti-exchange"
    source = load_source(checkpoint)
    atoms = check_structure(source)
    reference = calculator_state(atoms, source.calculator())
    diff = max_differences(lammps_state(result.path, atoms, source.metadata.type_names, 2, tmp_path), reference)
    tolerance = TOLERANCES["float32"]
    assert diff["energy"] < tolerance["energy_eV"] and diff["forces"] < tolerance["forces_eV_A"], diff
    assert diff["stress"] < tolerance["stress_eV_A3"] and np.abs(reference["forces"]).max() > 0.05, diff


def torchmdnet_errors(checkpoint: Path, test_file: Path) -> tuple[float, float | None]:
    """Force MAE (meV/Å) and energy MAE (meV/atom, None without energy labels) of torchmd-net's own
    model, loaded fresh from ``checkpoint`` by torchmd-net, on the labels of ``test_file``."""
    from torchmdnet.models.model import load_model

    model = load_model(str(checkpoint), derivative=True).eval()
    assert next(model.parameters()).dtype == torch.float64
    force_errors, energy_errors = [], []
    for atoms in read(test_file, ":"):
        energy, neg_dy = model(torch.tensor(atoms.numbers), torch.tensor(atoms.positions, dtype=torch.float64))
        force_errors.append(np.abs(neg_dy.detach().numpy() - atoms.calc.results["forces"]).ravel())
        if "energy" in atoms.calc.results:
            energy_errors.append(abs(float(energy.detach().sum()) - atoms.calc.results["energy"]) / len(atoms))
    return 1000 * float(np.concatenate(force_errors).mean()), (1000 * float(np.mean(energy_errors)) if energy_errors else None)


@pytest.fixture(scope="module")
def tensornet_trained(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tensornet") / "trained"
    result = train(data["full"], out, "tensornet", "--max-epochs", "2")
    assert result.exit_code == 0, result.output
    return out


def test_tensornet_trains_and_its_test_errors_are_torchmdnet_s(tensornet_trained, data):
    out = tensornet_trained
    record = check_common_outputs(out, "model.ckpt", 2)
    assert record["arch"] == "tensornet" and record["hyperparameters"]["model_dtype"] == "float64"
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"] == "tensornet" and config["precision"] == 64 and config["num_epochs"] == 2
    assert config["cutoff_upper"] == 6.0
    # torchmd-train read the converted split: 8 training and 2 validation frames of the files
    splits = np.load(out / "run" / "splits.npz")
    assert len(splits["idx_train"]) == 8 and len(splits["idx_val"]) == 2 and len(splits["idx_test"]) == 0

    forces_mae, energy_mae = torchmdnet_errors(out / "model.ckpt", data["full"] / "test.extxyz")
    # torchmd-net's warp kernels (used here) and its pure-torch path (lmpbench's reference) differ by ~1e-7
    assert record["test"]["forces_mae_meV_A"] == pytest.approx(forces_mae, rel=1e-6)
    assert record["test"]["energy_mae_meV_atom"] == pytest.approx(energy_mae, rel=1e-6)
    # the energies are those of the labels (the shift taken out of the data is in the file): a wrong zero
    # would put the error at tens of eV per atom (ethanol's xTB energy is about -34 eV/atom)
    assert record["test"]["energy_mae_meV_atom"] < 2000


def test_tensornet_checkpoint_deploys(tensornet_trained, data, tmp_path):
    """TorchScript (seconds); the check is LAMMPS against torchmd-net's own model."""
    result = deploy_cli(tensornet_trained / "model.ckpt", data["molecule"], tmp_path / "tensornet.pt",
                        "--target", "torchscript-ghost")
    assert "torchmd-net's own model" in result.output


def test_equivariant_transformer_trains_and_deploys(data, tmp_path):
    """The same torchmd-train route with torchmd-net's equivariant transformer: its test errors are
    torchmd-net's own model's, and the kept checkpoint deploys (TorchScript, checked against it)."""
    out = tmp_path / "et"
    result = train(data["full"], out, "equivariant-transformer", "--max-epochs", "2")
    assert result.exit_code == 0, result.output
    record = check_common_outputs(out, "model.ckpt", 2)
    assert record["arch"] == "equivariant-transformer" and record["hyperparameters"]["model_dtype"] == "float64"
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"] == "equivariant-transformer" and config["num_heads"] == 8
    forces_mae, energy_mae = torchmdnet_errors(out / "model.ckpt", data["full"] / "test.extxyz")
    assert record["test"]["forces_mae_meV_A"] == pytest.approx(forces_mae, rel=1e-6)
    assert record["test"]["energy_mae_meV_atom"] == pytest.approx(energy_mae, rel=1e-6) and energy_mae < 2000
    result = deploy_cli(out / "model.ckpt", data["molecule"], tmp_path / "et.pt", "--target", "torchscript-ghost")
    assert "torchmd-net's own model" in result.output


def test_max_minutes_stops_a_trainer_without_a_time_limit(data, tmp_path):
    """sevenn has no time limit of its own: lmpbench interrupts it and keeps the best checkpoint so far."""
    out = tmp_path / "timed"
    result = train(data["full"], out, "sevenn", "--max-minutes", "0.2")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "train.json").read_text())
    assert record["stopped_at_max_minutes"] and record["epochs_done"] >= 1 and (out / "model.pth").is_file()
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["epoch"] > 1000


def test_failing_trainer_and_forces_only_data(data, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  optimizer: no_such_optimizer\n")
    out = tmp_path / "failed"
    result = train(data["full"], out, "sevenn", "--max-epochs", "1", "--config", str(bad))
    assert result.exit_code == 1, result.output
    error = result.output.strip().splitlines()[-1]
    assert error.startswith("Error: sevenn failed (exit ") and error.endswith(f"see {out / 'trainer.log'}"), error
    assert (out / "trainer.log").stat().st_size > 0 and not (out / "train.json").exists()

    result = train(data["forces"], tmp_path / "never", "sevenn", "--max-epochs", "1")
    assert result.exit_code == 2 and "sevenn trains on energies and forces together" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "never").exists()


def test_tensornet_on_forces_only_data(data, tmp_path):
    """No energy labels: no energy loss, no energy shift in the checkpoint, no energy error."""
    out = tmp_path / "forces_only"
    result = train(data["forces"], out, "tensornet", "--max-epochs", "1")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "train.json").read_text())
    assert record["test"]["energy_mae_meV_atom"] is None and "forces only" in record["test"]["energy_mae_reason"]
    assert yaml.safe_load((out / "config.yaml").read_text())["y_weight"] == 0.0
    forces_mae, energy_mae = torchmdnet_errors(out / "model.ckpt", data["forces"] / "test.extxyz")
    assert energy_mae is None and record["test"]["forces_mae_meV_A"] == pytest.approx(forces_mae, rel=1e-6)


@pytest.fixture(scope="module")
def chgnet_trained(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("chgnet") / "trained"
    result = train(data["full"], out, "chgnet", "--max-epochs", "2")
    assert result.exit_code == 0, result.output
    return out


def chgnet_errors(checkpoint: Path, test_file: Path) -> tuple[float, float]:
    """Test errors with chgnet's own model and calculator, each molecule put in a 40 Å box by ASE
    (CHGNet's graph converter needs a lattice; 40 Å leaves more than 5 Å between images)."""
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        calc = CHGNetCalculator(model=CHGNet.from_file(str(checkpoint)), use_device="cpu")
        force_errors, energy_errors = [], []
        for atoms in read(test_file, ":"):
            reference = dict(atoms.calc.results)
            boxed = atoms.copy()
            boxed.set_cell([40.0] * 3)
            boxed.center()
            boxed.pbc = True
            boxed.calc = calc
            force_errors.append(np.abs(boxed.get_forces() - reference["forces"]).ravel())
            energy_errors.append(abs(boxed.get_potential_energy() - reference["energy"]) / len(atoms))
    finally:
        torch.set_default_dtype(previous)
    return 1000 * float(np.concatenate(force_errors).mean()), 1000 * float(np.mean(energy_errors))


def test_chgnet_trains_and_its_test_errors_are_chgnet_calculator_s(chgnet_trained, data):
    out = chgnet_trained
    record = check_common_outputs(out, "model.pth.tar", 2)
    assert record["arch"] == "chgnet" and record["hyperparameters"]["model_dtype"] == "float32"
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["train"]["epochs"] == 2 and config["data"]["type_names"] == ["C", "H", "O"]
    assert config["model"]["atom_graph_cutoff"] == 6.0 and config["model"]["bond_graph_cutoff"] == 3.0
    forces_mae, energy_mae = chgnet_errors(out / "model.pth.tar", data["full"] / "test.extxyz")
    assert record["test"]["forces_mae_meV_A"] == pytest.approx(forces_mae, rel=1e-5)
    assert record["test"]["energy_mae_meV_atom"] == pytest.approx(energy_mae, rel=1e-5)
    # the fitted AtomRef puts the energy near the labels' from the first epoch (chgnet's own fit missed by 3.8 eV/atom)
    assert energy_mae < 500
    state = torch.load(str(out / "model.pth.tar"), map_location="cpu", weights_only=False)
    assert record["checkpoint"]["epoch"] == len(state["training_history"]["f"]["val"]) in (1, 2)
    assert state["lmpbench_type_names"] == ["C", "H", "O"]


def test_chgnet_checkpoint_is_read_by_deploy(chgnet_trained, data):
    """deploy reads the trained elements, and the adapter it compiles (local layout, elements
    mapped to CHGNet's embedding rows) equals chgnet's calculator on a test molecule."""
    from lmpbench.architectures.chgnet import CHGNetLocal
    from lmpbench.deploy import load_source, local_example

    source = load_source(chgnet_trained / "model.pth.tar")
    assert source.kind == "chgnet" and source.architecture == "chgnet"
    meta = source.metadata
    assert meta.type_names == ["C", "H", "O"] and meta.r_max == 6.0 and meta.num_layers == 4
    assert source.targets == ("aoti-local", "aoti-exchange") and source.check_elements == ("C", "H", "O")
    molecule = read(data["molecule"])
    out = CHGNetLocal(source.load(), "float32", meta.type_names)(local_example(molecule, meta))
    molecule.calc = source.calculator()
    assert abs(float(out["atomic_energy"].detach().sum()) - molecule.get_potential_energy()) < 5e-3
    assert np.abs(out["forces"].detach().double().numpy() - molecule.get_forces()).max() < 5e-4


def test_chgnet_stops_itself_at_max_minutes(data, tmp_path):
    """The runner checks --max-minutes after each epoch (whole files): 0.01 minutes stop it after the
    first, and lmpbench did not have to interrupt it."""
    out = tmp_path / "timed"
    result = train(data["full"], out, "chgnet", "--max-minutes", "0.01")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "train.json").read_text())
    assert record["epochs_done"] == 1 and not record["stopped_at_max_minutes"] and (out / "model.pth.tar").is_file()
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["epochs"] > 1000
    assert "max_minutes (0.01) reached: stopped after epoch 1" in (out / "trainer.log").read_text()


def test_chgnet_forces_only_data_refused(data, tmp_path):
    result = train(data["forces"], tmp_path / "never", "chgnet", "--max-epochs", "1")
    assert result.exit_code == 2 and "chgnet trains on energies and forces together" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "never").exists()


@pytest.mark.slow
def test_chgnet_checkpoint_deploys(chgnet_trained, data, tmp_path):
    """AOTInductor (about a minute on 2 cores); the check is LAMMPS against chgnet's calculator on the molecule."""
    result = deploy_cli(chgnet_trained / "model.pth.tar", data["molecule"], tmp_path / "chgnet.pt2")
    assert "chgnet's ASE calculator" in result.output


@pytest.mark.slow
@pytest.mark.mpi
def test_chgnet_checkpoint_deploys_for_several_ranks(chgnet_trained, tmp_path):
    """`--ranks 2` takes the compiled exchange layout; on 2 ranks (deploy's C/H/O check crystal,
    108 atoms, subdomains thinner than two cutoffs) LAMMPS equals chgnet's calculator to float32 precision."""
    assert_two_rank_deploy_matches_calculator(chgnet_trained / "model.pth.tar", tmp_path)
