"""CHGNet (``chgnet`` 0.4): pretrained universal models whose weights ship in the wheel, and
models trained with ``lmpbench train --arch chgnet`` (chgnet's own trainer).

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
  found by sorting (centre, neighbour, cell shift) keys in the local layout, by bond vector in
  the exchange layout);
- angles are the ordered pairs of distinct short edges with the same centre, as CHGNet's
  ``line_graph_adjacency_list`` enumerates them.

The per-atom energy is CHGNet's readout MLP of each atom (before its sum pooling) plus the
AtomRef composition energy of the atom's element; their sum over atoms is the calculator's
energy. Forces are -dE/dpos, scattered from dE/d(edge_vec); the virial is
-Σ_edges edge_vec ⊗ dE/d(edge_vec), as in the SevenNet adapter.

Several MPI ranks: the exchange layout (``aoti-exchange``, ``CHGNetExchangeNodes``): ghosts within
one r_max, edges into local atoms only, and two kinds of rows exchanged with the ghosts' owners,
the atom features before each convolution after the first and, in each bond layer, the angle
messages every atom's short bonds received (a bond shared with a ghost adds those its other end
got on the ghost's owner). The ghost layout would need a num_layers × r_max = 24 Å shell (a
32-atom cell becomes 6,325 nodes and 731,000 angles), so it is not offered.

Trained models: ``lmpbench train --arch chgnet`` (``lmpbench.architectures.chgnet_training``)
keeps chgnet's own checkpoint (``model.pth.tar``) with the elements it was trained on, which
deploys as the pretrained ones do: ``lmpbench deploy model.pth.tar -o model.pt2``. Molecules
are boxed for CHGNet's graph converter (``boxed``), far enough from their images to see none.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch
from ase.data import atomic_numbers, chemical_symbols

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
# the check structure's least neighbour distance: CHGNet's cost grows with the angles between bonds
# shorter than 3 Å, and a C/H/O test crystal at covalent distances (1.15 Å) has 86 such bonds per atom
# (790,000 angles: an 11-minute compile, and more than the exchange rows hold); at 2.2 Å, 12 to 18
CHECK_MIN_DISTANCE = 2.2
# the exchange layout: short bonds (below the bond cutoff, 3 Å) an atom may have; each atom's bond
# messages cross ranks as a row of this many slots (used at most: 12 in a close-packed metal, 14 in
# the shipped 192-atom water box, 10 in the CuZr glass; a collapsed structure exceeds it)
MAX_SHORT_BONDS = 32
TOO_MANY_SHORT_BONDS = (f"CHGNet exchange layout: an atom has more than {MAX_SHORT_BONDS} neighbours closer than "
                        "CHGNet's bond cutoff (a collapsed or overcompressed structure?); run it on one MPI rank "
                        "with an aoti-local file")
NO_BOND = 1.0e4  # Å: the bond vector of an empty slot, far from any real one
MAX_SHIFT = 31  # |cell shift| per axis that the reverse-edge keys encode (6 bits each)
# Inductor lowers torch.sort with int16 indices unless told otherwise, and the compiled model then
# checks at run time that the sorted length is below 32,767. The graphs here sort the edges and the
# short bonds (12 per atom in a close-packed metal), so such a model refused cells above about
# 2,700 atoms ("Expected u0 <= 32766"); with this setting the indices are int32 (bound 2^31 - 1).
LARGE_SORTS = {"triton.decompose_sort_ops": True}


ALL_ELEMENTS = chemical_symbols[1:95]  # CHGNet's embedding rows: Z 1 (H) to 94 (Pu)
TRAINED_ELEMENTS = "lmpbench_type_names"  # a trained checkpoint's entry: the elements of its training data


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


def read_checkpoint(path: Path) -> dict:
    return torch.load(str(path), map_location="cpu", weights_only=False)


def load_model(path: Path, version: str | None = None):
    """CHGNet as ``CHGNet.load`` builds it from checkpoint ``path`` (pretrained ``version``; 0.2.0
    with its output bias), float32, eval mode."""
    from chgnet.model import CHGNet

    from lmpbench.deploy import default_dtype

    extra = {"mlp_out_bias": version == "0.2.0", "version": version} if version else {}
    with contextlib.redirect_stdout(io.StringIO()), default_dtype(torch.float32):  # it prints its size
        model = CHGNet.from_file(str(path), **extra)
    return model.float().eval()


def metadata_of(checkpoint: dict) -> dict:
    """r_max (the atom-graph cutoff), type names (those lmpbench trained it on, else CHGNet's 94),
    layers, dtype."""
    args = checkpoint["model"]["model_args"]
    return {"r_max": float(args.get("atom_graph_cutoff", 6)),
            "type_names": list(checkpoint.get(TRAINED_ELEMENTS, ALL_ELEMENTS)),
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
    return torch.where(found, torch.index_select(order, 0, where), torch.arange(forward.shape[0], device=forward.device))


def angle_pairs(centre: torch.Tensor, length: torch.Tensor, bond_cutoff: float, n_nodes: int):
    """(left, right) edge indices of CHGNet's angles: ordered pairs of distinct edges shorter
    than ``bond_cutoff`` with the same centre atom."""
    short = torch.nonzero(length < bond_cutoff).view(-1)
    owner = torch.index_select(centre, 0, short)
    owner, order = torch.sort(owner, stable=True)
    short = torch.index_select(short, 0, order)
    count = torch.zeros(n_nodes, dtype=torch.int64, device=owner.device).index_add_(0, owner, torch.ones_like(owner))
    first = torch.cumsum(count, 0) - count  # where each centre's short edges start in ``short``
    partners = torch.index_select(count, 0, owner)  # per short edge, the short edges of its centre
    left = torch.repeat_interleave(partners)  # position in ``short``, once per partner
    pair_start = torch.cumsum(partners, 0) - partners
    k = torch.arange(left.shape[0], device=left.device) - torch.index_select(pair_start, 0, left)
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


def bond_conv(layer, atom, bond, weight, angle, angles, partner, skip_without_angles: bool = True):
    """``angles`` = (centre atom, left edge, right edge); messages go to the left bond, and a
    bond's two directions share them (CHGNet's undirected bond feature): ``partner(per_edge)``
    gives each edge the messages its reverse edge received."""
    centre, left, right = angles
    features = torch.cat([torch.index_select(bond, 0, left), torch.index_select(bond, 0, right), angle,
                          torch.index_select(atom, 0, centre)], dim=1)
    update = (layer.twoBody_bond(features) * torch.index_select(weight, 0, left)
              * torch.index_select(weight, 0, right))
    per_edge = scatter_sum(update, left, bond.shape[0])
    new = per_edge + partner(per_edge)
    if layer.use_mlp_out:
        new = layer.mlp_out(new)
    if layer.resnet:
        new = new + bond
    if layer.bond_norm is not None:
        new = layer.bond_norm(new)
    if not skip_without_angles:
        return new
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
    """CHGNet's per-atom energies (eV, AtomRef included) from atom types (indices into
    ``type_names``, default CHGNet's 94 elements, H to Pu), the directed edge list, edge vectors
    pos[j] - pos[i] (+ shift·cell) and each edge's reverse."""

    def __init__(self, model, type_names: list[str] | None = None):
        super().__init__()
        self.model = model
        self.bond_cutoff = float(model.graph_converter.bond_graph_cutoff)
        elements = ALL_ELEMENTS if type_names is None else type_names
        # CHGNet's embedding and AtomRef rows are Z - 1
        self.register_buffer("element_row", torch.tensor([atomic_numbers[e] - 1 for e in elements]))
        self.register_buffer("atom_reference", model.composition_model.fc.weight.detach().view(-1).clone())

    def forward(self, atom_types, edge_index, edge_vec, reverse):
        return self.layers(atom_types, edge_index, edge_vec, lambda per_edge: torch.index_select(per_edge, 0, reverse))

    def layers(self, atom_types, edge_index, edge_vec, partner, refresh=None, skip_without_angles: bool = True):
        """The energies of every centre atom; ``partner`` as in ``bond_conv``; ``refresh``: what the
        atom features go through before each convolution after the first (the exchange layout's
        ghost exchange)."""
        m = self.model
        length = torch.linalg.norm(edge_vec, dim=1)
        # CHGNet's bond vectors point the other way (centre - neighbour); the angle between two is the same
        unit = edge_vec / length.unsqueeze(1)
        left, right = angle_pairs(edge_index[0], length, self.bond_cutoff, atom_types.shape[0])
        angles = (torch.index_select(edge_index[0], 0, left), left, right)
        basis_ag = m.bond_basis_expansion.rbf_expansion_ag(length)
        basis_bg = m.bond_basis_expansion.rbf_expansion_bg(length)
        angle_basis = m.angle_basis_expansion(torch.index_select(unit, 0, left), torch.index_select(unit, 0, right))

        rows = torch.index_select(self.element_row, 0, atom_types)
        atom = m.atom_embedding(rows)
        bond = m.bond_embedding(basis_ag)
        weight_ag, weight_bg = m.bond_weights_ag(basis_ag), m.bond_weights_bg(basis_bg)
        angle = m.angle_embedding(angle_basis)
        for layer, (atom_layer, bond_layer, angle_layer) in enumerate(
                zip(m.atom_conv_layers[:-1], m.bond_conv_layers, m.angle_layers)):
            if layer > 0 and refresh is not None:
                atom = refresh(atom)
            atom = atom_conv(atom_layer, atom, bond, weight_ag, edge_index)
            bond = bond_conv(bond_layer, atom, bond, weight_bg, angle, angles, partner, skip_without_angles)
            angle = angle_update(angle_layer, atom, bond, angle, angles)
        if refresh is not None:
            atom = refresh(atom)
        atom = atom_conv(m.atom_conv_layers[-1], atom, bond, weight_ag, edge_index)
        if m.readout_norm is not None:
            atom = m.readout_norm(atom)
        return m.mlp(atom).view(-1) + torch.index_select(self.atom_reference, 0, rows)


