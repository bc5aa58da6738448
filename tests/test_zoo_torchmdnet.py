"""torchmd-net (3.1) TensorNet and equivariant transformer: trainer-format checkpoints deployed
through the pair style's edge list, equal in LAMMPS to torchmd-net's own model (its neighbour
list, box and derivative forces) on 1 and 2 ranks (float64, tolerance 1e-8), and NVE as ASE's
velocity Verlet with it.

The models are small and randomly initialised (TensorNet: 2 interaction layers, 16 channels,
cutoff 3.5 Å, an Atomref prior and a std scale; the transformer likewise), written as
torchmd-net's trainer writes checkpoints (hyperparameters and state under ``model.``): nothing
is downloaded or trained. The AOTInductor target (minutes to compile on 2 cores) is marked
slow; TorchScript compiles in seconds."""

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from zoo_helpers import alloy, calculator_state, lammps_state, max_differences, nve_against_ase

from lmpbench.deploy import DeployError, deploy, load_source, read_deployed_metadata, source_for_check

ELEMENTS = ["Cu", "Ni"]
ATOMREF = {28: -5.5, 29: -3.7}  # Ni, Cu: the Atomref prior's per-element energies (eV)
TOL = 1e-8


# torchmd-train's options for the model (the rest of its options do not reach the model)
MODEL_ARGS = {"model": "tensornet", "precision": 64, "embedding_dimension": 16, "num_layers": 2, "num_rbf": 8,
              "rbf_type": "expnorm", "trainable_rbf": False, "activation": "silu", "cutoff_lower": 0.0, "cutoff_upper": 3.5,
              "max_num_neighbors": 32, "equivariance_invariance_group": "O(3)", "static_shapes": False,
              "derivative": True, "atom_filter": -1, "output_model": "Scalar", "reduce_op": "add",
              "output_mlp_num_layers": 0, "aggr": "add", "neighbor_embedding": True, "charge": False, "spin": False,
              "attn_activation": "silu", "num_heads": 4, "distance_influence": "both", "vector_cutoff": False}


def write_checkpoint(path: Path, max_z: int = 30, std: float = 20.0, mean: float | None = None,
                     model: str = "tensornet", atomref: dict | None = ATOMREF, **options) -> Path:
    """A TensorNet checkpoint in the layout of torchmd-net's trainer (``hyper_parameters``, and the
    TorchMD_Net state under ``model.``), without importing the trainer (lightning: ~10 s)."""
    from torchmdnet.models.model import create_model

    args = dict(MODEL_ARGS, model=model, max_z=max_z, prior_model={"Atomref": {"max_z": max_z}} if atomref else None,
                **options)
    torch.manual_seed(0)
    net = create_model(dict(args), std=torch.tensor(std), mean=None if mean is None else torch.tensor(mean))
    state = {f"model.{key}": value for key, value in net.state_dict().items()}
    if atomref:
        energies = torch.zeros(max_z, 1, dtype=torch.float64)
        for z, energy in atomref.items():
            energies[z] = energy
        state["model.prior_model.0.atomref.weight"] = energies
        state["model.prior_model.0.initial_atomref"] = energies.clone()
    torch.save({"epoch": 0, "global_step": 0, "hyper_parameters": args, "state_dict": state}, str(path))
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("torchmdnet") / "tensornet.ckpt")


@pytest.fixture(scope="module")
def source(checkpoint):
    return load_source(checkpoint)


@pytest.fixture(scope="module")
def reference(source):
    return source.calculator()


@pytest.fixture(scope="module")
def deployed(checkpoint, tmp_path_factory):
    """target -> deployed file, deployed (and self-checked) on first use."""
    out = tmp_path_factory.mktemp("torchmdnet_deployed")
    files: dict[str, Path] = {}

    def get(target: str) -> Path:
        if target not in files:
            suffix = ".pt" if target == "torchscript-ghost" else ".pt2"
            # deploy's own check on 32 atoms (its default crystal has 108: seconds of reference stress)
            files[target] = deploy(checkpoint, out / f"tensornet_{target}{suffix}", target=target, echo=lambda *a: None,
                                   structure=alloy(ELEMENTS, cells=2, a=3.6)).path
        return files[target]

    return get


