"""Overhead of pair style mlff over the bare model, and its cost against LAMMPS's lj/cut.

For fcc Lennard-Jones systems of 256 to 32,000 atoms, measured side by side in one run:
  bare   the TorchScript LJ model called in a Python loop on the plugin's own graph (its local
         and ghost atoms and edges, read back from LAMMPS): forward, autograd forces, copy out;
  mlff   LAMMPS NVE steps/s with the same model through the plugin, on 1 and 2 MPI ranks;
  lj/cut LAMMPS's native pair style with the same parameters, on 1 and 2 ranks.
One torch thread per rank. Aim: mlff on 1 rank within 10% of bare from 4,000 atoms up.

usage: python benchmarks/pair_overhead.py [--sizes 4 8 10 20] [--seconds 3]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lmpbench import decks, engine
from lmpbench.contract import ModelMetadata, save_model
from lmpbench.models import LennardJones

EPSILON, SIGMA, R_MAX, LATTICE = 0.0104, 3.40, 8.5, 5.26  # argon, r_max = 2.5 sigma

DECK = """
units metal
atom_modify map array
read_data ${data}
${pair_lines}
velocity all create 80 4928 loop geom
timestep 0.002
fix integrate all nve
thermo 0
run 20
run ${steps}
"""


def write_data(path: Path, cells: int) -> None:
    lmp = engine.open_lammps()
    lmp.commands_string(f"""
        units metal
        lattice fcc {LATTICE}
        region box block 0 {cells} 0 {cells} 0 {cells}
        create_box 1 box
        create_atoms 1 box
        mass 1 39.948
        displace_atoms all random 0.05 0.05 0.05 4929 units box
        write_data {path}
    """)
    lmp.close()


def plugin_graph(model_file: Path, data: Path):
    """The graph pair style mlff builds on one rank: positions of local + ghost atoms, edges
    (center, neighbor) in LAMMPS's neighbour-list order, within r_max; read back through
    LAMMPS's Python interface after `run 0`."""
    lmp = engine.open_lammps()
    lmp.commands_string(f"units metal\natom_modify map array\nread_data {data}\n"
                        f"pair_style mlff\npair_coeff * * {model_file} Ar\nrun 0 post no")
    nlocal = lmp.extract_setting("nlocal")
    nall = nlocal + lmp.extract_setting("nghost")
    x = np.array(lmp.numpy.extract_atom("x", nelem=nall, dim=3), dtype=np.float64)
    neighbor_list = lmp.numpy.get_neighlist(lmp.find_pair_neighlist("mlff"))
    centers, neighbors = [], []
    for k in range(len(neighbor_list)):
        i, js = neighbor_list.get(k)
        js = np.asarray(js)
        within = ((x[js] - x[i]) ** 2).sum(1) < R_MAX**2
        centers.append(np.full(within.sum(), i))
        neighbors.append(js[within])
    lmp.close()
    return x, np.stack([np.concatenate(centers), np.concatenate(neighbors)]), nlocal


def bare_calls_per_s(model_file: Path, data: Path, seconds: float) -> tuple[float, int]:
    """The model alone, called in a loop on the plugin's own graph."""
    positions, edges, nlocal = plugin_graph(model_file, data)
    model = torch.jit.load(str(model_file))
    edge_index = torch.tensor(edges, dtype=torch.long)
    types = torch.zeros(len(positions), dtype=torch.long)
    x = torch.tensor(positions, dtype=torch.float64)

    def call():
        pos = x.clone().requires_grad_(True)
        energy = model(pos, edge_index, types, nlocal)[:nlocal].sum()
        (grad,) = torch.autograd.grad(energy, [pos])
        return (-grad).numpy()

    for _ in range(5):
        call()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        call()
        calls += 1
    return calls / (time.perf_counter() - start), edge_index.shape[1]


def lammps_steps_per_s(deck: Path, workdir: Path, data: Path, pair_lines: str, steps: int, nprocs: int) -> float:
    screen = decks.run_deck(deck, workdir, {"data": data, "pair_lines": pair_lines, "steps": steps}, nprocs=nprocs)
    return decks.loop_timings(screen)[-1].steps_per_s


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 10, 20], help="fcc cells per side (4 atoms each)")
    parser.add_argument("--seconds", type=float, default=3.0, help="target time per measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_file = save_model(LennardJones(EPSILON, SIGMA, R_MAX), tmp / "lj.pt", ModelMetadata(r_max=R_MAX, type_names=["Ar"]))
        deck = tmp / "bench.in"
        deck.write_text(DECK)
        mlff = f"pair_style mlff threads 1\npair_coeff * * {model_file} Ar"
        native = f"pair_style lj/cut {R_MAX}\npair_coeff 1 1 {EPSILON} {SIGMA}"
        print_header()
        for cells in args.sizes:
            data = tmp / f"fcc{cells}.data"
            write_data(data, cells)
            natoms = 4 * cells**3
            bare, nedges = bare_calls_per_s(model_file, data, args.seconds)
            steps = max(10, int(args.seconds * bare))
            row = {"atoms": natoms, "edges": nedges, "bare": bare}
            for nprocs in (1, 2):
                for name, lines, nsteps in (("mlff", mlff, steps), ("lj/cut", native, min(200_000, 20 * steps))):
                    include = tmp / f"pair_{name.replace('/', '_')}.in"
                    include.write_text(lines + "\n")
                    row[(name, nprocs)] = lammps_steps_per_s(deck, tmp / f"{name.replace('/', '_')}_{cells}_{nprocs}",
                                                             data, f"include {include}", nsteps, nprocs)
            print_row(row)


def print_header():
    print(f"pair_overhead on {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread per rank")
    head = (f"{'atoms':>6} {'edges':>9} {'bare/s':>8} {'mlff 1r':>8} {'mlff/bare':>9} {'mlff 2r':>8} {'2r/1r':>6} "
            f"{'lj/cut 1r':>10} {'lj/cut 2r':>10} {'mlff/ljcut':>10}")
    print(head, flush=True)


def print_row(r):
    print(f"{r['atoms']:>6} {r['edges']:>9} {r['bare']:8.1f} {r[('mlff', 1)]:8.1f} {r[('mlff', 1)] / r['bare']:9.3f} "
              f"{r[('mlff', 2)]:8.1f} {r[('mlff', 2)] / r[('mlff', 1)]:6.2f} {r[('lj/cut', 1)]:10.1f} "
              f"{r[('lj/cut', 2)]:10.1f} {r[('mlff', 1)] / r[('lj/cut', 1)]:10.4f}", flush=True)


if __name__ == "__main__":
    main()
