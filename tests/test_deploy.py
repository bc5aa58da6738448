"""lmpbench deploy: NequIP models in LAMMPS equal nequip's own ASE calculator, on every path."""

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.md.verlet import VelocityVerlet
from ase import units
from click.testing import CliRunner
from conftest import NEQUIP_ELEMENTS, assert_states_close, cuau_alloy, run_lmp, run_mpi
from lammps_helpers import nve_lines, system_deck

from lmpbench.cli.main import cli
from lmpbench.contract import ModelMetadata, save_model
from lmpbench.cpu import cpu_flags, isa_support, read_cpuinfo
from lmpbench.decks import LammpsRunError, run_deck
from lmpbench.deploy import DeployCheckError, DeployError, check, deploy, load_source, read_deployed_metadata
from lmpbench.models import ToyMessagePassing
from lmpbench.structures import write_lammps_data

TOL = 1e-8


def quiet(*_):
    pass


@pytest.mark.parametrize("triclinic", [False, True], ids=["orthorhombic", "triclinic"])
@pytest.mark.parametrize("target", ["aoti-local", "aoti-ghost", "torchscript-ghost"])
def test_matches_nequip_calculator(deployed, nequip_ckpt, target, triclinic):
    from lmpbench.deploy import default_dtype

    source = load_source(nequip_ckpt)
    # torch's own default: nequip.from_ase would give float32 positions, NaN in a float64 model
    with default_dtype(torch.float32):
        report = check(deployed[target], source, cuau_alloy(triclinic=triclinic))
    assert report.reference == "nequip's ASE calculator"
    assert report.energy_eV < TOL and report.forces_eV_A < TOL and report.stress_eV_A3 < TOL, report.lines()


def test_deployed_metadata_records_provenance(deployed, nequip_ckpt):
    from lmpbench.deploy import sha256

    for target, path in deployed.items():
        meta = read_deployed_metadata(path)
        assert meta["type_names"] == "Cu Au" and float(meta["r_max"]) == 4.0 and meta["num_layers"] == "2"
        assert meta["model_dtype"] == "float64" and meta["target"] == target
        assert meta["source_sha256"] == sha256(nequip_ckpt)
        assert meta["torch_version"] == torch.__version__ and meta["nequip_version"]
        assert meta["cpu_isa"] == torch.backends.cpu.get_cpu_capability()
    assert read_deployed_metadata(deployed["aoti-local"])["AOTI_CPU_ISA"]  # the compiled code's own record


def _alloy_deck(tmp_path, model_file):
    data = write_lammps_data(tmp_path / "alloy.data", cuau_alloy(cells=4), NEQUIP_ELEMENTS)
    return system_deck(f"pair_style mlff\npair_coeff * * {model_file} Cu Au", structure=[f"read_data {data}"])


@pytest.mark.mpi
@pytest.mark.parametrize("target", ["aoti-ghost", "torchscript-ghost"])
def test_ghost_targets_identical_on_1_2_4_ranks(deployed, target, tmp_path):
    deck = _alloy_deck(tmp_path, deployed[target]) + "\n" + nve_lines(20, dt=0.001)
    results = {n: run_mpi(deck, n, tmp_path) for n in (1, 2, 4)}
    for n in (2, 4):
        assert_states_close(results[n], results[1], rtol=1e-10)


def test_local_target_refuses_several_ranks(deployed, tmp_path):
    deck = tmp_path / "in.lmp"
    deck.write_text(_alloy_deck(tmp_path, deployed["aoti-local"]) + "\nrun 0")
    with pytest.raises(LammpsRunError, match="single-rank local layout and cannot run on 2 MPI ranks"):
        run_deck(deck, tmp_path, {}, nprocs=2)


