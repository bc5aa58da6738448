"""`lmpbench reference`: tiny references of each engine, checked against independent evaluations.

- LAMMPS (liquid Cu-Zr, EAM): every labelled frame against ASE's own EAM calculator reading the
  same potential file; the reference trajectory against the labelled frames at the same steps;
  the noise floor against freud's RDF of the two seeds' trajectories.
- GFN2-xTB: labelled frames against a fresh tblite evaluation of their positions.
- OpenMM: labelled frames against a fresh OpenMM evaluation; the atom order onto lmpbench's
  structure checked through the AMBER atom names of the system's phi/psi dihedrals.
"""

from __future__ import annotations

import dataclasses
import gzip
import json

import ase.io
import numpy as np
import pytest
from click.testing import CliRunner

from lmpbench.datasets import store
from lmpbench.reference import RECIPES, Settings, make_reference

TINY = Settings(length_ps=1.0, sample_every=20, test=10, sizes={"5": (4, 1)}, equilibrate_ps=0.0)


def _frames(path):
    return ase.io.read(path, ":")


@pytest.fixture(scope="module")
def cuzr_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("cuzr") / "set"
    # 1.2 ps: a noise floor at 1 ps (the RDF needs a whole 1 ps window) cuts something off
    record = make_reference("cuzr_liquid", out, seeds=2, settings=dataclasses.replace(TINY, length_ps=1.2),
                            echo=lambda *a: None)
    return out, record


def test_lammps_reference_labels_match_ase_eam(cuzr_set):
    from ase.calculators.eam import EAM

    from lmpbench.runner import lammps_potential

    out, _ = cuzr_set
    dataset = store.find_dataset(out)  # a reference set stands for its first seed
    assert dataset.folder.name == "seed1" and dataset.verify_files() == []
    assert dataset.manifest["frames"] == 61 and dataset.manifest["source"]["engine"] == "LAMMPS"
    eam = EAM(potential=str(lammps_potential("CuZr_mm.eam.fs")), form="fs")
    for atoms in _frames(dataset.test_file)[:1]:  # ASE's EAM takes seconds a frame
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = eam
        assert energy == pytest.approx(atoms.get_potential_energy(), rel=1e-8)
        np.testing.assert_allclose(forces, atoms.get_forces(), atol=1e-4)


def test_reference_trajectory_is_the_run_at_the_protocol_spacing(cuzr_set):
    from lmpbench.analysis.trajectory import open_trajectory

    out, _ = cuzr_set
    dataset = store.read_dataset(out / "seed1")
    labelled = {round(a.get_potential_energy(), 9): a for part in ("train", "val")
                for a in _frames(dataset.split_file("5", part))}
    labelled.update({round(a.get_potential_energy(), 9): a for a in _frames(dataset.test_file)})
    with gzip.open(dataset.reference_trajectory, "rt") as f:
        steps = [int(f.readline()) for line in iter(f.readline, "") if line.startswith("ITEM: TIMESTEP")]
    assert steps == list(range(0, 1201, 20))  # the protocol saves every 20 steps of 1 fs
    frames = list(open_trajectory(dataset.reference_trajectory, ["Cu", "Zr"]))
    assert len(frames) == len(steps)
    # every labelled frame is one of the reference trajectory's configurations (wrapped into the cell)
    assert dataset.manifest["frames"] == len(frames)
    for atoms in labelled.values():
        found = False
        for frame in frames:
            delta = atoms.positions - (frame.positions[np.argsort(frame.ids)] - frame.origin)
            fractional = delta @ np.linalg.inv(frame.cell)
            if np.abs(fractional - np.round(fractional)).max() < 1e-6:
                found = True
                break
        assert found
    assert len(labelled) == 15  # test 10 + train 4 + val 1


def test_noise_floor_is_the_second_seed_against_the_first(cuzr_set):
    import freud

    from lmpbench.analysis.trajectory import open_trajectory

    out, record = cuzr_set
    assert record["seeds"] == ["seed1", "seed2"]
    assert json.loads((out / "reference.json").read_text())["noise_floor"] == record["noise_floor"]

    def rdf(path, frames=None):
        g = freud.density.RDF(bins=500, r_max=6.0)
        for frame in list(open_trajectory(path, ["Cu", "Zr"]))[:frames]:
            box = freud.box.Box.from_matrix(frame.cell.T)
            g.compute((box, box.wrap(frame.positions - frame.origin)), reset=False)
        return g.rdf

    seeds = [store.read_dataset(out / s) for s in ("seed1", "seed2")]
    g1, g2 = (rdf(d.reference_trajectory) for d in seeds)
    assert not np.allclose(g1, g2)  # independent seeds
    # freud normalises as the paper does (N_A N_B / V) but bins float32 distances: agreement to ~1e-3
    expected = np.mean(np.abs(g2 - g1)) * 6.0
    assert record["noise_floor"]["mean"]["rdf_mae.all"] == pytest.approx(expected, rel=3e-3)

    # the floor of shorter runs: seed 2 cut to its first 1 ps (51 frames 0.02 ps apart), seed 1 whole
    from lmpbench.reference.noise import noise_floor

    short = noise_floor("cuzr_liquid", seeds, length_ps=1.0)
    expected = np.mean(np.abs(rdf(seeds[1].reference_trajectory, frames=51) - g1)) * 6.0
    assert short["length_ps"] == 1.0 and short["mean"]["stability_ps"] == pytest.approx(1.0)
    assert short["mean"]["rdf_mae.all"] == pytest.approx(expected, rel=3e-3)
    assert short["mean"]["rdf_mae.all"] != pytest.approx(record["noise_floor"]["mean"]["rdf_mae.all"], rel=1e-3)