class CHGNetLocal(LocalLayout):
    """pair_nequip's local layout around CHGNet (``LocalLayout``)."""

    def __init__(self, model, model_dtype: str = "float32", type_names: list[str] | None = None):
        super().__init__(model_dtype)
        self.energies = CHGNetAtomEnergies(model, type_names)

    def atomic_energies(self, data: dict[str, torch.Tensor], edge_vec: torch.Tensor) -> torch.Tensor:
        edge_index, cell_shift = data["edge_index"], data["edge_cell_shift"]
        reverse = reverse_edges(edge_index, torch.round(cell_shift).to(torch.int64), data["pos"].shape[0])
        return self.energies(data["atom_types"], edge_index, edge_vec, reverse)


class CHGNetExchangeNodes(torch.nn.Module):
    """The exchange layout's nodes module (``lmpbench.exchange``) around CHGNet: per-node energies
    (local atoms first; ghost rows are not energies) from the positions of local atoms and ghosts
    within one r_max, and edges into local atoms only.

    Two things cross ranks. The atom features before each convolution after the first, as in the
    other architectures. And the bond messages: a bond's update adds the angle messages its two
    directions receive, at either end atom, so a bond from a local atom to a ghost needs those
    the ghost's owner computed. Each atom's short bonds (below the bond cutoff) get slots in its
    order, up to ``MAX_SHORT_BONDS``; per bond layer every atom's messages travel as one row of
    slots. Which slot of its neighbour's row an edge reads is found once per call: every atom's
    row of bond vectors is exchanged too, and the edge i->j reads the slot of j whose vector is
    -(pos[j] - pos[i]), the one bond of j that ends on i (two atoms never share a place, so the
    vector names it, in any cell and across periodic images)."""

    def __init__(self, model, type_names: list[str] | None = None):
        super().__init__()
        self.energies = CHGNetAtomEnergies(model, type_names)
        self.bond_width = int(model.bond_embedding.out_features)

    def exchange(self, rows: torch.Tensor) -> torch.Tensor:
        """Ghost rows from their owners (LAMMPS forward communication; gradients go back)."""
        return torch.ops.mlff.ghost_exchange(rows)

    def forward(self, pos: torch.Tensor, edge_index: torch.Tensor, atom_types: torch.Tensor,
                local_rows: torch.Tensor) -> torch.Tensor:
        nodes, slots, width = pos.shape[0], MAX_SHORT_BONDS, self.bond_width
        edge_vec = torch.index_select(pos, 0, edge_index[1]) - torch.index_select(pos, 0, edge_index[0])
        short = torch.nonzero(torch.linalg.norm(edge_vec, dim=1) < self.energies.bond_cutoff).view(-1)
        centre, order = torch.sort(torch.index_select(edge_index[0], 0, short), stable=True)
        short = torch.index_select(short, 0, order)
        count = torch.zeros(nodes, dtype=torch.int64, device=pos.device).index_add_(0, centre, torch.ones_like(centre))
        # an op of the graph (a torch._check would not outlive the make_fx trace)
        torch._assert_async(count.max() <= slots, TOO_MANY_SHORT_BONDS)
        first = torch.cumsum(count, 0) - count
        own_row = centre * slots + torch.arange(short.shape[0], device=pos.device) - torch.index_select(first, 0, centre)
        # where each short edge's reverse lives: the neighbour's slot holding the opposite vector
        short_vec = torch.index_select(edge_vec, 0, short).detach()
        vectors = torch.full((nodes * slots, 3), NO_BOND, dtype=pos.dtype, device=pos.device).index_copy(0, own_row, short_vec)
        vectors = self.exchange(vectors.view(nodes, slots * 3)).view(nodes, slots, 3)
        neighbour = torch.index_select(edge_index[1], 0, short)
        mismatch = (torch.index_select(vectors, 0, neighbour) + short_vec.unsqueeze(1)).square().sum(2)
        partner_row = neighbour * slots + torch.argmin(mismatch, dim=1)

        def partner(per_edge: torch.Tensor) -> torch.Tensor:
            rows = per_edge.new_zeros((nodes * slots, width)).index_copy(0, own_row,
                                                                          torch.index_select(per_edge, 0, short))
            rows = self.exchange(rows.view(nodes, slots * width)).view(nodes * slots, width)
            return torch.zeros_like(per_edge).index_copy(0, short, torch.index_select(rows, 0, partner_row))

        # the bond updates always run: whether the whole structure has angles is not known on one rank
        return self.energies.layers(atom_types, edge_index, edge_vec, partner, refresh=self.exchange,
                                    skip_without_angles=False)