@pytest.mark.slow  # nequip-compile's own AOTInductor build: minutes on 2 cores (`make test-slow`)
def test_stock_nequip_compile_file_loads(nequip_ckpt, tmp_path):
    stock = tmp_path / "stock.nequip.pt2"
    subprocess.run([str(Path(sys.executable).parent / "nequip-compile"), str(nequip_ckpt), str(stock), "--mode",
                    "aotinductor", "--device", "cpu", "--target", "pair_nequip"], check=True, capture_output=True)
    report = check(stock, load_source(nequip_ckpt), cuau_alloy())
    assert report.passed and report.energy_eV < TOL and report.forces_eV_A < TOL, report.lines()


@pytest.mark.parametrize("target", ["aoti-local", "aoti-ghost"])
def test_nve_follows_ase_velocity_verlet(deployed, nequip_ckpt, target, tmp_path):
    """100 velocity-Verlet steps in LAMMPS and in ASE (nequip's calculator) from the same state."""
    from nequip.integrations.ase import NequIPCalculator

    from lmpbench.deploy import default_dtype
    from lmpbench.engine import open_lammps

    atoms = cuau_alloy(triclinic=True)
    rng = np.random.default_rng(5)
    velocities_A_ps = rng.normal(0, 3.0, (len(atoms), 3))  # about 300 K for Cu
    velocities_A_ps -= velocities_A_ps.mean(0)
    data = write_lammps_data(tmp_path / "start.data", atoms, NEQUIP_ELEMENTS)
    lmp = open_lammps()
    lmp.commands_string("\n".join(["units metal", "atom_modify map array", f"read_data {data}", "pair_style mlff",
                                   f"pair_coeff * * {deployed[target]} Cu Au", "timestep 0.001", "fix nve all nve"]))
    v = (lmp.gather_atoms("v", 1, 3)._type_ * (3 * len(atoms)))(*velocities_A_ps.ravel())
    lmp.scatter_atoms("v", 1, 3, v)
    lmp.command("run 100")
    x = np.ctypeslib.as_array(lmp.gather_atoms("x", 1, 3)).reshape(-1, 3).copy()
    image = np.ctypeslib.as_array(lmp.gather_atoms("image", 0, 1)).copy()
    lmp.close()
    # unwrap LAMMPS positions with its image flags (10 bits per direction)
    flags = np.stack([(image & 1023) - 512, ((image >> 10) & 1023) - 512, (image >> 20) - 512], axis=1)
    x_lammps = x + flags @ atoms.cell.array

    with default_dtype(torch.float64):
        ase_atoms = atoms.copy()
        ase_atoms.calc = NequIPCalculator._from_saved_model(str(nequip_ckpt), device="cpu")
        ase_atoms.set_velocities(velocities_A_ps / (1000 * units.fs))  # Å/ps -> Å per ASE time unit
        VelocityVerlet(ase_atoms, timestep=1.0 * units.fs).run(100)
    displacement = np.abs(ase_atoms.positions - atoms.positions).max()
    assert displacement > 0.05  # the atoms really moved
    np.testing.assert_allclose(x_lammps, ase_atoms.positions, rtol=0, atol=1e-6)