def test_first_frames_of_dumps_and_extxyz_match_ase(cuzr_set, tmp_path):
    """The cut a noise floor at a run's length analyses: the first frames, read back by ASE."""
    from lmpbench.analysis.trajectory import write_first_frames

    dump = store.read_dataset(cuzr_set[0] / "seed1").reference_trajectory
    cut = write_first_frames(dump, 3, tmp_path / ("cut" + "".join(dump.suffixes)))
    with gzip.open(dump, "rt") if dump.suffix == ".gz" else open(dump) as source:
        whole = ase.io.read(source, ":", format="lammps-dump-text")
    with gzip.open(cut, "rt") if cut.suffix == ".gz" else open(cut) as source:
        first = ase.io.read(source, ":", format="lammps-dump-text")
    assert len(first) == 3 < len(whole)
    assert all(np.array_equal(a.positions, b.positions) for a, b in zip(first, whole))
    ase.io.write(tmp_path / "all.extxyz", whole)
    cut = write_first_frames(tmp_path / "all.extxyz", 2, tmp_path / "two.extxyz")
    first = ase.io.read(cut, ":")
    assert len(first) == 2 and np.allclose(first[1].positions, whole[1].positions, atol=1e-8)


def test_xtb_labels_match_a_fresh_tblite_evaluation(tmp_path):
    pytest.importorskip("tblite")
    from lmpbench.reference.xtb import calculator

    tiny = Settings(length_ps=0.025, sample_every=5, test=3, sizes={"5": (4, 1)})
    make_reference("md17_ethanol", tmp_path, settings=tiny, echo=lambda *a: None)
    dataset = store.find_dataset(tmp_path)
    frames = _frames(dataset.reference_trajectory)
    assert len(frames) == 11 and frames[0].get_chemical_formula() == "C2H6O"
    assert len({round(a.get_potential_energy(), 8) for a in frames}) == len(frames)  # the molecule moves
    for atoms in frames[::5]:
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        # a fresh SCC start (the MD restarts from the previous step's charges): agreement to the
        # SCC convergence, ~1e-8 eV and ~1e-4 eV/Å, far below any model's error
        atoms.calc = calculator("GFN2-xTB")
        assert energy == pytest.approx(atoms.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(forces, atoms.get_forces(), atol=3e-4)


def test_openmm_frames_follow_the_systems_atom_order(tmp_path):
    pytest.importorskip("openmm")
    import openmm
    from openmm import app, unit

    from lmpbench.reference import openmm_peptide
    from lmpbench.systems import get_system

    tiny = Settings(length_ps=0.02, sample_every=10, test=1, sizes={"1": (1, 1)})
    make_reference("alanine_dipeptide", tmp_path, settings=tiny, echo=lambda *a: None)
    dataset = store.find_dataset(tmp_path)
    frames = _frames(dataset.reference_trajectory)
    system = get_system("alanine_dipeptide")
    shipped = ase.io.read(system.structure_path())
    assert all(a.get_chemical_symbols() == shipped.get_chemical_symbols() for a in frames)

    prmtop_path, _ = openmm_peptide._inputs()
    prmtop = app.AmberPrmtopFile(str(prmtop_path))
    atoms = list(prmtop.topology.atoms())
    perm = openmm_peptide.order_onto([a.element.symbol for a in atoms],
                                     [(b[0].index, b[1].index) for b in prmtop.topology.bonds()],
                                     shipped.get_chemical_symbols(), shipped.positions)
    names = {k: [(atoms[perm[i - 1]].residue.name, atoms[perm[i - 1]].name) for i in quad]
             for k, quad in system.dihedrals.items()}
    assert names["phi"] == [("ACE", "C"), ("ALA", "N"), ("ALA", "CA"), ("ALA", "C")]
    assert names["psi"] == [("ALA", "N"), ("ALA", "CA"), ("ALA", "C"), ("NME", "N")]

    # energies and forces against a fresh OpenMM evaluation, back in AMBER order
    omm = prmtop.createSystem(nonbondedMethod=app.NoCutoff, constraints=None, implicitSolvent=app.OBC2)
    context = openmm.Context(omm, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    for frame in frames[::2]:
        amber = np.empty_like(frame.positions)
        amber[perm] = frame.positions
        context.setPositions(amber * unit.angstrom)
        state = context.getState(getEnergy=True, getForces=True)
        kj = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.angstrom)
        assert frame.get_potential_energy() == pytest.approx(kj / 96.48533212331002, rel=1e-5)
        np.testing.assert_allclose(frame.get_forces(), forces[perm] / 96.48533212331002, atol=1e-4)


def test_cli_refuses_a_system_without_a_recipe():
    from lmpbench.cli.main import cli

    result = CliRunner().invoke(cli, ["reference", "lips"])
    assert result.exit_code == 2 and "no reference recipe for 'lips'" in result.output
    assert set(RECIPES) >= {"water", "md17_ethanol", "md17_aspirin", "alanine_dipeptide", "cuzr_liquid"}


def test_a_missing_engine_is_named_with_how_to_install_it(monkeypatch, tmp_path):
    import sys

    from lmpbench.reference import ReferenceError

    monkeypatch.setitem(sys.modules, "tblite.ase", None)  # import fails as if tblite were absent
    with pytest.raises(ReferenceError, match=r"needs tblite: pip install tblite==0\.8\.0"):
        make_reference("md17_aspirin", tmp_path, short=True)
    assert not any(tmp_path.iterdir())  # nothing written