def boxed(atoms, cutoff: float):
    """``atoms`` as CHGNet takes them: a molecule (no periodic axis) in a cubic box wide enough
    that no periodic image comes within ``cutoff``; periodic structures as they are. CHGNet's
    graph converter needs a lattice."""
    if atoms.pbc.all():
        return atoms
    if atoms.pbc.any():
        raise ValueError(f"CHGNet takes periodic or non-periodic structures, not pbc={atoms.pbc.tolist()}")
    extent = atoms.positions.max(axis=0) - atoms.positions.min(axis=0)
    box = atoms.copy()
    box.set_cell([float(extent.max()) + 2 * cutoff + 1.0] * 3)
    box.center()
    box.pbc = True
    return box


def calculator(path: Path, device: str = "cpu", model=None):
    """chgnet's own ASE calculator of checkpoint ``path`` (or of ``model``, the same CHGNet
    already built), float32 as chgnet computes; molecules are boxed (``boxed``), their stress
    left out."""
    from ase.calculators.calculator import Calculator, all_changes
    from chgnet.model.dynamics import CHGNetCalculator

    from lmpbench.deploy import default_dtype

    model = load_model(path) if model is None else model
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the device
        chgnet_calc = CHGNetCalculator(model=model, use_device=device)
    cutoff = float(model.graph_converter.atom_graph_cutoff)

    class BoxedCHGNet(Calculator):
        implemented_properties = ("energy", "forces", "stress", "energies")

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            # a nequip model loaded before may have left float64 torch's default
            with default_dtype(torch.float32):
                chgnet_calc.calculate(boxed(self.atoms, cutoff), list(properties) + ["forces"], all_changes)
            self.results = {k: v for k, v in chgnet_calc.results.items()
                            if k in ("energy", "forces", "energies") or self.atoms.pbc.all()}

    return BoxedCHGNet()


