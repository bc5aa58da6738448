"""lmpbench report: the leaderboard against direct computations on the runs' own files.

Most runs here are written by the test (run.json, metrics.json, curves.npz, thermo.dat, a
tiny dump) with random numbers, so that every table value can be recomputed from those files
with numpy/scipy; one pair of real LAMMPS runs proves the pipeline on files lmpbench wrote.
"""

import base64
import csv
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from lmpbench.cli.main import cli
from lmpbench.engine import lammps_environment

PAIRS = ("O-O", "H-H", "H-O")
N_MODELS = 6  # five with a force MAE: the tau interval needs five
SEEDS = (1, 2, 3)
NOISE = {"rdf_mae.O-O": 0.27, "rdf_mae.H-H": 0.18, "rdf_mae.H-O": 0.24, "stability_ps": 10.0}
REF_D = (2.1, 2.5)  # diffusivities the reference's seeds recorded


def _dump(path, steps, n=6, box=8.0, seed=0):
    """A text LAMMPS dump of ``n`` atoms (types 1, 2 alternating) at ``steps``."""
    rng = np.random.default_rng(seed)
    lines = []
    for step in steps:
        lines += ["ITEM: TIMESTEP", str(step), "ITEM: NUMBER OF ATOMS", str(n), "ITEM: BOX BOUNDS pp pp pp",
                  *[f"0 {box}"] * 3, "ITEM: ATOMS id type x y z ix iy iz"]
        lines += [f"{i + 1} {i % 2 + 1} {x:.4f} {y:.4f} {z:.4f} 0 0 0" for i, (x, y, z) in enumerate(rng.uniform(0, box, (n, 3)))]
    path.write_text("\n".join(lines) + "\n")


def _run_json(folder, model, seed, status, collapse=None, speed=None, metadata=None):
    manifest = {"manifest_format": 1, "system": {"name": "water", "category": "periodic"},
                "protocol": {"timestep_fs": 1.0, "dump_every": 100, "ensemble": "nvt"},
                "model": {"kind": "deployed", "file": f"/models/{model}.pt", "sha256": f"{model:0<64}"[:64],
                          "metadata": metadata or {}},
                "type_elements": ["O", "H"], "natoms": 6, "status": status, "seed": seed, "collapse": collapse,
                "reason": {"interrupted": "SIGTERM at step 500", "failed": "ERROR: bad deck"}.get(status),
                "speed": speed, "host": "testhost", "device": "cpu", "mpi_ranks": 1, "threads": 1}
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps(manifest))


