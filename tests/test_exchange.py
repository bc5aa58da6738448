"""Per-layer ghost exchange (deploy targets aoti-exchange and torchscript-exchange).

The exchange layout gives each rank ghosts within one r_max only and rebuilds deeper
neighbourhoods by exchanging node features between layers; it must equal nequip's own ASE
calculator and an independent single-rank path (aoti-local; torchscript-ghost for 3 layers)
on 1, 2 and 4 ranks, for 2- and 3-layer models, on orthorhombic and triclinic cells, including cells so small that a rank's
ghosts are periodic images of its own atoms and are relayed through several comm hops.
"""

import numpy as np
import pytest
import torch
from ase import Atoms
from conftest import NEQUIP_ELEMENTS, assert_states_close, cuau_alloy, run_inprocess, run_mpi
from lammps_helpers import nve_lines, system_deck

from lmpbench.contract import ContractError, ModelMetadata
from lmpbench.deploy import check, choose_target, default_dtype, deploy, load_source
from lmpbench.structures import write_lammps_data

RTOL = 1e-10  # the bar: float64, relative to the largest magnitude


def quiet(*_):
    pass


@pytest.fixture(scope="session")
def nequip3_ckpt(tmp_path_factory):
    from lmpbench.models.toy_nequip import train_toy_nequip

    return train_toy_nequip(tmp_path_factory.mktemp("nequip3"), elements=NEQUIP_ELEMENTS, num_layers=3)


REFERENCE = {2: "aoti-local", 3: "torchscript-ghost"}  # independent single-rank paths (a 3-layer AOTI build costs a minute)
SLOW_3_LAYER_AOTI = pytest.param(3, marks=pytest.mark.slow)  # its AOTInductor build: `make test-slow`


@pytest.fixture(scope="session")
def exchange_models(nequip_ckpt, nequip3_ckpt, deployed, tmp_path_factory):
    """(layers, target) -> (deployed file, checkpoint), deployed on first use; the 2-layer
    files come from the session's ``deployed``."""
    out = tmp_path_factory.mktemp("exchange")
    models = {(2, t): (path, nequip_ckpt) for t, path in deployed.items()}

    class Models(dict):
        def __missing__(self, key):
            layers, target = key
            suffix = ".pt2" if target.startswith("aoti") else ".pt"
            self[key] = (deploy(nequip3_ckpt, out / f"toy3_{target}{suffix}", target=target, echo=quiet).path, nequip3_ckpt)
            return self[key]

    return Models(models)


def _deck(tmp_path, model_file, cells: int, triclinic: bool, steps: int = 20) -> str:
    data = write_lammps_data(tmp_path / f"alloy_{cells}_{triclinic}.data", cuau_alloy(cells=cells, triclinic=triclinic),
                             NEQUIP_ELEMENTS)
    pair = f"pair_style mlff\npair_coeff * * {model_file} Cu Au"
    # a short NVE run: ghosts move, neighbour lists are rebuilt, atoms change ranks
    return system_deck(pair, structure=[f"read_data {data}"]) + "\n" + nve_lines(steps, dt=0.002, temp=600)


def _assert_matches_calculator(ckpt, state):
    """Energy and forces of a LAMMPS state equal nequip's own calculator's. (The pressure
    carries the kinetic part here; its virial part is checked on one rank against the
    calculator's stress, and on every rank count against the single-rank fast path.)"""
    from nequip.integrations.ase import NequIPCalculator

    atoms = Atoms(symbols=[NEQUIP_ELEMENTS[t - 1] for t in state["types"]], positions=state["positions"],
                  cell=state["cell"], pbc=True)
    with default_dtype(torch.float64):
        atoms.calc = NequIPCalculator._from_saved_model(str(ckpt), device="cpu", chemical_species_to_atom_type_map=True)
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    assert state["pe"] == pytest.approx(energy, rel=RTOL)
    np.testing.assert_allclose(state["forces"], forces, rtol=0, atol=RTOL * np.abs(forces).max())


@pytest.mark.parametrize("triclinic", [False, True], ids=["orthorhombic", "triclinic"])
@pytest.mark.parametrize("layers, target", [(2, "aoti-exchange"), (2, "torchscript-exchange"),
                                            pytest.param(3, "aoti-exchange", marks=pytest.mark.slow),
                                            (3, "torchscript-exchange")])
def test_matches_nequip_calculator_on_one_rank(exchange_models, layers, target, triclinic):
    """One rank: every ghost is a periodic image of the rank's own atoms, every feature row
    reaches it through LAMMPS's self-swaps."""
    model_file, ckpt = exchange_models[layers, target]
    report = check(model_file, load_source(ckpt), cuau_alloy(triclinic=triclinic))
    assert report.reference == "nequip's ASE calculator"
    assert report.energy_eV < 1e-9 and report.forces_eV_A < 1e-9 and report.stress_eV_A3 < 1e-10, report.lines()