def export_aoti_exchange(source, out: Path, device: str, provenance: dict) -> None:
    """The exchange layout compiled with AOTInductor (as the local layout: int32 sort indices)."""
    from lmpbench.deploy import EXCHANGE_INPUTS, GHOST_OUTPUTS, check_structure, contract_aoti_metadata
    from lmpbench.exchange import ExchangeForces, compile_exchange, example_inputs, load_operators

    load_operators()
    meta = source.metadata
    wrapper = ExchangeForces(CHGNetExchangeNodes(source.load(), meta.type_names)).to(device)
    inputs = example_inputs(check_structure(source), meta, device)
    compile_exchange(wrapper, inputs, out, contract_aoti_metadata(meta, "aoti-exchange", EXCHANGE_INPUTS, GHOST_OUTPUTS,
                                                                  provenance), inductor_configs=LARGE_SORTS)


def export_aoti_local(source, out: Path, device: str, provenance: dict) -> None:
    meta = source.metadata
    export_local(CHGNetLocal(source.load(), meta.model_dtype, meta.type_names), source, out, device, provenance,
                 inductor_configs=LARGE_SORTS)


def pretrained_source(name: str, spec: str):
    """The deploy source of pretrained ``name`` (``chgnet:NAME``), checked on a four-metal alloy."""
    return checkpoint_source(checkpoint_path(name), spec=spec, version=name, check_elements=CHECK_ELEMENTS)