# --- bad input: one clear error, old results untouched -----------------------------------------


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(DeployError, match="does not exist"):
        deploy(tmp_path / "absent.ckpt", tmp_path / "m.pt2", echo=quiet)
    (tmp_path / "model.h5").write_bytes(b"x")
    with pytest.raises(DeployError, match=r"unknown model file type \(expected one of ") as error:
        deploy(tmp_path / "model.h5", tmp_path / "m.pt2", echo=quiet)
    listed = str(error.value).split("expected one of ")[1].rstrip(")").split(", ")
    assert sorted(listed) == sorted([".ckpt", ".nequip.zip", ".pt", ".pth", ".pth.tar"])  # each once, whatever the order
    (tmp_path / "corrupt.pth.tar").write_bytes(b"not a checkpoint")
    with pytest.raises(DeployError, match="corrupt.pth.tar is not a loadable CHGNet checkpoint"):
        deploy(tmp_path / "corrupt.pth.tar", tmp_path / "m.pt2", echo=quiet)
    (tmp_path / "corrupt.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(DeployError, match="corrupt.ckpt is not a loadable nequip checkpoint"):
        deploy(tmp_path / "corrupt.ckpt", tmp_path / "m.pt2", echo=quiet)


def test_option_conflicts(nequip_ckpt, tmp_path):
    with pytest.raises(DeployError, match="model_dtype float64; nequip fixes the dtype"):
        deploy(nequip_ckpt, tmp_path / "m.pt2", dtype="float32", echo=quiet)
    with pytest.raises(DeployError, match="target aoti-local writes a .pt2 file"):
        deploy(nequip_ckpt, tmp_path / "m.pt", target="aoti-local", echo=quiet)
    with pytest.raises(DeployError, match="runs on one MPI rank only"):
        deploy(nequip_ckpt, tmp_path / "m.pt2", target="aoti-local", ranks=2, echo=quiet)
    with pytest.raises(DeployError, match="is not a writable folder"):
        deploy(nequip_ckpt, tmp_path / "no" / "such" / "m.pt2", echo=quiet)


def test_structure_with_element_the_model_lacks(deployed, nequip_ckpt):
    atoms = cuau_alloy()
    atoms.symbols[0] = "Fe"
    with pytest.raises(DeployError, match="element\\(s\\) Fe that the model lacks"):
        check(deployed["aoti-local"], load_source(nequip_ckpt), atoms)


def test_model_without_per_atom_energies(tmp_path):
    from test_pair_errors import WholeEnergy

    source = save_model(WholeEnergy(0.01, 2.5, r_max=5.0, num_types=2), tmp_path / "whole.pt",
                        ModelMetadata(r_max=5.0, type_names=["Cu", "Au"]))
    with pytest.raises(DeployError, match=r"LAMMPS could not evaluate .*returned 1 atom energies"):
        deploy(source, tmp_path / "out.pt", echo=quiet)


def test_failed_check_keeps_previous_file(tmp_path):
    """A model whose metadata understates its depth disagrees with itself on the full graph;
    the deploy fails and an earlier good file of the same name is left as it was."""
    good = save_model(ToyMessagePassing(2, 3.5, num_layers=2), tmp_path / "good_src.pt",
                      ModelMetadata(r_max=3.5, type_names=["Cu", "Au"], num_layers=2))
    out = tmp_path / "deployed.pt"
    deploy(good, out, echo=quiet)
    before = out.read_bytes()
    liar = save_model(ToyMessagePassing(2, 3.5, num_layers=2), tmp_path / "liar_src.pt",
                      ModelMetadata(r_max=3.5, type_names=["Cu", "Au"], num_layers=1))
    with pytest.raises(DeployCheckError, match="beyond tolerance"):
        deploy(liar, out, echo=quiet)
    assert out.read_bytes() == before
    assert (tmp_path / "deployed.pt.rejected").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".deployed.pt.")]  # staging cleaned


def _craft_aoti(src: Path, dst: Path, **changes):
    """Copy an AOTInductor package with some metadata values replaced."""
    import json

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("_metadata.json"):
                meta = json.loads(data)
                meta.update(changes)
                data = json.dumps(meta).encode()
            zout.writestr(item, data)
    return dst


def _cpu_isa_case():
    """(changes, message) for the CPU-feature check: an AOTI_CPU_ISA naming the features this
    CPU has and then the first one of lmpbench.cpu's table (the pair style's) that it lacks;
    the refusal must name exactly that one."""
    if not cpu_flags(read_cpuinfo()):
        pytest.skip("cannot read this CPU's flags from /proc/cpuinfo")
    support = isa_support()
    lacking = [name for name, has in support.items() if not has]
    if not lacking:
        pytest.skip(f"this CPU has every AOTInductor ISA feature of the table ({' '.join(support)}): "
                    "no file compiled for a feature it lacks can be crafted")
    isa = " ".join([name for name, has in support.items() if has] + lacking[:1])
    return {"AOTI_CPU_ISA": isa}, rf"compiled for CPU features '{isa}' and this CPU lacks {lacking[0]};"


