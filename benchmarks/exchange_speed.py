"""Per-layer ghost exchange (aoti-exchange) on 2 MPI ranks against the single-rank fast path.

For the toy NequIP model (2 layers, CuAu, trained here on EMT data, r_max 4 Å) on fcc alloys
of about 2,000, 4,000 and 32,000 atoms, measured side by side in one run, one torch thread
per rank:
  local 1r     aoti-local on one rank (periodic cell shifts, no ghosts in the model): the
               single-rank fast path, the baseline of every ratio;
  exch 1r/2r   aoti-exchange on one and two ranks (ghosts within r_max in the model, node features
               exchanged between layers through LAMMPS's forward/reverse communication);
  ghost 2r     aoti-ghost on two ranks (ghost shell of num_layers x r_max): the old exact path.
Each configuration runs --repeats times, interleaved, and the median is reported (the ratios
of single runs moved by 0.2 between runs on this machine). Then, for the 2-rank exchange
runs, where the time goes (LAMMPS's own timing breakdown:
Pair = model + exchange, the exchange measured inside the pair style; Neigh; Comm =
positions and forces), how many feature bytes each model call exchanges on 1, 2, 4 and 8
ranks (counted by the pair style; 4 and 8 ranks oversubscribe the cores, so only their
byte counts are reported), and a projection of the strong scaling to 8-64 ranks from these
measurements (see ``projection`` for the model and its assumptions).

usage: python benchmarks/exchange_speed.py [--cells 8,8,8 10,10,10 20,20,20] [--seconds 4] [--repeats 3]
                                          [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import tempfile
from pathlib import Path

import numpy as np
import torch
from deploy_speed import ELEMENTS, alloy, toy_models

from lmpbench import decks
from lmpbench.structures import write_lammps_data

R_MAX, SKIN = 4.0, 1.0  # the toy model's cutoff; LAMMPS's metal-units default skin (Å)
DENSITY = 4 / 3.8**3  # atoms per Å^3 of the benchmark's fcc alloy (a = 3.8 Å)
DECK = """
units metal
atom_modify map array
read_data ${data}
pair_style mlff threads 1
pair_coeff * * ${model} Cu Au
velocity all create 300 4928 loop geom
timestep 0.001
fix integrate all nve
thermo 0
run 5
run ${steps}
"""
EXCHANGE_LINE = re.compile(r"mlff exchange: (\d+) model calls, (\S+) s in ghost exchange.*?, (\S+) kB of feature rows "
                           r"per call.*?, (\S+) ghost nodes per call in the model")
SECTION = re.compile(r"^(Pair|Neigh|Comm|Modify|Other)\s*\|\s*(\S+)?\s*\|\s*(\S+)", re.M)
NGHOST = re.compile(r"Nghost:\s+(\S+) ave")


def run(deck: Path, workdir: Path, data: Path, model: Path, steps: int, nprocs: int) -> dict:
    """One timed run; the last ``run`` of the screen output is the measured one."""
    screen = decks.run_deck(deck, workdir, {"data": data, "model": model, "steps": steps}, nprocs=nprocs)
    last = screen[screen.rindex("Loop time of"):]
    timing = decks.loop_timings(last)[0]
    sections = {name: float(avg) for name, _, avg in SECTION.findall(last)}
    result = {"steps_per_s": timing.steps_per_s, "seconds": timing.seconds, "sections": sections,
              "nghost": float(NGHOST.search(last).group(1))}
    exchange = EXCHANGE_LINE.search(last)
    if exchange:
        result["exchange_s"] = float(exchange.group(2))
        result["kB_per_call"] = float(exchange.group(3))
        result["model_ghosts"] = float(exchange.group(4)) / nprocs
    return result


def median_run(results: list[dict]) -> dict:
    """The run of median speed (its timings stay consistent with each other)."""
    return sorted(results, key=lambda x: x["steps_per_s"])[len(results) // 2]


def ghosts_per_rank(atoms_per_rank: float, shell: float) -> float:
    """Ghost atoms of a cubic subdomain holding ``atoms_per_rank`` atoms: the shell of
    thickness ``shell`` around it, at the alloy's density."""
    side = (atoms_per_rank / DENSITY) ** (1 / 3)
    return DENSITY * ((side + 2 * shell) ** 3 - side**3)


