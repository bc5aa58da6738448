"""torchmd-net (3.1) TensorNet and equivariant-transformer models, from its trainer's checkpoints,
deployed into pair style mlff.

``lmpbench deploy model.ckpt`` takes a checkpoint written by torchmd-net's trainer
(``torchmd-train``; a lightning checkpoint whose state holds ``model.representation_model.*``),
told apart from nequip's ``.ckpt`` by that content. Targets: ``torchscript-ghost`` (any number
of MPI ranks, compiles in seconds) and, for TensorNet, ``aoti-local`` (one rank, AOTInductor;
the transformer's attention sums with a size read from the data, which AOTInductor cannot trace).
The equivariant transformer's wrapper (``ETEdgeEnergies``) follows the same plan as TensorNet's
below: its neighbour embedding, attention layers and gated output blocks on the given edges.

The adapter: torchmd-net's ``TorchMD_Net`` builds its own neighbour list (``OptimizedDistance``)
from positions and box. The wrappers here instead take the pair style's edges (row 0 the centre,
row 1 the neighbour, both directions, edge_vec = pos[j] - pos[i] + shift·cell) and run
TensorNet's own embedding, interaction layers and output network on them; per atom,
e_i = atomref(z_i) + std · output(x_i), so that Σ e_i is TorchMD_Net's energy. TensorNet's
neighbour list holds every atom's self-loop (distance 0, which its scalar channel feels), so
the wrappers add one per node. A periodic image of the atom itself (cells under 2 r_max) is
a real edge here and normalised by its length.

TorchMD_Net's ``mean`` (standardize: a constant added to each structure's total) has no per-atom
form, and its priors other than Atomref act on the total with their own neighbour lists: such
models are refused with a message that says so.

torchmd-net runs TensorNet's tensor algebra through warp kernels registered as Python custom
ops, which a TorchScript or AOTInductor file run by LAMMPS cannot call: the deployed graphs use
torchmd-net's own pure-torch versions of the same operations (``pure_torch``).

Message-passing depth (``num_layers`` of the contract, sets the multi-rank ghost shell): the
embedding already sums over neighbours, so it is TensorNet's interaction layers + 1.

The reference of the deploy check (``TorchMDNetCalculator``) is torchmd-net's full model:
``TorchMD_Net.forward`` with its own neighbour list and box and forces from derivative=True, on
the same pure-torch path (its warp kernels differ from it by ~3e-7 eV on 108 atoms in float64);
its stress is a central difference of that energy over strains that keep the box in
torchmd-net's lower-triangular form (the box does not reach its neighbour list's gradient).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Tuple

import numpy as np
import torch
from torch import Tensor

from lmpbench.architectures.local_layout import LocalLayout, export_local

SUPPORTED_MODELS = ("tensornet", "equivariant-transformer")
CHECK_ELEMENTS = ("Cu", "Ni")  # the deploy check's alloy when the model's atomref names no elements


class TorchMDNetError(ValueError):
    """A torchmd-net checkpoint that cannot be deployed; the message says why."""


def is_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a torchmd-net trainer checkpoint: its pickle names the TorchMD_Net state
    (``model.representation_model.``)."""
    from lmpbench.architectures import checkpoint_pickle_holds

    return checkpoint_pickle_holds(path, b"model.representation_model.")


def load_model(path: Path):
    """TorchMD_Net of the checkpoint, in eval mode, forces by its own derivative."""
    import warnings

    from torchmdnet.models.model import load_model as torchmdnet_load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchmdnet_load(str(path), derivative=True).eval()


