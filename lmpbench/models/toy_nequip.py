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

CONFIG = """
run: [train]
seed: 1
cutoff_radius: {r_max}
model_type_names: {elements}
chemical_species: ${{model_type_names}}
dataloader:
  _target_: torch.utils.data.DataLoader
  batch_size: 4
data:
  _target_: nequip.data.datamodule.NequIPDataModule
  seed: ${{seed}}
  split_dataset:
    dataset:
      _target_: nequip.data.dataset.ASEDataset
      file_path: {data}
      transforms:
        - _target_: nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper
          model_type_names: ${{model_type_names}}
          chemical_species_to_atom_type_map: ${{list_to_identity_dict:${{chemical_species}}}}
        - _target_: nequip.data.transforms.NeighborListTransform
          r_max: ${{cutoff_radius}}
    train: {n_train}
    val: {n_val}
  train_dataloader: ${{dataloader}}
  val_dataloader: ${{dataloader}}
  stats_manager:
    _target_: nequip.data.CommonDataStatisticsManager
    type_names: ${{model_type_names}}
trainer:
  _target_: lightning.Trainer
  max_epochs: {epochs}
  enable_progress_bar: false
  logger: false
  callbacks:
    - _target_: lightning.pytorch.callbacks.ModelCheckpoint
      dirpath: ${{hydra:runtime.output_dir}}
      filename: last
      save_last: false
training_module:
  _target_: nequip.train.EMALightningModule
  loss:
    _target_: nequip.train.EnergyForceLoss
    per_atom_energy: true
    coeffs: {{total_energy: 1.0, forces: 1.0}}
  val_metrics:
    _target_: nequip.train.EnergyForceMetrics
    coeffs: {{total_energy_mae: 1.0, forces_mae: 1.0}}
  optimizer: {{_target_: torch.optim.Adam, lr: 0.01}}
  model:
    _target_: nequip.model.NequIPGNNModel
    seed: ${{seed}}
    model_dtype: float64
    type_names: ${{model_type_names}}
    r_max: ${{cutoff_radius}}
    l_max: 1
    parity: true
    num_layers: {num_layers}
    num_features: 8
    radial_mlp_depth: 1
    radial_mlp_width: 8
    avg_num_neighbors: ${{training_data_stats:num_neighbors_mean}}
    per_type_energy_shifts: ${{training_data_stats:per_atom_energy_mean}}
    per_type_energy_scales: ${{training_data_stats:forces_rms}}
"""


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

    Runs ``nequip-train`` of this environment (nequip's own training loop, in a subprocess).
    """
    from ase.io import write

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    data = out_dir / "emt_train.xyz"
    write(data, emt_frames(n_frames, elements, seed), format="extxyz")
    n_val = max(2, n_frames // 8)
    (out_dir / "toy_nequip.yaml").write_text(CONFIG.format(
        r_max=r_max, elements=list(elements), data=data, n_train=n_frames - n_val, n_val=n_val, epochs=epochs,
        num_layers=num_layers))
    train_dir = out_dir / "train"
    shutil.rmtree(train_dir, ignore_errors=True)
    cmd = [str(Path(sys.executable).parent / "nequip-train"), "-cp", str(out_dir), "-cn", "toy_nequip",
           f"hydra.run.dir={train_dir}"]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    proc = subprocess.run(cmd, cwd=out_dir, capture_output=True, text=True, env=env)
    ckpt = train_dir / "last.ckpt"
    if proc.returncode != 0 or not ckpt.is_file():
        (out_dir / "train.log").write_text(proc.stdout + proc.stderr)
        raise RuntimeError(f"nequip-train failed (exit {proc.returncode}); see {out_dir / 'train.log'}")
    return ckpt