@pytest.mark.parametrize("changes, message", [
    ({"torch_version": "2.99.0"}, r"compiled with torch 2\.99\.0 but this plugin links torch"),
    ({"AOTI_DEVICE_KEY": "cuda"}, r"compiled for device cuda but pair_style mlff runs on cpu"),
    (None, None),  # CPU features: from what this CPU lacks (_cpu_isa_case)
], ids=["torch_version", "device", "cpu_isa"])
def test_load_time_checks(deployed, tmp_path, changes, message):
    if changes is None:
        changes, message = _cpu_isa_case()
    crafted = _craft_aoti(deployed["aoti-local"], tmp_path / "crafted.pt2", **changes)
    proc = run_lmp(_alloy_deck(tmp_path, crafted) + "\nrun 0", tmp_path)
    assert proc.returncode == 1
    assert any(line.startswith("ERROR") and __import__("re").search(message, line) for line in proc.stdout.splitlines()), \
        proc.stdout[-1500:]


def test_cli_deploy_and_check(deployed, nequip_ckpt, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["deploy", str(deployed["torchscript-ghost"]), "--check"])
    assert result.exit_code == 0, result.output
    assert "LAMMPS vs nequip's ASE calculator" in result.output and "FAILED" not in result.output
    result = runner.invoke(cli, ["deploy", str(nequip_ckpt)])
    assert result.exit_code == 2 and "give the file to write with -o" in result.output
    result = runner.invoke(cli, ["deploy", str(tmp_path / "absent.ckpt"), "-o", str(tmp_path / "x.pt2")])
    assert result.exit_code == 1 and result.output.strip().splitlines()[-1].startswith("Error: model file")
    (tmp_path / "broken.xyz").write_text("not an xyz file\n")
    result = runner.invoke(cli, ["deploy", str(deployed["aoti-ghost"]), str(tmp_path / "broken.xyz"), "--check"])
    assert result.exit_code == 2 and "cannot read" in result.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here: the CUDA path is compiled but not run")
@pytest.mark.parametrize("target", ["aoti-local", "aoti-ghost", "torchscript-ghost"])
def test_cuda_matches_nequip_calculator(nequip_ckpt, target, tmp_path):
    from lmpbench.deploy import TARGETS

    result = deploy(nequip_ckpt, tmp_path / f"cuda{TARGETS[target].suffix}", target=target, device="cuda", echo=quiet)
    assert result.report.passed, result.report.lines()
    assert read_deployed_metadata(result.path)["gpu_arch"].startswith("sm_")


def test_nequip_package_source(nequip_ckpt, tmp_path):
    """A `nequip-package` file deploys like its checkpoint."""
    package = tmp_path / "toy.nequip.zip"
    subprocess.run([str(Path(sys.executable).parent / "nequip-package"), "build", str(nequip_ckpt), str(package)],
                   check=True, capture_output=True)
    source = load_source(package)
    assert source.kind == "nequip" and source.metadata.type_names == NEQUIP_ELEMENTS
    result = deploy(package, tmp_path / "from_package.pt", echo=quiet)
    # a .pt output takes the TorchScript targets; the exchange layout comes first (thinner ghost shell)
    assert result.target.name == "torchscript-exchange"
    assert result.report.passed and result.report.forces_eV_A < TOL