def hyperparameters(path: Path) -> dict:
    state = torch.load(str(path), map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or not isinstance(state.get("hyper_parameters"), dict):
        raise TorchMDNetError(f"{path}: a torchmd-net checkpoint has hyper_parameters, this file has none")
    return dict(state["hyper_parameters"])


def refuse_unsupported(path: Path, model, hparams: dict) -> None:
    """One-line errors for the models whose energy is not a sum of per-atom terms of the edge list."""
    from torchmdnet.models.output_modules import EquivariantScalar, Scalar
    from torchmdnet.models.tensornet import TensorNet
    from torchmdnet.models.torchmd_et import TorchMD_ET
    from torchmdnet.priors import Atomref

    rep = model.representation_model
    if not isinstance(rep, (TensorNet, TorchMD_ET)):
        raise TorchMDNetError(f"{path}: torchmd-net model {type(rep).__name__} is not supported "
                              f"(supported: {', '.join(SUPPORTED_MODELS)})")
    summed = EquivariantScalar if isinstance(rep, TorchMD_ET) else Scalar
    if type(model.output_model) is not summed or model.output_model.reduce_op not in ("add", "sum"):
        raise TorchMDNetError(f"{path}: output model {type(model.output_model).__name__} (reduce "
                              f"{model.output_model.reduce_op}) is not an energy summed over atoms "
                              f"({summed.__name__}, sum)")
    if float(model.mean.abs().sum()) != 0.0:
        raise TorchMDNetError(f"{path}: the model adds its training mean ({float(model.mean.sum()):g}) to each "
                              "structure's total energy, which has no per-atom form; train with standardize false "
                              "(an Atomref prior carries per-element energies)")
    inputs = [name for name in ("charge", "spin") if hparams.get(name)]
    if inputs:
        raise TorchMDNetError(f"{path}: the model was trained with total {' and '.join(inputs)} as input, which the "
                              "pair style does not pass")
    priors = list(model.prior_model or [])
    others = [type(p).__name__ for p in priors if not isinstance(p, Atomref)]
    if others:
        raise TorchMDNetError(f"{path}: prior(s) {', '.join(others)} act on the total energy with their own "
                              "neighbour lists; only Atomref priors deploy")


def type_names_of(model) -> list[str]:
    """Elements H .. the model's largest atomic number (its embedding table's size)."""
    from ase.data import chemical_symbols

    rep = model.representation_model
    embedding = rep.embedding if hasattr(rep, "attention_layers") else rep.tensor_embedding.emb
    max_z = embedding.num_embeddings
    return list(chemical_symbols[1:min(max_z, len(chemical_symbols))])


def check_elements_of(model, type_names: list[str]) -> tuple[str, ...]:
    """Elements of the deploy check: those the Atomref prior gives an energy (the training data's), else Cu-Ni."""
    from ase.data import chemical_symbols

    for prior in model.prior_model or []:
        if getattr(prior, "enable", False):
            z = torch.nonzero(prior.atomref.weight.detach().reshape(-1)).reshape(-1).tolist()
            named = [chemical_symbols[i] for i in z if 0 < i < len(chemical_symbols)]
            if named:
                return tuple(named[:4])
    covered = [s for s in CHECK_ELEMENTS if s in type_names]
    return tuple(covered) if covered else tuple(type_names[:2])


# ---------------------------------------------------------------------------------------------
# TensorNet on the pair style's edges


def _warp_only_embedding(a: Tensor, b: Tensor, c: Tensor, d: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    raise RuntimeError("warp kernels are not part of a deployed TensorNet")


def _warp_only_interaction(a: Tensor, b: Tensor, c: Tensor, d: Tensor, e: Tensor, f: Tensor, g: Tensor, h: Tensor,
                           i: Tensor, j: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    raise RuntimeError("warp kernels are not part of a deployed TensorNet")


@contextlib.contextmanager
def pure_torch():
    """torchmd-net's TensorNet module with its pure-torch tensor operations in place of the warp
    custom ops (same arithmetic), for scripting, tracing and eager use of the wrappers; the warp
    branches, never taken with ``opt`` False, become stubs so that TorchScript compiles no warp op."""
    import torchmdnet.models.tensornet as tensornet

    replacements = {"compose_tensor": tensornet._compose_tensor, "decompose_tensor": tensornet._decompose_tensor,
                    "tensor_matmul_o3": tensornet._tensor_matmul_o3, "tensor_matmul_so3": tensornet._tensor_matmul_so3,
                    "fn_tensornet_embedding_message_passing": _warp_only_embedding,
                    "fn_tensornet_interaction_message_passing": _warp_only_interaction}
    original = {name: getattr(tensornet, name, None) for name in replacements}
    for name, function in replacements.items():
        setattr(tensornet, name, function)
    try:
        yield
    finally:
        for name, function in original.items():
            if function is None:
                delattr(tensornet, name)
            else:
                setattr(tensornet, name, function)


def without_warp(model):
    """A copy of ``model`` that takes torchmd-net's pure-torch paths (``opt`` False), to run under ``pure_torch``."""
    import copy

    model = copy.deepcopy(model)
    for module in model.modules():
        if hasattr(module, "opt"):
            module.opt = False
    return model


def _invariants(X: Tensor) -> Tensor:
    """TensorNet's output features of node tensors X [N, 3, 3, F]: 3 I², |A|², |S|² of each channel
    (trace, antisymmetric and symmetric traceless parts), as TensorNet.forward ends."""
    A = 0.5 * (X - X.transpose(1, 2))
    I = X.diagonal(dim1=1, dim2=2).mean(-1)
    S = X - A - I[:, None, None, :] * torch.eye(3, dtype=X.dtype, device=X.device)[None, :, :, None]
    return torch.cat((3 * I**2, (A**2).sum((1, 2)), (S**2).sum((1, 2))), dim=-1)


class TensorNetEdgeEnergies(torch.nn.Module):
    """Per-atom energies of a TorchMD_Net TensorNet from a given edge list (no neighbour search)."""

    def __init__(self, model, type_numbers: list[int]):
        super().__init__()
        model = without_warp(model)
        rep = model.representation_model
        self.distance_expansion = rep.distance_expansion
        self.tensor_embedding = rep.tensor_embedding
        self.layers = rep.layers
        self.out_norm, self.linear, self.act = rep.out_norm, rep.linear, rep.act
        self.output_network = model.output_model.output_network
        self.priors = torch.nn.ModuleList(list(model.prior_model or []))
        self.register_buffer("std", model.std.detach().clone())
        self.register_buffer("type_numbers", torch.tensor(type_numbers, dtype=torch.long))

    def forward(self, atom_types: Tensor, edge_index: Tensor, edge_vec: Tensor) -> Tensor:
        z = self.type_numbers.index_select(0, atom_types)
        n = z.shape[0]
        # TensorNet's own neighbour list has every atom's self-loop at distance 0
        loops = torch.arange(n, dtype=edge_index.dtype, device=edge_index.device)
        edge_index = torch.cat([edge_index, torch.stack([loops, loops])], dim=1)
        length = torch.linalg.vector_norm(edge_vec, dim=1)
        edge_weight = torch.cat([length, torch.zeros(n, dtype=edge_vec.dtype, device=edge_vec.device)])
        # torchmd-net's edge vectors point from the neighbour (row 1) to the centre (row 0): the
        # pair style's, reversed (an SO(3) TensorNet is not invariant under that inversion)
        unit = torch.cat([-edge_vec / length.unsqueeze(1), torch.zeros(n, 3, dtype=edge_vec.dtype, device=edge_vec.device)])
        edge_attr = self.distance_expansion(edge_weight)
        empty = torch.empty(0, dtype=torch.long, device=edge_index.device)
        graph = {"edge_index": edge_index, "row_data": empty, "row_indices": empty, "row_indptr": empty,
                 "col_data": empty, "col_indices": empty, "col_indptr": empty}
        X = self.tensor_embedding(z, graph, edge_weight, unit, edge_attr)
        charge = torch.zeros_like(z)
        for layer in self.layers:
            X = layer(X, graph, edge_weight, edge_attr, charge)
        x = self.act(self.linear(self.out_norm(_invariants(X))))
        energy = self.output_network(x) * self.std
        batch = torch.zeros_like(z)
        for prior in self.priors:
            energy = prior.pre_reduce(energy, z, edge_vec, batch, None)
        return energy.reshape(-1)


class ETEdgeEnergies(torch.nn.Module):
    """Per-atom energies of a TorchMD_Net equivariant transformer from a given edge list."""

    def __init__(self, model, type_numbers: list[int]):
        super().__init__()
        rep = model.representation_model
        self.embedding, self.distance_expansion = rep.embedding, rep.distance_expansion
        self.neighbor_embedding = rep.neighbor_embedding  # a module or None
        self.attention_layers, self.out_norm = rep.attention_layers, rep.out_norm
        self.output_network = model.output_model.output_network
        self.priors = torch.nn.ModuleList(list(model.prior_model or []))
        self.register_buffer("std", model.std.detach().clone())
        self.register_buffer("type_numbers", torch.tensor(type_numbers, dtype=torch.long))

    def forward(self, atom_types: Tensor, edge_index: Tensor, edge_vec: Tensor) -> Tensor:
        z = self.type_numbers.index_select(0, atom_types)
        n = z.shape[0]
        length = torch.linalg.vector_norm(edge_vec, dim=1)
        x = self.embedding(z)
        if self.neighbor_embedding is not None:
            # NeighborEmbedding's sum over neighbours, without its self-loop removal by index (which
            # would also drop an atom's own periodic image, a real neighbour in the local layout)
            embed = self.neighbor_embedding
            weights = embed.distance_proj(self.distance_expansion(length)) * embed.cutoff(length).view(-1, 1)
            messages = weights * embed.embedding(z).index_select(0, edge_index[1])
            summed = torch.zeros(n, x.shape[1], dtype=x.dtype, device=x.device).index_add(0, edge_index[0], messages)
            x = embed.combine(torch.cat([x, summed], dim=1))
        # the attention sums at row 1 over row 0, edge vectors pos[row 0] - pos[row 1], self-loops
        # included (its neighbour list has them): the pair style's edges with rows swapped
        loops = torch.arange(n, dtype=edge_index.dtype, device=edge_index.device)
        index = torch.cat([torch.stack([edge_index[1], edge_index[0]]), torch.stack([loops, loops])], dim=1)
        weight = torch.cat([length, torch.zeros(n, dtype=edge_vec.dtype, device=edge_vec.device)])
        unit = torch.cat([edge_vec / length.unsqueeze(1), torch.zeros(n, 3, dtype=edge_vec.dtype, device=edge_vec.device)])
        edge_attr = self.distance_expansion(weight)
        vec = torch.zeros(n, 3, x.shape[1], dtype=x.dtype, device=x.device)
        for attention in self.attention_layers:
            dx, dvec = attention(x, vec, index, weight, edge_attr, unit)
            x, vec = x + dx, vec + dvec
        x = self.out_norm(x)
        for block in self.output_network:
            # GatedEquivariantBlock.forward without its warning for zero vector features: in the ghost
            # layout every outermost ghost has them (no edges of its own), and LAMMPS would print it each step
            vec1_buffer = block.vec1_proj(vec)
            present = (vec1_buffer != 0).flatten(1).any(dim=1)
            vec1 = torch.zeros(n, vec1_buffer.shape[2], dtype=x.dtype, device=x.device)
            vec1[present] = torch.linalg.vector_norm(vec1_buffer[present], dim=-2)
            x, gate = torch.split(block.update_net(torch.cat([x, vec1], dim=-1)), block.out_channels, dim=-1)
            vec = gate.unsqueeze(1) * block.vec2_proj(vec)
            if block.act is not None:
                x = block.act(x)
        energy = x * self.std
        batch = torch.zeros_like(z)
        for prior in self.priors:
            energy = prior.pre_reduce(energy, z, edge_vec, batch, None)
        return energy.reshape(-1)


def edge_energies(model, type_numbers: list[int]) -> torch.nn.Module:
    """The per-atom energy module of ``model`` on a given edge list (TensorNet or equivariant transformer)."""
    if hasattr(model.representation_model, "attention_layers"):
        return ETEdgeEnergies(model, type_numbers)
    return TensorNetEdgeEnergies(model, type_numbers)


class TorchMDNetGhost(torch.nn.Module):
    """The contract's TorchScript forward (ghost layout: edge vectors pos[j] - pos[i], no cell)."""

    def __init__(self, model, type_numbers: list[int]):
        super().__init__()
        self.energies = edge_energies(model, type_numbers)

    def forward(self, pos: Tensor, edge_index: Tensor, atom_types: Tensor, nlocal: int) -> Tensor:
        edge_vec = pos.index_select(0, edge_index[1]) - pos.index_select(0, edge_index[0])
        return self.energies(atom_types, edge_index, edge_vec)


class TorchMDNetLocal(LocalLayout):
    """pair_nequip's local layout around a torchmd-net model (``LocalLayout``)."""

    def __init__(self, model, type_numbers: list[int], model_dtype: str = "float64"):
        super().__init__(model_dtype)
        self.energies = edge_energies(model, type_numbers)

    def atomic_energies(self, data: dict[str, Tensor], edge_vec: Tensor) -> Tensor:
        return self.energies(data["atom_types"], data["edge_index"], edge_vec)


# ---------------------------------------------------------------------------------------------
# reference: torchmd-net's own model, neighbour list and forces


def _torchmdnet_calculator_class():
    from ase.calculators.calculator import Calculator, all_changes

    class TorchMDNetCalculator(Calculator):
        """TorchMD_Net.forward on the whole structure: its own neighbour list and periodic box
        (a supercell where a cell is narrower than 2 cutoffs, as its neighbour list requires),
        forces from its derivative. Stress: central differences of the energy over strains, in
        float64 (a copy of the model) whatever the model's dtype.

        TensorNet runs on torchmd-net's pure-torch path (the one it takes without warp-lang): its
        warp kernels give float64 energies that differ from that path by ~3e-7 eV per 100 atoms,
        above the deploy check's 1e-8."""

        implemented_properties = ["energy", "forces", "stress"]
        strain_step = 1e-5  # central difference: error ~h² E''' / V, ~1e-11 eV/Å³ here

        def __init__(self, model, **kwargs):
            super().__init__(**kwargs)
            self.model = without_warp(model)
            self.dtype = next(model.parameters()).dtype
            self.cutoff = float(model.representation_model.cutoff_upper)
            self.max_pairs_per_atom = self.model.representation_model.distance.max_num_pairs
            # the strained energies in float64 whatever the model's dtype: a float32 energy difference
            # over a 1e-5 strain is rounding noise; energies alone, so no derivative
            self.strain_model = without_warp(model).double()
            self.strain_model.derivative = False

        def _evaluate(self, atoms, model, dtype: torch.dtype):
            device = next(model.parameters()).device  # a model trained on a GPU is tested there
            z = torch.tensor(atoms.numbers, dtype=torch.long, device=device)
            pos = torch.tensor(atoms.positions, dtype=dtype, device=device)
            box = torch.tensor(atoms.cell.array, dtype=dtype, device=device) if atoms.pbc.all() else None
            # the trained cap on neighbours per atom (torchmd-train's default 32) makes torchmd-net stop
            # where the deployed model, which has no cap, runs: room for every atom here
            distance = model.representation_model.distance
            distance.max_num_pairs = -max(abs(self.max_pairs_per_atom), min(len(atoms), 1024))
            try:
                with pure_torch():
                    energy, neg_dy = model(z, pos, box=box)
            except (RuntimeError, AssertionError) as err:  # e.g. a box beyond its neighbour list's reduced form
                from lmpbench.deploy import DeployError

                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise DeployError(f"torchmd-net's own model cannot evaluate this structure: {first}") from None
            return float(energy.detach().sum()), neg_dy.detach().double().cpu().numpy()

        def _supercell(self, atoms):
            if not atoms.pbc.any():
                return atoms, 1
            if not atoms.pbc.all():
                from lmpbench.deploy import DeployError

                raise DeployError("torchmd-net's periodic box is all-periodic or none; this structure is partly periodic")
            widths = atoms.cell.volume / np.linalg.norm(np.cross(atoms.cell[[1, 2, 0]], atoms.cell[[2, 0, 1]]), axis=1)
            repeat = [int(np.ceil(2 * self.cutoff / w + 1e-9)) for w in widths]
            return atoms.repeat(repeat), int(np.prod(repeat))

        def _strained_energy(self, atoms, strain: np.ndarray) -> float:
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
            with torch.no_grad():
                return self._evaluate(strained, self.strain_model, torch.float64)[0]

        def _stress(self, atoms) -> np.ndarray:
            # lower-triangular strains keep torchmd-net's box form; the stress is symmetric
            h, derivative = self.strain_step, np.zeros((3, 3))
            for a, b in ((0, 0), (1, 1), (2, 2), (1, 0), (2, 0), (2, 1)):
                unit = np.zeros((3, 3))
                unit[a, b] = h
                derivative[a, b] = derivative[b, a] = (
                    self._strained_energy(atoms, unit) - self._strained_energy(atoms, -unit)) / (2 * h)
            sigma = derivative / atoms.get_volume()
            return sigma[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            big, copies = self._supercell(self.atoms)
            energy, forces = self._evaluate(big, self.model, self.dtype)
            self.results = {"energy": energy / copies, "forces": forces[: len(self.atoms)]}
            if "stress" in properties:
                self.results["stress"] = self._stress(big) if self.atoms.pbc.all() else np.zeros(6)

    return TorchMDNetCalculator


def calculator(path: Path, device: str = "cpu"):
    """The reference ASE calculator of a torchmd-net checkpoint (torchmd-net's full model)."""
    return _torchmdnet_calculator_class()(load_model(path).to(device))


# ---------------------------------------------------------------------------------------------
# deploy source


def _type_numbers(type_names: list[str]) -> list[int]:
    from ase.data import atomic_numbers

    return [atomic_numbers[name] for name in type_names]


def export_ghost(source, out: Path, device: str, provenance: dict) -> None:
    from lmpbench.contract import METADATA_FILE, ModelMetadata, torch_functions_unwrapped

    meta = source.metadata
    metadata = ModelMetadata(r_max=meta.r_max, type_names=meta.type_names, num_layers=meta.num_layers,
                             model_dtype=meta.model_dtype, extra=provenance)
    with pure_torch(), torch_functions_unwrapped():  # torchmd-net imports torch_geometric
        scripted = torch.jit.script(TorchMDNetGhost(source.load(), _type_numbers(meta.type_names)).to(device))
    torch.jit.save(scripted, str(out), _extra_files={METADATA_FILE: metadata.to_json()})


def export_aoti_local(source, out: Path, device: str, provenance: dict) -> None:
    meta = source.metadata
    export_local(TorchMDNetLocal(source.load(), _type_numbers(meta.type_names), meta.model_dtype), source, out, device,
                 provenance, tracing=pure_torch)


def checkpoint_source(path: Path):
    """The deploy source of a torchmd-net checkpoint: metadata, exporters, torchmd-net's calculator."""
    from lmpbench.contract import ModelMetadata
    from lmpbench.deploy import SourceModel, sha256

    try:
        model = load_model(path)
    except Exception as err:  # torchmd-net raises many kinds (KeyError, RuntimeError, ...) for a bad checkpoint
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TorchMDNetError(f"{path} is not a loadable torchmd-net checkpoint: {first}") from None
    refuse_unsupported(path, model, hyperparameters(path))
    dtype = {torch.float64: "float64", torch.float32: "float32"}.get(next(model.parameters()).dtype)
    if dtype is None:
        raise TorchMDNetError(f"{path}: precision {next(model.parameters()).dtype} does not deploy (64 or 32 do)")
    names = type_names_of(model)
    rep = model.representation_model
    transformer = hasattr(rep, "attention_layers")
    # message-passing depth: the interactions, and the embedding's sum over neighbours before them
    layers = len(rep.attention_layers) + (rep.neighbor_embedding is not None) if transformer else len(rep.layers) + 1
    metadata = ModelMetadata(r_max=float(rep.cutoff_upper), type_names=names, num_layers=max(1, layers),
                             model_dtype=dtype)
    # the transformer's attention sums with a size read from the data (index.max()), which AOTInductor cannot trace
    targets = ("torchscript-ghost",) if transformer else ("aoti-local", "torchscript-ghost")
    return SourceModel(path, "torchmdnet", metadata, sha256(path), targets,
                       lambda: model, architecture="torchmdnet",
                       exporters={"aoti-local": export_aoti_local, "torchscript-ghost": export_ghost},
                       calculator=lambda: _torchmdnet_calculator_class()(model),
                       reference="torchmd-net's own model (TorchMD_Net.forward, its neighbour list, derivative forces)",
                       check_elements=check_elements_of(model, names))


# ---------------------------------------------------------------------------------------------
# training: torchmd-net's own trainer (torchmd-train) on TensorNet and the equivariant transformer,
# as the registry entries "tensornet" and "equivariant-transformer" (torchmd-net's model names)
#
# torchmd-train reads its data through its dataset classes, none of which reads extended XYZ; the
# training step converts the split's frames into its HDF5 format (run/data.h5: per atom count a group
# of "types" (atomic numbers), "pos", "energy", "forces") with a splits file (run/splits.npz: the
# training frames, then the validation frames; no test frames, lmpbench tests on the dataset's test
# split). Its HDF5 class stores values as float32 (positions to ~1e-6 Å, the energies below to
# ~1e-7 eV); the model trains in float64 (precision 64).
#
# Energies: TensorNet's output starts near zero, and neither torchmd-net's HDF5 dataset nor its
# trainer offers a per-element energy reference (its Atomref prior takes one only from datasets
# that define it; `standardize` adds a mean to the total, which does not deploy). So the data
# written holds E - shift x N (shift: the training frames' mean energy per atom, as nequip's and
# sevenn's per-atom energy shift), and after training the kept checkpoint gets the shift as
# torchmd-net's own Atomref prior (every element of the system, not trainable): the file alone is
# the model of the labels' energies, loaded by torchmd-net's load_model as any checkpoint with an
# Atomref. The energy loss is on the total; its weight 1/N² makes it the per-atom energy MSE.
# Periodic data: torchmd-net takes one box for all frames (box_vecs), in its lower-triangular form.

DEFAULTS = {
    "molecule": {"num_layers": 2, "num_features": 32, "batch_size": 4, "learning_rate": 0.001, "model_dtype": "float64"},
    "periodic": {"num_layers": 2, "num_features": 16, "batch_size": 2, "learning_rate": 0.001, "model_dtype": "float64"},
}
# torchmd-train's options of each model trained here, besides the common ones. The output model
# "Scalar" is an energy summed over atoms (torchmd-net makes it EquivariantScalar for the
# transformer by itself); the transformer's heads divide both default feature widths
MODEL_OPTIONS = {
    "tensornet": {"equivariance_invariance_group": "O(3)"},
    "equivariant-transformer": {"num_heads": 8, "attn_activation": "silu", "distance_influence": "both",
                                "neighbor_embedding": True},
}
UNLIMITED_EPOCHS = 1_000_000  # --max-minutes without --max-epochs: lmpbench stops the trainer
DATA_FILE, SPLITS_FILE, REFERENCE_FILE = "data.h5", "splits.npz", "energy_reference.json"
RUN = "run"  # lmpbench train's run folder, where the data is written (torchmd-train runs in the training folder)


def _frames(path: Path) -> list:
    from ase.io import read

    from lmpbench.architectures import ArchitectureError

    try:
        return read(str(path), ":")
    except Exception as err:  # ASE raises many kinds for unreadable files
        raise ArchitectureError(f"cannot read {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


def _box(frames: list) -> list | None:
    """The one periodic box of ``frames`` (torchmd-net's box_vecs), None when none is periodic."""
    from lmpbench.architectures import ArchitectureError

    periodic = {bool(a.pbc.all()) for a in frames}
    if any(a.pbc.any() and not a.pbc.all() for a in frames) or len(periodic) > 1:
        raise ArchitectureError("torchmd-net takes frames that are all periodic in x, y and z, or none")
    if not periodic.pop():
        return None
    cell = frames[0].cell.array
    if any(not np.allclose(a.cell.array, cell, atol=1e-6) for a in frames):
        raise ArchitectureError("torchmd-net's trainer takes one periodic box for all frames; these frames have several")
    if abs(cell[0, 1]) > 1e-9 or abs(cell[0, 2]) > 1e-9 or abs(cell[1, 2]) > 1e-9:
        raise ArchitectureError("torchmd-net's box must be lower triangular (a along x, b in the xy plane)")
    return cell.tolist()


def torchmdnet_config(request, model: str) -> dict:
    """torchmd-train's YAML (as a dict) for ``request`` and torchmd-net's ``model`` (a key of
    MODEL_OPTIONS), float64, lmpbench's HDF5 conversion."""
    from ase.data import atomic_numbers
    from ase.io import read

    from lmpbench.architectures import ArchitectureError

    hp = request.hyperparameters
    if request.val_file is None:
        raise ArchitectureError("torchmd-train needs the dataset's validation split")
    precision = {"float64": 64, "float32": 32}.get(hp.get("model_dtype", "float64"))
    if precision is None:
        raise ArchitectureError(f"torchmd-net trains in float64 or float32, not {hp['model_dtype']}")
    first = read(str(request.train_file), index=0)
    return {
        "dataset": "HDF5",
        "dataset_root": f"{RUN}/{DATA_FILE}",
        "splits": f"{RUN}/{SPLITS_FILE}",
        "model": model,
        "precision": precision,
        "embedding_dimension": hp["num_features"],
        "num_layers": hp["num_layers"],
        "num_rbf": 32,
        "rbf_type": "expnorm",
        "trainable_rbf": False,
        "activation": "silu",
        "cutoff_lower": 0.0,
        "cutoff_upper": float(request.cutoff_A),
        "max_z": max(atomic_numbers[name] for name in request.type_names) + 1,
        "max_num_neighbors": 128,
        "derivative": True,
        "output_model": "Scalar",
        "reduce_op": "add",
        "standardize": False,  # its mean is added to the total, which does not deploy; see the energy reference
        "box_vecs": _box([first]),
        "num_epochs": request.max_epochs if request.max_epochs is not None else UNLIMITED_EPOCHS,
        "batch_size": hp["batch_size"],
        "inference_batch_size": hp["batch_size"],
        "lr": hp["learning_rate"],
        "lr_patience": 5,
        "lr_factor": 0.6,
        "lr_min": 1e-7,
        "early_stopping_patience": UNLIMITED_EPOCHS,  # as nequip's entry: no early stop
        # the energy loss is on the total: 1/N² makes it the per-atom energy MSE (nequip's and sevenn's)
        "y_weight": (1.0 / len(first) ** 2) if request.has_energy else 0.0,
        "neg_dy_weight": 1.0,
        "save_interval": 1,
        "test_interval": -1,
        "num_workers": 0,  # the data is small and preloaded; workers would compete for the cores
        "ngpus": 1,
        "seed": request.seed,
        **MODEL_OPTIONS[model],
    }


def option_overrides(max_epochs: int | None, max_minutes: float | None, seed: int | None) -> dict:
    overrides = {}
    if max_epochs is not None:
        overrides["num_epochs"] = max_epochs
    elif max_minutes is not None:
        overrides["num_epochs"] = UNLIMITED_EPOCHS  # until lmpbench stops it
    if seed is not None:
        overrides["seed"] = seed
    return overrides


def prepare_data(request):
    """Read and check the split's frames (before the training folder is touched); returns the
    writer of run/data.h5, run/splits.npz and run/energy_reference.json."""
    import json

    from lmpbench.architectures import ArchitectureError

    train, val = _frames(request.train_file), _frames(request.val_file)
    frames = train + val
    if not train or not val:
        raise ArchitectureError("torchmd-train needs at least one training and one validation frame")
    _box(frames)
    unknown = sorted({s for a in frames for s in a.get_chemical_symbols()} - set(request.type_names))
    if unknown:
        raise ArchitectureError(f"the data has element(s) {', '.join(unknown)} beyond the model's {', '.join(request.type_names)}")
    shift = float(np.mean([a.get_potential_energy() / len(a) for a in train])) if request.has_energy else 0.0
    # groups by atom count, in name order (the order torchmd-net's HDF5 class indexes them)
    groups: dict[str, list[int]] = {}
    for i, atoms in enumerate(frames):
        groups.setdefault(f"natoms_{len(atoms):08d}", []).append(i)
    order = [i for name in sorted(groups) for i in groups[name]]
    position = {frame: k for k, frame in enumerate(order)}
    natoms = sorted({len(a) for a in frames})

    def write(run_dir: Path) -> None:
        import h5py

        with h5py.File(run_dir / DATA_FILE, "w") as f:
            for name in sorted(groups):
                members = [frames[i] for i in groups[name]]
                group = f.create_group(name)
                group["types"] = np.array([a.numbers for a in members], dtype=np.int64)
                group["pos"] = np.array([a.positions for a in members], dtype=np.float64)
                group["forces"] = np.array([a.get_forces() for a in members], dtype=np.float64)
                if request.has_energy:
                    group["energy"] = np.array([a.get_potential_energy() - shift * len(a) for a in members])
        np.savez(run_dir / SPLITS_FILE, idx_train=np.array([position[i] for i in range(len(train))], dtype=np.int64),
                 idx_val=np.array([position[i] for i in range(len(train), len(frames))], dtype=np.int64),
                 idx_test=np.array([], dtype=np.int64))
        reference = {"per_atom_energy_shift_eV": shift, "elements": list(request.type_names),
                     "atoms_per_frame": natoms[0] if len(natoms) == 1 else None, "has_energy": request.has_energy,
                     "note": "the energies in data.h5 are E - shift x N; the kept checkpoint holds shift as an Atomref prior"}
        (run_dir / REFERENCE_FILE).write_text(json.dumps(reference, indent=1) + "\n")

    return write


def finish_checkpoint(checkpoint: Path, run_dir: Path) -> None:
    """Fold the energy shift taken out of the data into the kept checkpoint, as torchmd-net's Atomref
    prior (hyperparameters prior_model/prior_args and the state of ``model.prior_model.K``)."""
    import json
    import os

    from ase.data import atomic_numbers

    reference = json.loads((run_dir / REFERENCE_FILE).read_text())
    if not reference["has_energy"]:
        return  # forces only: no energy zero to restore
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=False)
    hparams = state["hyper_parameters"]
    max_z = int(hparams["max_z"])
    dtype = next(v.dtype for k, v in state["state_dict"].items() if v.is_floating_point())
    energies = torch.zeros(max_z, 1, dtype=dtype)
    for name in reference["elements"]:
        energies[atomic_numbers[name]] = reference["per_atom_energy_shift_eV"]
    priors = hparams.get("prior_model") or []
    priors = list(priors) if isinstance(priors, list) else [priors]
    prior_args = list(hparams.get("prior_args") or [])
    index = len(priors)
    hparams["prior_model"] = priors + [{"Atomref": {"max_z": max_z}}]
    hparams["prior_args"] = prior_args + [{"max_z": max_z, "trainable": False, "enable": True}]
    for prefix in ("model.", "ema_model.") if any(k.startswith("ema_model.") for k in state["state_dict"]) else ("model.",):
        state["state_dict"][f"{prefix}prior_model.{index}.atomref.weight"] = energies.clone()
        state["state_dict"][f"{prefix}prior_model.{index}.initial_atomref"] = energies.clone()
    partial = checkpoint.with_name(checkpoint.name + ".partial")
    torch.save(state, str(partial))
    os.replace(partial, checkpoint)


def find_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint of the epoch with the lowest validation loss among those torchmd-train kept
    (its files epoch=E-val_loss=L.ckpt; the loss read from its metrics.csv, the file name's 4
    decimals only where that has no row)."""
    import re

    files = {}
    for path in run_dir.glob("epoch=*.ckpt"):
        match = re.match(r"epoch=(\d+)-val_loss=([-+0-9.eE]+?)(?:-test_loss=.*)?\.ckpt$", path.name)
        if match:
            files[path] = (int(match.group(1)), float(match.group(2)))
    if not files:
        return None
    logged = {row["epoch0"]: row["val_loss"] for row in _metrics_rows(run_dir) if row.get("val_loss") is not None}
    return min(files, key=lambda p: (logged.get(files[p][0], files[p][1]), files[p][0]))


def _metrics_rows(run_dir: Path) -> list[dict]:
    import csv

    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []

    def number(row, key):
        try:
            return float(row[key])
        except (KeyError, TypeError, ValueError):
            return None

    rows = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            epoch = number(row, "epoch")
            if epoch is None:
                continue
            entry = rows.setdefault(int(epoch), {"epoch0": int(epoch)})
            for key, column in (("train_loss", "train_total_mse_loss"), ("val_loss", "val_total_mse_loss"),
                                ("val_forces", "val_neg_dy_l1_loss"), ("val_energy", "val_y_l1_loss")):
                value = number(row, column)
                if value is not None:
                    entry[key] = value
    return [rows[e] for e in sorted(rows)]


def read_curve(run_dir: Path) -> list[dict]:
    """One row per epoch from torchmd-train's metrics.csv: its training loss (weighted MSE sum) and
    the validation MAEs in meV (force components; the total energy's per atom, when every frame has
    the same atom count)."""
    import json

    natoms = None
    if (run_dir / REFERENCE_FILE).is_file():
        natoms = json.loads((run_dir / REFERENCE_FILE).read_text()).get("atoms_per_frame")
    return [{"epoch": row["epoch0"] + 1, "train_loss": row.get("train_loss"),
             "val_forces_mae_meV_A": 1000.0 * row["val_forces"],
             "val_energy_mae_meV_atom": (1000.0 * row["val_energy"] / natoms
                                         if natoms and row.get("val_energy") is not None else None)}
            for row in _metrics_rows(run_dir) if row.get("val_forces") is not None]


def checkpoint_epoch(checkpoint: Path) -> int | None:
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=False)
    epoch = state.get("epoch") if isinstance(state, dict) else None
    return int(epoch) + 1 if epoch is not None else None


def _register(name: str, description: str):
    from lmpbench.architectures import Architecture, register

    return register(Architecture(
        name=name,
        description=description,
        checkpoint_suffixes=(".ckpt",),
        train_script="torchmd-train",
        defaults=DEFAULTS,
        build_config=lambda request: torchmdnet_config(request, name),
        option_overrides=option_overrides,
        train_arguments=lambda config_dir, config_name, run_dir: ["--conf", str(config_dir / f"{config_name}.yaml"),
                                                                  "--log-dir", str(run_dir)],
        find_checkpoint=find_checkpoint,
        read_curve=read_curve,
        calculator=calculator,
        checkpoint_epoch=checkpoint_epoch,
        prepare_data=prepare_data,
        finish_checkpoint=finish_checkpoint,
        # torchmd-train picks the GPU whenever one is visible: a cpu training hides it
        train_environment=lambda accelerator: {"CUDA_VISIBLE_DEVICES": ""} if accelerator == "cpu" else {},
        stops_at_max_minutes=False,
        checkpoint_note="torchmd-net's trainer checkpoint with the data's per-atom energy shift added as an Atomref "
                        "prior (see run/energy_reference.json); torchmdnet.models.model.load_model reads it",
    ))


TENSORNET = _register("tensornet", "TensorNet (O(3)-equivariant Cartesian tensor message passing), torchmd-net 3.1 "
                                   "and its trainer torchmd-train (float64)")
EQUIVARIANT_TRANSFORMER = _register("equivariant-transformer", "TorchMD-Net's equivariant transformer (attention "
                                    "over neighbours, scalar and vector features), torchmd-net 3.1 and its trainer "
                                    "torchmd-train (float64)")
