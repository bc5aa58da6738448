"""Message-passing models: exact on 1, 2 and 4 MPI ranks, equal to the model evaluated in Python."""

import numpy as np
import pytest
from ase import Atoms
from conftest import ELEMENTS, MODEL_TYPES, assert_states_close, mlff_lines, run_inprocess, run_mpi
from lammps_helpers import NKTV2P_METAL, data_file, nve_lines, system_deck

from lmpbench.models import ToyMessagePassing, periodic_energy_forces

MODELS = {"mp2": ToyMessagePassing(2, 3.5, num_layers=2, seed=1), "mp3": ToyMessagePassing(2, 3.0, num_layers=3, seed=2)}


def python_reference(model, state):
    atoms = Atoms(symbols=[ELEMENTS[t - 1] for t in state["types"]], positions=state["positions"],
                  cell=state["cell"], pbc=state["pbc"])
    return periodic_energy_forces(model, atoms, MODEL_TYPES)


@pytest.mark.parametrize("name", ["mp2", "mp3"])
def test_matches_python_evaluation(model_files, name):
    lmp = run_inprocess(system_deck(mlff_lines(model_files[name]), triclinic=True))
    energy, forces, virial = python_reference(MODELS[name], lmp)
    assert lmp["pe"] == pytest.approx(energy, rel=1e-10)
    np.testing.assert_allclose(lmp["forces"], forces, rtol=0, atol=1e-10 * np.abs(forces).max())
    # pressure tensor (virial part; atoms have no velocities here) = W / V
    expected = virial[[0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]] / lmp["volume"] * NKTV2P_METAL
    np.testing.assert_allclose(lmp["pressure"], expected, rtol=0, atol=1e-9 * np.abs(expected).max())


@pytest.mark.mpi
@pytest.mark.parametrize("name", ["mp2", "mp3"])
def test_same_on_1_2_4_ranks(model_files, name, tmp_path):
    # a short NVE run too, so ghost atoms are exchanged and neighbour lists rebuilt
    structure = data_file(tmp_path / "start.data", triclinic=True, cells=5)
    deck = system_deck(mlff_lines(model_files[name]), structure) + "\n" + nve_lines(20)
    results = {n: run_mpi(deck, n, tmp_path) for n in (1, 2, 4)}
    for n in (2, 4):
        assert_states_close(results[n], results[1], rtol=1e-10)
    energy, forces, _ = python_reference(MODELS[name], results[4])
    assert results[4]["pe"] == pytest.approx(energy, rel=1e-10)
    np.testing.assert_allclose(results[4]["forces"], forces, rtol=0, atol=1e-10 * np.abs(forces).max())