def test_checkpoint_read_as_torchmdnet(source, deployed):
    meta = source.metadata
    assert source.kind == "torchmdnet" and source.architecture == "torchmdnet"
    # the embedding's message pass counts as a layer: 2 interactions + 1
    assert meta.r_max == 3.5 and meta.num_layers == 3 and meta.model_dtype == "float64"
    assert meta.type_names[0] == "H" and meta.type_names[-1] == "Cu" and len(meta.type_names) == 29
    assert source.check_elements == ("Ni", "Cu")  # the elements the Atomref prior names
    info = read_deployed_metadata(deployed("torchscript-ghost"))
    assert info["architecture"] == "torchmdnet" and info["torchmdnet_version"] == "3.1.0" and info["num_layers"] == "3"
    assert source_for_check(deployed("torchscript-ghost")).kind == "torchmdnet"  # `deploy --check` finds the checkpoint


@pytest.mark.mpi
@pytest.mark.parametrize("nprocs", [1, 2])
@pytest.mark.parametrize("triclinic", [False, True], ids=["orthorhombic", "triclinic"])
@pytest.mark.parametrize("target", ["torchscript-ghost", pytest.param("aoti-local", marks=pytest.mark.slow)])
def test_parity_with_torchmdnet_model(deployed, reference, target, triclinic, nprocs, tmp_path):
    if target == "aoti-local" and nprocs > 1:
        pytest.skip("aoti-local runs on one rank")
    atoms = alloy(ELEMENTS, cells=2, a=3.6, triclinic=triclinic)
    expected = calculator_state(atoms, reference)
    diff = max_differences(lammps_state(deployed(target), atoms, ELEMENTS, nprocs, tmp_path), expected)
    assert all(value < TOL for value in diff.values()), diff
    assert np.abs(expected["forces"]).max() > 0.05  # a real test: the model gives forces


@pytest.mark.parametrize("group", ["O(3)", "SO(3)"])
def test_local_wrapper_matches_reference_in_a_dense_cell(checkpoint, group, tmp_path):
    """The aoti-local wrapper, eager, on a cell compressed to 41 neighbours per atom (over the checkpoint's
    cap of 32, which the reference lifts) and narrower than 2 cutoffs (the reference takes a supercell);
    an SO(3) TensorNet also feels the direction of the edge vectors (inversion changes its energy)."""
    from ase.data import atomic_numbers

    from lmpbench.architectures.torchmdnet import TorchMDNetLocal, pure_torch
    from lmpbench.deploy import local_example

    path = checkpoint if group == "O(3)" else write_checkpoint(tmp_path / "so3.ckpt", equivariance_invariance_group=group)
    source = load_source(path)
    atoms = alloy(ELEMENTS, cells=2, a=2.7, triclinic=True)
    wrapper = TorchMDNetLocal(source.load(), [atomic_numbers[s] for s in source.metadata.type_names])
    with pure_torch():
        out = wrapper(local_example(atoms, source.metadata))
    virial = out["virial"].detach().numpy()[0]
    ours = {"energy": float(out["atomic_energy"].detach().sum()), "forces": out["forces"].detach().numpy(),
            "stress": -virial[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]] / atoms.get_volume()}
    diff = max_differences(ours, calculator_state(atoms, source.calculator()))
    assert all(value < TOL for value in diff.values()), diff


@pytest.fixture(scope="module")
def transformer(tmp_path_factory):
    """(source, deployed torchscript-ghost file) of a small random equivariant transformer (2 attention layers)."""
    out = tmp_path_factory.mktemp("torchmdnet_et")
    path = write_checkpoint(out / "et.ckpt", model="equivariant-transformer")
    deployed = deploy(path, out / "et.pt", echo=lambda *a: None, structure=alloy(ELEMENTS, cells=2, a=3.6)).path
    return load_source(path), deployed


@pytest.mark.mpi
@pytest.mark.parametrize("triclinic, nprocs", [(True, 2), pytest.param(True, 1, marks=pytest.mark.slow),
                                               pytest.param(False, 1, marks=pytest.mark.slow),
                                               pytest.param(False, 2, marks=pytest.mark.slow)])
def test_equivariant_transformer_parity(transformer, triclinic, nprocs, tmp_path):
    source, deployed = transformer
    # neighbour embedding + 2 attention layers; torchscript-ghost only (see the module)
    assert source.metadata.num_layers == 3 and source.targets == ("torchscript-ghost",)
    atoms = alloy(ELEMENTS, cells=2, a=3.6, triclinic=triclinic)
    expected = calculator_state(atoms, source.calculator())
    diff = max_differences(lammps_state(deployed, atoms, ELEMENTS, nprocs, tmp_path), expected)
    assert all(value < TOL for value in diff.values()), diff
    assert np.abs(expected["forces"]).max() > 0.05


