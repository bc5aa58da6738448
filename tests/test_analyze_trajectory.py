"""lmpbench analyze on trajectory files: custom metrics against LAMMPS's own computes and a
plain implementation, element and mass sources, errors, and run.json checks."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from lammps_helpers import run_in_folder

from lmpbench.cli.main import cli
from lmpbench.manifest import MANIFEST_FORMAT, ManifestError, read_run_manifest

DECK = """
units lj
atom_modify map array
lattice fcc 0.8
region box block -1 7 0 8 0.5 8.5 units lattice
create_box 2 box
create_atoms 1 box
set type 1 type/fraction 2 0.4 12345
mass 1 1.0
mass 2 3.5
pair_style lj/cut 2.5
pair_coeff * * 1.0 1.0
velocity all create 3.0 87287 loop geom
write_data mixture.data
fix nvt all nvt temp 3.0 3.0 0.5
timestep 0.005
compute rdf all rdf 100 1 1 1 2 cutoff 2.5
fix rdfs all ave/time 40 1 40 c_rdf[*] mode vector ave one file rdf.dat format " %.15g"
dump scaled all custom 40 traj.dump id type xs ys zs ix iy iz
dump_modify scaled format float %.17g
dump cart all custom 40 cartesian.dump id type xu yu zu
dump_modify cart format float %.17g sort id
run 1600
"""
TIMESTEP, EVERY = 2.0, 40  # read as fs: the analysis is in Å and fs, whatever the run's units


@pytest.fixture(scope="module")
def mixture(tmp_path_factory):
    return run_in_folder(tmp_path_factory.mktemp("mixture_file"), DECK)


def _lammps_rdf_mean(path):
    """Mean over frames of LAMMPS's per-frame g(r) (rows: bin, r, g_11, coord_11, g_12, coord_12)."""
    lines = [ln for ln in open(path) if not ln.startswith("#")]
    blocks, k = [], 0
    while k < len(lines):
        nrows = int(lines[k].split()[1])
        blocks.append(np.array([ln.split() for ln in lines[k + 1:k + 1 + nrows]], dtype=float))
        k += 1 + nrows
    return np.mean(blocks, axis=0), len(blocks)


def _plain_msd(positions, masses, lag):
    """MSD at ``lag`` over every time origin, mass-weighted centre of mass removed: a double loop."""
    w = masses / masses.sum()
    x = positions - np.einsum("n,fnk->fk", w, positions)[:, None, :]
    return np.mean([np.mean(np.sum((x[t + lag] - x[t]) ** 2, axis=1)) for t in range(len(x) - lag)])


def _cartesian(path):
    lines, frames, k = open(path).read().splitlines(), [], 0
    while k < len(lines):
        n = int(lines[k + 3])
        rows = np.array([ln.split() for ln in lines[k + 9:k + 9 + n]], dtype=float)
        frames.append(rows)
        k += 9 + n
    return np.array(frames)


