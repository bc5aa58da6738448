"""lmpbench run: systems' decks in LAMMPS, checkpoints and resume, collapse, MPI, bad input."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lmpbench import runner
from lmpbench.cli.main import cli
from lmpbench.contract import ModelMetadata, save_model
from lmpbench.engine import lammps_environment, mpirun_executable
from lmpbench.models import ToyMessagePassing

LMPBENCH = [sys.executable, "-m", "lmpbench.cli.main"]
# the LJ stand-ins hold molecules without bonds and the toy models are random: they test decks,
# not structures, so their runs use the benchmark's own collapse criteria only
STAND_IN = ("--collapse-criteria", "paper")


@pytest.fixture(scope="module")
def toy_models(tmp_path_factory):
    """2-layer toy message-passing models for the elements of the shipped systems."""
    from ase.data import atomic_numbers, covalent_radii

    from lmpbench.models import LennardJones

    d = tmp_path_factory.mktemp("run_models")
    models = {"OH": save_model(ToyMessagePassing(2, 3.0, num_layers=2, seed=3), d / "OH.pt",
                               ModelMetadata(r_max=3.0, type_names=["O", "H"], num_layers=2))}
    # the classical:lj stand-in's numbers as a TorchScript model (a molecule needs bonding forces)
    for elements in (["C", "H", "O"], ["C", "H", "N", "O"]):
        radii = [covalent_radii[atomic_numbers[e]] for e in elements]
        sigma = [[round(runner.LJ_STANDIN_SIGMA_SCALE * (a + b), 6) for b in radii] for a in radii]
        key = "".join(elements) + "_lj"
        models[key] = save_model(LennardJones(runner.LJ_STANDIN_EPSILON_EV, sigma, r_max=6.0, num_types=len(elements)),
                                 d / f"{key}.pt", ModelMetadata(r_max=6.0, type_names=elements))
    return models


def lmpbench_run(*args, check=True, **kwargs):
    proc = subprocess.run([*LMPBENCH, "run", "--no-progress", *map(str, args)], capture_output=True, text=True,
                          env=lammps_environment(), timeout=600, **kwargs)
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def thermo(folder: Path) -> np.ndarray:
    return np.loadtxt(folder / "thermo.dat", comments="#", ndmin=2)


def frames(folder: Path) -> list[int]:
    lines = (folder / "traj.dump").read_text().splitlines()
    return [int(lines[k + 1]) for k, line in enumerate(lines) if line == "ITEM: TIMESTEP"]


@pytest.mark.parametrize("system, model", [
    ("water", "classical:spcfw"), ("water", "OH"),
    ("md17_ethanol", "classical:lj"), ("md17_ethanol", "CHO_lj"),
    ("md17_naphthalene", "classical:lj"), ("md17_naphthalene", "CHO_lj"),
    ("md17_aspirin", "classical:lj"), ("md17_aspirin", "CHO_lj"),
    ("md17_salicylic_acid", "classical:lj"), ("md17_salicylic_acid", "CHO_lj"),
    ("alanine_dipeptide", "classical:lj"), ("alanine_dipeptide", "CHNO_lj"),
])
def test_system_runs(system, model, toy_models, tmp_path):
    # the LJ stand-in has no bonds: a molecule held by it stays together only when cold
    cold = ["--temperature", 50] if model in ("classical:lj", "CHO_lj", "CHNO_lj") else []
    if system == "alanine_dipeptide" and cold:  # and its hydrogens need less than the protocol's 2 fs
        cold += ["--timestep-fs", 0.5]
    model = toy_models.get(model, model)
    out = tmp_path / "run"
    lmpbench_run("--model", model, "--system", system, "--out", out, "--steps", 300, "--chunk-steps", 100,
                 "--dump-every", 50, "--seed", 7, *cold, *(STAND_IN if model != "classical:spcfw" else ()))
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "finished" and manifest["steps_done"] == 300
    assert manifest["seed"] == 7 and manifest["mpi_ranks"] == 1 and manifest["deck_sha256"]
    assert manifest["speed"]["steps_per_s"] > 0 and manifest["speed"]["atom_steps_per_s"] > 0
    rows = thermo(out)
    assert list(rows[:, 0]) == list(range(0, 301, 50))
    # temperature starts at the protocol's (molecules: zero momentum and rotation removed)
    expected_T = manifest["protocol"]["temperature_K"]
    if manifest["protocol"]["ensemble"] == "langevin_metad":
        # COLVARS' phi/psi at step 0 are the dihedrals ASE measures on the shipped structure
        from ase.io import read

        from lmpbench.systems import get_system

        traj = np.loadtxt(out / "metad.colvars.traj", comments="#", ndmin=2)
        start = read(get_system(system).structure_path())
        for column, atoms in enumerate(get_system(system).dihedrals.values(), start=1):
            expected = (start.get_dihedral(*[a - 1 for a in atoms]) + 180.0) % 360.0 - 180.0
            assert traj[0, column] == pytest.approx(expected, abs=1e-3)
    assert abs(rows[0, 2] - expected_T) / expected_T < 0.02
    assert frames(out) == list(range(0, 301, 50))
    assert (out / "in.lmp").is_file() and (out / "start.data").is_file() and (out / "forcefield.in").is_file()
    header = (out / "start.data").read_text().splitlines()[0]  # a comment, but users read it
    assert "units = real" not in header and ("metal" in header or "units" not in header), header


def test_plugin_and_classical_lj_give_the_same_run(toy_models, tmp_path):
    """The same deck with lj/cut and with the same LJ as a TorchScript model via pair mlff."""
    common = ["--system", "md17_naphthalene", "--steps", 200, "--chunk-steps", 100, "--dump-every", 20,
              "--temperature", 50]
    lmpbench_run("--model", "classical:lj", *common, *STAND_IN, "--out", tmp_path / "lj")
    lmpbench_run("--model", toy_models["CHO_lj"], *common, *STAND_IN, "--out", tmp_path / "mlff")
    np.testing.assert_allclose(thermo(tmp_path / "mlff"), thermo(tmp_path / "lj"), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("ensemble", ["nve", "npt"])
def test_other_ensembles(ensemble, tmp_path):
    out = tmp_path / ensemble
    lmpbench_run("--model", "classical:spcfw", "--system", "water", "--out", out, "--steps", 200, "--ensemble", ensemble,
                 "--timestep-fs", 0.5, "--dump-every", 50, "--set", "barostat_damp_steps=2000")
    rows = thermo(out)
    if ensemble == "nve":  # flexible water at dt 0.5 fs conserves energy well over 100 fs
        assert np.ptp(rows[:, 5]) < 0.01 * np.abs(rows[:, 5]).mean()
    protocol = json.loads((out / "run.json").read_text())["protocol"]
    assert protocol["ensemble"] == ensemble and protocol["barostat_damp_steps"] == 2000.0


def test_metadynamics_deck_runs(tmp_path):
    """A user system (TOML) with the Langevin + COLVARS well-tempered metadynamics protocol."""
    toml = tmp_path / "systems.toml"
    toml.write_text("""
