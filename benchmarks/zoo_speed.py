"""Speed of every architecture of the model zoo: LAMMPS against the bare compiled model and ASE MD.

For each architecture (a tiny Allegro trained here on EMT CuAu data; the pretrained SevenNet-0
from the sevenn wheel on a CuAgAuPd alloy; pretrained CHGNet 0.3.0 on the same alloy; a small random
torchmd-net TensorNet and equivariant transformer, float64, on CuNi; NequIP: benchmarks/deploy_speed.py),
deployed to its single-rank target (aoti-local; torchscript-ghost for the equivariant transformer,
which AOTInductor cannot compile), at 192 and 4,000 atoms, one thread:
  bare     the deployed model called in a Python loop on a fixed graph (the local layout from
           ASE's neighbour list; the ghost layout's graph for a TorchScript file, forces by
           autograd), calls/s: the limit for LAMMPS;
  LAMMPS   NVE steps/s through pair style mlff (the "Loop time" of the measured run);
  ASE MD   velocity Verlet steps/s with the architecture's own ASE calculator (eager model).

Each measurement runs at least --min-steps calls or steps after one warm-up call (three LAMMPS
steps, or --min-steps when fewer): at 4,000 atoms SevenNet-0 and CHGNet take tens of seconds per
step on one core. Between the columns freed memory goes back to the system (CHGNet at 4,000
atoms needs about 9 GB per process; the bare loop's memory kept by the allocator and the LAMMPS
process beside it filled a 24 GB machine).

usage: python benchmarks/zoo_speed.py [--arch allegro sevenn chgnet tensornet equivariant-transformer]
                                      [--cells 4,4,3 10,10,10] [--seconds 3]
                                      [--min-steps 5] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from lmpbench import decks
from lmpbench.deploy import default_dtype, deploy, load_source, local_example
from lmpbench.structures import write_lammps_data

from deploy_speed import alloy, timed_rate  # benchmarks/ is the script's folder: on sys.path

DECK = """
units metal
atom_modify map array
read_data ${data}
pair_style mlff threads 1
pair_coeff * * ${model} ${elements}
velocity all create 300 4928 loop geom
timestep 0.001
fix integrate all nve
thermo 0
run ${warmup}
run ${steps}
"""


def train_allegro(work: Path) -> Path:
    """The tiny Allegro model of tests/test_zoo_allegro.py (2 layers, r_max 4 Å, 2 epochs)."""
    from ase.io import write

    from lmpbench.architectures import TrainingRequest, config_text, get_architecture
    from lmpbench.models.toy_nequip import TOY_HYPERPARAMETERS, emt_frames

    arch = get_architecture("allegro")
    checkpoint = arch.find_checkpoint(work / "run")
    if checkpoint:
        return checkpoint
    write(work / "emt.xyz", emt_frames(40, ("Cu", "Au")), format="extxyz")
    request = TrainingRequest(type_names=("Cu", "Au"), cutoff_A=4.0, train_file=work / "emt.xyz", val_file=None,
                              has_energy=True, hyperparameters={**TOY_HYPERPARAMETERS, "num_layers": 2}, seed=1,
                              max_epochs=2, split=(35, 5))
    (work / "allegro.yaml").write_text(config_text(arch.build_config(request)))
    subprocess.run([str(Path(sys.executable).parent / arch.train_script), *arch.train_arguments(work, "allegro", work / "run")],
                   cwd=work, check=True, capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return arch.find_checkpoint(work / "run")


def architectures(work: Path) -> dict:
    """name -> (source spec or file, elements, lattice constant, ASE calculator factory, dtype)."""
    def allegro():
        ckpt = train_allegro(work / "allegro")
        from lmpbench.architectures import get_architecture

        return ckpt, ["Cu", "Au"], 3.8, lambda: get_architecture("allegro").calculator(ckpt, "cpu"), torch.float64

    def sevenn():
        source = load_source("sevenn:7net-0")
        return "sevenn:7net-0", ["Cu", "Ag", "Au", "Pd"], 3.9, source.calculator, torch.float32

    def chgnet():
        source = load_source("chgnet")
        return "chgnet", ["Cu", "Ag", "Au", "Pd"], 3.9, source.calculator, torch.float32

    def torchmdnet(model: str):  # no pretrained weights: the small random checkpoints of tests/test_zoo_torchmdnet.py
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from test_zoo_torchmdnet import write_checkpoint

        ckpt = work / model / f"{model}.ckpt"
        if not ckpt.is_file():
            write_checkpoint(ckpt, model=model)
        return ckpt, ["Cu", "Ni"], 3.6, load_source(ckpt).calculator, torch.float64

    return {"allegro": allegro, "sevenn": sevenn, "chgnet": chgnet, "tensornet": lambda: torchmdnet("tensornet"),
            "equivariant-transformer": lambda: torchmdnet("equivariant-transformer")}


# the single-rank target measured: aoti-local, except where an architecture has none
TARGETS = {"equivariant-transformer": "torchscript-ghost"}


def bare_call(deployed: Path, target: str, atoms, meta, dtype):
    """One call of the deployed model on ``atoms`` outside LAMMPS, as the pair style makes it: the
    AOTInductor file on the local layout (forces inside), or the TorchScript file on the ghost
    layout's graph with forces by autograd."""
    if target == "aoti-local":
        from torch._inductor import aoti_load_package

        compiled = aoti_load_package(str(deployed))
        data = local_example(atoms, meta)
        inputs = [data[k].contiguous() for k in ("pos", "edge_index", "atom_types", "cell", "edge_cell_shift")]
        return lambda: [t.numpy() for t in compiled(*inputs)]
    from lmpbench.graphs import contract_energy_forces, ghost_graph

    model = torch.jit.load(str(deployed))
    graph = ghost_graph(atoms, meta.type_names, meta.r_max, meta.num_layers)
    return lambda: contract_energy_forces(model, graph, dtype)


