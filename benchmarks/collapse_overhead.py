"""What lmpbench's in-run collapse checks cost: the same run with and without them.

`lmpbench run` on the 64-water SPC/Fw box (classical reference, PPPM) under the water
protocol's dump interval (100 steps), measured side by side in one process tree:
  (a) --collapse-criteria paper   the benchmark's own checks only (thermo, bonds of molecules)
  (b) --collapse-criteria all     plus the structural check of every saved frame and the energy band
  (c) all + --reference REF       plus the benchmark's RDF windows against a reference run
Speed is run.json's production steps/s (setup excluded); each configuration is run
``--repeats`` times and the best is kept (a shared machine is noisy). The checks run between
chunks on rank 0, so their cost per step falls as the model gets slower; a classical water
model is the worst case.

usage: python benchmarks/collapse_overhead.py [--steps 20000] [--repeats 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from lmpbench.engine import lammps_environment

BASE = ["--model", "classical:spcfw", "--system", "water", "--dump-every", "100", "--no-progress"]


def run(out: Path, steps: int, *extra: str) -> float:
    proc = subprocess.run([sys.executable, "-m", "lmpbench.cli.main", "run", *BASE, "--steps", str(steps),
                           "--out", str(out), *extra], env=lammps_environment(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"run failed: {proc.stdout[-500:]}{proc.stderr[-500:]}")
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "finished", manifest["status"]
    return manifest["speed"]["steps_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="lmpbench-collapse-"))
    reference = work / "reference"
    run(reference, args.steps, "--seed", "9", "--collapse-criteria", "paper")
    configs = {"paper": ["--collapse-criteria", "paper"], "all": ["--collapse-criteria", "all"],
               "all + RDF windows": ["--collapse-criteria", "all", "--reference", str(reference)]}
    best = {name: 0.0 for name in configs}
    for repeat in range(args.repeats):
        for name, extra in configs.items():  # interleaved, so drifts of the machine hit all alike
            folder = work / f"{name.replace(' ', '_').replace('+', 'and')}_{repeat}"
            best[name] = max(best[name], run(folder, args.steps, *extra))
    print(f"64 SPC/Fw waters, {args.steps} steps, a frame every 100 steps, best of {args.repeats}")
    print(f"{'checks':>20} {'steps/s':>10} {'vs paper':>9}")
    for name, rate in best.items():
        print(f"{name:>20} {rate:10.1f} {rate / best['paper']:9.3f}")


if __name__ == "__main__":
    main()
