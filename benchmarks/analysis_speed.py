"""Speed and memory of lmpbench's RDF and MSD against ovito, freud and MDAnalysis, same files.

Trajectories (LAMMPS text dumps with image flags) are made here by LAMMPS: SPC/Fw water (192
atoms, via `lmpbench run`, 10,000 frames by default) and an LJ fluid (20,000 atoms, 1,000
frames). Every measurement runs in a fresh process with one thread (OVITO_THREAD_COUNT,
NUMBA_NUM_THREADS, OMP_NUM_THREADS = 1; freud set to one thread) and reports wall time and
peak memory above the process's size after its imports. Tasks:

  RDF  O-O for water, all atoms for LJ; 500 bins on (0, r_max], r_max 6 Å / 2.5 sigma.
       lmpbench     TrajectoryReader + RDF (paper normalisation)
       ovito        import_file + CoordinationAnalysisModifier, averaged over frames
       freud        freud.density.RDF fed by lmpbench's reader (freud computes in float32)
       MDAnalysis   its LAMMPSDUMP reader + InterRDF (float32 positions; excludes self
                    pairs from the density, compared after matching that normalisation)
  MSD  oxygen for water, all atoms for LJ, all time origins, lags up to --water-lag /
       --lj-lag frames (centre of mass kept, as the other tools do).
       lmpbench     TrajectoryReader + streaming MSD(max_lag): memory O(lag x atoms)
       freud        freud.msd.MSD(mode="window") on the stacked unwrapped positions
       MDAnalysis   EinsteinMSD(fft=True) on its reader with unwrap_images
       ovito        CalculateDisplacementsModifier against frame 0: one time origin only,
                    a smaller job than the others; compared with the first-origin MSD.
A row "lmpbench 1/2" runs on the first half of the frames: its peak memory next to the full
run's shows that memory does not grow with the trajectory.

usage: python benchmarks/analysis_speed.py [--water-frames 10000] [--lj-frames 1000]
           [--workdir DIR (keeps the trajectories between runs)] [--tools lmpbench,ovito,...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ONE_THREAD = {"OVITO_THREAD_COUNT": "1", "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
              "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TOOLS = ("lmpbench", "ovito", "freud", "MDAnalysis")


# ---------------------------------------------------------------- trajectories

def water_trajectory(folder: Path, frames: int) -> Path:
    from lmpbench.engine import lammps_environment

    out = folder / f"water{frames}"
    if not (out / "traj.dump").is_file():
        subprocess.run([sys.executable, "-m", "lmpbench.cli.main", "run", "--no-progress", "--model", "classical:spcfw",
                        "--system", "water", "--timestep-fs", "0.5", "--dump-every", "5", "--steps", str(5 * (frames - 1)),
                        "--out", str(out)], check=True, env=lammps_environment(), capture_output=True)
    return out / "traj.dump"


def lj_trajectory(folder: Path, frames: int) -> Path:
    from lmpbench.engine import open_lammps

    path = folder / f"lj{frames}.dump"
    if path.is_file():
        return path
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        lmp = open_lammps()
        lmp.commands_string(f"""
            units lj
            lattice fcc 0.8
            region box block 0 17 0 17 0 17
            create_box 1 box
            create_atoms 1 box
            mass 1 1.0
            pair_style lj/cut 2.5
            pair_coeff 1 1 1.0 1.0
            velocity all create 1.5 4928 loop geom
            fix nvt all nvt temp 1.5 1.5 0.5
            run 2000
            dump traj all custom 10 {path.name} id type x y z ix iy iz
            dump_modify traj sort id
            run {10 * (frames - 1)}
        """)
        lmp.close()
    finally:
        os.chdir(cwd)
    return path


# ---------------------------------------------------------------- one measurement per process

def rdf_lmpbench(path, atom_type, r_max, frames):
    from lmpbench.analysis.rdf import RDF
    from lmpbench.analysis.trajectory import TrajectoryReader

    rdf = RDF(r_max, 500, a=atom_type, b=atom_type)
    for frame in TrajectoryReader(path, stop=frames):
        rdf.accumulate(frame)
    return rdf.g


def rdf_ovito(path, atom_type, r_max, frames):
    from ovito.io import import_file
    from ovito.modifiers import CoordinationAnalysisModifier, SelectTypeModifier

    pipeline = import_file(str(path))
    if atom_type is not None:
        pipeline.modifiers.append(SelectTypeModifier(property="Particle Type", types={atom_type}))
    pipeline.modifiers.append(CoordinationAnalysisModifier(cutoff=r_max, number_of_bins=500,
                                                           only_selected=atom_type is not None))
    total, count = 0.0, min(frames or 10**12, pipeline.source.num_frames)
    for k in range(count):
        total = total + pipeline.compute(k).tables["coordination-rdf"].xy()[:, 1]
    return total / count


def rdf_freud(path, atom_type, r_max, frames):
    import freud

    from lmpbench.analysis.trajectory import TrajectoryReader

    freud.parallel.set_num_threads(1)
    rdf = freud.density.RDF(bins=500, r_max=r_max)
    for frame in TrajectoryReader(path, stop=frames):
        box = freud.box.Box.from_matrix(frame.cell.T)
        points = box.wrap(frame.positions - frame.origin)
        rdf.compute(system=(box, points if atom_type is None else points[frame.types == atom_type]), reset=False)
    return rdf.rdf


def _mda_universe(path, unwrap=False):
    import MDAnalysis as mda

    return mda.Universe(str(path), format="LAMMPSDUMP", topology_format="LAMMPSDUMP", unwrap_images=unwrap)


def rdf_MDAnalysis(path, atom_type, r_max, frames):
    from MDAnalysis.analysis.rdf import InterRDF

    u = _mda_universe(path)
    group = u.atoms if atom_type is None else u.select_atoms(f"type {atom_type}")
    return InterRDF(group, group, nbins=500, range=(0.0, r_max), exclusion_block=(1, 1)).run(stop=frames).results.rdf


def msd_lmpbench(path, atom_type, max_lag, frames):
    from lmpbench.analysis.msd import MSD
    from lmpbench.analysis.trajectory import TrajectoryReader

    msd = MSD(atom_type, remove_com=False, max_lag=max_lag)
    for frame in TrajectoryReader(path, stop=frames):
        msd.accumulate(frame)
    return msd.msd_A2()


def msd_freud(path, atom_type, max_lag, frames):
    import freud

    from lmpbench.analysis.trajectory import TrajectoryReader

    freud.parallel.set_num_threads(1)
    x = np.stack([f.positions if atom_type is None else f.positions[f.types == atom_type]
                  for f in TrajectoryReader(path, stop=frames)])
    return freud.msd.MSD(mode="window").compute(x).msd[:max_lag + 1]


def msd_MDAnalysis(path, atom_type, max_lag, frames):
    from MDAnalysis.analysis.msd import EinsteinMSD

    u = _mda_universe(path, unwrap=True)
    select = "all" if atom_type is None else f"type {atom_type}"
    return EinsteinMSD(u, select=select, msd_type="xyz", fft=True).run(stop=frames).results.timeseries[:max_lag + 1]


def msd_ovito(path, atom_type, max_lag, frames):
    """One time origin (frame 0), every frame: what ovito's displacement modifier offers."""
    from ovito.io import import_file
    from ovito.modifiers import CalculateDisplacementsModifier

    pipeline = import_file(str(path))
    pipeline.modifiers.append(CalculateDisplacementsModifier(reference_frame=0))
    out = []
    for k in range(min(frames or 10**12, pipeline.source.num_frames)):
        data = pipeline.compute(k)
        u = np.asarray(data.particles["Displacement"])
        if atom_type is not None:
            u = u[np.asarray(data.particles.particle_types) == atom_type]
        out.append((u * u).sum(axis=1).mean())
    return np.array(out)


