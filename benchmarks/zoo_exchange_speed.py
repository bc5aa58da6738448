"""The exchange layout of the model zoo's message-passing architectures on 2 MPI ranks against
their single-rank fast path.

For the pretrained CHGNet 0.3.0 (atom features and bond messages exchanged per layer) and
SevenNet-0 (node features exchanged per layer), on a CuAgAuPd fcc alloy, side by side in one
run, one torch thread per rank:
  local 1r   aoti-local on one rank (periodic cell shifts, no ghosts in the model): the
             baseline of every ratio;
  exch 1r    aoti-exchange on one rank (ghosts within r_max in the model): the layout's own cost;
  exch 2r    aoti-exchange on two ranks.
Each configuration runs --repeats times, interleaved, and the median is reported. The last
columns are the 2-rank run's share of time in the exchange (measured by the pair style) and
the feature rows it moves per model call.

usage: python benchmarks/zoo_exchange_speed.py [--arch chgnet sevenn] [--cells 5,5,5] [--seconds 4] [--repeats 3]
                                               [--workdir DIR]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import torch

from lmpbench import decks
from lmpbench.deploy import deploy
from lmpbench.structures import write_lammps_data

from deploy_speed import alloy  # benchmarks/ is the script's folder: on sys.path
from exchange_speed import EXCHANGE_LINE, median_run
from zoo_speed import DECK, architectures

PATHS = (("local", "aoti-local", 1), ("exch", "aoti-exchange", 1), ("exch", "aoti-exchange", 2))


def timed(deck: Path, workdir: Path, data: Path, model: Path, steps: int, nprocs: int) -> dict:
    screen = decks.run_deck(deck, workdir, {"data": data, "model": model, "steps": steps, "warmup": 2},
                            nprocs=nprocs)
    last = screen[screen.rindex("Loop time of"):]
    timing = decks.loop_timings(last)[0]
    result = {"steps_per_s": timing.steps_per_s, "seconds": timing.seconds}
    exchange = EXCHANGE_LINE.search(last)
    if exchange:
        result["exchange_share"] = float(exchange.group(2)) / timing.seconds
        result["kB_per_call"] = float(exchange.group(3))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=["chgnet", "sevenn"], choices=["chgnet", "sevenn"])
    parser.add_argument("--cells", nargs="+", default=["5,5,5"], help="fcc cells per side (4 atoms each)")
    parser.add_argument("--seconds", type=float, default=4.0, help="target time per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each configuration (the median is reported)")
    parser.add_argument("--workdir", type=Path, help="keep the deployed models here (reused when present)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the compiled kernels take the deploying process's thread count

    with tempfile.TemporaryDirectory() as tmp:
        work = (args.workdir or Path(tmp)).resolve()
        print(f"zoo_exchange_speed on {platform.machine()}, torch {torch.__version__}, 1 thread per rank, "
              f"medians of {args.repeats}; steps/s", flush=True)
        print(f"{'arch':>7} {'atoms':>6} {'local 1r':>9} {'exch 1r':>8} {'exch 2r':>8} {'2r/local':>9} "
              f"{'exch time':>10} {'kB/call':>8}", flush=True)
        for name in args.arch:
            folder = work / name
            folder.mkdir(parents=True, exist_ok=True)
            model, elements, a, _, _ = architectures(work)[name]()
            files = {}
            for _, target, _ in PATHS:
                files[target] = folder / f"{target}.pt2"
                if not files[target].is_file():
                    deploy(model, files[target], target=target, echo=lambda *a: None)
            deck = work / "bench.in"
            deck.write_text(DECK.replace("${elements}", " ".join(elements)))
            for spec in args.cells:
                atoms = alloy(tuple(int(c) for c in spec.split(",")), elements, a)
                data = write_lammps_data(folder / f"alloy_{len(atoms)}.data", atoms, elements)
                probe = timed(deck, folder / "probe", data, files["aoti-local"], 2, 1)
                steps = max(3, int(args.seconds * probe["steps_per_s"]))
                runs = {path: [] for path in PATHS}
                for repeat in range(args.repeats):
                    for path in PATHS:
                        _, target, ranks = path
                        runs[path].append(timed(deck, folder / f"{target}_{ranks}r_{repeat}", data, files[target],
                                                steps, ranks))
                local, exch1, exch2 = (median_run(runs[path]) for path in PATHS)
                print(f"{name:>7} {len(atoms):>6} {local['steps_per_s']:9.3g} {exch1['steps_per_s']:8.3g} "
                      f"{exch2['steps_per_s']:8.3g} {exch2['steps_per_s'] / local['steps_per_s']:9.2f} "
                      f"{100 * exch2['exchange_share']:9.1f}% {exch2['kB_per_call']:8.0f}", flush=True)


if __name__ == "__main__":
    main()
