"""ASE trajectories (wrapped or not, decided from the data and unwrapped from consecutive
frames) and MDsim run folders in lmpbench analyze: unwrapping against the positions ASE MD
wrote, diffusivity against a plain numpy MSD, the PMF error against direct Gaussian sums and
the reference notebook's formula, imported test errors against the file's numbers."""

import json
import math
import warnings

import numpy as np
import pytest
from ase import Atoms, units
from ase.io import Trajectory, read, write
from click.testing import CliRunner

from lmpbench.analysis.run_metrics import AnalysisError, CustomMetrics, analyze, analyze_trajectory
from lmpbench.analysis.trajectory import TrajectoryError, open_trajectory
from lmpbench.cli.main import cli
from test_plumed import direct_sum, write_fes_dat, write_hills

from lmpbench.analysis import plumed


@pytest.fixture(scope="module")
def ase_md(tmp_path_factory):
    """Hot Lennard-Jones argon run by ASE MD (which does not wrap), a frame every 4 steps."""
    from ase.build import bulk
    from ase.calculators.lj import LennardJones
    from ase.md.verlet import VelocityVerlet
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    folder = tmp_path_factory.mktemp("ase_md")
    atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat((2, 2, 2))
    atoms.calc = LennardJones(sigma=3.4, epsilon=0.0104, rc=6.0, smooth=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MaxwellBoltzmannDistribution(atoms, temperature_K=3000, rng=np.random.default_rng(1))
    dyn = VelocityVerlet(atoms, 4 * units.fs)
    with Trajectory(folder / "md.traj", "w", atoms) as traj:
        dyn.attach(traj.write, interval=4)
        dyn.run(400)
    frames = read(folder / "md.traj", ":")
    wrapped = [a.copy() for a in frames]
    for a in wrapped:
        a.wrap()
    write(folder / "wrapped.traj", wrapped)
    write(folder / "wrapped.extxyz", wrapped)
    return folder, np.array([a.positions for a in frames])


def test_ase_md_trajectory_is_read_as_unwrapped(ase_md):
    folder, original = ase_md
    reader = open_trajectory(folder / "md.traj")
    frames = list(reader)
    assert reader.positions_kind == "unwrapped" and all(f.unwrapped for f in frames)
    s = np.linalg.solve(frames[0].cell.T, original.reshape(-1, 3).T)
    assert (s < 0).any() or (s >= 1).any()  # the run did leave the cell
    np.testing.assert_array_equal(np.array([f.positions for f in frames]), original)
    part = list(open_trajectory(folder / "md.traj", start=3, stop=50, step=5))
    assert [f.step for f in part] == list(range(3, 50, 5))
    np.testing.assert_array_equal(np.array([f.positions for f in part]), original[3:50:5])


@pytest.mark.parametrize("name, tolerance", [("wrapped.traj", 1e-10), ("wrapped.extxyz", 1e-6)])
def test_wrapped_copies_are_unwrapped_back_to_the_md_positions(ase_md, name, tolerance):
    folder, original = ase_md
    reader = open_trajectory(folder / name)
    frames = list(reader)
    assert reader.positions_kind == "wrapped" and all(f.unwrapped for f in frames)
    unwrapped = np.array([f.positions for f in frames])
    # the first frame sits inside the cell in both, so the unwrapped run is the original itself
    np.testing.assert_allclose(unwrapped, original, atol=tolerance, rtol=0)
    # a slice is unwrapped from consecutive frames too: displacements as in the original
    part = list(open_trajectory(folder / name, start=7, step=9))
    assert [f.step for f in part] == list(range(7, len(original), 9))
    np.testing.assert_allclose(part[-1].positions - part[0].positions, original[part[-1].step] - original[7],
                               atol=2 * tolerance, rtol=0)


def test_msd_of_the_wrapped_copy_equals_the_unwrapped_run_unless_told_otherwise(ase_md, tmp_path):
    folder, _ = ase_md
    custom = CustomMetrics(msd=(("Ar",),), lag_ps=0.4)

    def diffusivity(path, **options):
        out = tmp_path / f"{path.name}-{options.get('wrapped')}"
        return analyze_trajectory(path, elements=["Ar"], timestep_fs=4.0, every=4, custom=custom, out=out,
                                  **options)["metrics"]["diffusivity"]["Ar"]["value"]

    d = diffusivity(folder / "md.traj")
    assert diffusivity(folder / "wrapped.traj") == pytest.approx(d, rel=1e-9)
    assert diffusivity(folder / "wrapped.traj", wrapped=False) > 2 * d  # taken at its word: its jumps count as motion


def _write(path, positions, cell, pbc=True):
    write(path, [Atoms("Ar" * positions.shape[1], positions=p, cell=cell, pbc=pbc) for p in positions])


def test_frames_too_far_apart_to_unwrap_and_contradictions_serve_rdfs_not_msds(tmp_path):
    cell = np.eye(3) * 10.0
    hop = np.array([[[1.0, 1.0, 1.0], [5.0, 5.0, 5.0]], [[4.0, 1.0, 1.0], [5.0, 5.0, 5.0]],
                    [[7.0, 1.0, 1.0], [5.0, 5.0, 5.0]], [[0.5, 1.0, 1.0], [5.0, 5.0, 5.0]]])  # 3 Å a frame, wrapped
    _write(tmp_path / "far.traj", hop, cell)
    reader = open_trajectory(tmp_path / "far.traj")
    frames = list(reader)  # readable as stored, for RDFs
    assert reader.positions_kind == "wrapped, too far apart to unwrap" and not any(f.unwrapped for f in frames)
    np.testing.assert_array_equal(frames[3].positions, hop[3])
    custom = CustomMetrics(msd=(("Ar",),), lag_ps=0.002)
    with pytest.raises(ValueError, match=r"MSD needs unwrapped positions.*moves 0\.35 of the cell between frames 2 "
                                         r"and 3: too far apart in time to unwrap"):
        analyze_trajectory(tmp_path / "far.traj", elements=["Ar"], timestep_fs=1.0, every=1, custom=custom)
    with pytest.raises(TrajectoryError, match=r"moved 0\.30 of the cell between frames 0 and 1; frames this far apart"):
        list(open_trajectory(tmp_path / "far.traj", wrapped=True))  # told it is wrapped: unwrapping it must work
    both = np.array([[[11.0, 1.0, 1.0]], [[11.2, 1.0, 1.0]], [[5.0, 1.0, 1.0]]])  # outside the cell, then a jump
    _write(tmp_path / "both.traj", both, cell)
    reader = open_trajectory(tmp_path / "both.traj")
    assert not any(f.unwrapped for f in reader) and reader.positions_kind == "ambiguous"
    with pytest.raises(ValueError, match="say which with --wrapped or --unwrapped"):
        analyze_trajectory(tmp_path / "both.traj", elements=["Ar"], timestep_fs=1.0, every=1, custom=custom,
                           out=tmp_path / "both")
    frames = list(open_trajectory(tmp_path / "both.traj", wrapped=False))  # the user's word settles it
    assert all(f.unwrapped for f in frames)
    np.testing.assert_array_equal(frames[2].positions, both[2])
    _write(tmp_path / "still.traj", np.array([[[1.0, 1.0, 1.0]], [[1.1, 1.0, 1.0]]]), cell)
    reader = open_trajectory(tmp_path / "still.traj")
    list(reader)
    assert reader.positions_kind == "no boundary crossing"


# ------------------------------------------------------------ MDsim run folders

OCP_METRICS = {"forces_mae": {"total": 4198.8, "numel": 5760000, "metric": 0.0007289690358202077},
               "energy_mae": {"total": 2499.8, "numel": 10000, "metric": 0.2499787738800049},
               "num_params": 1891025, "running_time": 2074.7, "early_stop": False}


def _thermo_log(path, frames, dt_ps):
    rows = [f"{k * dt_ps:<14.4f}{-18.6:>9.3f}{-26.1:>13.3f}{7.5:>13.3f}{300.0:>8.1f}" for k in range(frames)]
    path.write_text("Time[ps]      Etot[eV]     Epot[eV]     Ekin[eV]    T[K]\n" + "\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def water_walk():
    """64 'waters' doing a random walk in a periodic box, a frame per ps: positions [F, 192, 3]."""
    rng = np.random.default_rng(5)
    start = rng.uniform(0, 12.42, (192, 3))
    steps = rng.normal(0, 0.3, (121, 192, 3))
    steps[0] = 0
    return start + np.cumsum(steps, axis=0), ["O", "H", "H"] * 64


def _mdsim_water(folder, positions, symbols, wrap=False, restart_at=None):
    folder.mkdir()
    frames = [Atoms(symbols, positions=p, cell=np.eye(3) * 12.42, pbc=True) for p in positions]
    if wrap:
        for a in frames:
            a.wrap()
    if restart_at is not None:  # MDsim's restart writes the last frame again; thermo.log does not repeat its row
        frames.insert(restart_at, frames[restart_at - 1].copy())
    write(folder / "atoms.traj", frames)
    _thermo_log(folder / "thermo.log", len(positions), 1.0)
    (folder / "test_metric.json").write_text(json.dumps(OCP_METRICS))
    return folder


def test_mdsim_water_folder_gives_a_self_describing_metrics_json(tmp_path, water_walk):
    positions, symbols = water_walk
    folder = _mdsim_water(tmp_path / "md_1k_0", positions, symbols)
    result = analyze(folder)
    written = json.loads((folder / "metrics.json").read_text())
    assert written["imported"] is True and written["source"]["kind"] == "mdsim" and written["system"] == "water"
    assert written["frame_interval_ps"] == pytest.approx(1.0) and written["positions"]["kind"] == "unwrapped"
    assert written["status"] == "finished" and written["run_collapse"] is None  # early_stop: false
    forces = written["metrics"]["forces"]
    assert forces["value"] == pytest.approx(1000 * OCP_METRICS["forces_mae"]["metric"])
    assert forces["energy_mae_meV_atom"] == pytest.approx(1000 * OCP_METRICS["energy_mae"]["metric"] / 192)
    assert forces["imported"] is True and forces["source"].startswith("imported from test_metric.json")
    assert written["metrics"]["stability_ps"]["value"] == pytest.approx(120.0)
    # D(100 ps) of the oxygens: plain numpy MSD over all 21 origins, their centre of mass removed
    o = positions[:, 0::3]
    o = o - o.mean(axis=1, keepdims=True)
    msd = np.mean([((o[t + 100] - o[t]) ** 2).sum(axis=1).mean() for t in range(len(o) - 100)])
    assert result["metrics"]["diffusivity"]["value"] == pytest.approx(msd / 600.0 * 0.1, rel=1e-9)
    # the same run saved wrapped: decided from the data, unwrapped, same diffusivity
    wrapped = analyze(_mdsim_water(tmp_path / "wrapped", positions, symbols, wrap=True))
    assert wrapped["positions"]["kind"] == "wrapped"
    assert wrapped["metrics"]["diffusivity"]["value"] == pytest.approx(result["metrics"]["diffusivity"]["value"],
                                                                       rel=1e-9)
    # a restarted run: the frame written twice is dropped, and the time axis stays the thermo.log's
    restarted = analyze(_mdsim_water(tmp_path / "restarted", positions, symbols, wrap=True, restart_at=60))
    assert restarted["source"]["repeated_frames_dropped"] == 1 and restarted["source"]["frames_match_thermo_rows"]
    assert restarted["metrics"]["diffusivity"]["value"] == pytest.approx(result["metrics"]["diffusivity"]["value"],
                                                                         rel=1e-9)
    assert restarted["metrics"]["stability_ps"]["value"] == pytest.approx(120.0)


ALA_GRID = plumed.plumed_grid_points()


def _hills(rng, count):
    centres = np.column_stack([rng.normal(-1.3, 0.6, count), rng.normal(2.6, 0.5, count)])
    centres = (centres + math.pi) % (2 * math.pi) - math.pi
    return centres, np.full((count, 2), 0.35), 1.44 * np.exp(-np.arange(count) / 40)


def _notebook_pmf(free):
    """MDsim observable.ipynb's get_pmf, on a [psi, phi] array as its loadtxt/reshape gives."""
    p = np.exp(-free / 2.49)
    p = p / p.sum()
    x, y = -2.49 * np.log(p.sum(axis=0)), -2.49 * np.log(p.sum(axis=1))
    return x - x.min(), y - y.min()


def test_mdsim_alanine_folder_pmf_error_against_a_plumed_reference(tmp_path):
    from lmpbench.systems import get_system

    structure = read(get_system("alanine_dipeptide").structure_path())
    rng = np.random.default_rng(9)
    folder = tmp_path / "nequip_ala" / "md_5ns_0"
    folder.mkdir(parents=True)
    frames = [Atoms(structure.symbols, positions=structure.positions + 15 + rng.normal(0, 0.01, (22, 3)),
                    cell=np.eye(3) * 30, pbc=True) for _ in range(30)]
    write(folder / "atoms.traj", frames)
    _thermo_log(folder / "thermo.log", 30, 1.0)
    (folder / "test_metric.json").write_text(json.dumps({"f_mae": 0.215261, "e_mae": 13.13, "e/N_mae": 0.596834}))
    (folder / "config.yml").write_text("model_dir: /models/nequip_ala\nsave_freq: 500\nplumed: true\n")
    run_hills, ref_hills = _hills(rng, 120), _hills(rng, 200)
    write_hills(folder / "HILLS", *run_hills)
    ref_sum = direct_sum(ALA_GRID, ALA_GRID, *ref_hills)
    write_fes_dat(tmp_path / "fes.dat", ALA_GRID, ALA_GRID, ref_sum.max() - ref_sum)
    result = analyze(folder, reference_fes=tmp_path / "fes.dat")
    assert result["model"] == "nequip_ala" and result["source"]["free_energy"] == "HILLS"
    assert result["status"] == "not finished"  # no early_stop in test_metric.json: simulate() never returned
    assert result["metrics"]["forces"]["value"] == pytest.approx(215.261)
    assert result["metrics"]["forces"]["energy_mae_meV_atom"] == pytest.approx(596.834)
    assert result["metrics"]["fes"]["convention"] == "free_energy" and result["metrics"]["fes"]["paper_convention"]
    # independent: both surfaces summed directly ([psi, phi] as loadtxt would give), the notebook's PMFs and mae
    run_sum = direct_sum(ALA_GRID, ALA_GRID, *run_hills)
    own, ref = _notebook_pmf((run_sum.max() - run_sum).T), _notebook_pmf((ref_sum.max() - ref_sum).T)
    for axis, k in (("phi", 0), ("psi", 1)):
        expected = np.abs(own[k] - ref[k]).mean() * 6.28
        assert result["metrics"]["pmf_mae"][axis]["value"] == pytest.approx(expected, rel=1e-6, abs=1e-8)
        assert result["metrics"]["pmf_mae"][axis]["grid"] == "same grid"
    # a free-energy file given as --reference is a reference for the FES only
    as_reference = analyze(folder, reference=tmp_path / "fes.dat", out=tmp_path / "as_reference")
    assert as_reference["metrics"]["pmf_mae"] == result["metrics"]["pmf_mae"] and "reference" not in as_reference
    # the negative bias of the run's hills cannot be compared with a sum_hills free energy
    with pytest.raises(AnalysisError, match="needs the HILLS file"):
        analyze(folder, reference_fes=tmp_path / "fes.dat", fes_convention="negative_bias")
    # ... but with hills as the reference, both in the negative-bias convention, it can
    write_hills(tmp_path / "REF_HILLS", *ref_hills)
    bias = analyze(folder, reference_fes=tmp_path / "REF_HILLS", fes_convention="negative_bias")
    own, ref = _notebook_pmf(5 / 6 * (run_sum.max() - run_sum).T), _notebook_pmf(5 / 6 * (ref_sum.max() - ref_sum).T)
    assert bias["metrics"]["pmf_mae"]["phi"]["value"] == pytest.approx(np.abs(own[0] - ref[0]).mean() * 6.28, rel=1e-6)
    assert bias["metrics"]["fes"]["convention"] == "negative_bias"
    # a run MDsim stopped early: its bias covers the broken part, so no PMF error
    (folder / "test_metric.json").write_text(json.dumps({"f_mae": 0.2, "early_stop": True}))
    stopped = analyze(folder, reference_fes=tmp_path / "fes.dat", out=tmp_path / "stopped")
    assert stopped["status"] == "collapsed" and stopped["run_collapse"]["step"] == 29
    assert all(stopped["metrics"]["pmf_mae"][axis]["value"] is None for axis in ("phi", "psi"))


def test_cli_on_mdsim_folders_and_bad_input(tmp_path, water_walk):
    positions, symbols = water_walk
    folder = _mdsim_water(tmp_path / "run", positions[:15], symbols)
    runner = CliRunner()
    ok = runner.invoke(cli, ["analyze", str(folder)])
    assert ok.exit_code == 0, ok.output
    assert "forces" in ok.output and (folder / "metrics.json").is_file()
    (tmp_path / "odd").mkdir()
    write(tmp_path / "odd" / "atoms.traj", Atoms("Cu4", positions=np.eye(4, 3) * 2, cell=np.eye(3) * 8, pbc=True))
    _thermo_log(tmp_path / "odd" / "thermo.log", 1, 1.0)
    (tmp_path / "odd" / "thermo.log").write_text("Time[ps] T[K]\n0.0 300\n1.0 300\n")
    cases = [
        (["analyze", str(tmp_path / "odd")], "which benchmark system"),
        (["analyze", str(tmp_path / "odd"), "--system", "water"], "has elements Cu"),
        (["analyze", str(folder), "--rdf", "O-O"], "is a run folder"),
        (["analyze", str(folder), "--reference-fes", str(folder / "thermo.log")], "is for alanine dipeptide"),
    ]
    uneven = _mdsim_water(tmp_path / "uneven", positions[:3], symbols)
    (uneven / "thermo.log").write_text("Time[ps] T[K]\n0.0 300\n1.0 300\n3.0 300\n")
    cases.append((["analyze", str(uneven)], "not evenly spaced"))
    for args, message in cases:
        outcome = runner.invoke(cli, args)
        assert outcome.exit_code != 0 and message in outcome.output, (args, outcome.output)
        assert isinstance(outcome.exception, SystemExit) and "Traceback" not in outcome.output
        assert [line for line in outcome.output.splitlines() if message in line][0].startswith("Error: ")
