"""CHGNet (``chgnet`` 0.4): pretrained universal models whose weights ship in the wheel.

``lmpbench deploy chgnet -o model.pt2`` (or ``chgnet:0.3.0``, ``chgnet:0.2.0``,
``chgnet:r2scan``, the names ``CHGNet.load`` takes) builds the model from the checkpoint
inside the installed ``chgnet`` package (no network), wraps it into the pair style's local
layout and compiles it with AOTInductor (nequip's make_fx export route; forces and virial
inside the compiled graph). The reference of the deploy check is chgnet's own ASE calculator.

CHGNet builds two graphs from a pymatgen structure: the atom graph (pairs closer than
``atom_graph_cutoff``, 6 Å for 0.3.0, 5 Å for 0.2.0) and the bond graph, whose nodes are the
atom-graph bonds shorter than ``bond_graph_cutoff`` (3 Å) and whose edges are the angles
between two such bonds sharing a centre atom. Here both are rebuilt from the edge list the
pair style passes (row 0 the centre, row 1 the neighbour, every pair both ways):

- bonds are the directed edges; CHGNet keeps one feature per undirected bond, which here is
  carried by both directions (a bond update adds the messages of the edge and of its reverse,
  found by sorting (centre, neighbour, cell shift) keys);
- angles are the ordered pairs of distinct short edges with the same centre, as CHGNet's
  ``line_graph_adjacency_list`` enumerates them.

The per-atom energy is CHGNet's readout MLP of each atom (before its sum pooling) plus the
AtomRef composition energy of the atom's element; their sum over atoms is the calculator's
energy. Forces are -dE/dpos, scattered from dE/d(edge_vec); the virial is
-Σ_edges edge_vec ⊗ dE/d(edge_vec), as in the SevenNet adapter.

One MPI rank only (``SINGLE_RANK_REASON``, counts measured on the 32-atom CuAgAuPd cell of the
tests). The receptive field of an atom's energy is n_conv (4) atom-graph hops: each of the 3
bond updates reaches one bond further (a bond shorter than 3 Å, one hop) and is fed by atom
features one convolution behind, so a bond/angle chain ends, like the atom chain, at atoms 3
hops out whose edges must be complete; the ghost layout would need num_layers = 4 and a
4 × 6 = 24 Å ghost shell.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch

from lmpbench.architectures.local_layout import LocalLayout, export_local

# lmpbench's name -> (file under chgnet/pretrained/, what it is); the names CHGNet.load takes
PRETRAINED = {
    "0.3.0": ("0.3.0/chgnet_0.3.0_e29f68s314m37.pth.tar", "CHGNet 0.3.0, MPtrj, 94 elements (chgnet's default)"),
    "0.2.0": ("0.2.0/chgnet_0.2.0_e30f77s348m32.pth.tar", "CHGNet 0.2.0 (the paper's weights), MPtrj, 94 elements"),
    "r2scan": ("r2scan/chgnet_r2scan_transfer_learning_e15f36s161m23.pth.tar",
               "CHGNet r2SCAN transfer learning (MP-r2SCAN), 94 elements"),
}
DEFAULT_PRETRAINED = "0.3.0"
CHECK_ELEMENTS = ("Cu", "Ag", "Au", "Pd")  # the deploy check's alloy (fcc metals MPtrj covers)
MAX_SHIFT = 31  # |cell shift| per axis that the reverse-edge keys encode (6 bits each)
# Inductor lowers torch.sort with int16 indices unless told otherwise, and the compiled model then
# checks at run time that the sorted length is below 32,767. The graphs here sort the edges and the
# short bonds (12 per atom in a close-packed metal), so such a model refused cells above about
# 2,700 atoms ("Expected u0 <= 32766"); with this setting the indices are int32 (bound 2^31 - 1).
LARGE_SORTS = {"triton.decompose_sort_ops": True}


class PretrainedError(ValueError):
    """Unknown pretrained name, or one whose weights are not in the installed wheel."""


def checkpoint_path(name: str) -> Path:
    """The checkpoint of pretrained ``name`` inside the installed chgnet package; never downloads."""
    import chgnet

    if name not in PRETRAINED:
        raise PretrainedError(f"unknown CHGNet model {name!r}; available offline: "
                              f"{', '.join('chgnet:' + n for n in PRETRAINED)}")
    path = Path(chgnet.__file__).parent / "pretrained" / PRETRAINED[name][0]
    if not path.is_file():
        raise PretrainedError(f"chgnet:{name}: checkpoint {path} is missing from the installed chgnet package")
    return path


def model_args(path: Path) -> dict:
    return torch.load(str(path), map_location="cpu", weights_only=False)["model"]["model_args"]


def load_model(name: str):
    """CHGNet as ``CHGNet.load`` builds it (0.2.0 with its output bias), float32, eval mode."""
    from chgnet.model import CHGNet

    from lmpbench.deploy import default_dtype

    with contextlib.redirect_stdout(io.StringIO()), default_dtype(torch.float32):  # it prints its size
        model = CHGNet.from_file(str(checkpoint_path(name)), mlp_out_bias=name == "0.2.0", version=name)
    return model.float().eval()


def metadata_of(args: dict) -> dict:
    """r_max (the atom-graph cutoff), type names (Z 1..94: the embedding index is Z - 1), layers, dtype."""
    from ase.data import chemical_symbols

    return {"r_max": float(args.get("atom_graph_cutoff", 6)), "type_names": chemical_symbols[1:95],
            "num_layers": int(args.get("n_conv", 4)), "model_dtype": "float32"}


# ---------------------------------------------------------------------------------------------
# the graphs CHGNet needs, from the pair style's edge list


def reverse_edges(edge_index: torch.Tensor, shifts: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """For each edge i->j with cell shift S, the index of the edge j->i with shift -S; the edge
    itself where the list lacks the reverse (a pruned ghost edge, whose bond feature no local
    energy reads)."""
    def key(a, b, s):
        s = s + MAX_SHIFT
        return (((a * n_nodes + b) * 64 + s[:, 0]) * 64 + s[:, 1]) * 64 + s[:, 2]

    forward = key(edge_index[0], edge_index[1], shifts)
    backward = key(edge_index[1], edge_index[0], -shifts)
    ordered, order = torch.sort(forward)
    where = torch.searchsorted(ordered, backward).clamp(max=forward.shape[0] - 1)
    found = torch.index_select(ordered, 0, where) == backward
    return torch.where(found, torch.index_select(order, 0, where), torch.arange(forward.shape[0]))


def angle_pairs(centre: torch.Tensor, length: torch.Tensor, bond_cutoff: float, n_nodes: int):
    """(left, right) edge indices of CHGNet's angles: ordered pairs of distinct edges shorter
    than ``bond_cutoff`` with the same centre atom."""
    short = torch.nonzero(length < bond_cutoff).view(-1)
    owner = torch.index_select(centre, 0, short)
    owner, order = torch.sort(owner, stable=True)
    short = torch.index_select(short, 0, order)
    count = torch.zeros(n_nodes, dtype=torch.int64).index_add_(0, owner, torch.ones_like(owner))
    first = torch.cumsum(count, 0) - count  # where each centre's short edges start in ``short``
    partners = torch.index_select(count, 0, owner)  # per short edge, the short edges of its centre
    left = torch.repeat_interleave(partners)  # position in ``short``, once per partner
    pair_start = torch.cumsum(partners, 0) - partners
    k = torch.arange(left.shape[0]) - torch.index_select(pair_start, 0, left)
    right = torch.index_select(first, 0, torch.index_select(owner, 0, left)) + k
    distinct = torch.nonzero(left != right).view(-1)
    left = torch.index_select(left, 0, distinct)
    right = torch.index_select(right, 0, distinct)
    return torch.index_select(short, 0, left), torch.index_select(short, 0, right)


def scatter_sum(values: torch.Tensor, index: torch.Tensor, rows: int) -> torch.Tensor:
    return values.new_zeros((rows, values.shape[1])).index_add(0, index, values)


# ---------------------------------------------------------------------------------------------
# CHGNet's layers on directed edges (their own forwards aggregate with a bincount whose size
# depends on the data, which the export cannot trace; the arithmetic here is theirs)


def atom_conv(layer, atom, bond, weight, edge_index):
    centre = torch.index_select(atom, 0, edge_index[0])
    neighbour = torch.index_select(atom, 0, edge_index[1])
    messages = layer.twoBody_atom(torch.cat([centre, bond, neighbour], dim=1)) * weight
    new = scatter_sum(messages, edge_index[0], atom.shape[0])
    if layer.use_mlp_out:
        new = layer.mlp_out(new)
    if layer.resnet:
        new = new + atom
    return new if layer.atom_norm is None else layer.atom_norm(new)


def bond_conv(layer, atom, bond, weight, angle, angles, reverse):
    """``angles`` = (centre atom, left edge, right edge); messages go to the left bond, and a
    bond's two directions share them (CHGNet's undirected bond feature)."""
    centre, left, right = angles
    features = torch.cat([torch.index_select(bond, 0, left), torch.index_select(bond, 0, right), angle,
                          torch.index_select(atom, 0, centre)], dim=1)
    update = (layer.twoBody_bond(features) * torch.index_select(weight, 0, left)
              * torch.index_select(weight, 0, right))
    per_edge = scatter_sum(update, left, bond.shape[0])
    new = per_edge + torch.index_select(per_edge, 0, reverse)
    if layer.use_mlp_out:
        new = layer.mlp_out(new)
    if layer.resnet:
        new = new + bond
    if layer.bond_norm is not None:
        new = layer.bond_norm(new)
    # CHGNet skips the bond update of a structure without angles (0.2.0's output bias would move every bond)
    return torch.where(torch.ones_like(left).sum() > 0, new, bond)


def angle_update(layer, atom, bond, angle, angles):
    centre, left, right = angles
    features = torch.cat([torch.index_select(bond, 0, left), torch.index_select(bond, 0, right), angle,
                          torch.index_select(atom, 0, centre)], dim=1)
    new = layer.twoBody_bond(features)
    if layer.resnet:
        new = new + angle
    return new if layer.angle_norm is None else layer.angle_norm(new)


class CHGNetAtomEnergies(torch.nn.Module):
    """CHGNet's per-atom energies (eV, AtomRef included) from atom types (Z - 1), the directed
    edge list, edge vectors pos[j] - pos[i] (+ shift·cell) and each edge's reverse."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.bond_cutoff = float(model.graph_converter.bond_graph_cutoff)
        self.register_buffer("atom_reference", model.composition_model.fc.weight.detach().view(-1).clone())

    def forward(self, atom_types, edge_index, edge_vec, reverse):
        m = self.model
        length = torch.linalg.norm(edge_vec, dim=1)
        # CHGNet's bond vectors point the other way (centre - neighbour); the angle between two is the same
        unit = edge_vec / length.unsqueeze(1)
        left, right = angle_pairs(edge_index[0], length, self.bond_cutoff, atom_types.shape[0])
        angles = (torch.index_select(edge_index[0], 0, left), left, right)
        basis_ag = m.bond_basis_expansion.rbf_expansion_ag(length)
        basis_bg = m.bond_basis_expansion.rbf_expansion_bg(length)
        angle_basis = m.angle_basis_expansion(torch.index_select(unit, 0, left), torch.index_select(unit, 0, right))

        atom = m.atom_embedding(atom_types)
        bond = m.bond_embedding(basis_ag)
        weight_ag, weight_bg = m.bond_weights_ag(basis_ag), m.bond_weights_bg(basis_bg)
        angle = m.angle_embedding(angle_basis)
        for atom_layer, bond_layer, angle_layer in zip(m.atom_conv_layers[:-1], m.bond_conv_layers, m.angle_layers):
            atom = atom_conv(atom_layer, atom, bond, weight_ag, edge_index)
            bond = bond_conv(bond_layer, atom, bond, weight_bg, angle, angles, reverse)
            angle = angle_update(angle_layer, atom, bond, angle, angles)
        atom = atom_conv(m.atom_conv_layers[-1], atom, bond, weight_ag, edge_index)
        if m.readout_norm is not None:
            atom = m.readout_norm(atom)
        return m.mlp(atom).view(-1) + torch.index_select(self.atom_reference, 0, atom_types)


