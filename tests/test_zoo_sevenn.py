"""SevenNet (sevenn 0.13): the pretrained SevenNet-0 from the wheel, deployed by name, equal in
LAMMPS to sevenn's own ASE calculator to the model's float32 precision (energy 5e-3 eV, forces
5e-4 eV/Å, stress 1e-5 eV/Å³: deploy's float32 tolerances): the local layout on one MPI rank,
and the exchange layout (per-layer ghost exchange) on 1, 2 and 4 ranks.

Deploying SevenNet-0 compiles it with AOTInductor (2-5 minutes on 2 cores): the tests that
need the compiled file are marked slow; the TorchScript exchange file (seconds to script), the
adapter's parity with the calculator and the errors run in the quick suite."""

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from zoo_helpers import alloy, calculator_state, lammps_state, max_differences, nve_against_ase

from lmpbench.deploy import DeployError, check, deploy, load_source, local_example, read_deployed_metadata

ELEMENTS = ["Cu", "Ag", "Au", "Pd"]  # several of SevenNet-0's 89 elements
FLOAT32 = {"energy": 5e-3, "forces": 5e-4, "stress": 1e-5}


@pytest.fixture(scope="module")
def source():
    return load_source("sevenn:7net-0")


@pytest.fixture(scope="module")
def sevenn_calc(source):
    return source.calculator()


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> Path:
    """SevenNet-0 deployed here (self-checked), or LMPBENCH_TEST_7NET0, a file `lmpbench deploy
    sevenn:7net-0` wrote before (the tests below check it again against the calculator)."""
    given = os.environ.get("LMPBENCH_TEST_7NET0")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("sevenn") / "7net-0.pt2"
    return deploy("sevenn:7net-0", out, echo=lambda *a: None).path


@pytest.fixture(scope="module")
def deployed_exchange(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sevenn_exchange") / "7net-0.pt"
    return deploy("sevenn:7net-0", out, target="torchscript-exchange", ranks=2, echo=lambda *a: None).path


def test_pretrained_metadata(source):
    meta = source.metadata
    assert meta.r_max == 5.0 and meta.num_layers == 5 and meta.model_dtype == "float32"
    assert len(meta.type_names) == 89 and {"H", "Li", "Cu", "Au", "Pu"} <= set(meta.type_names)
    assert source.targets == ("aoti-local", "aoti-exchange", "torchscript-exchange") and source.path.is_relative_to(Path(__import__("sevenn").__file__).parent)


@pytest.mark.parametrize("triclinic", [False, True], ids=["orthorhombic", "triclinic"])
def test_adapter_matches_sevenn_calculator(source, sevenn_calc, triclinic):
    """The wrapper that deploy compiles (local layout, forces and virial inside) against the calculator."""
    from lmpbench.architectures.sevenn import SevenNetLocal

    atoms = alloy(ELEMENTS, cells=2, a=3.9, triclinic=triclinic)
    out = SevenNetLocal(source.load())(local_example(atoms, source.metadata))
    stress = -out["virial"].detach().double().numpy()[0] / atoms.get_volume()
    ours = {"energy": float(out["atomic_energy"].sum()), "forces": out["forces"].detach().double().numpy(),
            "stress": stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]}
    reference = calculator_state(atoms, sevenn_calc)
    diff = max_differences(ours, reference)
    assert all(diff[k] < FLOAT32[k] for k in diff), diff
    assert np.abs(reference["forces"]).max() > 0.05


def test_unknown_and_not_shipped_names():
    with pytest.raises(DeployError, match="unknown SevenNet model 'nosuch'; available offline: sevenn:7net-0"):
        load_source("sevenn:nosuch")
    with pytest.raises(DeployError, match="not shipped in the sevenn wheel"):
        load_source("sevenn:7net-omat")


