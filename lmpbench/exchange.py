"""Per-layer ghost exchange: the model side of the pair style's exchange layout.

A message-passing model deployed for the exchange layout sees the local atoms of an MPI rank
and a ghost shell of one r_max, with edges into local atoms only. Between its layers it calls
``torch.ops.mlff.ghost_exchange`` on the node features: in LAMMPS, pair style mlff fills
every ghost row from the atom's owner (LAMMPS forward communication), and the operator's
derivative ``mlff::ghost_reverse`` adds the gradients of ghost rows to their owners (reverse
communication), so energies, forces and the virial are those of the whole system. Outside
LAMMPS no exchanger is installed and both operators are identities, which is exact when
every node is a local atom (the periodic images then being cell shifts, not ghost rows).

The operators are compiled with the plugin, in ``libmlffexchange.so`` beside it; Python
loads the same library to script or export a model (``load_operators``).

Architectures join with a ``nodes`` module (positions, edges, types, local rows -> per-node
energies) whose layers call the operator where they meet, wrapped by :class:`ExchangeEnergies`
(TorchScript) or :class:`ExchangeForces` (AOTInductor). nequip 0.19 has the hook built in
(every interaction block after the first calls its ``ghost_exchange`` submodule, a no-op by
default), so NequIP and Allegro (strictly local, nothing to exchange) models take the exchange
layout; SevenNet's ``AtomGraphSequential`` is a list of layers into which
:class:`NodeFeatureExchange` is inserted (``lmpbench.architectures.sevenn``). The CHGNet adapter
computes CHGNet's layers itself and exchanges its atom features and, per bond layer, its bond
messages (``lmpbench.architectures.chgnet``). torchmd-net's models run their layers inside one
forward with no such hook (they take the ghost layout).
"""

from __future__ import annotations

import functools

import torch

from lmpbench.plugin import PluginNotBuiltError, plugin_dir

OPERATORS_FILE = "libmlffexchange.so"


def load_operators() -> None:
    """Register ``mlff::ghost_exchange`` and ``mlff::ghost_reverse`` in this process (once)."""
    if hasattr(torch.ops.mlff, "ghost_exchange"):
        return
    path = plugin_dir() / OPERATORS_FILE
    if not path.is_file():
        raise PluginNotBuiltError(f"the ghost-exchange operators are not built ({path} is missing): "
                                  "run `lmpbench plugin build`")
    torch.ops.load_library(str(path))


# The classes below are made once per process and kept (lru_cache): TorchScript caches what
# it compiled per class, and a class made anew for each model could be freed and another take
# its place in such a cache (a scripting failure seen once in a test session may have been that).
@functools.lru_cache(maxsize=None)
def _nequip_hook_class():
    """nequip's ghost-exchange hook calling the mlff operator (built on demand, so that this
    module imports without nequip)."""
    from nequip.data import AtomicDataDict
    from nequip.nn._ghost_exchange_base import GhostExchangeModule

    class NequIPGhostExchange(GhostExchangeModule):
        def forward(self, data: dict[str, torch.Tensor], ghost_included: bool) -> dict[str, torch.Tensor]:
            features = data[self.field]
            ghost_rows = data[AtomicDataDict.ATOM_TYPE_KEY].size(0) - features.size(0)
            if ghost_rows > 0:  # local rows only: ghost rows are placeholders the exchange fills
                features = torch.cat([features, features.new_zeros([ghost_rows] + list(features.shape[1:]))])
            data[self.field] = torch.ops.mlff.ghost_exchange(features)
            return data

    return NequIPGhostExchange


@functools.lru_cache(maxsize=None)
def _local_rows_block_class(block_class: type) -> type:
    """``block_class`` (nequip's InteractionBlock, or its copy inside a packaged model) computing
    local rows only after the first layer.

    nequip's blocks already know the LAMMPS ML-IAP variant of this scheme: when the data holds
    ``lmp_mliap_data``, they compute only the rows of local atoms after the first layer and let
    the hook bring ghost rows back. Here that entry is a tensor with one row per local atom,
    whose length is the number of local atoms, so the same code path works in TorchScript and
    traces with a dynamic number of local atoms."""
    def _get_mliap_num_local(self, data: dict[str, torch.Tensor]) -> int:
        return data["lmp_mliap_data"].size(0)  # nequip's AtomicDataDict.LMP_MLIAP_DATA_KEY (TorchScript takes no closures)

    return type(f"LocalRows{block_class.__name__}", (block_class,), {"_get_mliap_num_local": _get_mliap_num_local})


class ExchangeUnavailableError(RuntimeError):
    """The model has no per-layer hooks the exchange layout can use."""


def enable_nequip_exchange(model, num_layers: int) -> None:
    """Make a nequip model exchange node features between its layers (in place): its no-op
    ghost-exchange hooks call the mlff operator, and its interaction blocks compute local rows
    only when the input holds the local-rows entry. The first block never exchanges: its
    input, the type embedding, is right on ghosts too. Classes are matched by name, since a
    packaged model (``.nequip.zip``) carries its own copies of nequip's modules."""
    load_operators()
    hooks = [(name, m) for name, m in model.named_modules() if type(m).__name__ == "NoOpGhostExchangeModule"]
    blocks = [m for m in model.modules() if type(m).__name__ == "InteractionBlock"]
    if len(blocks) != num_layers or len(hooks) != num_layers:
        raise ExchangeUnavailableError(f"the model has {len(blocks)} interaction blocks and {len(hooks)} ghost-exchange "
                                       f"hooks for {num_layers} layers (a nequip version without per-layer hooks?)")
    hook_class = _nequip_hook_class()
    for name, hook in hooks:
        parent_name, _, attribute = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attribute, hook_class(field=hook.field, irreps_in=hook.irreps_in))
    for block in blocks:
        block.__class__ = _local_rows_block_class(type(block))


