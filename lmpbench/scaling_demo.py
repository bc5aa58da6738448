"""The deploy and multi-rank demo (`make demo-scaling`): train, deploy, run in LAMMPS, analyse.

A tiny NequIP model trained here on EMT data (CuAu, about 15 s), deployed with ``lmpbench
deploy`` to the fast single-rank path, to the multi-rank path with per-layer ghost exchange
and to the older ghost-shell path (each deploy checks itself against nequip's ASE
calculator), NVE in LAMMPS through pair style mlff (fast path on one rank, exchange path on
one and two ranks, ghost-shell path on two), and a first analysis: energy conservation,
agreement of the paths, speed, and the first run's dump analysed as any trajectory file
(RDFs, MSD, plots). The benchmark itself is `make demo` (``lmpbench.demo``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lmpbench import decks
from lmpbench.analysis.run_metrics import energy_drift_ev_atom_ps
from lmpbench.deploy import deploy
from lmpbench.models.toy_nequip import train_toy_nequip
from lmpbench.structures import lammps_oriented, write_lammps_data

ELEMENTS = ["Cu", "Au"]
RUNS = (("aoti-local", 1), ("aoti-exchange", 1), ("aoti-exchange", 2), ("aoti-ghost", 2))  # (target, MPI ranks)


def alloy(cells: int = 5, seed: int = 4928):
    """A random fcc CuAu alloy (4 cells^3 atoms) with thermal-like jitter."""
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "fcc", a=3.8, cubic=True).repeat((cells, cells, cells))
    atoms.symbols[:] = rng.choice(ELEMENTS, size=len(atoms))
    atoms.rattle(0.05, seed=seed)
    return lammps_oriented(atoms)


def thermo_table(log_path: Path) -> dict[str, np.ndarray]:
    """Columns of the last thermo block in a LAMMPS log."""
    from lammps.formats import LogFile

    run = LogFile(str(log_path)).runs[-1]
    return {k: np.asarray(v, dtype=float) for k, v in run.items()}


def run_scaling_demo(out: Path, steps: int = 200, echo=print) -> dict:
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "model" / "train" / "last.ckpt"
    if not ckpt.is_file():
        echo(f"training a tiny NequIP model on EMT data in {ckpt.parent.parent}")
        ckpt = train_toy_nequip(out / "model", elements=ELEMENTS)
    models = {}
    for target in sorted({t for t, _ in RUNS}):
        models[target] = deploy(ckpt, out / f"cuau_{target}.pt2", target=target, echo=echo).path

    # 2,048 atoms: enough per rank that two ranks of the exchange path outrun one rank of the
    # fast path (500 atoms do not; benchmarks/RESULTS.md, exchange_speed)
    atoms = alloy(cells=8)
    data = write_lammps_data(out / "start.data", atoms, ELEMENTS)
    runs = {}
    for target, nprocs in RUNS:
        workdir = out / f"nve_{target}_{nprocs}rank"
        echo(f"NVE, {steps} steps of 1 fs, {len(atoms)} atoms, {target} on {nprocs} MPI rank(s): {workdir}")
        screen = decks.run_deck(decks.template("nve_mlff.in"), workdir, nprocs=nprocs, variables={
            "data": data, "model": models[target], "elements": " ".join(ELEMENTS), "steps": steps, "dt": 0.001,
            "temp": 600, "thermo_every": 10, "dump_every": 10})
        runs[target, nprocs] = {"thermo": thermo_table(workdir / "log.lammps"), "timing": decks.loop_timings(screen)[-1],
                                "dir": workdir}

    reference = runs[RUNS[0]]["thermo"]["TotEng"]
    summary = {
        "model": str(ckpt),
        "deployed": {k: str(v) for k, v in models.items()},
        "atoms": len(atoms),
        "steps": steps,
        "runs": [
            {
                "target": target,
                "ranks": nprocs,
                "folder": str(r["dir"]),
                "steps_per_s": r["timing"].steps_per_s,
                "energy_drift_eV_atom_ps": energy_drift_ev_atom_ps(r["thermo"]["Time"], r["thermo"]["TotEng"], len(atoms)),
                "max_abs_etotal_diff_vs_first_eV": float(np.abs(r["thermo"]["TotEng"] - reference).max()),
            }
            for (target, nprocs), r in runs.items()
        ],
    }
    summary["analysis"] = analyse_trajectory(runs[RUNS[0]]["dir"] / "traj.dump", out / "analysis")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def analyse_trajectory(dump: Path, out: Path, timestep_fs: float = 1.0) -> dict:
    """The demo's first run analysed as any LAMMPS dump would be (``lmpbench analyze FILE``):
    total and Cu-Au RDFs, the MSD over all time origins with the mass-weighted centre of mass
    removed, and PNG plots of both."""
    from lmpbench.analysis.plots import plot_curves
    from lmpbench.analysis.run_metrics import CustomMetrics, analyze_trajectory

    result = analyze_trajectory(dump, elements=ELEMENTS, timestep_fs=timestep_fs, out=out,
                                custom=CustomMetrics(rdf_pairs=((None, None), ("Cu", "Au")), msd=((),)))
    plots = plot_curves(out / "curves.npz")
    with np.load(out / "curves.npz") as curves:
        r, g, msd, lag_ps = curves["r"], curves["g_all"], curves["msd_all"], curves["msd_lag_ps"]
    return {"trajectory": str(dump), "frames": result["metrics"]["rdf"]["frames_used"],
            "curves": str(out / "curves.npz"), "metrics": str(out / "metrics.json"), "plots": [str(p) for p in plots],
            "rdf_first_peak_A": float(r[np.argmax(g)]), "msd_A2_at_last_lag": float(msd[-1]),
            "last_lag_steps": round(lag_ps[-1] * 1000.0 / timestep_fs)}
