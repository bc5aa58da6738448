"""Reference engine: alanine dipeptide in OpenMM, AMBER ff96 with OBC2 implicit solvent.

The topology and parameters are those the ``openmmtools`` wheel ships
(``data/alanine-dipeptide-gbsa``: ACE-ALA-NME, AMBER ff96, mbondi2 radii for OBC), so no
network is needed. Langevin dynamics (OpenMM's LangevinMiddleIntegrator) at the protocol's
temperature, without constraints (the models run without them) at a 1 fs step, from the
minimised structure with seeded velocities. Every ``sample_every`` steps a frame is labelled
with the potential energy and forces (kJ/mol and kJ/mol/nm converted to eV and eV/Å).

Atoms are written in the order of lmpbench's alanine-dipeptide structure (whose phi/psi atom
numbers the system records): the AMBER order is matched to it by a graph isomorphism of the two
bond graphs with elements as labels. The frames in time order are the reference trajectory
(``reference.extxyz``): its Ramachandran histogram gives the reference free-energy surface.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from lmpbench.reference import EngineOutput, Recipe, ReferenceError, Settings

TRAJECTORY = "reference.extxyz"
KJ_MOL_TO_EV = 1.0 / 96.48533212331002  # 1 eV = N_A e x 1 V = 96.485... kJ/mol
INPUT_FOLDER = "data/alanine-dipeptide-gbsa"  # inside the openmmtools package


def _inputs() -> tuple[Path, Path]:
    spec = importlib.util.find_spec("openmmtools")  # finds the package without importing it (and its dependencies)
    if spec is None or not spec.submodule_search_locations:
        raise ReferenceError("the alanine-dipeptide reference needs the input files of the openmmtools wheel: "
                             "pip install --no-deps openmmtools==0.27.0 (`make setup` installs it)")
    folder = Path(spec.submodule_search_locations[0]) / INPUT_FOLDER
    prmtop, crd = folder / "alanine-dipeptide.prmtop", folder / "alanine-dipeptide.crd"
    if not (prmtop.is_file() and crd.is_file()):
        raise ReferenceError(f"openmmtools lacks {folder}/alanine-dipeptide.prmtop and .crd")
    return prmtop, crd


def check_available() -> None:
    try:
        import openmm  # noqa: F401
    except ImportError:
        raise ReferenceError("the alanine-dipeptide reference needs OpenMM: pip install openmm==8.6.1 "
                             "(`make setup` installs it)") from None
    _inputs()


def order_onto(symbols_from: list[str], bonds_from, symbols_to: list[str], positions_to: np.ndarray) -> np.ndarray:
    """``perm`` such that atom ``perm[i]`` of the "from" molecule is atom ``i`` of the "to" one,
    found by matching bond graphs with elements as labels. The "to" bonds are pairs within 1.2x
    ASE's natural cutoffs: at 1x (the benchmark's bond criterion) C-H bonds of 1.09 Å fall just
    outside the 1.07 Å sum of covalent radii."""
    import networkx as nx
    from ase import Atoms
    from ase.neighborlist import natural_cutoffs, neighbor_list
    from networkx.algorithms.isomorphism import GraphMatcher

    a = nx.Graph()
    a.add_nodes_from((i, {"element": s}) for i, s in enumerate(symbols_from))
    a.add_edges_from(bonds_from)
    b = nx.Graph()
    b.add_nodes_from((i, {"element": s}) for i, s in enumerate(symbols_to))
    molecule = Atoms(symbols_to, positions=positions_to)
    first, second = neighbor_list("ij", molecule, natural_cutoffs(molecule, mult=1.2))
    b.add_edges_from(zip(first.tolist(), second.tolist()))
    matcher = GraphMatcher(b, a, node_match=lambda x, y: x["element"] == y["element"])
    mapping = next(matcher.isomorphisms_iter(), None)
    if mapping is None:
        raise ReferenceError("the OpenMM alanine dipeptide's bonds do not match lmpbench's structure")
    return np.array([mapping[i] for i in range(len(symbols_to))])


def generate(recipe: Recipe, settings: Settings, seed: int, folder: Path, echo=print) -> EngineOutput:
    import ase.io
    import openmm
    from ase import Atoms
    from openmm import app, unit

    from lmpbench import systems
    from lmpbench.datasets.store import labelled, write_frames

    system_def = systems.get_system(recipe.system)
    protocol = systems.get_protocol(system_def.protocol)
    prmtop_path, crd_path = _inputs()
    prmtop, crd = app.AmberPrmtopFile(str(prmtop_path)), app.AmberInpcrdFile(str(crd_path))
    system = prmtop.createSystem(nonbondedMethod=app.NoCutoff, constraints=None, implicitSolvent=app.OBC2)
    dt_fs = recipe.parameters["timestep_fs"]
    integrator = openmm.LangevinMiddleIntegrator(protocol.temperature_K * unit.kelvin,
                                                 recipe.parameters["friction_per_ps"] / unit.picosecond,
                                                 dt_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    platform = openmm.Platform.getPlatformByName("CPU")
    simulation = app.Simulation(prmtop.topology, system, integrator, platform, {"Threads": "1"})
    simulation.context.setPositions(crd.positions)
    simulation.minimizeEnergy()
    simulation.context.setVelocitiesToTemperature(protocol.temperature_K * unit.kelvin, seed)

    atoms_from = [a.element.symbol for a in prmtop.topology.atoms()]
    bonds_from = [(b[0].index, b[1].index) for b in prmtop.topology.bonds()]
    shipped = ase.io.read(system_def.structure_path())
    perm = order_onto(atoms_from, bonds_from, shipped.get_chemical_symbols(), shipped.positions)
    symbols = [atoms_from[i] for i in perm]

    skip = round(settings.equilibrate_ps * 1000.0 / dt_fs)
    simulation.step(skip)
    samples = round(settings.length_ps * 1000.0 / dt_fs) // settings.sample_every
    frames = []
    for _ in range(samples + 1):
        state = simulation.context.getState(getPositions=True, getForces=True, getEnergy=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) * KJ_MOL_TO_EV
        forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.angstrom) * KJ_MOL_TO_EV
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
        if not np.isfinite(energy):
            raise ReferenceError(f"alanine dipeptide: OpenMM gave a non-finite energy after {len(frames)} frames")
        frames.append(labelled(Atoms(symbols, positions=positions[perm]), energy, forces[perm]))
        simulation.step(settings.sample_every)
    folder.mkdir(parents=True, exist_ok=True)
    write_frames(folder / TRAJECTORY, frames)
    return EngineOutput(
        frames, TRAJECTORY,
        {"kind": "engine", "engine": "OpenMM", "version": openmm.__version__, "platform": "CPU",
         "force_field": "AMBER ff96 + OBC2 implicit solvent (mbondi2 radii), no cutoff",
         "inputs": f"openmmtools {INPUT_FOLDER}", "integrator": "LangevinMiddleIntegrator, no constraints",
         "timestep_fs": dt_fs, "friction_per_ps": recipe.parameters["friction_per_ps"],
         "temperature_K": protocol.temperature_K, "sample_every_steps": settings.sample_every,
         "equilibrate_ps": settings.equilibrate_ps, "length_ps": settings.length_ps,
         "atom_order": "lmpbench's alanine_dipeptide.xyz (matched by bond-graph isomorphism)"},
        settings.sample_every * dt_fs / 1000.0)