def _fabricate(root):
    """Six models x three seeds of water, with every kind of run; returns what was written, by folder."""
    rng = np.random.default_rng(7)
    written = {}
    r = np.linspace(0.006, 6, 500)
    for k in range(N_MODELS):
        model = f"m{k}"
        force = float(rng.uniform(5, 80))
        for seed in SEEDS:
            folder = root / model / f"seed{seed}"
            status, collapse = "finished", None
            if k == 0 and seed == 3:
                status, collapse = "collapsed", {"step": 300, "time_ps": 0.3, "reason": "lost atoms"}
            if k == 1 and seed == 3:
                status = "interrupted"
            metadata = {}
            if k == 2:  # force MAE from the train.json beside the deployed model's source
                source = root / "train_m2" / "model.nequip.zip"
                source.parent.mkdir(exist_ok=True)
                (source.parent / "train.json").write_text(json.dumps({"test": {"forces_mae_meV_A": force,
                                                                               "energy_mae_meV_atom": 1.5}}))
                metadata = {"source_file": str(source)}
            speed = {"steps_per_s": float(rng.uniform(100, 200)), "ns_per_day": float(rng.uniform(1, 2))}
            _run_json(folder, model, seed, status, collapse, speed, metadata)
            stability = float(rng.uniform(0.2, 0.3) if status == "collapsed" else rng.uniform(5, 10))
            metrics = {"stability_ps": {"value": stability},
                       "rdf_mae": {p: {"value": float(rng.uniform(0.1, 1.0))} for p in PAIRS},
                       "diffusivity": {"value": float(rng.uniform(1.5, 3.0))}}
            if k == 3 and seed == 2:  # one seed without its RDF errors: counted as missing, not as zero
                metrics["rdf_mae"] = {p: {"value": None, "reason": "not computable: 3 stable frame(s)"} for p in PAIRS}
            if k not in (2, 5):  # m5: no force MAE at all
                metrics["forces"] = {"value": force, "energy_mae_meV_atom": 2.0}
            metrics["rdf_window_errors"] = {"windows": [[0, 100, 0.5], [100, 200, 0.7]], "threshold": 3.0}
            (folder / "metrics.json").write_text(json.dumps({"run": str(folder), "system": "water", "status": status,
                                                            "frame_interval_ps": 0.1, "metrics": metrics}))
            curves = {"r": r, **{f"g_{p}": np.exp(-(r - 2.8) ** 2) * (1 + 0.1 * k) for p in PAIRS},
                      **{f"g_ref_{p}": np.exp(-(r - 2.8) ** 2) for p in PAIRS}}
            np.savez(folder / "curves.npz", **curves)
            np.savetxt(folder / "thermo.dat", np.column_stack([np.arange(5) * 100, np.arange(5) * 0.1,
                                                               rng.uniform(290, 310, 5), *np.zeros((4, 5))]))
            if seed == 1 or status == "collapsed":
                _dump(folder / "traj.dump", [0, 100, 200, 300, 400], seed=k)
            written[folder] = {"model": model, "status": status, "metrics": metrics, "force": force}
    # a failed run (no metrics), an unreadable run.json, a corrupt metrics.json, an imported MDsim run
    _run_json(root / "failed", "m0", 9, "failed")
    (root / "broken").mkdir()
    (root / "broken" / "run.json").write_text("{not json")
    _run_json(root / "corrupt_metrics", "m1", 8, "finished")
    (root / "corrupt_metrics" / "metrics.json").write_text("[1, 2")
    (root / "mdsim").mkdir()
    (root / "mdsim" / "metrics.json").write_text(json.dumps({
        "imported": True, "system": "water", "model": "schnet", "status": "finished", "run_collapse": None,
        "source": {"kind": "mdsim", "config": {"seed": 1}}, "types": {"elements": ["O", "H"]},
        "metrics": {"stability_ps": {"value": 4.0}, "forces": {"value": 30.0, "imported": True}}}))
    reference = root.parent / "reference_set"
    reference.mkdir()
    (reference / "reference.json").write_text(json.dumps({"system": "water", "noise_floor": {
        "mean": NOISE, "seeds": {f"seed{i + 2}": {**NOISE, "diffusivity": d} for i, d in enumerate(REF_D)}}}))
    return written, reference


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    written, reference = _fabricate(base / "runs")
    out = base / "out"
    result = CliRunner().invoke(cli, ["report", str(base / "runs"), "-o", str(out), "--reference", str(reference)])
    assert result.exit_code == 0, result.output
    return {"written": written, "out": out, "output": result.output, "doc": json.loads((out / "report.json").read_text()),
            "csv": list(csv.DictReader(open(out / "leaderboard.csv")))}


def _pooled(written, model):
    return [w for w in written.values() if w["model"] == model and w["status"] in ("finished", "collapsed")]


def _value(w, name):
    m = w["metrics"]
    if name.startswith("rdf_mae."):
        return m["rdf_mae"][name.split(".")[1]]["value"]
    if name == "rdf_mae":
        values = [m["rdf_mae"][p]["value"] for p in PAIRS]
        return None if None in values else float(np.mean(values))
    if name == "diffusivity_error":
        return abs(m["diffusivity"]["value"] - np.mean(REF_D))
    return m[name]["value"]


def test_table_values_and_intervals_match_the_runs(report):
    """Every pooled cell: mean over the finished and collapsed seeds' metrics.json values, the
    95% interval scipy's t interval, missing values left out (never zero), interrupted runs left out."""
    rows = {(r["model"], r["metric"]): r for r in report["csv"]}
    checked = 0
    for k in range(N_MODELS):
        model = f"m{k}"
        pooled = _pooled(report["written"], model)
        for name in ("stability_ps", "rdf_mae", "rdf_mae.O-O", "rdf_mae.H-O", "diffusivity", "diffusivity_error"):
            values = [v for v in (_value(w, name) for w in pooled) if v is not None]
            row = rows[(model, name)]
            assert int(row["n_seeds"]) == len(values) and int(row["of_seeds"]) == len(pooled)
            assert float(row["mean"]) == pytest.approx(np.mean(values), rel=1e-12)
            low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
            assert (float(row["ci95_low"]), float(row["ci95_high"])) == pytest.approx((low, high), rel=1e-10)
            checked += 1
    assert checked == N_MODELS * 6
    assert rows[("m1", "stability_ps")]["of_seeds"] == "2"  # the interrupted seed is not pooled
    assert rows[("m3", "rdf_mae")]["n_seeds"] == "2" and "3 stable frame(s)" in rows[("m3", "rdf_mae")]["missing_reasons"]
    models = {m["name"]: m for m in report["doc"]["systems"]["water"]["models"]}
    # m0 also has a failed run, m1 a finished one whose metrics.json is corrupt (not pooled, but it did not collapse)
    assert models["m0"]["collapsed"] == [1, 3] and models["m1"]["collapsed"] == [0, 3]
    assert models["m0"]["statuses"] == {"finished": 2, "collapsed": 1, "failed": 1}
    assert models["m1"]["statuses"] == {"finished": 3, "interrupted": 1}


