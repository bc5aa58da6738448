"""CHGNet (chgnet 0.4.2): the pretrained CHGNet 0.3.0 from the wheel, deployed by name, equal in
LAMMPS to chgnet's own ASE calculator to the model's float32 precision (energy 5e-3 eV, forces
5e-4 eV/Å, stress 1e-5 eV/Å³: deploy's float32 tolerances); one MPI rank (see
lmpbench/architectures/chgnet.py for why).

The adapter rebuilds CHGNet's atom graph and bond (angle) graph from the pair style's edge
list: its parity with the calculator, the angle count against chgnet's own graph converter and
the errors run in the quick suite; deploying compiles with AOTInductor (minutes on 2 cores),
so the tests that need the deployed file are marked slow."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from zoo_helpers import alloy, calculator_state, lammps_state, max_differences, nve_against_ase

from lmpbench.deploy import DeployError, check, deploy, load_source, local_example, read_deployed_metadata

METALS = ["Cu", "Ag", "Au", "Pd"]
OXIDE = ["Li", "Fe", "P", "O"]  # a second chemistry: light, magnetic and anion elements
FLOAT32 = {"energy": 5e-3, "forces": 5e-4, "stress": 1e-5}
CELLS = {"orthorhombic": (METALS, 3.9, False), "triclinic": (OXIDE, 3.6, True)}


@pytest.fixture(scope="module")
def source():
    return load_source("chgnet")


@pytest.fixture(scope="module")
def chgnet_calc(source):
    return source.calculator()


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> Path:
    """CHGNet 0.3.0 deployed here (self-checked), or LMPBENCH_TEST_CHGNET, a file `lmpbench deploy
    chgnet` wrote before (the tests below check it again against the calculator)."""
    given = os.environ.get("LMPBENCH_TEST_CHGNET")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("chgnet") / "chgnet.pt2"
    return deploy("chgnet", out, echo=lambda *a: None).path


@pytest.fixture
def one_thread():
    """Graphs of 32 atoms run several times faster on one thread than on two cores other work shares."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def structure(kind: str, cells: int = 2):
    elements, a, triclinic = CELLS[kind]
    return alloy(elements, cells=cells, a=a, triclinic=triclinic)


def test_pretrained_metadata(source):
    meta = source.metadata
    assert source.spec == "chgnet" and source.architecture == "chgnet"
    assert meta.r_max == 6.0 and meta.num_layers == 4 and meta.model_dtype == "float32"
    assert len(meta.type_names) == 94 and meta.type_names[0] == "H" and meta.type_names[-1] == "Pu"
    assert source.targets == ("aoti-local",) and source.path.is_relative_to(Path(__import__("chgnet").__file__).parent)
    assert "24 Å ghost shell" in source.single_rank_reason


@pytest.mark.parametrize("kind", list(CELLS))
def test_adapter_matches_chgnet_calculator(source, chgnet_calc, kind, one_thread):
    """The wrapper that deploy compiles (local layout, forces and virial inside) against the calculator."""
    from lmpbench.architectures.chgnet import CHGNetLocal

    atoms = structure(kind)
    out = CHGNetLocal(source.load())(local_example(atoms, source.metadata))
    stress = -out["virial"].detach().double().numpy()[0] / atoms.get_volume()
    ours = {"energy": float(out["atomic_energy"].detach().sum()), "forces": out["forces"].detach().double().numpy(),
            "stress": stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]}
    reference = calculator_state(atoms, chgnet_calc)
    diff = max_differences(ours, reference)
    assert all(diff[k] < FLOAT32[k] for k in diff), diff
    assert np.abs(reference["forces"]).max() > 0.5 and np.abs(reference["stress"]).max() > 1e-3


@pytest.mark.parametrize("formula", ["Cu", "NaCl"])
def test_adapter_on_primitive_cells(source, chgnet_calc, formula, one_thread):
    """One- and two-atom cells: an atom's own images are its neighbours, bonds and angles."""
    from ase.build import bulk

    from lmpbench.architectures.chgnet import CHGNetLocal
    from lmpbench.structures import lammps_oriented

    atoms = lammps_oriented(bulk(formula, "fcc" if formula == "Cu" else "rocksalt", a=3.6 if formula == "Cu" else 5.6))
    atoms.rattle(0.05, seed=1)
    out = CHGNetLocal(source.load())(local_example(atoms, source.metadata))
    reference = calculator_state(atoms, chgnet_calc)
    assert abs(float(out["atomic_energy"].detach().sum()) - reference["energy"]) < FLOAT32["energy"]
    assert np.abs(out["forces"].detach().numpy() - reference["forces"]).max() < FLOAT32["forces"]