def cluster(box_A: float = 30.0):
    """A rattled 32-atom Cu-Ni cluster in the middle of a periodic box wider than it plus two ghost
    shells: no atom has an image within reach, so the ghost layout stays 32 nodes (a crystal of this
    cell has ~2000 ghosts for the 3 x 3.5 Å shell, ~1 s a step on 2 cores)."""
    atoms = alloy(ELEMENTS, cells=2, a=3.6, triclinic=False)
    atoms.set_cell([box_A] * 3)
    atoms.translate(np.full(3, box_A / 2) - atoms.positions.mean(0))
    return atoms


@pytest.mark.parametrize("target", ["torchscript-ghost", pytest.param("aoti-local", marks=pytest.mark.slow)])
def test_nve_follows_ase_velocity_verlet(deployed, reference, target):
    """100 steps of 1 fs; aoti-local (no ghosts) on the periodic crystal, the ghost layout on the cluster."""
    atoms = cluster() if target == "torchscript-ghost" else alloy(ELEMENTS, cells=2, a=3.6, triclinic=True)
    x_lammps, x_ase = nve_against_ase(deployed(target), atoms, ELEMENTS, reference, steps=100)
    assert np.abs(x_ase - atoms.positions).max() > 0.05  # the atoms really moved
    np.testing.assert_allclose(x_lammps, x_ase, rtol=0, atol=1e-6)


def test_element_the_model_lacks(checkpoint, deployed, tmp_path):
    """Au (Z 79) is beyond the model's embedding table (max_z 30): refused before compiling, and by the pair style."""
    from conftest import run_lmp

    with pytest.raises(DeployError, match="element.s. Au that .*tensornet.ckpt does not cover"):
        deploy(checkpoint, tmp_path / "m.pt", structure=alloy(["Cu", "Au"], cells=2), echo=lambda *a: None)
    assert not list(tmp_path.iterdir())
    deck = "\n".join(["units metal", "region b block 0 8 0 8 0 8", "create_box 2 b", "create_atoms 1 random 4 1 b",
                      "create_atoms 2 random 4 2 b", "mass * 1.0", "pair_style mlff",
                      f"pair_coeff * * {deployed('torchscript-ghost')} Cu Au", "run 0"])
    proc = run_lmp(deck, tmp_path)
    assert proc.returncode != 0 and "Au" in proc.stdout + proc.stderr


def test_malformed_and_unsupported_checkpoints(checkpoint, tmp_path):
    from lmpbench.cli.main import cli

    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    broken = tmp_path / "broken.ckpt"
    state = torch.load(str(checkpoint), weights_only=False)
    state["state_dict"] = {k: v for k, v in state["state_dict"].items() if "layers.1" not in k}
    torch.save(state, str(broken))
    standardized = write_checkpoint(tmp_path / "standardized.ckpt", mean=-120.0)
    graph_network = write_checkpoint(tmp_path / "gn.ckpt", model="graph-network", atomref=None)
    charged = write_checkpoint(tmp_path / "charged.ckpt", charge=True)
    cases = ((garbage, "garbage.ckpt is not a loadable nequip checkpoint or package (nor a torchmd-net checkpoint)"),
             (broken, "broken.ckpt is not a loadable torchmd-net checkpoint: "),
             (standardized, "adds its training mean (-120) to each structure's total energy, which has no per-atom form"),
             (graph_network, "gn.ckpt: torchmd-net model TorchMD_GN is not supported (supported: tensornet, "
                             "equivariant-transformer)"),
             (charged, "charged.ckpt: the model was trained with total charge as input, which the pair style does not pass"))
    for path, message in cases:
        with pytest.raises(DeployError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_source(path)
        result = CliRunner().invoke(cli, ["deploy", str(path), "-o", str(tmp_path / "m.pt")])
        assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_nequip_checkpoints_are_not_claimed(tmp_path):
    from lmpbench.architectures.torchmdnet import is_checkpoint

    torch.save({"state_dict": {"model.model.func.weight": torch.zeros(2)}, "hyper_parameters": {}}, str(tmp_path / "n.ckpt"))
    assert not is_checkpoint(tmp_path / "n.ckpt") and not is_checkpoint(tmp_path / "missing.ckpt")


@pytest.mark.slow
def test_equivariant_transformer_nve_follows_ase_velocity_verlet(transformer):
    """100 steps of 1 fs on the cluster (ghost layout without images), against ASE's velocity Verlet
    with torchmd-net's own model."""
    source, deployed = transformer
    atoms = cluster()
    x_lammps, x_ase = nve_against_ase(deployed, atoms, ELEMENTS, source.calculator(), steps=100)
    assert np.abs(x_ase - atoms.positions).max() > 0.05
    np.testing.assert_allclose(x_lammps, x_ase, rtol=0, atol=1e-6)