def checkpoint_source(path: Path, spec: str = "", version: str | None = None, check_elements: tuple[str, ...] = ()):
    """The deploy source of a CHGNet checkpoint (pretrained or trained by ``lmpbench train --arch
    chgnet``): metadata, the local and exchange exporters, chgnet's calculator."""
    from lmpbench.contract import ModelMetadata
    from lmpbench.deploy import DeployError, SourceModel, sha256

    path = Path(path)
    try:
        meta = metadata_of(read_checkpoint(path))
    except Exception as err:  # torch.load raises many kinds for a file that is not a checkpoint
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DeployError(f"{path} is not a loadable CHGNet checkpoint: {first}") from None
    built = []

    def load():
        if not built:
            built.append(load_model(path, version))
        return built[0]

    return SourceModel(path, "chgnet", ModelMetadata(**meta), sha256(path), ("aoti-local", "aoti-exchange"), load,
                       architecture="chgnet", exporters={"aoti-local": export_aoti_local,
                                                         "aoti-exchange": export_aoti_exchange},
                       calculator=lambda: calculator(path, model=load()),
                       reference="chgnet's ASE calculator (CHGNetCalculator)",
                       check_elements=tuple(check_elements or meta["type_names"]), spec=spec,
                       check_min_distance=CHECK_MIN_DISTANCE)