def projection(natoms: int, local: dict, exch1: dict, exch2: dict, ranks=(8, 16, 32, 64)) -> list[tuple]:
    """Projected steps/s of the exchange path on ``ranks`` ranks for ``natoms`` atoms.

    Time per step on a rank = c_atom * local atoms + c_ghost * model ghosts + c_row * exchanged
    rows + c_other * local atoms. Model ghosts are those within r_max (the pair style gives the
    model no others); exchanged rows are LAMMPS's ghosts (r_max + skin). c_atom and c_ghost solve
    the model time (Pair minus the exchange) of the one- and two-rank exchange runs (two
    equations, two unknowns); c_row is the two-rank run's exchange time per ghost row; c_other
    (neighbour lists, position/force communication, integration) per local atom from the
    two-rank run. Ghost counts are those of cubic subdomains. Assumes shared-memory communication as measured here (no network
    latency, which adds per message), one core per rank, and the same per-atom model cost at
    every domain size. The speed-up is over the single-rank fast path (``local``).
    """
    steps_1 = exch1["steps_per_s"] * exch1["seconds"]
    steps_2 = exch2["steps_per_s"] * exch2["seconds"]
    model_1 = (exch1["sections"]["Pair"] - exch1["exchange_s"]) / steps_1
    model_2 = (exch2["sections"]["Pair"] - exch2["exchange_s"]) / steps_2
    c_atom, c_ghost = np.linalg.solve([[natoms, exch1["model_ghosts"]], [natoms / 2, exch2["model_ghosts"]]],
                                      [model_1, model_2])
    c_ghost = max(c_ghost, 0.0)
    c_row = exch2["exchange_s"] / steps_2 / exch2["nghost"]
    c_other = sum(v for k, v in exch2["sections"].items() if k != "Pair") / steps_2 / (natoms / 2)
    local_step = 1 / local["steps_per_s"]
    rows = []
    for p in ranks:
        n = natoms / p
        g, rows_exchanged = ghosts_per_rank(n, R_MAX), ghosts_per_rank(n, R_MAX + SKIN)
        t = c_atom * n + c_ghost * g + c_row * rows_exchanged + c_other * n
        rows.append((p, n, g, 1 / t, local_step / t))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", nargs="+", default=["8,8,8", "10,10,10", "20,20,20"], help="fcc cells per side")
    parser.add_argument("--seconds", type=float, default=4.0, help="target time per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each configuration (the median is reported)")
    parser.add_argument("--workdir", type=Path, help="keep the trained and deployed models here (reused when present)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        work = (args.workdir or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        _, models = toy_models(work, ("aoti-local", "aoti-exchange", "aoti-ghost"))
        deck = work / "bench.in"
        deck.write_text(DECK)

        print(f"exchange_speed on {platform.machine()} ({os.cpu_count()} cores), torch {torch.__version__}, "
              "1 thread per rank; steps/s")
        print(f"{'atoms':>6} {'local 1r':>9} {'exch 1r':>9} {'exch 2r':>9} {'ghost 2r':>9} {'exch2r/local':>12} "
              f"{'ghost2r/local':>13}", flush=True)
        measured = {}
        for spec in args.cells:
            cells = tuple(int(c) for c in spec.split(","))
            atoms = alloy(cells)
            n = len(atoms)
            data = write_lammps_data(work / f"alloy_{n}.data", atoms, ELEMENTS)
            probe = run(deck, work / f"probe_{n}", data, models["aoti-local"], 2, 1)
            steps = max(5, int(args.seconds * probe["steps_per_s"]))
            keys = (("aoti-local", 1), ("aoti-exchange", 1), ("aoti-exchange", 2), ("aoti-ghost", 2))
            runs = {key: [] for key in keys}
            for repeat in range(args.repeats):  # interleaved, so that a slow spell of the machine hits every key
                for key in keys:
                    runs[key].append(run(deck, work / f"run_{key[0]}_{n}_{key[1]}_{repeat}", data, models[key[0]],
                                         steps, key[1]))
            r = {key: median_run(results) for key, results in runs.items()}
            measured[n] = r
            local = r["aoti-local", 1]["steps_per_s"]
            print(f"{n:>6} {local:9.2f} {r['aoti-exchange', 1]['steps_per_s']:9.2f} "
                  f"{r['aoti-exchange', 2]['steps_per_s']:9.2f} {r['aoti-ghost', 2]['steps_per_s']:9.2f} "
                  f"{r['aoti-exchange', 2]['steps_per_s'] / local:12.3f} "
                  f"{r['aoti-ghost', 2]['steps_per_s'] / local:13.3f}", flush=True)

        print("\nwhere the time of aoti-exchange on 2 ranks goes (% of the loop, rank average):")
        print(f"{'atoms':>6} {'model':>6} {'exchange':>8} {'neigh':>6} {'comm':>6} {'other':>6} "
              f"{'ghosts/rank':>11} {'in model':>8} {'kB/call':>8}")
        for n, r in measured.items():
            x = r["aoti-exchange", 2]
            s, total = x["sections"], x["seconds"]
            pct = {k: 100 * s.get(k, 0.0) / total for k in ("Pair", "Neigh", "Comm")}
            exch = 100 * x["exchange_s"] / total
            other = 100 - pct["Pair"] - pct["Neigh"] - pct["Comm"]
            print(f"{n:>6} {pct['Pair'] - exch:6.1f} {exch:8.1f} {pct['Neigh']:6.1f} {pct['Comm']:6.1f} {other:6.1f} "
                  f"{x['nghost']:11.0f} {x['model_ghosts']:8.0f} {x['kB_per_call']:8.0f}")

        largest = max(measured)
        data = work / f"alloy_{largest}.data"
        print(f"\nfeature bytes exchanged per model call, {largest} atoms (one layer boundary in this 2-layer model, forward + reverse):")
        print(f"{'ranks':>5} {'ghosts/rank':>11} {'kB/call, all ranks':>18} {'kB/call per rank':>16}")
        for p in (1, 2, 4, 8):
            x = measured[largest]["aoti-exchange", p] if p <= 2 else run(
                deck, work / f"bytes_{largest}_{p}", data, models["aoti-exchange"], 1, p)
            print(f"{p:>5} {x['nghost']:11.0f} {x['kB_per_call']:18.0f} {x['kB_per_call'] / p:16.0f}")

        r = measured[largest]
        print(f"\nprojected strong scaling, {largest} atoms (model in `projection`; steps/s and speed-up over local 1r):")
        print(f"{'ranks':>5} {'atoms/rank':>10} {'model ghosts':>12} {'steps/s':>8} {'speed-up':>8}")
        for p, n, g, rate, speedup in projection(largest, r["aoti-local", 1], r["aoti-exchange", 1],
                                                 r["aoti-exchange", 2]):
            print(f"{p:>5} {n:10.0f} {g:12.0f} {rate:8.2f} {speedup:8.1f}")


if __name__ == "__main__":
    main()