def test_force_energy_errors_through_lammps_equal_nequip_calculator(deployed, nequip_ckpt, tmp_path):
    """The "forces" column: MAE of the deployed model in LAMMPS against EMT labels equals the
    MAE of nequip's own calculator against the same labels."""
    from ase.io import write
    from nequip.integrations.ase import NequIPCalculator

    from lmpbench.analysis.errors import force_energy_errors
    from lmpbench.deploy import default_dtype
    from lmpbench.models.toy_nequip import emt_frames

    frames = emt_frames(4, seed=99)
    write(tmp_path / "labelled.xyz", frames, format="extxyz")
    ours = force_energy_errors(deployed["aoti-ghost"], tmp_path / "labelled.xyz")
    with default_dtype(torch.float64):
        calc = NequIPCalculator._from_saved_model(str(nequip_ckpt), device="cpu")
        f_err, e_err = [], []
        for atoms in frames:
            labels_f, labels_e = atoms.get_forces(), atoms.get_potential_energy()
            probe = atoms.copy()
            probe.calc = calc
            f_err.append(np.abs(probe.get_forces() - labels_f).ravel())
            e_err.append(abs(probe.get_potential_energy() - labels_e) / len(atoms))
    assert ours["frames"] == 4
    assert ours["forces_mae_meV_A"] == pytest.approx(1000 * np.concatenate(f_err).mean(), rel=1e-7)
    assert ours["energy_mae_meV_atom"] == pytest.approx(1000 * np.mean(e_err), rel=1e-7)


def test_force_energy_errors_on_an_mdsim_dataset(deployed, tmp_path):
    """The same labelled frames as an MDsim-format .npy (kcal/mol, a cell from lengths and
    angles) give the same errors as through ASE's extxyz reader: unit conversion and cell."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.geometry import cellpar_to_cell
    from ase.io import write

    from lmpbench.analysis.errors import force_energy_errors
    from lmpbench.analysis.trajectory import KCAL_MOL_TO_EV
    from lmpbench.models.toy_nequip import emt_frames

    from ase.calculators.emt import EMT

    frames = []
    base = emt_frames(1, seed=98)[0]
    for k in range(3):  # one composition, as a dataset has one list of atom types
        atoms = base.copy()
        atoms.rattle(0.05, seed=k)
        atoms.calc = EMT()
        # the dataset stores lengths and angles: rotate each frame into that cell's orientation
        cellpar = atoms.cell.cellpar()
        rotation = np.linalg.solve(atoms.cell.array, cellpar_to_cell(cellpar))
        rotated = atoms.copy()
        rotated.set_cell(atoms.cell.array @ rotation)
        rotated.positions = atoms.positions @ rotation
        rotated.calc = SinglePointCalculator(rotated, energy=atoms.get_potential_energy(), forces=atoms.get_forces() @ rotation)
        frames.append((rotated, cellpar))
    write(tmp_path / "rotated.xyz", [f for f, _ in frames], format="extxyz")
    to_kcal = 1.0 / KCAL_MOL_TO_EV
    np.save(tmp_path / "water.npy", {
        "unwrapped_coords": np.stack([f.positions for f, _ in frames]),
        "atom_types": np.array(frames[0][0].get_atomic_numbers()),
        "lengths": np.stack([c[:3] for _, c in frames]), "angles": np.stack([c[3:] for _, c in frames]),
        "energy": np.array([f.get_potential_energy() * to_kcal for f, _ in frames]),
        "forces": np.stack([f.get_forces() * to_kcal for f, _ in frames])}, allow_pickle=True)
    via_ase = force_energy_errors(deployed["aoti-ghost"], tmp_path / "rotated.xyz")
    via_npy = force_energy_errors(deployed["aoti-ghost"], tmp_path / "water.npy")
    assert via_npy["frames"] == 3
    # extxyz stores 8 decimals: agreement to that
    assert via_npy["forces_mae_meV_A"] == pytest.approx(via_ase["forces_mae_meV_A"], rel=1e-6)
    assert via_npy["energy_mae_meV_atom"] == pytest.approx(via_ase["energy_mae_meV_atom"], rel=1e-6)


def test_analyze_test_data_uses_the_runs_model(deployed, tmp_path):
    """`lmpbench analyze RUN --test-data FILE`: the force column of the run's deployed model."""
    import json

    from ase.io import write
    from click.testing import CliRunner

    from lmpbench.analysis.errors import force_energy_errors
    from lmpbench.cli.main import cli
    from lmpbench.models.toy_nequip import emt_frames

    write(tmp_path / "labelled.xyz", emt_frames(2, seed=97), format="extxyz")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "traj.dump").write_text("ITEM: TIMESTEP\n0\nITEM: NUMBER OF ATOMS\n1\nITEM: BOX BOUNDS pp pp pp\n"
                                       "0 10\n0 10\n0 10\nITEM: ATOMS id type x y z\n1 1 1.0 1.0 1.0\n")
    (run_dir / "run.json").write_text(json.dumps({
        "system": {"name": "cuau", "category": "alloy", "dihedrals": {}}, "status": "finished", "collapse": None,
        "type_elements": ["Cu", "Au"], "natoms": 1, "model": {"kind": "deployed", "file": str(deployed["aoti-local"])},
        "protocol": {"dump_every": 10, "timestep_fs": 1.0, "ensemble": "nvt"}}))
    result = CliRunner().invoke(cli, ["analyze", str(run_dir), "--test-data", str(tmp_path / "labelled.xyz")])
    assert result.exit_code == 0, result.output
    forces = json.loads((run_dir / "metrics.json").read_text())["metrics"]["forces"]
    direct = force_energy_errors(deployed["aoti-local"], tmp_path / "labelled.xyz")
    assert forces["value"] == direct["forces_mae_meV_A"] and forces["energy_mae_meV_atom"] == direct["energy_mae_meV_atom"]
    assert forces["frames"] == 2 and "forces" in result.output


