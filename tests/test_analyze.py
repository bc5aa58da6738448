"""lmpbench analyze on run folders written by lmpbench run."""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from lmpbench.analysis.rdf import RDF
from lmpbench.analysis.run_metrics import AnalysisError, analyze
from lmpbench.analysis.trajectory import TrajectoryReader
from lmpbench.cli.main import cli
from lmpbench.engine import lammps_environment


def run(out, *args):
    proc = subprocess.run([sys.executable, "-m", "lmpbench.cli.main", "run", "--no-progress", "--out", str(out),
                           *map(str, args)], env=lammps_environment(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


WATER = ["--model", "classical:spcfw", "--system", "water", "--timestep-fs", 0.5, "--dump-every", 20]
# the LJ stand-in holds molecules without bonds: its runs test the analysis, not structures, so
# they stop on the benchmark's own collapse criteria only
STAND_IN = ["--collapse-criteria", "paper"]


@pytest.fixture(scope="module")
def water_runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("water_runs")
    return {seed: run(d / f"seed{seed}", *WATER, "--steps", 4000, "--seed", seed) for seed in (1, 2)}


def test_water_metrics(water_runs):
    result = CliRunner().invoke(cli, ["analyze", str(water_runs[2]), "--reference", str(water_runs[1])])
    assert result.exit_code == 0, result.output
    metrics = json.loads((water_runs[2] / "metrics.json").read_text())["metrics"]
    assert metrics["stability_ps"]["value"] == pytest.approx(2.0)  # 201 frames, 0.01 ps apart, all stable
    for pair in ("O-O", "H-H", "H-O"):
        assert 0 < metrics["rdf_mae"][pair]["value"] < 1.0  # two seeds of the same model differ a little
    assert metrics["diffusivity"]["value"] is None and "100.0 ps" in metrics["diffusivity"]["reason"]
    curves = np.load(water_runs[2] / "curves.npz")
    # the O-O curve is the RDF of the run's own frames, recomputed here independently of analyze
    rdf = RDF(6.0, 500, a=1, b=1)
    for frame in TrajectoryReader(water_runs[2] / "traj.dump"):
        rdf.accumulate(frame)
    np.testing.assert_allclose(curves["g_O-O"], rdf.g)


def _as_mdsim_npy(run_dir, path, symbols_by_type):
    """A run's frames written in the MDsim dataset format (water.npy): a pickled dict."""
    frames = list(TrajectoryReader(run_dir / "traj.dump"))
    cell = frames[0].cell
    np.save(path, {"unwrapped_coords": np.stack([f.positions - f.origin for f in frames]),
                   "atom_types": np.array([symbols_by_type[t] for t in frames[0].types]),
                   "lengths": np.stack([np.diag(f.cell) for f in frames]), "angles": np.full((len(frames), 3), 90.0),
                   "energy": np.zeros(len(frames)), "forces": np.zeros((len(frames), *frames[0].positions.shape))},
            allow_pickle=True)
    assert np.count_nonzero(cell - np.diag(np.diag(cell))) == 0  # lengths and angles describe it exactly
    return path


def test_reference_data_file_equals_reference_run(water_runs, tmp_path):
    """The reference run's frames as an MDsim water.npy (element symbols, a cell from lengths and
    angles) give the same RDF errors as the reference run folder itself."""
    manifest = json.loads((water_runs[1] / "run.json").read_text())
    npy = _as_mdsim_npy(water_runs[1], tmp_path / "water.npy", dict(enumerate(manifest["type_elements"], start=1)))
    by_run = analyze(water_runs[2], water_runs[1])["metrics"]
    by_file = analyze(water_runs[2], npy)["metrics"]
    for pair in ("O-O", "H-H", "H-O"):
        assert by_file["rdf_mae"][pair]["value"] == pytest.approx(by_run["rdf_mae"][pair]["value"], rel=1e-9, abs=1e-12)
    every = analyze(water_runs[2], npy, reference_every=2)
    assert every["metrics"]["rdf_window_errors"]["reference_frames"] == 101 and every["reference"]["every"] == 2
    result = CliRunner().invoke(cli, ["analyze", str(water_runs[2]), "--reference", str(npy), "--reference-every", "2"])
    assert result.exit_code == 0, result.output


def test_first_failing_window_ends_the_stable_part(water_runs, tmp_path):
    """Against an ideal gas (uniform random positions) every 1 ps window fails: the stable part
    is the first window's first frame, and the run's curve is that frame's RDF."""
    manifest = json.loads((water_runs[1] / "run.json").read_text())
    npy = _as_mdsim_npy(water_runs[1], tmp_path / "gas.npy", dict(enumerate(manifest["type_elements"], start=1)))
    gas = np.load(npy, allow_pickle=True).item()
    lengths = gas["lengths"][:, None, :]
    gas["unwrapped_coords"] = np.random.default_rng(2).uniform(0, 1, gas["unwrapped_coords"].shape) * lengths
    np.save(npy, gas, allow_pickle=True)
    result = analyze(water_runs[2], npy)["metrics"]
    windows = result["rdf_window_errors"]["windows"]
    assert len(windows) == 2 and all(error > 3.0 for *_, error in windows)
    assert result["stability_ps"]["frames_used"] == 1 and result["stability_ps"]["value"] == 0.0
    first = next(iter(TrajectoryReader(water_runs[2] / "traj.dump")))
    curves = np.load(water_runs[2] / "curves.npz")
    np.testing.assert_allclose(curves["g_O-O"], RDF(6.0, 500, a=1, b=1).accumulate(first).g)


def test_against_itself_the_errors_vanish(water_runs):
    result = analyze(water_runs[1], water_runs[1])
    # the run's curve sums its windows, the reference's its frames: equal up to summation order
    assert all(m["value"] < 1e-12 for m in result["metrics"]["rdf_mae"].values())
    assert all(error < 3.0 for *_, error in result["metrics"]["rdf_window_errors"]["windows"])


def test_collapsed_run_is_analysed_over_its_stable_part(water_runs, tmp_path):
    boom = tmp_path / "boom"
    run(boom, "--model", "classical:spcfw", "--system", "water", "--timestep-fs", 8.0, "--dump-every", 10,
        "--steps", 2000, "--chunk-steps", 100)
    manifest = json.loads((boom / "run.json").read_text())
    assert manifest["status"] == "collapsed"
    result = analyze(boom, water_runs[1])
    stable = result["metrics"]["stability_ps"]
    assert result["run_collapse"]["step"] == manifest["collapse"]["step"]
    assert stable["frames_used"] * 10 <= manifest["collapse"]["step"] + 10


def test_molecule_metrics(tmp_path):
    args = ["--model", "classical:lj", "--system", "md17_ethanol", "--steps", 2400, "--temperature", 50,
            "--dump-every", 20, *STAND_IN]
    a = run(tmp_path / "a", *args, "--seed", 1)
    b = run(tmp_path / "b", *args, "--seed", 2)
    result = analyze(b, a)
    assert result["metrics"]["stability_ps"]["value"] == pytest.approx(1.2)  # 121 frames, 0.01 ps apart
    assert result["metrics"]["stability_ps"]["reference_bond_lengths"] == "mean over 121 reference frames (paper)"
    assert 0 < result["metrics"]["h_mae"]["value"] < 1.0
    assert analyze(a, a)["metrics"]["h_mae"]["value"] == 0.0
    # less than 1 ps of frames: no h(r) error, and the reason instead of a number
    short = run(tmp_path / "short", *args[:4], "--steps", 400, *args[6:], "--seed", 3)
    h_mae = analyze(short, a)["metrics"]["h_mae"]
    assert h_mae["value"] is None and "fewer than the 100 of one 1 ps window" in h_mae["reason"]


def test_molecule_reference_bond_lengths_are_the_reference_mean(tmp_path):
    """Reference data in the MD17 format whose C-C bond is 0.45 / 0.55 Å longer than the run's:
    the criterion measures against the reference mean, so the run stays stable / collapses at its
    first frame. Bonds and lengths are recomputed here with ASE."""
    from ase import Atoms
    from ase.neighborlist import natural_cutoffs, neighbor_list

    from lmpbench.analysis.trajectory import KCAL_MOL_TO_EV

    args = ["--model", "classical:lj", "--system", "md17_ethanol", "--steps", 200, "--temperature", 50, "--dump-every", 20,
            *STAND_IN]
    a = run(tmp_path / "a", *args, "--seed", 1)
    elements = json.loads((a / "run.json").read_text())["type_elements"]
    frames = list(TrajectoryReader(a / "traj.dump"))
    symbols = [elements[t - 1] for t in frames[0].types]
    first = Atoms(symbols, frames[0].positions, cell=np.eye(3) * 50, pbc=False)
    i, j = neighbor_list("ij", first, natural_cutoffs(first))
    cc = next((p, q) for p, q in zip(i, j) if p < q and symbols[p] == symbols[q] == "C")
    for stretch, collapses in ((0.45, False), (0.55, True)):
        positions = np.stack([f.positions for f in frames])
        axis = positions[:, cc[1]] - positions[:, cc[0]]
        positions[:, cc[1]] += stretch * axis / np.linalg.norm(axis, axis=1, keepdims=True)
        np.savez(tmp_path / "ref.npz", R=positions, z=first.get_atomic_numbers(), E=np.zeros(len(frames)) / KCAL_MOL_TO_EV,
                 F=np.zeros_like(positions))
        stability = analyze(a, tmp_path / "ref.npz")["metrics"]["stability_ps"]
        assert stability["reference_bond_lengths"] == f"mean over {len(frames)} reference frames (paper)"
        assert stability["first_unstable_step"] == (0 if collapses else None), stretch
        assert stability["bonds"] == int(np.sum(i < j))


def test_nve_energy_drift(tmp_path):
    out = run(tmp_path / "nve", *WATER, "--ensemble", "nve", "--steps", 400)
    result = analyze(out)
    rows = np.loadtxt(out / "thermo.dat", comments="#")
    drift = result["metrics"]["energy_drift"]["value"]
    # the slope times the run's length is no more than the largest excursion of E_total per atom
    assert abs(drift) * rows[-1, 1] <= np.ptp(rows[:, 5]) / 192 + 1e-12


def test_bad_input(tmp_path, water_runs):
    with pytest.raises(AnalysisError, match="is not a run folder"):
        analyze(tmp_path)
    mol = run(tmp_path / "mol", *STAND_IN, "--model", "classical:lj", "--system", "md17_ethanol", "--steps", 100,
              "--temperature", 50)
    with pytest.raises(AnalysisError, match="is a md17_ethanol run, not water"):
        analyze(water_runs[1], mol)
    result = CliRunner().invoke(cli, ["analyze", str(tmp_path)])
    assert result.exit_code == 1 and "Error: " in result.output and "run.json" in result.output
    # a corrupt dump: one line naming it, and the results already written stay as they were
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(water_runs[1], broken)
    analyze(broken)
    before = {name: (broken / name).read_bytes() for name in ("metrics.json", "curves.npz")}
    lines = (broken / "traj.dump").read_text().splitlines(keepends=True)
    lines[200 * 3] = "1 2 3 not-a-number\n"
    (broken / "traj.dump").write_text("".join(lines))
    result = CliRunner().invoke(cli, ["analyze", str(broken)])
    assert result.exit_code == 1 and "malformed atom lines" in result.output and len(result.output.splitlines()) == 1
    assert {name: (broken / name).read_bytes() for name in before} == before
    assert not list(broken.glob(".*partial*"))


def test_pmf_of_a_separable_surface(tmp_path):
    """F(phi, psi) = a(phi) + b(psi): the marginal PMF along phi is a - min(a), exactly."""
    from lmpbench.analysis.fes import EV_TO_KJ_MOL, FreeEnergySurface

    centres = -177.0 + 6.0 * np.arange(60)
    a = 3.0 * (1 - np.cos(np.radians(centres)))  # kJ/mol
    b = 1.5 * (1 + np.sin(np.radians(2 * centres)))
    grid = (a[:, None] + b[None, :]) / EV_TO_KJ_MOL  # the file holds eV
    rows = "\n".join(f" {p:.6f} {q:.6f} {grid[i, j]:.17g}" for i, p in enumerate(centres) for j, q in enumerate(centres))
    (tmp_path / "metad.pmf").write_text("# 2\n# -180.0 6.0 60 1\n# -180.0 6.0 60 1\n\n" + rows + "\n")
    fes = FreeEnergySurface.from_colvars_pmf(tmp_path / "metad.pmf")
    np.testing.assert_allclose(fes.phi_deg, centres)
    np.testing.assert_allclose(fes.pmf("phi"), a - a.min(), atol=1e-9)
    np.testing.assert_allclose(fes.pmf("psi"), b - b.min(), atol=1e-9)


def test_alanine_metadynamics_metrics(tmp_path):
    from lmpbench.analysis.geometry import dihedral_deg
    from lmpbench.systems import get_system

    args = [*STAND_IN, "--model", "classical:lj", "--system", "alanine_dipeptide", "--steps", 400, "--timestep-fs", 0.5,
            "--temperature", 50, "--dump-every", 20, "--set", "metad_pace=20"]
    a = run(tmp_path / "a", *args, "--seed", 1)
    b = run(tmp_path / "b", *args, "--seed", 2)
    result = analyze(b, a)
    assert set(result["metrics"]["pmf_mae"]) == {"phi", "psi"}
    assert analyze(a, a)["metrics"]["pmf_mae"]["phi"]["value"] == 0.0
    curves = np.load(b / "curves.npz")
    assert curves["fes_kJ_mol"].shape == (60, 60)
    # COLVARS' phi/psi along the run equal the dihedrals of the dumped frames
    quads = np.array(list(get_system("alanine_dipeptide").dihedrals.values())) - 1
    traj = np.loadtxt(b / "metad.colvars.traj", comments="#", ndmin=2)
    by_step = {int(row[0]): row[1:3] for row in traj}
    for frame in TrajectoryReader(b / "traj.dump", step=5):
        np.testing.assert_allclose(dihedral_deg(frame.positions, quads), by_step[frame.step], atol=1e-6)
    # the Ramachandran histogram of the run equals numpy's 2-D histogram of ASE's dihedrals
    from ase.io import read

    angles = []
    for atoms in read(b / "traj.dump", format="lammps-dump-text", index=":"):
        angles.append([(atoms.get_dihedral(*q) + 180.0) % 360.0 - 180.0 for q in quads])
    edges = np.linspace(-180.0, 180.0, 61)
    expected = np.histogram2d(*np.array(angles).T, bins=[edges, edges])[0]
    np.testing.assert_array_equal(curves["ramachandran_counts"], expected)
    assert result["metrics"]["fes"]["source"] == "metadynamics bias (COLVARS)"
    # a run that collapsed: its bias covers the broken part, so no PMF error, and the reason
    import shutil

    shutil.copytree(b, tmp_path / "collapsed")
    manifest = json.loads((tmp_path / "collapsed" / "run.json").read_text())
    manifest.update(status="collapsed", collapse={"step": 200, "reason": "injected for the test"})
    (tmp_path / "collapsed" / "run.json").write_text(json.dumps(manifest))
    pmf = analyze(tmp_path / "collapsed", a)["metrics"]["pmf_mae"]
    assert all(pmf[axis]["value"] is None and "unstable at step 200" in pmf[axis]["reason"] for axis in ("phi", "psi"))


@pytest.mark.parametrize("system, elements", [("water", ["O", "H"]), ("lips", ["Li", "P", "S"])])
def test_diffusivity_of_a_random_walk_run(tmp_path, system, elements):
    """A run folder holding a Brownian trajectory of known D (written here as a LAMMPS dump with
    image flags): analyze's D equals the definition evaluated directly on the diffusing species
    (the paper's lag, first ps dropped for LiPS, all origins, centre of mass removed), in
    1e-9 m^2/s, and is close to the true D."""
    from lmpbench.analysis.run_metrics import METRIC_SETS

    settings = METRIC_SETS[system]
    rng = np.random.default_rng(21)
    D, dt_ps, box, n_frames, n_atoms = 0.4, 0.1, 20.0, 1500, 96
    types = np.arange(n_atoms) % len(elements) + 1
    x = rng.uniform(0, box, (n_atoms, 3)) + np.cumsum(rng.normal(0, np.sqrt(2 * D * dt_ps), (n_frames, n_atoms, 3)), axis=0)
    run_dir = tmp_path / system
    run_dir.mkdir()
    with open(run_dir / "traj.dump", "w") as f:
        for k, frame in enumerate(x):
            image = np.floor(frame / box).astype(int)
            wrapped = frame - image * box
            f.write(f"ITEM: TIMESTEP\n{10 * k}\nITEM: NUMBER OF ATOMS\n{n_atoms}\nITEM: BOX BOUNDS pp pp pp\n"
                    + f"0 {box}\n" * 3 + "ITEM: ATOMS id type x y z ix iy iz\n")
            f.writelines(f"{i + 1} {types[i]} {w[0]:.17g} {w[1]:.17g} {w[2]:.17g} {m[0]} {m[1]} {m[2]}\n"
                         for i, (w, m) in enumerate(zip(wrapped, image)))
    manifest = {"system": {"name": system, "category": "periodic", "dihedrals": {}}, "status": "finished",
                "collapse": None, "type_elements": elements, "natoms": n_atoms, "model": {"kind": "classical"},
                "protocol": {"dump_every": 10, "timestep_fs": 10.0, "ensemble": "nvt"}}
    (run_dir / "run.json").write_text(json.dumps(manifest))
    result = analyze(run_dir)["metrics"]["diffusivity"]

    selected = x[round(settings.skip_ps / dt_ps):, types == elements.index(settings.diffusing) + 1]
    selected = selected - selected.mean(axis=1, keepdims=True)
    lag = round(settings.lag_ps / dt_ps)
    msd = ((selected[lag:] - selected[:-lag]) ** 2).sum(axis=2).mean()
    assert result["value"] == pytest.approx(msd / (6 * settings.lag_ps) * 0.1, rel=1e-9)
    assert result["value"] == pytest.approx(D * 0.1, rel=0.25)
    assert abs(result["fitted"]["value"] - D * 0.1) < 4 * result["fitted"]["standard_error"] + 0.05 * D * 0.1


def test_rdf_normalisation_variant_is_labelled(water_runs):
    """N(N-1) for like pairs: g scales by N/(N-1) (64 O, 128 H), unlike pairs are unchanged."""
    paper = analyze(water_runs[2])
    g_paper = dict(np.load(water_runs[2] / "curves.npz"))
    variant = analyze(water_runs[2], rdf_normalization="n_n_minus_1")
    g_variant = dict(np.load(water_runs[2] / "curves.npz"))
    assert paper["rdf_normalization"] == "paper" and variant["rdf_normalization"] == "n_n_minus_1"
    np.testing.assert_allclose(g_variant["g_O-O"], g_paper["g_O-O"] * 64 / 63, rtol=1e-12)
    np.testing.assert_allclose(g_variant["g_H-H"], g_paper["g_H-H"] * 128 / 127, rtol=1e-12)
    np.testing.assert_array_equal(g_variant["g_H-O"], g_paper["g_H-O"])
    with pytest.raises(AnalysisError, match="RDF normalisation must be one of"):
        analyze(water_runs[2], rdf_normalization="other")


def test_a_run_dump_analysed_as_a_file_equals_its_run_folder(water_runs, tmp_path):
    """`analyze FILE --system water` with the elements from the run's data file (masses 15.9994
    and 1.008 name O and H) gives the run folder's metrics; the step numbers give the spacing."""
    folder = CliRunner().invoke(cli, ["analyze", str(water_runs[2]), "--reference", str(water_runs[1])])
    assert folder.exit_code == 0, folder.output
    expected = json.loads((water_runs[2] / "metrics.json").read_text())
    result = CliRunner().invoke(cli, ["analyze", str(water_runs[2] / "traj.dump"), "--system", "water", "--data",
                                      str(water_runs[2] / "start.data"), "--timestep-fs", "0.5",
                                      "--reference", str(water_runs[1] / "traj.dump"), "--out", str(tmp_path), "--plot"])
    assert result.exit_code == 0, result.output
    got = json.loads((tmp_path / "metrics.json").read_text())
    assert got["types"]["elements"] == json.loads((water_runs[2] / "run.json").read_text())["type_elements"]
    assert got["frame_interval_ps"] == pytest.approx(expected["frame_interval_ps"])
    assert got["metrics"]["stability_ps"]["value"] == expected["metrics"]["stability_ps"]["value"]
    for pair in ("O-O", "H-H", "H-O"):
        assert got["metrics"]["rdf_mae"][pair]["value"] == pytest.approx(expected["metrics"]["rdf_mae"][pair]["value"],
                                                                         rel=1e-12)
    assert {p.name for p in tmp_path.glob("*.png")} == {"rdf.png"}


def _write_dump(path, frames):
    """A plain LAMMPS custom dump (orthorhombic cells) of ``frames``, written here by hand."""
    with open(path, "w") as f:
        for frame in frames:
            lo, hi = frame.origin, frame.origin + np.diag(frame.cell)
            f.write(f"ITEM: TIMESTEP\n{frame.step}\nITEM: NUMBER OF ATOMS\n{len(frame.ids)}\nITEM: BOX BOUNDS pp pp pp\n")
            f.write("".join(f"{a:.16e} {b:.16e}\n" for a, b in zip(lo, hi)))
            f.write("ITEM: ATOMS id type x y z\n")
            f.write("".join(f"{i} {t} {x:.12f} {y:.12f} {z:.12f}\n" for i, t, (x, y, z) in
                            zip(frame.ids, frame.types, frame.positions)))


def _hydrogen_to_another_oxygen(frame, o_type, h_type):
    """Move the hydrogen nearest to an oxygen not its own to 1.0 Å from that oxygen (minimum
    image, computed here with ASE)."""
    from ase.geometry import get_distances

    o, h = np.flatnonzero(frame.types == o_type), np.flatnonzero(frame.types == h_type)
    vectors, d = get_distances(frame.positions[h], frame.positions[o], cell=frame.cell, pbc=True)
    own = d.argmin(axis=1)  # each hydrogen's own oxygen
    d[np.arange(len(h)), own] = np.inf
    k, m = np.unravel_index(np.argmin(d), d.shape)  # the shortest hydrogen bond
    frame.positions[h[k]] = frame.positions[o[m]] - vectors[k, m] / d[k, m] * 1.0
    return frame


@pytest.mark.parametrize("event", ["atoms_on_each_other", "hydrogen_to_another_oxygen"])
def test_structural_metric_sees_injected_events_at_their_frame(water_runs, tmp_path, event):
    """The healthy SPC/Fw run is whole throughout; the same run with an event injected at frame
    k breaks exactly at k, by the structural criterion, while the paper's RDF windows miss it."""
    import shutil

    healthy = analyze(water_runs[1], water_runs[2])["metrics"]["structural_stability_ps"]
    assert healthy["first_broken_step"] is None and healthy["value"] == pytest.approx(2.0)
    manifest = json.loads((water_runs[1] / "run.json").read_text())
    o_type, h_type = manifest["type_elements"].index("O") + 1, manifest["type_elements"].index("H") + 1
    k = 57
    frames = list(TrajectoryReader(water_runs[1] / "traj.dump"))
    for index in range(k, len(frames)):
        frame = frames[index]
        if event == "atoms_on_each_other":
            frame.positions[5] = frame.positions[100] + np.array([0.05, 0.0, 0.0])
        elif index == k:
            _hydrogen_to_another_oxygen(frame, o_type, h_type)
    broken = tmp_path / "broken"
    shutil.copytree(water_runs[1], broken)
    _write_dump(broken / "traj.dump", frames)
    metrics = analyze(broken, water_runs[2])["metrics"]
    structural = metrics["structural_stability_ps"]
    assert structural["first_broken_step"] == frames[k].step, structural
    assert structural["value"] == pytest.approx((k - 1) * 0.01)
    expected = "close contact" if event == "atoms_on_each_other" else "(broke|new bond)"
    assert __import__("re").search(expected, structural["reason"])
    assert metrics["stability_ps"]["value"] > structural["value"]  # the paper's criterion misses it
    # the in-run check reads the dump as a run writes it: first the frames before k, then the rest
    from lmpbench.collapse import CollapseWatch

    growing = tmp_path / "growing.dump"
    _write_dump(growing, frames[:k - 3])
    watch = CollapseWatch(growing, True, manifest["type_elements"], 192, 300.0)
    assert watch._scan() == ""
    _write_dump(growing, frames)
    verdict = watch._scan()
    assert verdict.split()[0] == str(frames[k].step) and structural["reason"] in verdict


def test_a_run_collapsed_at_its_first_frame_has_no_curve_errors(water_runs, tmp_path):
    import shutil

    folder = tmp_path / "collapsed"
    shutil.copytree(water_runs[1], folder)
    manifest = json.loads((folder / "run.json").read_text())
    manifest.update(status="collapsed", collapse={"step": 0, "reason": "injected for the test"})
    (folder / "run.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(cli, ["analyze", str(folder), "--reference", str(water_runs[2])])
    assert result.exit_code == 0, result.output
    metrics = json.loads((folder / "metrics.json").read_text())["metrics"]
    assert metrics["stability_ps"]["frames_used"] == 1
    for pair in ("O-O", "H-H", "H-O"):
        assert metrics["rdf_mae"][pair]["value"] is None
        assert "not computable: 1 stable frame(s), fewer than the 100 of one 1 ps window" in metrics["rdf_mae"][pair]["reason"]
    assert metrics["diffusivity"]["value"] is None and metrics["diffusivity"]["reason"]
    assert "rdf_mae O-O" in result.output and "not computable" in result.output


def test_run_with_a_reference_stops_where_analyze_ends_the_stable_part(water_runs, tmp_path):
    """`lmpbench run --reference`: the benchmark's RDF windows checked during the run. Against
    an ideal gas the first 1 ps window fails: the run ends `collapsed` at that window's first
    frame, where analyze ends the stable part; against another seed it runs to the end."""
    manifest = json.loads((water_runs[1] / "run.json").read_text())
    gas = _as_mdsim_npy(water_runs[1], tmp_path / "gas.npy", dict(enumerate(manifest["type_elements"], start=1)))
    data = np.load(gas, allow_pickle=True).item()
    data["unwrapped_coords"] = np.random.default_rng(2).uniform(0, 1, data["unwrapped_coords"].shape) * data["lengths"][:, None, :]
    np.save(gas, data, allow_pickle=True)
    stopped = run(tmp_path / "stopped", *WATER, "--steps", 4000, "--reference", gas, "--collapse-criteria", "paper")
    record = json.loads((stopped / "run.json").read_text())
    assert record["status"] == "collapsed" and "RDF window 0-1980" in record["collapse"]["reason"]
    assert record["collapse"]["step"] == 0 and record["collapse"]["detected_at_step"] == 2000
    stable = analyze(stopped, gas)["metrics"]["stability_ps"]
    assert stable["frames_used"] == 1 and stable["value"] == 0.0
    healthy = run(tmp_path / "healthy", *WATER, "--steps", 4000, "--reference", water_runs[1] / "traj.dump")
    assert json.loads((healthy / "run.json").read_text())["status"] == "finished"
    assert analyze(healthy, water_runs[1])["metrics"]["stability_ps"]["value"] == pytest.approx(2.0)
    result = CliRunner().invoke(cli, ["run", "--model", "classical:lj", "--system", "md17_ethanol", "--reference",
                                      str(gas), "--out", str(tmp_path / "mol"), "--no-progress"])
    assert result.exit_code == 2 and "sets the RDF-window check of water and lips" in result.output
    assert not (tmp_path / "mol").exists()