[protocol.ethanol_metad]
ensemble = "langevin_metad"
timestep_fs = 0.5
temperature_K = 300.0
length_ps = 0.1
dump_every = 20
metad_pace = 20

[system.ethanol_dihedral]
category = "molecule"
elements = ["C", "H", "O"]
cutoff_A = 6.0
protocol = "ethanol_metad"
structure = "%s"
dihedrals = {hcco = [5, 1, 2, 3]}
""" % (Path(__file__).parents[1] / "lmpbench" / "data" / "structures" / "ethanol.xyz"))
    out = tmp_path / "metad"
    lmpbench_run("--model", "classical:lj", "--system", "ethanol_dihedral", "--systems-file", toml, "--out", out,
                 "--temperature", 50, *STAND_IN)
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    traj = out / "metad.colvars.traj"
    assert traj.is_file() and "hcco" in traj.read_text().splitlines()[0]
    assert (out / "colvars.inp").read_text().count("atomNumbers") == 4


WATER_RUN = ["--model", "classical:spcfw", "--system", "water", "--timestep-fs", 0.5, "--steps", 6000,
             "--chunk-steps", 500, "--dump-every", 100, "--checkpoint-minutes", 0]


def _wait_for_steps(out: Path, steps: int, proc) -> None:
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads((out / "run.json").read_text()).get("steps_done", 0) >= steps:
                return
        except (OSError, json.JSONDecodeError):
            pass
        time.sleep(0.02)
    raise AssertionError("the run did not get far enough")


def test_sigkill_and_resume_is_bitwise(tmp_path):
    reference = tmp_path / "uninterrupted"
    lmpbench_run(*WATER_RUN, "--out", reference)
    out = tmp_path / "killed"
    proc = subprocess.Popen([*LMPBENCH, "run", "--no-progress", *map(str, WATER_RUN), "--out", str(out)],
                            env=lammps_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_steps(out, 2500, proc)
    proc.kill()
    proc.wait()
    killed_at = json.loads((out / "run.json").read_text())
    assert killed_at["status"] == "running" and killed_at["steps_done"] < 6000
    lmpbench_run(*WATER_RUN, "--out", out)
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "finished" and manifest["resumed_from"] >= 2500
    assert (out / "thermo.dat").read_bytes() == (reference / "thermo.dat").read_bytes()
    assert (out / "traj.dump").read_bytes() == (reference / "traj.dump").read_bytes()


def test_sigterm_writes_restart_and_resumes(tmp_path):
    out = tmp_path / "term"
    args = [*WATER_RUN[:-2], "--checkpoint-minutes", 60]  # no timed checkpoints: the signal must write one
    proc = subprocess.Popen([*LMPBENCH, "run", "--no-progress", *map(str, args), "--out", str(out)],
                            env=lammps_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_steps(out, 1000, proc)
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert time.time() - t0 < 10
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "interrupted", output
    restart = out / manifest["restart"]["file"]
    assert restart.is_file() and manifest["restart"]["step"] == manifest["steps_done"] < 6000
    assert "SIGTERM" in manifest["reason"]
    lmpbench_run(*args, "--out", out)
    rows = thermo(out)
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    assert list(rows[:, 0]) == list(range(0, 6001, 100))  # no frame lost or written twice
    assert frames(out) == list(range(0, 6001, 100))


def test_unstable_run_collapses(tmp_path):
    out = tmp_path / "boom"
    proc = lmpbench_run("--model", "classical:spcfw", "--system", "water", "--out", out, "--steps", 2000,
                        "--timestep-fs", 8.0, "--chunk-steps", 200, "--dump-every", 10)
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "collapsed", proc.stdout
    assert 0 < manifest["collapse"]["step"] < 2000 and manifest["collapse"]["reason"]
    assert "collapsed" in proc.stdout
    # a collapsed run is a result: the same command does not run it again
    again = lmpbench_run("--model", "classical:spcfw", "--system", "water", "--out", out, "--steps", 2000,
                         "--timestep-fs", 8.0, "--chunk-steps", 200, "--dump-every", 10)
    assert "already collapsed" in again.stdout


@pytest.mark.mpi
def test_two_ranks_same_thermo(toy_models, tmp_path):
    args = ["--model", toy_models["OH"], "--system", "water", "--steps", 200, "--chunk-steps", 100, "--dump-every", 20,
            *STAND_IN]  # about MPI equality: the 2-rank collapse path has its own test (sticky model)
    lmpbench_run(*args, "--out", tmp_path / "one")
    proc = subprocess.run([str(mpirun_executable()), "-np", "2", *LMPBENCH, "run", "--no-progress", *map(str, args),
                           "--out", str(tmp_path / "two")], env=lammps_environment(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert json.loads((tmp_path / "two" / "run.json").read_text())["mpi_ranks"] == 2
    one, two = thermo(tmp_path / "one"), thermo(tmp_path / "two")
    np.testing.assert_allclose(two, one, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("args, message", [
    (["--system", "no_such", "--model", "classical:lj"], "unknown system 'no_such'"),
    (["--system", "lips", "--model", "classical:lj"], "no offline structure: LiPS needs the real dataset"),
    (["--system", "water", "--model", "classical:nope"], "unknown classical force field 'nope'"),
    (["--system", "md17_ethanol", "--model", "classical:spcfw"], "spcfw is for water, not md17_ethanol"),
    (["--system", "water", "--model", "classical:lj", "--steps", "10", "--length-ps", "1"], "not both"),
    (["--system", "water", "--model", "classical:lj", "--set", "friction=2"], "use FIELD=VALUE with FIELD one of"),
    (["--system", "water", "--model", "classical:lj", "--set", "metad_pace=often"], "metad_pace takes a int"),
])
def test_bad_input_one_line(args, message, tmp_path):
    result = CliRunner().invoke(cli, ["run", "--out", str(tmp_path / "x"), "--no-progress", *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "x").exists()


def test_structure_with_element_the_model_lacks(toy_models, tmp_path):
    result = CliRunner().invoke(cli, ["run", "--system", "md17_ethanol", "--model", str(toy_models["OH"]),
                                      "--out", str(tmp_path / "x"), "--no-progress"])
    assert result.exit_code == 2 and "lacks element(s) C" in result.output, result.output


def test_corrupt_model_file(tmp_path):
    (tmp_path / "broken.pt2").write_bytes(b"garbage")
    result = CliRunner().invoke(cli, ["run", "--system", "water", "--model", str(tmp_path / "broken.pt2"),
                                      "--no-progress", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "is not a deployed model file" in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_unwritable_output(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    result = CliRunner().invoke(cli, ["run", "--system", "water", "--model", "classical:spcfw", "--no-progress",
                                      "--out", str(tmp_path / "a_file" / "run")])
    assert result.exit_code == 2 and "not a writable folder" in result.output


@pytest.mark.mpi
def test_np_option_launches_mpirun(tmp_path):
    out = tmp_path / "np2"
    lmpbench_run("--np", 2, "--model", "classical:lj", "--system", "md17_ethanol", "--out", out, "--steps", 100,
                 "--temperature", 50)
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["mpi_ranks"] == 2 and manifest["status"] == "finished"


def test_system_without_shipped_structure_runs_with_one(tmp_path):
    """LiPS ships no structure (it needs the real dataset); given one, its protocol runs."""
    from ase import Atoms
    from ase.io import write

    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3) * 2.6
    atoms = Atoms(symbols=rng.choice(["Li", "P", "S"], size=len(grid)), positions=grid + rng.normal(0, 0.05, grid.shape),
                  cell=[7.8, 7.8, 7.8], pbc=True)
    # a small "dataset": the run starts from the frame its seed picks
    frames = [atoms.copy() for _ in range(5)]
    for k, frame in enumerate(frames):
        frame.positions[0, 0] += 0.01 * k
    write(tmp_path / "lips_like.xyz", frames, format="extxyz")
    out = tmp_path / "lips"
    lmpbench_run("--model", "classical:lj", "--system", "lips", "--structure", tmp_path / "lips_like.xyz", "--out", out,
                 "--steps", 200, "--temperature", 50)
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "finished" and manifest["protocol"]["timestep_fs"] == 0.25
    from ase.io import read

    start = read(out / "start.data", format="lammps-data", atom_style="atomic")
    picked = runner.structure_frame(5, seed=1)  # lmpbench run's default seed
    assert start.positions[0, 0] == pytest.approx(frames[picked].positions[0, 0], abs=1e-6)
    assert list(thermo(out)[:, 0]) == list(range(0, 201, 50))  # the LiPS protocol saves every 50 steps

    # the same system through the plugin: the LJ stand-in as a TorchScript model
    from ase.data import atomic_numbers, covalent_radii

    from lmpbench.models import LennardJones

    elements = ["Li", "P", "S"]
    radii = [covalent_radii[atomic_numbers[e]] for e in elements]
    sigma = [[round(runner.LJ_STANDIN_SIGMA_SCALE * (a + b), 6) for b in radii] for a in radii]
    model = save_model(LennardJones(runner.LJ_STANDIN_EPSILON_EV, sigma, r_max=6.0, num_types=3), tmp_path / "lips_lj.pt",
                       ModelMetadata(r_max=6.0, type_names=elements))
    lmpbench_run("--model", model, "--system", "lips", "--structure", tmp_path / "lips_like.xyz",
                 "--out", tmp_path / "lips_mlff", "--steps", 200, "--temperature", 50)
    np.testing.assert_allclose(thermo(tmp_path / "lips_mlff"), thermo(out), rtol=1e-9, atol=1e-10)


def test_pymatgen_structure_file(tmp_path):
    """A structure only pymatgen reads (its JSON) starts a run."""
    from pymatgen.core import Lattice, Structure

    structure = Structure(Lattice.cubic(7.8), ["Li", "P", "S", "S"],
                          [[0, 0, 0], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25], [0.75, 0.75, 0.25]])
    path = tmp_path / "lips.json"
    path.write_text(structure.to_json())
    out = tmp_path / "pmg"
    lmpbench_run("--model", "classical:lj", "--system", "lips", "--structure", path, "--out", out, "--steps", 50,
                 "--temperature", 50, "--dump-every", 10)
    start = (out / "start.data").read_text()
    assert "4 atoms" in start and "3 atom types" in start


@pytest.fixture(scope="module")
def sticky_model(tmp_path_factory):
    """A deliberately bad force field for water: a Morse well at 0.3 Å pulls every pair together."""
    from lmpbench.models import Morse

    path = tmp_path_factory.mktemp("sticky") / "sticky.pt"
    return save_model(Morse(2.0, 1.5, 0.3, r_max=3.0, num_types=2), path,
                      ModelMetadata(r_max=3.0, type_names=["O", "H"], num_layers=1))


@pytest.mark.parametrize("ranks", [1, 2])
def test_broken_structure_stops_the_run_at_its_frame(sticky_model, tmp_path, ranks):
    """The run ends `collapsed` at the first saved frame that the structural criterion calls
    broken, the same frame `analyze` finds in the run's own dump afterwards, on 1 and 2 ranks."""
    from lmpbench.analysis.run_metrics import analyze

    out = tmp_path / "sticky"
    args = ["--model", sticky_model, "--system", "water", "--timestep-fs", 0.5, "--steps", 4000, "--chunk-steps", 200,
            "--dump-every", 10, "--out", out]
    if ranks == 1:
        lmpbench_run(*args)
    else:
        proc = subprocess.run([str(mpirun_executable()), "-np", "2", *LMPBENCH, "run", "--no-progress", *map(str, args)],
                              env=lammps_environment(), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "collapsed" and manifest["mpi_ranks"] == ranks
    collapse = manifest["collapse"]
    assert collapse["reason"].startswith("structure broke") and collapse["detected_at_step"] < 4000
    structural = analyze(out)["metrics"]["structural_stability_ps"]
    assert structural["first_broken_step"] == collapse["step"], (structural, collapse)
    assert collapse["step"] <= collapse["detected_at_step"] < collapse["step"] + 200
    assert frames(out)[-1] == collapse["detected_at_step"]  # the frames after it stay, nothing is lost
