"""pair_nequip's local layout around an architecture's per-atom energies of edge vectors.

The one place where an adapter's forces and virial come out of the edge vectors: adapters
(SevenNet, CHGNet, torchmd-net) subclass ``LocalLayout`` with their ``atomic_energies`` and
compile it with ``export_local``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch


class LocalLayout(torch.nn.Module):
    """Inputs pos, edge_index (row 0 the centre, row 1 the neighbour), atom_types, cell [1,3,3],
    edge_cell_shift; outputs atomic_energy [N,1], forces [N,3], virial [1,3,3].

    edge_vec = pos[j] - pos[i] + shift·cell. Forces are -dE/dpos, scattered from dE/d(edge_vec)
    (+ on the centre, - on the neighbour); the virial is -Σ_edges edge_vec ⊗ dE/d(edge_vec),
    LAMMPS's sign (Σ r ⊗ f), which needs no positions of periodic images."""

    def __init__(self, model_dtype: str):
        super().__init__()
        self.model_dtype = model_dtype  # read by nequip's export check (AOTInductor against eager)

    def atomic_energies(self, data: dict[str, torch.Tensor], edge_vec: torch.Tensor) -> torch.Tensor:
        """Per-atom energies [N] of the local atoms from ``data`` and the edge vectors."""
        raise NotImplementedError

    def forward(self, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pos, edge_index = data["pos"], data["edge_index"]
        shift = torch.mm(data["edge_cell_shift"], data["cell"].view(3, 3))
        with torch.enable_grad():
            edge_vec = torch.index_select(pos, 0, edge_index[1]) - torch.index_select(pos, 0, edge_index[0]) + shift
            edge_vec = edge_vec.detach().requires_grad_(True)
            atomic_energy = self.atomic_energies(data, edge_vec).reshape(-1, 1)
            (grad,) = torch.autograd.grad([atomic_energy.sum()], [edge_vec])
        forces = torch.zeros_like(pos).index_add(0, edge_index[0], grad).index_add(0, edge_index[1], -grad)
        virial = -torch.mm(edge_vec.detach().transpose(0, 1), grad).view(1, 3, 3)
        return {"atomic_energy": atomic_energy, "forces": forces, "virial": virial}


def export_local(wrapper: LocalLayout, source, out: Path, device: str, provenance: dict,
                 tracing=contextlib.nullcontext, inductor_configs: dict | None = None) -> None:
    """``wrapper`` compiled with AOTInductor as an aoti-local file, traced on the check structure of
    ``source``'s elements; ``tracing``: a context the adapter needs while tracing;
    ``inductor_configs``: the adapter's own inductor settings."""
    from lmpbench.deploy import (LOCAL_INPUTS, LOCAL_OUTPUTS, check_structure, contract_aoti_metadata, export_aoti,
                                 local_example)

    data = local_example(check_structure(source), source.metadata)
    with tracing():
        export_aoti(wrapper, out, device, LOCAL_INPUTS, LOCAL_OUTPUTS, data,
                    contract_aoti_metadata(source.metadata, "aoti-local", LOCAL_INPUTS, LOCAL_OUTPUTS, provenance),
                    inductor_configs)