def test_graphs_match_chgnet_converter(source):
    """As many bonds and angles as chgnet's own graph converter builds, each bond with its reverse."""
    from pymatgen.io.ase import AseAtomsAdaptor

    from lmpbench.architectures.chgnet import angle_pairs, reverse_edges

    atoms = structure("triclinic")
    data = local_example(atoms, source.metadata)
    graph = source.load().graph_converter(AseAtomsAdaptor.get_structure(atoms))
    edge_index, shifts = data["edge_index"], data["edge_cell_shift"].round().long()
    vec = data["pos"][edge_index[1]] - data["pos"][edge_index[0]] + shifts.float() @ data["cell"].view(3, 3)
    left, _ = angle_pairs(edge_index[0], vec.norm(dim=1), 3.0, len(atoms))
    reverse = reverse_edges(edge_index, shifts, len(atoms))
    assert edge_index.shape[1] == graph.atom_graph.shape[0] and len(left) == graph.bond_graph.shape[0] > 0
    assert torch.equal(edge_index[:, reverse], edge_index.flip(0)) and torch.equal(shifts[reverse], -shifts)


def test_unknown_name():
    with pytest.raises(DeployError, match="unknown CHGNet model 'nosuch'; available offline: chgnet:0.3.0"):
        load_source("chgnet:nosuch")


def test_cli_errors_are_one_line(tmp_path):
    from lmpbench.cli.main import cli

    for args, message in ((["chgnet:nosuch"], "unknown CHGNet model"),
                          (["chgnet:0.3.0", "--ranks", "2"], "runs on one MPI rank only (--ranks 2 asked)")):
        result = CliRunner().invoke(cli, ["deploy", *args, "-o", str(tmp_path / "m.pt2")])
        assert result.exit_code != 0 and message in result.output, result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_uncovered_element_refused_before_compiling(tmp_path):
    atoms = alloy(["Cu", "Am"], cells=2)  # Am is Z 95; CHGNet's embedding covers Z 1-94
    with pytest.raises(DeployError, match="element.s. Am that chgnet:0.3.0 does not cover"):
        deploy("chgnet:0.3.0", tmp_path / "m.pt2", structure=atoms, echo=lambda *a: None)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(CELLS))
def test_lammps_matches_chgnet_calculator(deployed, source, kind):
    report = check(deployed, source, structure(kind, cells=3))
    assert report.reference.startswith("chgnet's ASE calculator")
    assert report.passed, report.lines()


@pytest.mark.slow
def test_lammps_on_more_short_bonds_than_int16_sort_indices(deployed, tmp_path):
    """A perfect Cu crystal of 2,916 atoms has 34,992 bonds shorter than 3 Å, more than a model
    compiled with inductor's default sort (int16 indices) accepted ("Expected u0 <= 32766").
    Its energy per atom is the 108-atom cell's (the same crystal; CHGNet's own calculator does
    not fit in memory at this size, about 6 GB per process here)."""
    from ase.build import bulk

    from lmpbench.structures import lammps_oriented

    energy_per_atom = {}
    for cells in (3, 9):
        atoms = lammps_oriented(bulk("Cu", "fcc", a=3.6, cubic=True).repeat((cells, cells, cells)))
        energy_per_atom[cells] = lammps_state(deployed, atoms, ["Cu"], 1, tmp_path)["energy"] / len(atoms)
    assert energy_per_atom[9] == pytest.approx(energy_per_atom[3], rel=1e-5)


@pytest.mark.slow
def test_lammps_without_angles(deployed, source):
    """No bond shorter than 3 Å: no angles, CHGNet skips its bond updates (empty bond graph in the compiled model)."""
    report = check(deployed, source, alloy(["Na", "Cl"], cells=2, a=6.0, triclinic=True))
    assert report.passed, report.lines()


@pytest.mark.slow
def test_deployed_metadata_and_nve(deployed, chgnet_calc):
    meta = read_deployed_metadata(deployed)
    assert meta["source_spec"] == "chgnet" and meta["architecture"] == "chgnet" and meta["graph"] == "local"
    assert meta["chgnet_version"] == "0.4.2" and meta["num_layers"] == "4" and meta["r_max"] == "6.0"
    # 100 NVE steps on a four-element alloy, against ASE's velocity Verlet with chgnet's calculator
    atoms = structure("orthorhombic")
    x_lammps, x_ase = nve_against_ase(deployed, atoms, METALS, chgnet_calc, steps=100)
    assert np.abs(x_ase - atoms.positions).max() > 0.2
    np.testing.assert_allclose(x_lammps, x_ase, rtol=0, atol=1e-4)  # measured 7e-7 Å after 100 steps


@pytest.mark.slow
def test_deployed_runs_an_oxide(deployed, chgnet_calc):
    """A few steps on a second chemistry (Li, Fe, P, O in a sheared cell) follow ASE's."""
    atoms = structure("triclinic")
    x_lammps, x_ase = nve_against_ase(deployed, atoms, OXIDE, chgnet_calc, steps=5)
    assert np.abs(x_ase - atoms.positions).max() > 0.002
    np.testing.assert_allclose(x_lammps, x_ase, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_lammps_refuses_element_the_model_lacks(deployed, tmp_path):
    from conftest import run_lmp

    deck = "\n".join(["units metal", "region b block 0 8 0 8 0 8", "create_box 2 b", "create_atoms 1 random 4 1 b",
                      "create_atoms 2 random 4 2 b", "mass * 1.0", "pair_style mlff", f"pair_coeff * * {deployed} Cu Am",
                      "run 0"])
    proc = run_lmp(deck, tmp_path)
    assert proc.returncode != 0 and "Am" in proc.stdout + proc.stderr
