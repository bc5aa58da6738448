"""Speed of a deployed NequIP model: LAMMPS fast path, multi-rank path, ASE MD, bare model.

For the toy NequIP model (2 layers, CuAu, trained here on EMT data) on a water-sized system
(192 atoms) and a larger one (4,000 atoms), measured side by side in one run:
  (a) aoti-local   LAMMPS NVE steps/s, the single-rank fast path;
  (b) aoti-ghost   LAMMPS NVE steps/s, the exact multi-rank path, on 1 and 2 MPI ranks
      (torchscript-ghost, its fallback, on 1 rank beside it);
  (c) ASE MD       velocity Verlet steps/s with nequip's ASE calculator (eager model), as
                   simulation benchmarks usually run;
  (d) bare         the aoti-local compiled model called in a Python loop on a fixed graph
                   (nequip's own neighbour list): the limit for (a).
One torch thread per rank. Aim: (a) at least 90% of (d) at every size, hence ahead of (c).

usage: python benchmarks/deploy_speed.py [--cells 4,4,3 10,10,10] [--seconds 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lmpbench import decks
from lmpbench.deploy import TARGETS, default_dtype, deploy
from lmpbench.models.toy_nequip import train_toy_nequip
from lmpbench.structures import lammps_oriented, write_lammps_data

ELEMENTS = ["Cu", "Au"]
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
run 10
run ${steps}
"""


def alloy(cells, elements=ELEMENTS, a: float = 3.8):
    """A random fcc alloy of ``elements`` (lattice constant ``a``), rattled; zoo_speed uses it too."""
    from ase.build import bulk

    rng = np.random.default_rng(1)
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat(cells)
    atoms.symbols[:] = rng.choice(elements, size=len(atoms))
    atoms.rattle(0.05, seed=2)
    return lammps_oriented(atoms)


def toy_models(work: Path, targets) -> tuple[Path, dict[str, Path]]:
    """The toy NequIP checkpoint in ``work`` (trained when missing) and its deployments to
    ``targets`` (made when missing); exchange_speed uses it too."""
    ckpt = work / "train" / "last.ckpt"
    if not ckpt.is_file():
        ckpt = train_toy_nequip(work, elements=ELEMENTS)
    models = {}
    for name in targets:
        path = work / f"toy_{name}{TARGETS[name].suffix}"
        if not path.is_file():
            deploy(ckpt, path, target=name, echo=lambda *a: None)
        models[name] = path
    return ckpt, models


def timed_rate(call, seconds: float, warmup: int = 3) -> float:
    for _ in range(warmup):
        call()
    calls, start = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - start < seconds:  # at least one call, however slow
        call()
        calls += 1
    return calls / (time.perf_counter() - start)


def bare_calls_per_s(model_file: Path, atoms, r_max: float, seconds: float) -> float:
    """(d): the aoti-local model on nequip's own graph of ``atoms``."""
    from nequip.data import compute_neighborlist_, from_ase
    from torch._inductor import aoti_load_package

    with default_dtype(torch.float64):
        data = compute_neighborlist_(from_ase(atoms), r_max)
    model = aoti_load_package(str(model_file))
    types = torch.tensor([ELEMENTS.index(s) for s in atoms.get_chemical_symbols()], dtype=torch.long)
    inputs = [data["pos"].double().contiguous(), data["edge_index"].contiguous(), types,
              data["cell"].double().reshape(1, 3, 3).contiguous(), data["edge_cell_shift"].double().contiguous()]
    return timed_rate(lambda: [t.numpy() for t in model(*inputs)], seconds)


def ase_md_steps_per_s(ckpt: Path, atoms, seconds: float) -> float:
    """(c): velocity Verlet in ASE with nequip's calculator."""
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet
    from nequip.integrations.ase import NequIPCalculator

    with default_dtype(torch.float64):
        atoms = atoms.copy()
        atoms.calc = NequIPCalculator._from_saved_model(str(ckpt), device="cpu")
        MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
        dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
        return timed_rate(lambda: dyn.run(1), seconds)


def lammps_steps_per_s(deck: Path, workdir: Path, data: Path, model: Path, steps: int, nprocs: int) -> float:
    screen = decks.run_deck(deck, workdir, {"data": data, "model": model, "steps": steps}, nprocs=nprocs)
    return decks.loop_timings(screen)[-1].steps_per_s


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", nargs="+", default=["4,4,3", "10,10,10"], help="fcc cells per side (4 atoms each)")
    parser.add_argument("--seconds", type=float, default=3.0, help="target time per measurement")
    parser.add_argument("--workdir", type=Path, help="keep the trained and deployed models here (reused when present)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        work = (args.workdir or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        ckpt, models = toy_models(work, ("aoti-local", "aoti-ghost", "torchscript-ghost"))
        deck = work / "bench.in"
        deck.write_text(DECK)

        print(f"deploy_speed on {platform.machine()}, torch {torch.__version__}, 1 thread per rank; "
              "columns (a)-(c) in steps/s, (d) in calls/s")
        print(f"{'atoms':>6} {'(d) bare':>9} {'(a) local':>9} {'a/d':>6} {'(b) ghost':>9} {'ghost 2r':>9} "
              f"{'TS ghost':>9} {'(c) ASE':>8} {'a/c':>6} {'b/a':>6}", flush=True)
        for spec in args.cells:
            cells = tuple(int(c) for c in spec.split(","))
            atoms = alloy(cells)
            data = write_lammps_data(work / f"alloy_{len(atoms)}.data", atoms, ELEMENTS)
            bare = bare_calls_per_s(models["aoti-local"], atoms, 4.0, args.seconds)
            steps = max(10, int(args.seconds * bare))
            rate = {}
            for name, nprocs in (("aoti-local", 1), ("aoti-ghost", 1), ("aoti-ghost", 2), ("torchscript-ghost", 1)):
                rate[name, nprocs] = lammps_steps_per_s(deck, work / f"run_{name}_{len(atoms)}_{nprocs}", data,
                                                       models[name], steps, nprocs)
            ase = ase_md_steps_per_s(ckpt, atoms, args.seconds)
            local = rate["aoti-local", 1]
            print(f"{len(atoms):>6} {bare:9.1f} {local:9.1f} {local / bare:6.3f} {rate['aoti-ghost', 1]:9.1f} "
                  f"{rate['aoti-ghost', 2]:9.1f} {rate['torchscript-ghost', 1]:9.1f} {ase:8.1f} {local / ase:6.2f} "
                  f"{rate['aoti-ghost', 1] / local:6.3f}", flush=True)


if __name__ == "__main__":
    main()