def measure(task, tool, path, atom_type, parameter, frames, out):
    """Child process: import, then time the task; peak memory above the size after imports."""
    fn = globals()[f"{task}_{tool}"]
    if tool == "MDAnalysis":
        import MDAnalysis  # noqa: F401
    elif tool == "freud":
        import freud  # noqa: F401
    import ovito.io  # noqa: F401  (every tool's baseline holds the same libraries)

    from lmpbench.analysis import msd, rdf, trajectory  # noqa: F401

    base = _rss_mb()
    start = time.perf_counter()
    values = fn(path, atom_type, parameter, frames)
    seconds = time.perf_counter() - start
    np.save(out, np.asarray(values, dtype=float))
    print(json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base}))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_child(task, tool, path, atom_type, parameter, frames, out: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--measure", task, tool, str(path), str(atom_type), str(parameter),
                           str(frames), str(out)], env={**os.environ, **ONE_THREAD}, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:70]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- agreement

def first_origin_msd(path, atom_type, lags):
    from lmpbench.analysis.trajectory import TrajectoryReader

    out, x0 = [], None
    for frame in TrajectoryReader(path, stop=lags):
        x = frame.positions if atom_type is None else frame.positions[frame.types == atom_type]
        x0 = x if x0 is None else x0
        out.append(((x - x0) ** 2).sum(axis=1).mean())
    return np.array(out)