def release_freed_memory() -> None:
    """Give the memory of freed tensors back to the system (glibc keeps it otherwise)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=["allegro", "sevenn"],
                        choices=["allegro", "sevenn", "chgnet", "tensornet", "equivariant-transformer"])
    parser.add_argument("--cells", nargs="+", default=["4,4,3", "10,10,10"], help="fcc cells per side (4 atoms each)")
    parser.add_argument("--seconds", type=float, default=3.0, help="target time per measurement")
    parser.add_argument("--min-steps", type=int, default=5, help="fewest LAMMPS steps per measurement")
    parser.add_argument("--workdir", type=Path, help="keep the trained and deployed models here (reused when present)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        work = (args.workdir or Path(tmp)).resolve()
        print(f"zoo_speed on {platform.machine()}, torch {torch.__version__}, 1 thread; LAMMPS and ASE in steps/s, "
              "bare in calls/s", flush=True)
        print(f"{'arch':>8} {'atoms':>6} {'bare':>8} {'LAMMPS':>8} {'L/bare':>7} {'ASE MD':>8} {'L/ASE':>7}", flush=True)
        for name in args.arch:
            (work / name).mkdir(parents=True, exist_ok=True)
            model, elements, a, make_calc, dtype = architectures(work)[name]()
            target = TARGETS.get(name, "aoti-local")
            deployed = work / name / ("model.pt2" if target.startswith("aoti") else "model.pt")
            if not deployed.is_file():
                deploy(model, deployed, target=target, echo=lambda *a: None)
            meta = load_source(model).metadata
            deck = work / "bench.in"
            deck.write_text(DECK.replace("${elements}", " ".join(elements)))
            for spec in args.cells:
                atoms = alloy(tuple(int(c) for c in spec.split(",")), elements, a)
                bare = timed_rate(bare_call(deployed, target, atoms, meta, dtype), args.seconds, warmup=1)
                release_freed_memory()
                datafile = write_lammps_data(work / name / f"alloy_{len(atoms)}.data", atoms, elements)
                steps = max(args.min_steps, int(args.seconds * bare))
                screen = decks.run_deck(deck, work / name / f"run_{len(atoms)}", {"data": datafile, "model": deployed,
                                                                                    "steps": steps,
                                                                                    "warmup": min(3, steps)}, nprocs=1)
                lammps = decks.loop_timings(screen)[-1].steps_per_s
                from ase import units
                from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
                from ase.md.verlet import VelocityVerlet

                with default_dtype(dtype):
                    md_atoms = atoms.copy()
                    md_atoms.calc = make_calc()
                    MaxwellBoltzmannDistribution(md_atoms, temperature_K=300, rng=np.random.default_rng(0))
                    dyn = VelocityVerlet(md_atoms, timestep=1.0 * units.fs)
                    ase = timed_rate(lambda: dyn.run(1), args.seconds, warmup=1)
                print(f"{name:>8} {len(atoms):>6} {bare:8.3g} {lammps:8.3g} {lammps / bare:7.3f} {ase:8.3g} "
                      f"{lammps / ase:7.2f}", flush=True)
                md_atoms = dyn = None  # the calculator and its graphs
                release_freed_memory()


if __name__ == "__main__":
    main()
