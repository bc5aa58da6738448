"""Speed of lmpbench's RDF and MSD against ovito and freud on the same LAMMPS dump.

Trajectories are made here by LAMMPS: SPC/Fw water (192 atoms, via `lmpbench run`) and an
LJ fluid (20,000 atoms). For each: wall time of reading + RDF (O-O for water, all atoms for
LJ; 500 bins to 6 Å / 2.5 sigma) and of the MSD, by
  lmpbench   TrajectoryReader + RDF / MSD (this project);
  ovito      import_file + CoordinationAnalysisModifier (its RDF), and its own reader for MSD
             positions (ovito has no all-origins MSD: positions then lmpbench's FFT MSD);
  freud      freud.density.RDF / freud.msd.MSD fed by lmpbench's reader.
Peak memory is the process's max RSS increase during each measurement. Results must agree
(RDF to float32 precision, MSD to 1e-6); the table prints time ratios against lmpbench.
MDAnalysis is not installed in this environment, so it is not in the table.

usage: python benchmarks/analysis_speed.py [--water-frames 2000] [--lj-frames 100]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lmpbench.analysis.msd import MSD
from lmpbench.analysis.rdf import RDF
from lmpbench.analysis.trajectory import TrajectoryReader
from lmpbench.engine import lammps_environment, open_lammps


def water_trajectory(folder: Path, frames: int) -> Path:
    out = folder / "water"
    subprocess.run([sys.executable, "-m", "lmpbench.cli.main", "run", "--no-progress", "--model", "classical:spcfw",
                    "--system", "water", "--timestep-fs", "0.5", "--dump-every", "5", "--steps", str(5 * (frames - 1)),
                    "--out", str(out)], check=True, env=lammps_environment(), capture_output=True)
    return out / "traj.dump"


def lj_trajectory(folder: Path, frames: int) -> Path:
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
            dump traj all custom 10 lj.dump id type x y z ix iy iz
            dump_modify traj sort id
            run {10 * (frames - 1)}
        """)
        lmp.close()
    finally:
        os.chdir(cwd)
    return folder / "lj.dump"


def measured(fn):
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024


def ours_rdf(path, a, r_max):
    rdf = RDF(r_max, 500, a=a, b=a)
    for frame in TrajectoryReader(path):
        rdf.accumulate(frame)
    return rdf.g


def ovito_rdf(path, a, r_max):
    from ovito.io import import_file
    from ovito.modifiers import CoordinationAnalysisModifier, SelectTypeModifier

    pipeline = import_file(str(path))
    if a is not None:
        pipeline.modifiers.append(SelectTypeModifier(property="Particle Type", types={a}))
    pipeline.modifiers.append(CoordinationAnalysisModifier(cutoff=r_max, number_of_bins=500, only_selected=a is not None))
    total = None
    for k in range(pipeline.source.num_frames):
        table = pipeline.compute(k).tables["coordination-rdf"].xy()
        total = table[:, 1] if total is None else total + table[:, 1]
    return total / pipeline.source.num_frames


def freud_rdf(path, a, r_max):
    import freud

    rdf = freud.density.RDF(bins=500, r_max=r_max)
    for frame in TrajectoryReader(path):
        box = freud.box.Box.from_matrix(frame.cell.T)
        points = box.wrap(frame.positions - frame.origin)
        if a is not None:
            points = points[frame.types == a]
        rdf.compute(system=(box, points), reset=False)
    return rdf.rdf


def ours_msd(path, a):
    msd = MSD(atom_type=a, remove_com=False)
    for frame in TrajectoryReader(path):
        msd.accumulate(frame)
    return msd.msd_A2()


def freud_msd(path, a):
    import freud

    positions = [f.positions if a is None else f.positions[f.types == a] for f in TrajectoryReader(path)]
    return freud.msd.MSD(mode="window").compute(np.stack(positions)).msd


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--water-frames", type=int, default=2000)
    parser.add_argument("--lj-frames", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = [("water 192 atoms", water_trajectory(tmp, args.water_frames), 1, 6.0, args.water_frames),
                 ("LJ 20,000 atoms", lj_trajectory(tmp, args.lj_frames), None, 2.5, args.lj_frames)]
        print(f"{'trajectory':18s} {'frames':>6} {'task':4s} {'tool':9s} {'seconds':>8} {'x lmpbench':>10} {'peak MB':>8}  agreement")
        for name, path, a, r_max, frames in cases:
            ref, t_ref, m_ref = measured(lambda: ours_rdf(path, a, r_max))
            print(f"{name:18s} {frames:6d} {'RDF':4s} {'lmpbench':9s} {t_ref:8.2f} {1.0:10.2f} {m_ref:8.1f}")
            for tool, fn in (("ovito", ovito_rdf), ("freud", freud_rdf)):
                try:
                    g, t, m = measured(lambda: fn(path, a, r_max))
                    print(f"{name:18s} {frames:6d} {'RDF':4s} {tool:9s} {t:8.2f} {t / t_ref:10.2f} {m:8.1f}  "
                          f"max |dg| {np.abs(g - ref).max():.2e}")
                except Exception as err:  # a tool that fails is reported, not fatal
                    print(f"{name:18s} {frames:6d} {'RDF':4s} {tool:9s} failed: {str(err).splitlines()[0][:60]}")
            ref, t_ref, m_ref = measured(lambda: ours_msd(path, a))
            print(f"{name:18s} {frames:6d} {'MSD':4s} {'lmpbench':9s} {t_ref:8.2f} {1.0:10.2f} {m_ref:8.1f}")
            msd, t, m = measured(lambda: freud_msd(path, a))
            print(f"{name:18s} {frames:6d} {'MSD':4s} {'freud':9s} {t:8.2f} {t / t_ref:10.2f} {m:8.1f}  "
                  f"max rel diff {np.abs(msd[1:] - ref[1:]).max() / ref[1:].max():.2e}", flush=True)


if __name__ == "__main__":
    main()
