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

Architectures join by placing :class:`GhostExchange` where their layers meet. nequip 0.19
has the hook built in (every interaction block after the first calls its ``ghost_exchange``
submodule, a no-op by default), so Allegro (strictly local, nothing to exchange) and NequIP
models take the exchange layout; the SevenNet, CHGNet and torchmd-net adapters compute their
layers inside one forward with no such hook.
"""

from __future__ import annotations

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


def nequip_exchange_module():
    """nequip's ghost-exchange hook, calling the mlff operator (a class, built on demand so
    that this module imports without nequip)."""
    from nequip.nn._ghost_exchange_base import GhostExchangeModule

    class NequIPGhostExchange(GhostExchangeModule):
        def forward(self, data: dict[str, torch.Tensor], ghost_included: bool) -> dict[str, torch.Tensor]:
            data[self.field] = torch.ops.mlff.ghost_exchange(data[self.field])
            return data

    return NequIPGhostExchange


def enable_nequip_exchange(model) -> int:
    """Replace the no-op ghost-exchange hooks of a nequip model (in place) by the mlff
    operator; returns how many were replaced (one per interaction block; the first block
    never calls its hook, since its input, the type embedding, is right on ghosts too)."""
    from nequip.nn._ghost_exchange_base import NoOpGhostExchangeModule

    load_operators()
    module_class = nequip_exchange_module()
    hooks = [(name, m) for name, m in model.named_modules() if isinstance(m, NoOpGhostExchangeModule)]
    for name, hook in hooks:
        parent_name, _, attribute = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attribute, module_class(field=hook.field, irreps_in=hook.irreps_in))
    return len(hooks)
