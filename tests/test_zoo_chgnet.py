"""CHGNet (chgnet 0.4.2): the pretrained CHGNet 0.3.0 from the wheel, deployed by name, equal in
LAMMPS to chgnet's own ASE calculator to the model's float32 precision (energy 5e-3 eV, forces
5e-4 eV/Å, stress 1e-5 eV/Å³: deploy's float32 tolerances): the local layout on one MPI rank,
the exchange layout (atom features and bond messages exchanged per layer) on 1, 2 and 4.

The adapter rebuilds CHGNet's atom graph and bond (angle) graph from the pair style's edge
list: its parity with the calculator in both layouts (the exchange layout's with the ghost
rows filled from their atoms in Python, as LAMMPS's communication fills them), the angle
count against chgnet's own graph converter and the errors run in the quick suite; deploying
compiles with AOTInductor (a minute or more on 2 cores), so the tests that need the deployed
file are marked slow."""

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
    assert source.targets == ("aoti-local", "aoti-exchange")
    assert source.path.is_relative_to(Path(__import__("chgnet").__file__).parent)


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


def exchange_layout_state(source, atoms, fill_ghost_rows: bool = True) -> dict:
    """The exchange layout's model on ``atoms`` and its images within one r_max (edges into the
    atoms only), its ghost rows filled from their atoms as pair style mlff's exchange fills
    them in LAMMPS (gradients of ghost rows summed back onto the atoms: index_select's own)."""
    from lmpbench.architectures.chgnet import CHGNetExchangeNodes
    from lmpbench.graphs import ghost_graph

    graph = ghost_graph(atoms, source.metadata.type_names, source.metadata.r_max, 1)
    owner = torch.from_numpy(graph.owner)
    nodes = CHGNetExchangeNodes(source.load())
    nodes.exchange = (lambda rows: torch.index_select(rows, 0, owner)) if fill_ghost_rows else (lambda rows: rows)
    pos = torch.tensor(graph.positions, dtype=torch.float32, requires_grad=True)
    into_atoms = torch.from_numpy(np.ascontiguousarray(graph.edge_index[:, graph.edge_index[0] < len(atoms)]))
    energy = nodes(pos, into_atoms, torch.from_numpy(graph.atom_types), torch.ones(len(atoms)))[: len(atoms)].sum()
    (grad,) = torch.autograd.grad(energy, [pos])
    forces = np.zeros((len(atoms), 3))
    np.add.at(forces, graph.owner, -grad.double().numpy())
    virial = pos.detach().double().numpy().T @ -grad.double().numpy()  # Σ r ⊗ f over every node
    stress = -virial / atoms.get_volume()
    return {"energy": float(energy.detach()), "forces": forces, "stress": stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]}


@pytest.mark.parametrize("kind", list(CELLS))
def test_exchange_layout_matches_chgnet_calculator(source, chgnet_calc, kind, one_thread):
    """The exchange layout's arithmetic (bond messages found across the ghost rows by bond vector)
    against the calculator; without the ghost rows' exchange it is wrong, so the exchange is needed."""
    atoms = structure(kind)
    reference = calculator_state(atoms, chgnet_calc)
    diff = max_differences(exchange_layout_state(source, atoms), reference)
    assert all(diff[k] < FLOAT32[k] for k in diff), diff
    unexchanged = max_differences(exchange_layout_state(source, atoms, fill_ghost_rows=False), reference)
    assert unexchanged["forces"] > 100 * FLOAT32["forces"], unexchanged


def test_exchange_layout_refuses_more_short_bonds_than_its_slots(source, one_thread):
    """Fcc Cu at a = 2.4 Å: 42 neighbours within CHGNet's 3 Å bond cutoff, more than the 32 slots
    of the exchange rows; the model stops with a message saying so (also inside LAMMPS: slow test)."""
    from ase.build import bulk

    from lmpbench.structures import lammps_oriented

    atoms = lammps_oriented(bulk("Cu", "fcc", a=2.4, cubic=True).repeat((2, 2, 2)))
    with pytest.raises(RuntimeError, match="an atom has more than 32 neighbours closer than CHGNet's bond cutoff"):
        exchange_layout_state(source, atoms)


def test_unknown_name():
    with pytest.raises(DeployError, match="unknown CHGNet model 'nosuch'; available offline: chgnet:0.3.0"):
        load_source("chgnet:nosuch")


def test_cli_errors_are_one_line(tmp_path):
    from lmpbench.cli.main import cli

    for args, message in ((["chgnet:nosuch"], "unknown CHGNet model"),
                          (["chgnet:0.3.0", "--target", "aoti-local", "--ranks", "2"],
                           "target aoti-local runs on one MPI rank only; use aoti-exchange for 2")):
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


@pytest.fixture(scope="module")
def deployed_exchange(tmp_path_factory) -> Path:
    """CHGNet 0.3.0 as aoti-exchange (what `deploy chgnet --ranks 2` writes), or LMPBENCH_TEST_CHGNET_EXCHANGE."""
    given = os.environ.get("LMPBENCH_TEST_CHGNET_EXCHANGE")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("chgnet_exchange") / "chgnet.pt2"
    return deploy("chgnet", out, ranks=2, echo=lambda *a: None).path


@pytest.mark.slow
@pytest.mark.mpi
@pytest.mark.parametrize("kind", list(CELLS))
def test_exchange_on_1_2_4_ranks_matches_chgnet_calculator(deployed_exchange, chgnet_calc, kind, tmp_path):
    """108 atoms: on 4 ranks each subdomain is thinner than the 6 Å cutoff (ghosts relayed)."""
    assert read_deployed_metadata(deployed_exchange)["graph"] == "exchange"
    atoms = structure(kind, cells=3)
    elements = CELLS[kind][0]
    reference = calculator_state(atoms, chgnet_calc)
    states = {n: lammps_state(deployed_exchange, atoms, elements, n, tmp_path) for n in (1, 2, 4)}
    for n, state in states.items():
        diff = max_differences(state, reference)
        assert all(diff[k] < FLOAT32[k] for k in diff), (n, diff)
    # the rank counts agree with each other to float32 rounding
    assert np.abs(states[2]["forces"] - states[1]["forces"]).max() < 1e-4
    assert np.abs(states[4]["forces"] - states[1]["forces"]).max() < 1e-4


@pytest.mark.slow
@pytest.mark.mpi
def test_exchange_too_many_short_bonds_is_a_lammps_error(deployed_exchange, tmp_path):
    from ase.build import bulk

    from lmpbench.structures import lammps_oriented

    atoms = lammps_oriented(bulk("Cu", "fcc", a=2.4, cubic=True).repeat((3, 3, 3)))
    with pytest.raises(Exception, match="an atom has more than 32 neighbours closer than CHGNet's bond cutoff"):
        lammps_state(deployed_exchange, atoms, ["Cu"], 2, tmp_path)


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