def test_custom_metrics_equal_lammps_and_a_plain_msd(mixture, tmp_path):
    out = tmp_path / "out"
    args = ["analyze", str(mixture / "traj.dump"), "--data", str(mixture / "mixture.data"), "--elements", "H,Li",
            "--timestep-fs", TIMESTEP, "--rdf", "H-H", "--rdf", "H-Li", "--r-max", 2.5, "--bins", 100,
            "--rdf-normalization", "n_n_minus_1", "--msd", "all", "--msd", "Li", "--lag-ps", 0.8, "--out", str(out),
            "--plot"]
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "diffusivity all" in result.output and "plots:" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["types"]["elements"] == ["H", "Li"] and metrics["types"]["masses"] == {"1": 1.0, "2": 3.5}
    assert metrics["dump_every_steps"] == EVERY  # from the dump's step numbers
    curves = np.load(out / "curves.npz")
    # RDFs: LAMMPS's compute rdf (N(N-1) for like pairs), frame by frame, averaged over the frames
    lammps, frames = _lammps_rdf_mean(mixture / "rdf.dat")
    assert metrics["metrics"]["rdf"]["frames_used"] == frames == 41
    np.testing.assert_allclose(curves["r"], lammps[:, 1], atol=1e-12)
    np.testing.assert_allclose(curves["g_H-H"], lammps[:, 2], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(curves["g_H-Li"], lammps[:, 4], rtol=1e-6, atol=1e-9)
    # MSDs: LAMMPS's unwrapped columns, a double loop over origins, the data file's masses
    rows = _cartesian(mixture / "cartesian.dump")
    types, positions = rows[0, :, 1].astype(int), rows[:, :, 2:5]
    masses = np.where(types == 1, 1.0, 3.5)
    frame_dt_ps = EVERY * TIMESTEP / 1000.0
    lag = round(0.8 / frame_dt_ps)
    for name, select in (("all", types > 0), ("Li", types == 2)):
        plain = [_plain_msd(positions[:, select], masses[select], m) for m in (1, lag // 2, lag)]
        np.testing.assert_allclose(curves[f"msd_{name}"][[1, lag // 2, lag]], plain, rtol=1e-10)
        d = metrics["metrics"]["diffusivity"][name]
        assert d["value"] == pytest.approx(plain[-1] / (6 * lag * frame_dt_ps) * 0.1, rel=1e-10)
    for png in ("rdf.png", "msd.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_elements_from_data_file_masses_and_element_column(mixture, tmp_path):
    data = (mixture / "mixture.data").read_text()
    # write_data gives masses 1 and 3.5: 1.0 is hydrogen's, 3.5 no element's
    result = CliRunner().invoke(cli, ["analyze", str(mixture / "traj.dump"), "--data", str(mixture / "mixture.data"),
                                      "--rdf", "all", "--r-max", "2.5", "--out", str(tmp_path / "a")])
    assert result.exit_code == 1 and "type 2 (mass 3.5) matches no element; give the elements with --elements" in result.output
    (tmp_path / "named.data").write_text(data.replace("\n2 3.5", "\n2 6.94 # Li"))
    result = CliRunner().invoke(cli, ["analyze", str(mixture / "traj.dump"), "--data", str(tmp_path / "named.data"),
                                      "--rdf", "H-Li", "--r-max", "2.5", "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    types = json.loads((tmp_path / "b" / "metrics.json").read_text())["types"]
    assert types["elements"] == ["H", "Li"] and types["masses"] == {"1": 1.0, "2": 6.94}
    # a dump with an element column names its types itself
    run_in_folder(tmp_path, DECK.split("write_data")[0] + "dump e all custom 1 named.dump id type element x y z\n"
                  "dump_modify e element H Li\nrun 2\n")
    result = CliRunner().invoke(cli, ["analyze", str(tmp_path / "named.dump"), "--rdf", "Li-Li", "--r-max", "2.5", "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())["types"]["elements"] == ["H", "Li"]


@pytest.mark.parametrize("args, code, message", [
    (["--rdf", "all"], 1, "which element is each atom type"),
    (["--elements", "H,Li"], 1, "give a benchmark system \\(--system\\) or the metrics to compute"),
    (["--elements", "H", "--rdf", "all"], 1, "has 2 atom types but 1 elements were given"),
    (["--elements", "H,Li", "--rdf", "O-O"], 1, "the trajectory has no O atoms"),
    (["--elements", "H,Li", "--rdf", "OO"], 2, "give a pair of elements as A-B"),
    (["--elements", "H,Qq", "--rdf", "all"], 1, "Qq is not an element symbol"),
    (["--elements", "H,Li", "--msd", "Li", "--every", "1"], 1, "an MSD needs the time between frames"),
    (["--elements", "H,Li", "--system", "nonsense"], 1, "unknown system 'nonsense'"),
    (["--elements", "H,Li", "--system", "water"], 1, "has elements H Li; system water has O H"),
    (["--elements", "H,Li", "--msd", "Li", "--timestep-fs", "1", "--lag-ps", "100"], 1, "leave no MSD lag of 100 ps"),
    (["--elements", "H,Li", "--rdf", "all", "--test-data", "DUMP"], 2, "--test-data evaluates a run folder's model"),
])
def test_bad_trajectory_input_is_one_line(mixture, tmp_path, args, code, message):
    import re

    dump = str(mixture / "traj.dump")
    result = CliRunner().invoke(cli, ["analyze", dump, "--out", str(tmp_path / "out"), "--r-max", "2.5",
                                      *[dump if a == "DUMP" else a for a in args]])
    assert result.exit_code == code, result.output
    assert re.search(message, result.output), result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_results_of_another_trajectory_are_not_replaced(mixture, tmp_path):
    import shutil

    for name in ("a.dump", "b.dump"):
        shutil.copy(mixture / "traj.dump", tmp_path / name)
    ok = CliRunner().invoke(cli, ["analyze", str(tmp_path / "a.dump"), "--elements", "H,Li", "--rdf", "all", "--r-max", "2.5"])
    assert ok.exit_code == 0, ok.output
    before = (tmp_path / "metrics.json").read_bytes()
    refused = CliRunner().invoke(cli, ["analyze", str(tmp_path / "b.dump"), "--elements", "H,Li", "--rdf", "all", "--r-max", "2.5"])
    assert refused.exit_code == 1 and "holds the results of" in refused.output and "--out" in refused.output
    assert (tmp_path / "metrics.json").read_bytes() == before
    again = CliRunner().invoke(cli, ["analyze", str(tmp_path / "a.dump"), "--elements", "H,Li", "--rdf", "H-H", "--r-max", "2.5"])
    assert again.exit_code == 0, again.output  # the same trajectory may be analysed again


def _run_folder(tmp_path, mixture, manifest):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "traj.dump").write_bytes((mixture / "traj.dump").read_bytes())
    (folder / "run.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    return folder


GOOD = {"manifest_format": MANIFEST_FORMAT, "lmpbench_version": "0.1.0",
        "system": {"name": "lips", "category": "periodic"},
        "protocol": {"timestep_fs": 2.0, "dump_every": 40, "ensemble": "nvt"}, "model": {"kind": "classical"},
        "type_elements": ["Li", "P"], "natoms": 2048, "status": "finished"}


@pytest.mark.parametrize("change, message", [
    ({"manifest_format": 7, "lmpbench_version": "9.0"}, "written by lmpbench 9.0 in run.json format 7; this lmpbench reads format 1"),
    ({"natoms": None}, "run.json lacks field natoms"),
    ({"natoms": "many"}, "field natoms has 'many', not a int"),
    ({"protocol": {"timestep_fs": 1.0, "ensemble": "nvt"}}, "lacks field protocol.dump_every"),
    ({"system": "water"}, "field system is not a table"),
    ({"type_elements": [1, 2]}, "type_elements must be a list of element symbols"),
    ("[1, 2]", "not a run manifest \\(a JSON list"),
    ("{not json", "not a JSON run manifest"),
])
def test_run_json_checked_before_analysis(mixture, tmp_path, change, message):
    manifest = change if isinstance(change, str) else {**GOOD, **change}
    if isinstance(manifest, dict):
        manifest = {k: v for k, v in manifest.items() if v is not None}
    folder = _run_folder(tmp_path, mixture, manifest)
    with pytest.raises(ManifestError, match=message):
        read_run_manifest(folder / "run.json")
    result = CliRunner().invoke(cli, ["analyze", str(folder)])
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1 and "run.json" in result.output, result.output
    assert not (folder / "metrics.json").exists()


def test_a_complete_run_json_is_analysed(mixture, tmp_path):
    """The same checks pass a good manifest (here a hand-written one over the mixture's dump)."""
    folder = _run_folder(tmp_path, mixture, GOOD)
    assert read_run_manifest(folder / "run.json")["natoms"] == 2048
    result = CliRunner().invoke(cli, ["analyze", str(folder)])
    assert result.exit_code == 0, result.output
    assert json.loads((folder / "metrics.json").read_text())["metrics"]["stability_ps"]["frames_used"] == 41
    result = CliRunner().invoke(cli, ["analyze", str(folder), "--elements", "Li,P"])
    assert result.exit_code == 2 and "is a run folder" in result.output