class CHGNetLocal(LocalLayout):
    """pair_nequip's local layout around CHGNet (``LocalLayout``)."""

    def __init__(self, model, model_dtype: str = "float32"):
        super().__init__(model_dtype)
        self.energies = CHGNetAtomEnergies(model)

    def atomic_energies(self, data: dict[str, torch.Tensor], edge_vec: torch.Tensor) -> torch.Tensor:
        edge_index, cell_shift = data["edge_index"], data["edge_cell_shift"]
        reverse = reverse_edges(edge_index, torch.round(cell_shift).to(torch.int64), data["pos"].shape[0])
        return self.energies(data["atom_types"], edge_index, edge_vec, reverse)


def calculator(name: str, device: str = "cpu", model=None):
    """chgnet's own ASE calculator of pretrained ``name`` (or of ``model``, the same CHGNet already
    built), float32 as chgnet computes."""
    from chgnet.model.dynamics import CHGNetCalculator

    from lmpbench.deploy import default_dtype

    model = load_model(name) if model is None else model
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the device
        calc = CHGNetCalculator(model=model, use_device=device)
    calculate = calc.calculate

    def calculate_float32(*args, **kwargs):  # a nequip model loaded before may have left float64 the default
        with default_dtype(torch.float32):
            return calculate(*args, **kwargs)

    calc.calculate = calculate_float32
    return calc