def test_force_mae_sources_and_missing(report):
    rows = {(r["model"], r["metric"]): r for r in report["csv"]}
    models = {m["name"]: m for m in report["doc"]["systems"]["water"]["models"]}
    for k in (0, 1, 2, 3, 4):
        force = next(w["force"] for w in report["written"].values() if w["model"] == f"m{k}")
        assert float(rows[(f"m{k}", "forces_mae")]["mean"]) == pytest.approx(force)
    assert models["m2"]["force_mae_source"].startswith("train.json")
    assert models["m0"]["force_mae_source"].startswith("metrics.json")
    assert rows[("m5", "forces_mae")]["mean"] == "" and "no test error" in rows[("m5", "forces_mae")]["missing_reasons"]
    assert models["schnet (MDsim)"]["source"] == "mdsim (imported)"


def test_kendall_tau_matches_scipy(report):
    """tau between the models' force MAE and each metric's seed mean, as scipy computes it; its
    interval from the Fieller-Hartley-Pearson variance 0.437/(n-4)."""
    system = report["doc"]["systems"]["water"]
    lmp_models = [m for m in system["models"] if m["source"] == "lammps"]
    for name in ("stability_ps", "rdf_mae", "diffusivity_error"):
        pairs = []
        for m in lmp_models:
            force = m["cells"]["forces_mae"]["mean"]
            values = [v for v in (_value(w, name) for w in _pooled(report["written"], m["name"])) if v is not None]
            if force is not None:
                pairs.append((force, np.mean(values)))
        pairs.append((30.0, 4.0)) if name == "stability_ps" else None  # the imported MDsim run's model
        x, y = np.array(pairs).T
        tau, p = stats.kendalltau(x, y)
        found = system["kendall_tau_vs_force_mae"][name]
        assert found["n"] == len(pairs) and found["tau"] == pytest.approx(tau) and found["p"] == pytest.approx(p)
        half = stats.norm.ppf(0.975) * math.sqrt(0.437 / (len(pairs) - 4))
        assert (found["low"], found["high"]) == pytest.approx((math.tanh(math.atanh(tau) - half),
                                                               math.tanh(math.atanh(tau) + half)))
        assert f"τ = {tau:+.2f}" in system["sentence"]
    assert system["sentence"] in report["output"]


def test_noise_floor_and_statuses_listed(report):
    system = report["doc"]["systems"]["water"]
    assert system["noise_floor"]["rdf_mae.O-O"] == NOISE["rdf_mae.O-O"]
    assert system["noise_floor"]["rdf_mae"] == pytest.approx(np.mean([NOISE[f"rdf_mae.{p}"] for p in PAIRS]))
    md = (report["out"] / "report.md").read_text()
    assert "noise floor (reference vs itself, 2 seed pair(s))" in md
    runs = {r["folder"].split("/runs/")[-1]: r for r in report["doc"]["runs"]}
    assert runs["broken"]["status"] == "unreadable" and "not a JSON run manifest" in runs["broken"]["notes"][0]
    assert runs["failed"]["status"] == "failed" and not runs["failed"]["pooled"]
    assert any("cannot be read as JSON" in n for n in runs["corrupt_metrics"]["notes"])
    assert runs["m1/seed3"]["status"] == "interrupted" and "SIGTERM" in runs["m1/seed3"]["notes"][0]
    assert runs["m0/seed3"]["collapse"]["reason"] == "lost atoms"
    assert "1 unreadable" in (report["out"] / "report.html").read_text()


def _images(html):
    return re.findall(r'src="data:image/png;base64,([^"]+)"', html)


