"""Bad input to pair style mlff stops LAMMPS with an error naming the problem, and a clean exit."""

import re

import pytest
import torch
from conftest import MODEL_TYPES, mlff_lines, run_lmp
from lammps_helpers import system_deck

from lmpbench.contract import ModelMetadata, save_model
from lmpbench.models import LennardJones


class WholeEnergy(LennardJones):
    """Breaks the contract: returns the total energy instead of per-atom energies."""

    def forward(self, pos: torch.Tensor, edge_index: torch.Tensor, atom_types: torch.Tensor, nlocal: int):
        edge_vec = pos[edge_index[1]] - pos[edge_index[0]]
        return self.atom_energies(edge_vec, edge_index, atom_types, pos.shape[0]).sum().reshape(1)


def lj_model():
    return LennardJones(0.01, 2.5, r_max=5.0, num_types=2)


def expect_error(tmp_path, deck, message):
    proc = run_lmp(deck, tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-2000:]
    errors = [line for line in output.splitlines() if line.startswith("ERROR")]
    assert errors, output[-2000:]
    assert re.search(message, errors[0]), errors[0]
    assert not re.search(r"Segmentation|core dumped|terminate called|Traceback", output), output[-2000:]


@pytest.fixture
def lj_file(tmp_path):
    return save_model(lj_model(), tmp_path / "lj.pt", ModelMetadata(r_max=5.0, type_names=MODEL_TYPES))


def test_missing_model_file(tmp_path):
    expect_error(tmp_path, system_deck(mlff_lines(tmp_path / "absent.pt")), r"cannot open model file .*absent\.pt")


def test_corrupt_model_file(tmp_path):
    (tmp_path / "corrupt.pt").write_bytes(b"this is not a TorchScript archive")
    expect_error(tmp_path, system_deck(mlff_lines(tmp_path / "corrupt.pt")), r"cannot load model file .*corrupt\.pt as TorchScript")


def test_model_without_metadata(tmp_path):
    torch.jit.save(torch.jit.script(lj_model()), str(tmp_path / "bare.pt"))
    expect_error(tmp_path, system_deck(mlff_lines(tmp_path / "bare.pt")), r"has no mlff_metadata\.json")


def test_contract_version_mismatch(tmp_path):
    save_model(lj_model(), tmp_path / "v99.pt", ModelMetadata(r_max=5.0, type_names=MODEL_TYPES, contract_version=99))
    expect_error(tmp_path, system_deck(mlff_lines(tmp_path / "v99.pt")), r"contract version 99, this pair style reads version 1")


def test_element_the_model_lacks(tmp_path, lj_file):
    expect_error(tmp_path, system_deck(mlff_lines(lj_file, ["Cu", "Ar"])), r"element Ar \(atom type 2\) is not in model .* has: Ni Cu")


def test_wrong_number_of_elements(tmp_path, lj_file):
    expect_error(tmp_path, system_deck(mlff_lines(lj_file, ["Cu"])), r"1 element names given for 2 atom types")


def test_newton_pair_off(tmp_path, lj_file):
    deck = "newton off\n" + system_deck(mlff_lines(lj_file)) + "\nrun 0"
    expect_error(tmp_path, deck, r"requires newton pair on")


def test_per_atom_virial_requested(tmp_path, lj_file):
    deck = system_deck(mlff_lines(lj_file)) + "\ncompute s all stress/atom NULL\ncompute sum all reduce sum c_s[1]\n" \
        "thermo_style custom step pe c_sum\nrun 0"
    expect_error(tmp_path, deck, r"does not compute per-atom virials")


def test_non_finite_energy_reports_step(tmp_path, lj_file):
    deck = system_deck(mlff_lines(lj_file)) + "\ncreate_atoms 1 single 1.0 1.0 1.0 units box\n" \
        "create_atoms 1 single 1.0 1.0 1.0 units box\nreset_timestep 1234\nrun 10"
    expect_error(tmp_path, deck, r"non-finite energy or force on step 1234")


def test_model_breaking_the_output_contract(tmp_path):
    save_model(WholeEnergy(0.01, 2.5, r_max=5.0, num_types=2), tmp_path / "whole.pt", ModelMetadata(r_max=5.0, type_names=MODEL_TYPES))
    expect_error(tmp_path, system_deck(mlff_lines(tmp_path / "whole.pt")) + "\nrun 0", r"returned 1 atom energies for \d+ atoms")


def test_unknown_keyword(tmp_path, lj_file):
    expect_error(tmp_path, system_deck(mlff_lines(lj_file, style_args="gpu 1")), r"Unknown pair_style mlff keyword gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu(tmp_path, lj_file):
    expect_error(tmp_path, system_deck(mlff_lines(lj_file, style_args="device cuda")), r"device cuda requested but")
