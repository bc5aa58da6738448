"""Reference force fields written to the model contract.

``LennardJones`` and ``Morse`` reproduce LAMMPS's ``lj/cut`` and ``morse`` pair styles (no
energy shift), so the pair style can be checked against LAMMPS itself. ``ToyMessagePassing``
is a small smooth message-passing network (``num_layers`` rounds of messages within
``r_max``) whose exactness on many MPI ranks is the point of the ghost-shell scheme.

Every model computes per-atom energies from edge vectors; ``forward`` derives those vectors
from positions as the contract asks (``pos[j] - pos[i]`` for edge ``(i, j)``), and
``periodic_energy_forces`` derives them from a periodic cell with shifts, as an independent
evaluation of the same model.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class _EdgeModel(nn.Module):
    """Contract forward on top of ``atom_energies(edge_vec, edge_index, atom_types, num_nodes)``."""

    def forward(self, pos: torch.Tensor, edge_index: torch.Tensor, atom_types: torch.Tensor, nlocal: int):
        edge_vec = pos[edge_index[1]] - pos[edge_index[0]]
        return self.atom_energies(edge_vec, edge_index, atom_types, pos.shape[0])


def _pair_table(values, n: int, name: str) -> torch.Tensor:
    """A symmetric [n, n] table from a scalar or an [n, n] nested list."""
    table = torch.as_tensor(values, dtype=torch.float64)
    if table.ndim == 0:
        table = table.expand(n, n).clone()
    if table.shape != (n, n) or not torch.equal(table, table.T):
        raise ValueError(f"{name} must be a scalar or a symmetric {n}x{n} table, got shape {tuple(table.shape)}")
    return table


class LennardJones(_EdgeModel):
    """E = sum over pairs r < r_max of 4 eps [(sigma/r)^12 - (sigma/r)^6], as ``lj/cut``.

    Each pair appears twice in a full edge list, so each edge gives half of its energy to
    its center atom.
    """

    def __init__(self, epsilon, sigma, r_max: float, num_types: int = 1):
        super().__init__()
        self.register_buffer("epsilon", _pair_table(epsilon, num_types, "epsilon"))
        self.register_buffer("sigma", _pair_table(sigma, num_types, "sigma"))
        self.r_max = r_max

    def atom_energies(self, edge_vec: torch.Tensor, edge_index: torch.Tensor, atom_types: torch.Tensor, num_nodes: int):
        ti, tj = atom_types[edge_index[0]], atom_types[edge_index[1]]
        sr6 = (self.sigma[ti, tj] ** 2 / (edge_vec**2).sum(-1)) ** 3
        pair = 4.0 * self.epsilon[ti, tj] * (sr6 * sr6 - sr6)
        return torch.zeros(num_nodes, dtype=edge_vec.dtype, device=edge_vec.device).index_add(0, edge_index[0], 0.5 * pair)


class Morse(_EdgeModel):
    """E = sum over pairs r < r_max of D0 [exp(-2 a (r - r0)) - 2 exp(-a (r - r0))], as ``morse``."""

    def __init__(self, d0, alpha, r0, r_max: float, num_types: int = 1):
        super().__init__()
        self.register_buffer("d0", _pair_table(d0, num_types, "d0"))
        self.register_buffer("alpha", _pair_table(alpha, num_types, "alpha"))
        self.register_buffer("r0", _pair_table(r0, num_types, "r0"))
        self.r_max = r_max

    def atom_energies(self, edge_vec: torch.Tensor, edge_index: torch.Tensor, atom_types: torch.Tensor, num_nodes: int):
        ti, tj = atom_types[edge_index[0]], atom_types[edge_index[1]]
        dexp = torch.exp(-self.alpha[ti, tj] * (torch.sqrt((edge_vec**2).sum(-1)) - self.r0[ti, tj]))
        pair = self.d0[ti, tj] * (dexp * dexp - 2.0 * dexp)
        return torch.zeros(num_nodes, dtype=edge_vec.dtype, device=edge_vec.device).index_add(0, edge_index[0], 0.5 * pair)


class ToyMessagePassing(_EdgeModel):
    """A smooth ``num_layers``-layer message-passing network with random fixed weights.

    h0 = embedding[type]; per layer: m_i = sum_j (B(r_ij) W_rad) * (h_j W_msg),
    h_i <- tanh(h_i W_self + m_i), with B Gaussian radial functions times the cosine cutoff
    0.5 (cos(pi r / r_max) + 1). Atom energy = h_L w_out. An atom's energy depends on atoms
    up to num_layers * r_max away, which is what the pair style's ghost shell must cover.
    """

    def __init__(self, num_types: int, r_max: float, num_layers: int = 2, features: int = 8, num_basis: int = 6, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)

        def rand(*shape, scale=1.0):
            return nn.Parameter(scale * torch.randn(*shape, generator=gen, dtype=torch.float64))

        self.r_max = r_max
        self.num_layers = num_layers
        self.embedding = rand(num_types, features)
        self.w_rad = rand(num_layers, num_basis, features, scale=0.5)
        self.w_msg = rand(num_layers, features, features, scale=1.0 / math.sqrt(features))
        self.w_self = rand(num_layers, features, features, scale=1.0 / math.sqrt(features))
        self.w_out = rand(features, scale=0.1)
        self.register_buffer("centers", torch.linspace(0.5, r_max, num_basis, dtype=torch.float64))
        self.width = r_max / num_basis

    def atom_energies(self, edge_vec: torch.Tensor, edge_index: torch.Tensor, atom_types: torch.Tensor, num_nodes: int):
        r = torch.sqrt((edge_vec**2).sum(-1))
        cutoff = 0.5 * (torch.cos(math.pi * r / self.r_max) + 1.0)
        basis = torch.exp(-(((r.unsqueeze(-1) - self.centers) / self.width) ** 2)) * cutoff.unsqueeze(-1)
        h = self.embedding[atom_types]
        for layer in range(self.num_layers):
            messages = (basis @ self.w_rad[layer]) * (h[edge_index[1]] @ self.w_msg[layer])
            summed = torch.zeros_like(h).index_add(0, edge_index[0], messages)
            h = torch.tanh(h @ self.w_self[layer] + summed)
        return h @ self.w_out


def periodic_energy_forces(model: _EdgeModel, atoms, type_names: list[str]):
    """Energy (float), forces [N, 3] and virial [3, 3] of ``model`` on an ASE ``atoms``.

    Edges come from ASE's neighbour list with periodic shifts, independently of LAMMPS. The
    virial W = -dE/d(strain) is taken by autograd through a symmetric strain of positions and
    cell (so the pressure is -W/V plus the kinetic part).
    """
    from ase.neighborlist import primitive_neighbor_list

    i, j, shifts = primitive_neighbor_list(
        "ijS", atoms.pbc, atoms.cell.array, atoms.positions, model.r_max, self_interaction=False
    )
    dtype = torch.float64
    pos = torch.tensor(atoms.positions, dtype=dtype, requires_grad=True)
    strain = torch.zeros(3, 3, dtype=dtype, requires_grad=True)
    deform = torch.eye(3, dtype=dtype) + 0.5 * (strain + strain.T)
    cell = torch.tensor(atoms.cell.array, dtype=dtype) @ deform
    shift_vec = torch.tensor(shifts, dtype=dtype) @ cell
    edge_index = torch.tensor(np.stack([i, j]), dtype=torch.long)
    pos_strained = pos @ deform
    edge_vec = pos_strained[edge_index[1]] - pos_strained[edge_index[0]] + shift_vec
    types = torch.tensor([type_names.index(s) for s in atoms.get_chemical_symbols()], dtype=torch.long)
    energy = model.atom_energies(edge_vec, edge_index, types, len(atoms)).sum()
    grad_pos, grad_strain = torch.autograd.grad(energy, [pos, strain])
    return energy.item(), (-grad_pos).numpy(), (-grad_strain).numpy()