def test_checkpoint_whose_training_data_moved(nequip_ckpt, tmp_path):
    """nequip rebuilds a checkpoint's data module on load: a checkpoint whose training file is
    gone (moved to another machine) gets a message that names the file and the way out."""
    data = nequip_ckpt.parent.parent / "emt_train.xyz"
    assert data.is_file()
    aside = tmp_path / "emt_train.xyz"
    data.rename(aside)
    try:
        result = CliRunner().invoke(cli, ["deploy", str(nequip_ckpt), "-o", str(tmp_path / "m.pt2"), "--target", "aoti-ghost"])
    finally:
        aside.rename(data)
    assert result.exit_code == 1
    error = result.output.strip().splitlines()[-1]
    assert error.startswith("Error: ") and f"training data file {data} does not exist" in error
    assert "nequip-package" in error and not (tmp_path / "m.pt2").exists()
    assert not list(tmp_path.glob(".m.pt2.*"))  # no staging folder left behind


def test_check_says_what_it_evaluated(deployed):
    from ase.build import bulk

    from lmpbench.deploy import source_for_check

    source = source_for_check(deployed["aoti-ghost"])
    report = check(deployed["aoti-ghost"], source)
    assert report.lines()[0].startswith("check on lmpbench's test structure, a rattled and sheared fcc Au-Cu crystal of "
                                        f"{report.natoms} atoms")
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.02, seed=1)
    given = check(deployed["aoti-ghost"], source, atoms)
    assert given.lines()[0].startswith("check on the given structure, Cu32 (32 atoms, periodic), LAMMPS vs")
    assert given.passed


def test_torchscript_deploy_after_torch_geometric_wrapped_torch(nequip_ckpt, tmp_path):
    """torch_geometric (imported by sevenn and torchmd-net) replaces torch.index_select with a
    Python wrapper that TorchScript cannot compile; deploy scripts with torch's own in place
    and leaves the wrapper as it found it."""
    hash_tensor = pytest.importorskip("torch_geometric.hash_tensor")
    assert torch.index_select is not hash_tensor._old_index_select  # the wrapper is in place
    result = deploy(nequip_ckpt, tmp_path / "m.pt", target="torchscript-ghost", echo=quiet)
    assert result.report.passed
    assert torch.index_select is hash_tensor._new_index_select