def test_cli_errors_are_one_line(tmp_path):
    from lmpbench.cli.main import cli

    for args, message in ((["sevenn:nosuch"], "unknown SevenNet model"),
                          (["sevenn:7net-0", "--target", "aoti-local", "--ranks", "2"],
                           "target aoti-local runs on one MPI rank only; use aoti-exchange or torchscript-exchange")):
        result = CliRunner().invoke(cli, ["deploy", *args, "-o", str(tmp_path / "m.pt2")])
        assert result.exit_code != 0 and message in result.output, result.output
        assert "Traceback" not in result.output


def test_uncovered_element_refused_before_compiling(tmp_path):
    atoms = alloy(["Cu", "Po"], cells=2)
    with pytest.raises(DeployError, match="element.s. Po that sevenn:7net-0 does not cover"):
        deploy("sevenn:7net-0", tmp_path / "m.pt2", structure=atoms, echo=lambda *a: None)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("triclinic", [False, True], ids=["orthorhombic", "triclinic"])
def test_lammps_matches_sevenn_calculator(deployed, source, triclinic):
    report = check(deployed, source, alloy(ELEMENTS, cells=3, a=3.9, triclinic=triclinic))
    assert report.reference.startswith("sevenn's ASE calculator")
    assert report.passed, report.lines()


@pytest.mark.slow
def test_deployed_metadata_and_md(deployed, sevenn_calc):
    meta = read_deployed_metadata(deployed)
    assert meta["source_spec"] == "sevenn:7net-0" and meta["architecture"] == "sevenn" and meta["graph"] == "local"
    assert meta["sevenn_version"] == "0.13.0"
    # 100 NVE steps on a four-element alloy, against ASE's velocity Verlet with sevenn's calculator
    atoms = alloy(ELEMENTS, cells=2, a=3.9, triclinic=True)
    x_lammps, x_ase = nve_against_ase(deployed, atoms, ELEMENTS, sevenn_calc, steps=100)
    assert np.abs(x_ase - atoms.positions).max() > 0.05
    np.testing.assert_allclose(x_lammps, x_ase, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_lammps_refuses_element_the_model_lacks(deployed, tmp_path):
    from conftest import run_lmp

    deck = "\n".join(["units metal", "region b block 0 8 0 8 0 8", "create_box 2 b", "create_atoms 1 random 4 1 b",
                      "create_atoms 2 random 4 2 b", "mass * 1.0", "pair_style mlff", f"pair_coeff * * {deployed} Cu Po",
                      "run 0"])
    proc = run_lmp(deck, tmp_path)
    assert proc.returncode != 0 and "Po" in proc.stdout + proc.stderr


@pytest.mark.mpi
@pytest.mark.parametrize("triclinic", [False, True], ids=["orthorhombic", "triclinic"])
def test_exchange_layout_on_1_2_4_ranks_matches_sevenn_calculator(deployed_exchange, sevenn_calc, triclinic, tmp_path):
    """108 atoms, 11.7 Å cell: on 4 ranks the subdomains (2.9 Å) are thinner than the 5 Å
    cutoff, so ghosts are relayed over several hops and include a rank's own images. The rank
    counts agree with each other to float32 summation order (measured: forces 1e-6 eV/Å, energy
    a few float32 steps of its 400 eV, stress 1e-8 eV/Å³)."""
    atoms = alloy(ELEMENTS, cells=3, a=3.9, triclinic=triclinic)
    reference = calculator_state(atoms, sevenn_calc)
    states = {n: lammps_state(deployed_exchange, atoms, ELEMENTS, n, tmp_path) for n in (1, 2, 4)}
    for n, state in states.items():
        diff = max_differences(state, reference)
        assert all(diff[k] < FLOAT32[k] for k in diff), (n, diff)
    for n in (2, 4):
        diff = max_differences(states[n], states[1])
        assert diff["forces"] < 1e-5 and diff["energy"] < 2e-4 and diff["stress"] < 1e-7, (n, diff)
    assert np.abs(reference["forces"]).max() > 0.05