def test_html_is_self_contained_with_every_plot(report):
    import matplotlib.image

    html = (report["out"] / "report.html").read_text()
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched from a network
    figures = report["doc"]["figures"]["water"]
    assert {f["file"].split("_", 1)[1] for f in figures} == {"overview.png", "structure.png", "diffusion.png",
                                                             "stability.png"}
    snapshots = report["doc"]["snapshots"]["water"]
    assert len(snapshots) == 2 and "collapse frame (step 300" in snapshots[1]["title"]
    images = _images(html)
    assert len(images) >= len(figures) + len(snapshots)
    for data in images:
        pixels = matplotlib.image.imread(__import__("io").BytesIO(base64.b64decode(data)), format="png")
        assert pixels.shape[0] > 50 and pixels.shape[1] > 50 and pixels[..., :3].std() > 0.01  # not blank


def test_screenshot_in_headless_chromium(report, tmp_path_factory):
    """The page in a real browser: every image decoded with a size, and a screenshot kept."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    out = report["out"]
    probe = out / "probe.html"  # the page plus a script that lists each image's decoded size
    probe.write_text((out / "report.html").read_text().replace(
        "</body>", "<script>window.addEventListener('load', () => document.body.insertAdjacentHTML('beforeend', "
                   "'<pre id=\"sizes\">' + JSON.stringify(Array.from(document.images).map(i => [i.naturalWidth, "
                   "i.naturalHeight])) + '</pre>'));</script></body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files"]
    dom = subprocess.run([browser, *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=60)
    sizes = json.loads(re.search(r'<pre id="sizes">(\[.*?\])</pre>', dom.stdout).group(1))
    assert len(sizes) == len(_images((out / "report.html").read_text())) and all(w > 50 and h > 50 for w, h in sizes)
    shot = Path(__file__).parent / "output" / "report_screenshot.png"  # kept for a reader (git-ignored)
    shot.parent.mkdir(exist_ok=True)
    shot.unlink(missing_ok=True)
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1400,3000", (out / "report.html").as_uri()],
                   capture_output=True, timeout=60)
    import matplotlib.image

    assert shot.is_file() and matplotlib.image.imread(shot)[..., :3].std() > 0.01
    print(f"screenshot: {shot}")


def test_bad_input_gets_one_line(tmp_path):
    (tmp_path / "ref.json").write_text("{}")
    result = CliRunner().invoke(cli, ["report", str(tmp_path), "-o", str(tmp_path / "out"), "--reference",
                                      str(tmp_path / "ref.json")])
    assert result.exit_code == 1 and "is not a reference set record" in result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "nothing"), "-o", str(tmp_path / "out"),
                                      "--no-snapshots"])
    assert result.exit_code == 0 and "unreadable: 1" in result.output


def test_malformed_values_are_listed_not_fatal(tmp_path):
    """Fields of the wrong type in run.json and metrics.json: the run is listed, its values missing."""
    _run_json(tmp_path / "runs" / "weird", "m0", 1, "finished", collapse="x", speed=[1])
    (tmp_path / "runs" / "weird" / "metrics.json").write_text(json.dumps({"metrics": {
        "stability_ps": "abc", "rdf_mae": {"O-O": [1]}, "rdf_window_errors": {"windows": "oops"}, "forces": 3}}))
    (tmp_path / "runs" / "imported").mkdir()
    (tmp_path / "runs" / "imported" / "metrics.json").write_text(json.dumps({
        "imported": True, "source": [1], "system": 5, "run_collapse": 1, "metrics": {}}))
    (tmp_path / "runs" / "weird" / "thermo.dat").write_text("# step time temp\nnot numbers\n")
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "runs"), "-o", str(tmp_path / "out"), "--no-snapshots"])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    weird = next(r for r in doc["runs"] if r["folder"].endswith("weird"))
    assert weird["values"]["stability_ps"] is None and weird["values"]["rdf_mae.O-O"] is None
    assert weird["values"]["forces_mae"] is None and weird["values"]["steps_per_s"] is None
    imported = next(r for r in doc["runs"] if r["folder"].endswith("imported"))
    assert imported["status"] == "not finished" and imported["system"] is None


def test_real_runs(tmp_path):
    """Two short LAMMPS runs of the LJ stand-in, each analysed against the other: the report's
    h(r) error (the same both ways: mae is symmetric) and speed are those in the files lmpbench wrote."""
    from lmpbench.analysis.run_metrics import analyze

    args = ["--model", "classical:lj", "--system", "md17_ethanol", "--steps", 2200, "--temperature", 50,
            "--dump-every", 100, "--collapse-criteria", "paper"]  # 1.1 ps: h(r) needs 1 ps stable
    procs = [subprocess.Popen([sys.executable, "-m", "lmpbench.cli.main", "run", "--no-progress", "--out",
                               str(tmp_path / f"seed{s}"), "--seed", str(s), *map(str, args)], env=lammps_environment(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for s in (1, 2)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stdout.read().decode()[-2000:]
    errors = [analyze(tmp_path / f"seed{a}", tmp_path / f"seed{b}")["metrics"]["h_mae"]["value"] for a, b in ((1, 2), (2, 1))]
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "seed2"), str(tmp_path / "seed1"), "-o",
                                      str(tmp_path / "out"), "--no-snapshots", "--run-plots"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "out" / "plots" / "runs").glob("*/h_r.png"))) == 2  # analyze --plot's, per run
    rows = {r["metric"]: r for r in csv.DictReader(open(tmp_path / "out" / "leaderboard.csv"))}
    assert float(rows["h_mae"]["mean"]) == pytest.approx(np.mean(errors)) and rows["h_mae"]["n_seeds"] == "2"
    speeds = [json.loads((tmp_path / f"seed{s}" / "run.json").read_text())["speed"]["steps_per_s"] for s in (1, 2)]
    assert float(rows["steps_per_s"]["mean"]) == pytest.approx(np.mean(speeds))
    low, high = stats.t.interval(0.95, 1, loc=np.mean(speeds), scale=stats.sem(speeds))
    assert (float(rows["steps_per_s"]["ci95_low"]), float(rows["steps_per_s"]["ci95_high"])) == pytest.approx((low, high))


def test_free_energy_panels_and_pmf_columns(tmp_path):
    """Alanine dipeptide: the PMF errors pooled as the runs wrote them, and one FES panel per model beside the reference's."""
    import matplotlib.image

    from lmpbench.report import plots
    from lmpbench.report.collect import read_run
    from lmpbench.report.table import build_tables

    grid = np.linspace(-180, 177, 60)
    phi, psi = np.meshgrid(np.radians(grid), np.radians(grid), indexing="ij")
    written = {}
    for k, seed in ((0, 1), (0, 2), (1, 1)):
        folder = tmp_path / f"a{k}_{seed}"
        _run_json(folder, f"a{k}", seed, "finished")
        manifest = json.loads((folder / "run.json").read_text())
        manifest["system"] = {"name": "alanine_dipeptide", "category": "molecule"}
        (folder / "run.json").write_text(json.dumps(manifest))
        pmf = {"phi": 1.0 + k + 0.1 * seed, "psi": 2.0 + k - 0.1 * seed}
        (folder / "metrics.json").write_text(json.dumps({"metrics": {
            "pmf_mae": {axis: {"value": v} for axis, v in pmf.items()}, "stability_ps": {"value": 5.0}}}))
        np.savez(folder / "curves.npz", phi_deg=grid, psi_deg=grid, fes_kJ_mol=10 * (1 + np.cos(phi - k) * np.cos(psi)),
                 fes_ref_kJ_mol=10 * (1 + np.cos(phi) * np.cos(psi)))
        written.setdefault(f"a{k}", []).append(pmf)
    (table,) = build_tables([read_run(tmp_path / name) for name in ("a0_1", "a0_2", "a1_1")], {})
    for row in table.rows:
        for axis in ("phi", "psi"):
            assert row.cells[f"pmf_mae.{axis}"].mean == pytest.approx(np.mean([p[axis] for p in written[row.model_name]]))
    figure = plots.free_energy(table, tmp_path / "plots")
    pixels = matplotlib.image.imread(figure.file)
    assert pixels.shape[1] > 3 * 300 and pixels[..., :3].std() > 0.05  # three panels: a0, a1, the reference


def test_snapshot_falls_back_to_matplotlib(tmp_path, monkeypatch):
    """When ovito cannot render, the frame is a matplotlib 3-D scatter and the method says why."""
    import matplotlib.image

    from lmpbench.report import snapshot

    def no_renderer(*args):
        raise RuntimeError("no Vulkan device\nmore lines")

    monkeypatch.setattr(snapshot, "_render_ovito", no_renderer)
    _dump(tmp_path / "traj.dump", [0, 100, 200])
    frame = snapshot.frame_at(tmp_path / "traj.dump", ["O", "H"], 150)
    assert frame.step == 100  # the last frame at or before the step asked for
    shot = snapshot.render(frame, ["O", "H"], tmp_path / "snap.png")
    assert shot.method == "matplotlib 3-D scatter (ovito could not render: no Vulkan device)"
    assert matplotlib.image.imread(shot.file)[..., :3].std() > 0.01
