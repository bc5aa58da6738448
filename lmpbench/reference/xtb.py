"""Reference engine: GFN2-xTB through tblite's ASE calculator, for the small organic molecules.

Sampled like MD17 (ab initio MD in vacuum at 500 K): ASE molecular dynamics from the system's
shipped structure with Maxwell-Boltzmann velocities at the protocol's temperature (seeded; no
net momentum or rotation), a Nose-Hoover chain thermostat with the protocol's coupling time
(20 dt) at the protocol's timestep (0.5 fs). Every ``sample_every`` steps a frame is labelled
with the calculator's energy and forces (eV, eV/Å); the frames in time order are also the
reference trajectory (``reference.extxyz``: h(r) and bond lengths are averaged over it, as the
benchmark does over the MD17 dataset).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmpbench.reference import EngineOutput, Recipe, ReferenceError, Settings

TRAJECTORY = "reference.extxyz"


def check_available() -> None:
    try:
        import tblite.ase  # noqa: F401
    except ImportError:
        raise ReferenceError("the GFN2-xTB reference needs tblite: pip install tblite==0.8.0 "
                             "(`make setup` installs it)") from None


def calculator(method: str):
    from tblite.ase import TBLite

    return TBLite(method=method, verbosity=0)


def generate(recipe: Recipe, settings: Settings, seed: int, folder: Path, echo=print) -> EngineOutput:
    from importlib.metadata import version

    import ase.io
    from ase.md.nose_hoover_chain import NoseHooverChainNVT
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
    from ase.units import fs

    from lmpbench import systems
    from lmpbench.datasets.store import labelled, write_frames

    system = systems.get_system(recipe.system)
    protocol = systems.get_protocol(system.protocol)
    atoms = ase.io.read(system.structure_path())
    atoms.pbc, atoms.cell = False, None
    atoms.calc = calculator(recipe.parameters["method"])
    MaxwellBoltzmannDistribution(atoms, temperature_K=protocol.temperature_K, rng=np.random.default_rng(seed))
    Stationary(atoms)
    ZeroRotation(atoms)
    dt = protocol.timestep_fs * fs
    dynamics = NoseHooverChainNVT(atoms, timestep=dt, temperature_K=protocol.temperature_K,
                                  tdamp=protocol.thermostat_damp_steps * dt)
    skip = round(settings.equilibrate_ps * 1000.0 / protocol.timestep_fs)
    steps = skip + round(settings.length_ps * 1000.0 / protocol.timestep_fs)
    frames = []

    def sample():
        step = dynamics.nsteps
        if step >= skip and step % settings.sample_every == 0:
            energy, forces = atoms.get_potential_energy(), atoms.get_forces()
            if not np.isfinite(energy) or not np.all(np.isfinite(forces)):
                raise ReferenceError(f"{recipe.system}: GFN2-xTB gave a non-finite energy or force at step {step}")
            frames.append(labelled(atoms.copy(), energy, forces))

    dynamics.attach(sample, interval=1)
    dynamics.run(steps)
    folder.mkdir(parents=True, exist_ok=True)
    write_frames(folder / TRAJECTORY, frames)
    return EngineOutput(
        frames, TRAJECTORY,
        {"kind": "engine", "engine": "tblite", "version": version("tblite"), "method": recipe.parameters["method"],
         "dynamics": "ASE NoseHooverChainNVT (chain of 3)", "ase_version": version("ase"),
         "protocol": {k: getattr(protocol, k) for k in ("timestep_fs", "temperature_K", "thermostat_damp_steps")},
         "start": str(system.structure), "sample_every_steps": settings.sample_every,
         "equilibrate_ps": settings.equilibrate_ps, "length_ps": settings.length_ps},
        settings.sample_every * protocol.timestep_fs / 1000.0)