def agreement(task, tool, values, reference, path, atom_type, n_selected):
    if task == "rdf":
        if tool == "MDAnalysis":  # its density counts N(N-1) pairs, the paper's N*N
            reference = reference * n_selected / (n_selected - 1)
        return f"max |dg| {np.abs(values - reference).max():.1e}"
    if tool == "ovito":
        reference = first_origin_msd(path, atom_type, min(len(values), len(reference)))
        return f"max rel {np.abs(values[1:len(reference)] - reference[1:]).max() / reference[1:].max():.1e} (1st origin)"
    n = min(len(values), len(reference))
    return f"max rel {np.abs(values[1:n] - reference[1:n]).max() / reference[1:n].max():.1e}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--water-frames", type=int, default=10000)
    parser.add_argument("--lj-frames", type=int, default=1000)
    parser.add_argument("--water-lag", type=int, default=1000)
    parser.add_argument("--lj-lag", type=int, default=100)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--measure", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        task, tool, path, atom_type, parameter, frames, out = args.measure
        atom_type = None if atom_type == "None" else int(atom_type)
        parameter = float(parameter) if task == "rdf" else int(parameter)
        return measure(task, tool, path, atom_type, parameter, None if frames == "None" else int(frames), out)

    tools = [t for t in TOOLS if t in args.tools.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        cases = [("water 192 atoms", water_trajectory(work, args.water_frames), 1, 6.0, args.water_lag, args.water_frames, 64),
                 ("LJ 20,000 atoms", lj_trajectory(work, args.lj_frames), None, 2.5, args.lj_lag, args.lj_frames, 19652)]
        print(f"{'trajectory':16s} {'frames':>6} {'task':4s} {'tool':14s} {'seconds':>8} {'x lmpbench':>10} {'peak MB':>8}  agreement")
        for name, path, atom_type, r_max, lag, frames, n_selected in cases:
            for task, parameter in (("rdf", r_max), ("msd", lag)):
                reference, t_ref = None, None
                rows = [("lmpbench", None), ("lmpbench 1/2", frames // 2)] + [(t, None) for t in tools if t != "lmpbench"]
                for label, limit in rows:
                    tool = label.split()[0]
                    out = work / f"{task}_{label.replace(' ', '_').replace('/', '-')}.npy"
                    result = run_child(task, tool, path, atom_type, parameter, limit, out)
                    shown = limit or frames
                    if "error" in result:
                        print(f"{name:16s} {shown:6d} {task.upper():4s} {label:14s} failed: {result['error']}", flush=True)
                        continue
                    values = np.load(out)
                    if label == "lmpbench":
                        reference, t_ref = values, result["seconds"]
                        note = ""
                    elif label.startswith("lmpbench"):
                        note = "memory on half the frames"
                    else:
                        note = agreement(task, tool, values, reference, path, atom_type, n_selected)
                    ratio = result["seconds"] / t_ref if t_ref and limit is None else float("nan")
                    print(f"{name:16s} {shown:6d} {task.upper():4s} {label:14s} {result['seconds']:8.2f} {ratio:10.2f} "
                          f"{result['peak_mb']:8.1f}  {note}", flush=True)


if __name__ == "__main__":
    main()