SINGLE_RANK_REASON = ("CHGNet's {layers} atom-graph convolutions of {r_max:g} Å (its bond and angle updates stay "
                      "inside them) need a {depth:g} Å ghost shell in the multi-rank (ghost) layout: with CHGNet 0.3.0 a 32-atom fcc "
                      "cell becomes 6,325 nodes, 305,000 edges and 731,000 angles instead of 1,750 edges and 4,224 "
                      "angles, about 175 times the model's work and memory; several ranks need "
                      "per-layer feature exchange, which pair style mlff does not have yet. Run it on one rank (a "
                      "local-layout AOTInductor file)")


def pretrained_source(name: str, spec: str):
    """The deploy source of pretrained ``name``: metadata, the local-layout exporter, chgnet's calculator."""
    from lmpbench.contract import ModelMetadata
    from lmpbench.deploy import SourceModel, sha256

    path = checkpoint_path(name)
    meta = metadata_of(model_args(path))
    built = []

    def load():
        if not built:
            built.append(load_model(name))
        return built[0]

    metadata = ModelMetadata(**meta)

    def export(source, out: Path, device: str, provenance: dict) -> None:
        export_local(CHGNetLocal(source.load(), source.metadata.model_dtype), source, out, device, provenance,
                     inductor_configs=LARGE_SORTS)

    reason = SINGLE_RANK_REASON.format(layers=meta["num_layers"], r_max=meta["r_max"],
                                       depth=meta["num_layers"] * meta["r_max"])
    return SourceModel(path, "chgnet", metadata, sha256(path), ("aoti-local",), load, architecture="chgnet",
                       exporters={"aoti-local": export}, calculator=lambda: calculator(name, model=load()),
                       reference="chgnet's ASE calculator (CHGNetCalculator)", check_elements=CHECK_ELEMENTS,
                       spec=spec, single_rank_reason=reason)