def local_rows_key() -> str:
    """The input entry (nequip's ``lmp_mliap_data``) whose length tells the blocks how many
    nodes are local atoms."""
    from nequip.data import AtomicDataDict

    return AtomicDataDict.LMP_MLIAP_DATA_KEY


class NequIPExchangeNodes(torch.nn.Module):
    """A nequip model (with ``enable_nequip_exchange``) on the exchange graph: the energies of
    the local atoms, whose number is the length of ``local_rows``."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.local_rows = local_rows_key()

    def forward(self, pos: torch.Tensor, edge_index: torch.Tensor, atom_types: torch.Tensor,
                local_rows: torch.Tensor) -> torch.Tensor:
        data = {"pos": pos, "edge_index": edge_index, "atom_types": atom_types, self.local_rows: local_rows}
        return self.model(data)["atomic_energy"].reshape(-1)


class NodeFeatureExchange(torch.nn.Module):
    """A layer of a dict-passing model (SevenNet's ``AtomGraphSequential``) that fills the ghost
    rows of ``data[field]`` from their owners."""

    def __init__(self, field: str):
        super().__init__()
        self.field = field

    def forward(self, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        data[self.field] = torch.ops.mlff.ghost_exchange(data[self.field])
        return data


class ExchangeEnergies(torch.nn.Module):
    """torchscript-exchange forward around an architecture's ``nodes`` module
    ``(pos, edge_index, atom_types, local_rows) -> per-node energies`` (local atoms first): the
    energies the contract's forward returns (edges into local atoms only, edge vectors
    pos[j] - pos[i]); the pair style sums the first ``nlocal``."""

    def __init__(self, nodes: torch.nn.Module):
        super().__init__()
        self.nodes = nodes

    def forward(self, pos: torch.Tensor, edge_index: torch.Tensor, atom_types: torch.Tensor, nlocal: int):
        return self.nodes(pos, edge_index, atom_types, atom_types.narrow(0, 0, nlocal))


class ExchangeForces(torch.nn.Module):
    """aoti-exchange model around ``nodes`` (as ``ExchangeEnergies``), on flat tensors:
    ``local_weight`` holds a 1 per local atom (its length is the number of local atoms).
    Returns the local atoms' energies and the forces -d(sum of local energies)/dpos on every node."""

    def __init__(self, nodes: torch.nn.Module):
        super().__init__()
        self.nodes = nodes

    def forward(self, pos, edge_index, atom_types, local_weight):
        with torch.enable_grad():
            pos.requires_grad_(True)
            energies = self.nodes(pos, edge_index, atom_types, local_weight).narrow(0, 0, local_weight.size(0))
            local_energy = (energies * local_weight).sum()
            (grad,) = torch.autograd.grad([local_energy], [pos])
        return energies.reshape(-1, 1), -grad


def example_inputs(atoms, metadata, device: str) -> list[torch.Tensor]:
    """aoti-exchange inputs for ``atoms`` (a periodic cell): its atoms, their images within one
    r_max, edges into the atoms; contiguous, as the pair style passes them (AOTInductor compiles
    for the traced strides)."""
    import numpy as np

    from lmpbench.graphs import ghost_graph

    nodes = ghost_graph(atoms, metadata.type_names, metadata.r_max, 1)
    dtype = torch.float64 if metadata.model_dtype == "float64" else torch.float32
    into_local = nodes.edge_index[:, nodes.edge_index[0] < nodes.nlocal]
    return [torch.tensor(nodes.positions, dtype=dtype).to(device).contiguous(),
            torch.from_numpy(np.ascontiguousarray(into_local)).to(device),
            torch.from_numpy(nodes.atom_types).to(device),
            torch.ones(nodes.nlocal, dtype=dtype, device=device)]


def compile_exchange(wrapper: ExchangeForces, inputs: list[torch.Tensor], out, metadata: dict[str, str],
                     inductor_configs: dict | None = None) -> None:
    """Compile ``wrapper`` as an aoti-exchange file: ``torch.export`` with the backward pass
    traced in (nequip's make_fx route) and dynamic numbers of nodes, edges and local atoms,
    then AOTInductor with ``metadata`` (and the architecture's own ``inductor_configs``)."""
    from nequip.utils.fx import _nequip_make_fx

    fx_model = _nequip_make_fx(wrapper, inputs)
    nodes = torch.export.Dim("num_nodes", min=2, max=torch.inf)
    edges = torch.export.Dim("num_edges", min=2, max=torch.inf)
    local = torch.export.Dim("num_local", min=1, max=torch.inf)
    static = torch.export.Dim.STATIC
    shapes = ({0: nodes, 1: static}, {0: static, 1: edges}, {0: nodes}, {0: local})
    program = torch.export.export(fx_model, tuple(inputs), dynamic_shapes=shapes)
    torch._inductor.aoti_compile_and_package(program, package_path=str(out),
                                             inductor_configs={**(inductor_configs or {}), "aot_inductor.metadata": metadata})
