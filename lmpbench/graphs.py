"""Model-contract graphs built in Python, independently of LAMMPS.

``ghost_graph`` unrolls a periodic structure the way the pair style's ghost layout sees it on
one rank: the atoms of the cell first, then every periodic image within
``num_layers * r_max`` of them, with an edge (i, j) for every pair of nodes closer than
``r_max``. Summing the energies of the first ``len(atoms)`` nodes gives the energy of the
periodic system for any model with ``num_layers`` rounds of messages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from ase.neighborlist import primitive_neighbor_list
from scipy.spatial import cKDTree


@dataclass
class GhostGraph:
    positions: np.ndarray  # [N, 3] nodes: atoms of the cell, then images
    edge_index: np.ndarray  # [2, E] (center, neighbor)
    atom_types: np.ndarray  # [N] model type index
    owner: np.ndarray  # [N] index of the atom each node is an image of
    nlocal: int


def ghost_graph(atoms: Atoms, type_names: list[str], r_max: float, num_layers: int) -> GhostGraph:
    n = len(atoms)
    reach = num_layers * r_max
    _, j, shifts = primitive_neighbor_list("ijS", atoms.pbc, atoms.cell.array, atoms.positions, reach,
                                           self_interaction=False)
    images = sorted({(a, tuple(s)) for a, s in zip(j, shifts) if any(s)})
    owner = np.concatenate([np.arange(n), np.array([a for a, _ in images], dtype=np.int64)]).astype(np.int64)
    shift_vectors = np.array([s for _, s in images], dtype=float).reshape(-1, 3) @ atoms.cell.array
    positions = np.concatenate([atoms.positions, atoms.positions[owner[n:]] + shift_vectors])
    pairs = cKDTree(positions).query_pairs(r_max, output_type="ndarray")
    edge_index = np.ascontiguousarray(np.concatenate([pairs, pairs[:, ::-1]]).T, dtype=np.int64)
    index = {name: k for k, name in enumerate(type_names)}
    atom_types = np.array([index[s] for s in np.asarray(atoms.get_chemical_symbols())[owner]], dtype=np.int64)
    return GhostGraph(positions, edge_index, atom_types, owner, n)


def contract_energy_forces(model, graph: GhostGraph, dtype: torch.dtype = torch.float64):
    """Energy and per-atom forces of a contract model (``forward(pos, edge_index, atom_types,
    nlocal)`` -> atom energies) on ``graph``; forces on images are summed onto their atoms."""
    pos = torch.tensor(graph.positions, dtype=dtype, requires_grad=True)
    energies = model(pos, torch.from_numpy(graph.edge_index), torch.from_numpy(graph.atom_types), graph.nlocal)
    energy = energies.reshape(-1)[: graph.nlocal].sum()
    (grad,) = torch.autograd.grad(energy, [pos])
    forces = np.zeros((graph.nlocal, 3))
    np.add.at(forces, graph.owner, -grad.detach().double().numpy())
    return float(energy), forces