@pytest.mark.mpi
@pytest.mark.parametrize("triclinic", [False, True], ids=["orthorhombic", "triclinic"])
@pytest.mark.parametrize("layers", [2, SLOW_3_LAYER_AOTI])
def test_aoti_exchange_identical_on_1_2_4_ranks(exchange_models, layers, triclinic, tmp_path):
    """Energy, forces, per-atom energies and the pressure tensor after 20 NVE steps equal an
    independent single-rank path's on every rank count, and nequip's calculator at the end."""
    model_file, ckpt = exchange_models[layers, "aoti-exchange"]
    reference = run_mpi(_deck(tmp_path, exchange_models[layers, REFERENCE[layers]][0], 4, triclinic), 1, tmp_path)
    for nprocs in (1, 2, 4):
        result = run_mpi(_deck(tmp_path, model_file, 4, triclinic), nprocs, tmp_path)
        assert_states_close(result, reference, rtol=RTOL)
    _assert_matches_calculator(ckpt, result)


@pytest.mark.mpi
@pytest.mark.parametrize("triclinic", [False, True], ids=["orthorhombic", "triclinic"])
@pytest.mark.parametrize("layers", [2, 3])
def test_torchscript_exchange_identical_on_1_2_4_ranks(exchange_models, layers, triclinic, tmp_path):
    model_file, ckpt = exchange_models[layers, "torchscript-exchange"]
    reference = run_mpi(_deck(tmp_path, exchange_models[layers, REFERENCE[layers]][0], 4, triclinic), 1, tmp_path)
    for nprocs in (2, 4):
        result = run_mpi(_deck(tmp_path, model_file, 4, triclinic), nprocs, tmp_path)
        assert_states_close(result, reference, rtol=RTOL)
    _assert_matches_calculator(ckpt, result)


@pytest.mark.mpi
@pytest.mark.parametrize("layers, target", [(2, "aoti-exchange"), (3, "torchscript-exchange")])
def test_tiny_cell_ghosts_are_own_images_over_several_hops(exchange_models, layers, target, tmp_path):
    """108 atoms (11.4 Å) on 4 ranks: subdomains of 5.7 Å are thinner than the ghost cutoff
    (r_max + skin = 6 Å), so LAMMPS relays ghosts through a second swap and a rank's ghosts
    include images of its own atoms; the relayed feature rows and their gradients must be exact."""
    model_file, ckpt = exchange_models[layers, target]
    reference = run_mpi(_deck(tmp_path, exchange_models[layers, REFERENCE[layers]][0], 3, True), 1, tmp_path)
    result = run_mpi(_deck(tmp_path, model_file, 3, True), 4, tmp_path)
    assert_states_close(result, reference, rtol=RTOL)
    _assert_matches_calculator(ckpt, result)


def test_auto_target_takes_the_exchange_for_several_ranks(nequip_ckpt):
    source = load_source(nequip_ckpt)
    assert choose_target(source, "auto", 1)[0] == "aoti-local"
    assert choose_target(source, "auto", 2)[:2] == ["aoti-exchange", "aoti-ghost"]  # ghost layout: the fallback


def test_operators_are_identities_and_adjoint_outside_lammps():
    """With no LAMMPS exchanger installed every node is local: both operators are the
    identity, and the backward of each is the other (checked by autograd's own gradcheck)."""
    from lmpbench.exchange import load_operators

    load_operators()
    x = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    y = torch.ops.mlff.ghost_exchange(x)
    assert torch.equal(y, x) and y.data_ptr() != x.data_ptr()
    assert torch.autograd.gradcheck(torch.ops.mlff.ghost_exchange, (x,))
    assert torch.autograd.gradcheck(torch.ops.mlff.ghost_reverse, (x,))
    assert torch.autograd.gradgradcheck(torch.ops.mlff.ghost_exchange, (x,))


def test_unknown_graph_is_refused(tmp_path):
    """A TorchScript file whose metadata names an unknown graph layout: one clear line in
    Python and in LAMMPS."""
    from lmpbench.contract import METADATA_FILE
    from lmpbench.models import ToyMessagePassing

    with pytest.raises(ContractError, match="graph must be one of ghost, exchange"):
        ModelMetadata(r_max=3.0, type_names=["Cu", "Au"], graph="sideways")
    path = tmp_path / "sideways.pt"
    meta = ModelMetadata(r_max=3.0, type_names=["Cu", "Au"], num_layers=2).to_json().replace('"ghost"', '"sideways"')
    torch.jit.save(torch.jit.script(ToyMessagePassing(2, 3.0, num_layers=2, seed=1)), str(path),
                   _extra_files={METADATA_FILE: meta})
    data = write_lammps_data(tmp_path / "a.data", cuau_alloy(), NEQUIP_ELEMENTS)
    with pytest.raises(Exception, match="has graph 'sideways' in its metadata: expected ghost or exchange"):
        run_inprocess(system_deck(f"pair_style mlff\npair_coeff * * {path} Cu Au", structure=[f"read_data {data}"]))
