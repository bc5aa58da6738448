"""A tiny NequIP model trained on ASE EMT data generated here, offline, in well under a minute.

Used by the demo and the tests as a real nequip checkpoint to deploy. The data are random
fcc CuAu alloys, rattled and strained (triclinic cells included), labelled with ASE's EMT.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

# the toy's hyperparameters (lmpbench's names); the config itself is the nequip entry's
TOY_HYPERPARAMETERS = {"l_max": 1, "num_features": 8, "radial_mlp_depth": 1, "radial_mlp_width": 8, "batch_size": 4,
                       "learning_rate": 0.01, "model_dtype": "float64"}


def emt_frames(n_frames: int, elements=("Cu", "Au"), seed: int = 0):
    """Random fcc alloys of ``elements`` (32 atoms), rattled and sheared, with EMT labels."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n_frames):
        atoms = bulk(elements[0], "fcc", a=3.8, cubic=True).repeat((2, 2, 2))
        atoms.symbols[:] = rng.choice(list(elements), size=len(atoms))
        strain = np.eye(3) + rng.normal(0, 0.02, (3, 3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        atoms.rattle(0.08, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
    return frames


def train_toy_nequip(out_dir: str | Path, elements=("Cu", "Au"), r_max: float = 4.0, num_layers: int = 2,
                     epochs: int = 3, n_frames: int = 40, seed: int = 0) -> Path:
    """Train the tiny model into ``out_dir``; returns the checkpoint (``last.ckpt``).

    Runs ``nequip-train`` of this environment (nequip's own training loop, in a subprocess)
    with the config of lmpbench's nequip entry (``lmpbench.architectures.nequip``), the EMT
    frames split into training and validation by nequip.
    """
    from ase.io import write

    from lmpbench.architectures import TrainingRequest, config_text
    from lmpbench.architectures.nequip import NEQUIP

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    data = out_dir / "emt_train.xyz"
    write(data, emt_frames(n_frames, elements, seed), format="extxyz")
    n_val = max(2, n_frames // 8)
    request = TrainingRequest(type_names=tuple(elements), cutoff_A=r_max, train_file=data, val_file=None,
                              has_energy=True, hyperparameters={**TOY_HYPERPARAMETERS, "num_layers": num_layers},
                              seed=1, max_epochs=epochs, split=(n_frames - n_val, n_val))
    (out_dir / "toy_nequip.yaml").write_text(config_text(NEQUIP.build_config(request)))
    train_dir = out_dir / "train"
    shutil.rmtree(train_dir, ignore_errors=True)
    cmd = [str(Path(sys.executable).parent / NEQUIP.train_script),
           *NEQUIP.train_arguments(out_dir, "toy_nequip", train_dir)]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    proc = subprocess.run(cmd, cwd=out_dir, capture_output=True, text=True, env=env)
    ckpt = train_dir / "last.ckpt"
    if proc.returncode != 0 or not ckpt.is_file():
        (out_dir / "train.log").write_text(proc.stdout + proc.stderr)
        raise RuntimeError(f"nequip-train failed (exit {proc.returncode}); see {out_dir / 'train.log'}")
    return ckpt
