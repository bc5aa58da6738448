"""SevenNet (``sevenn`` 0.13): pretrained universal models whose weights ship in the wheel.

``lmpbench deploy sevenn:7net-0 -o model.pt2`` builds the model from the checkpoint inside the
installed ``sevenn`` package (no network), wraps it into the pair style's local layout and
compiles it with AOTInductor (nequip's make_fx export route; forces and virial are computed
inside the compiled graph). The reference of the deploy check is sevenn's own ASE calculator.

The adapter: sevenn's ``AtomGraphSequential`` with its force module removed and its type map
evaluated outside (``x`` = the model's type index, as sevenn's own LAMMPS deploy does) takes
``x``, ``edge_index`` (row 0 the centre, row 1 the neighbour) and ``edge_vec`` = pos[j] -
pos[i] + shift·cell, the same convention as nequip's pair_nequip layout; it returns per-atom
energies. Forces are -dE/dpos, scattered from dE/d(edge_vec); the virial is
-Σ_edges edge_vec ⊗ dE/d(edge_vec) (LAMMPS's sign, Σ r ⊗ f).

One MPI rank only: SevenNet-0 has 5 message-passing layers of 5 Å, so the ghost layout would
need a 25 Å ghost shell (thousands of ghost atoms per domain, tens of times the model's cost
and GBs of memory); several ranks need per-layer feature exchange, which the pair style does
not have yet.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from lmpbench.architectures.local_layout import LocalLayout, export_local

# lmpbench's name -> (sevenn's name, what it is); only checkpoints inside the sevenn wheel
PRETRAINED = {
    "7net-0": ("7net-0", "SevenNet-0 (11 Jul 2024), MPtrj, 89 elements"),
    "7net-0_22may2024": ("7net-0_22may2024", "SevenNet-0 (22 May 2024), MPtrj, 89 elements"),
    "7net-l3i5": ("7net-l3i5", "SevenNet-l3i5, MPtrj, l_max 3, 5 layers, 89 elements"),
}
CHECK_ELEMENTS = ("Cu", "Ag", "Au", "Pd")  # the deploy check's alloy (fcc metals MPtrj covers)


class PretrainedError(ValueError):
    """Unknown pretrained name, or one whose weights are not in the installed wheel."""


def checkpoint_path(name: str) -> Path:
    """The checkpoint of pretrained ``name`` inside the installed sevenn package; never downloads."""
    from sevenn import _const
    from sevenn.util import get_available_pretrained_models

    key = name.lower().replace("sevennet", "7net")
    if key not in PRETRAINED:
        others = sorted(set(get_available_pretrained_models()) - set(PRETRAINED))
        if key in others:
            raise PretrainedError(f"sevenn:{name}: its weights are not shipped in the sevenn wheel (sevenn would "
                                  f"download them; lmpbench does not); available offline: "
                                  f"{', '.join('sevenn:' + n for n in PRETRAINED)}")
        raise PretrainedError(f"unknown SevenNet model {name!r}; available offline: "
                              f"{', '.join('sevenn:' + n for n in PRETRAINED)}")
    constant = {"7net-0": "SEVENNET_0_11Jul2024", "7net-0_22may2024": "SEVENNET_0_22May2024",
                "7net-l3i5": "SEVENNET_l3i5"}[key]
    path = Path(getattr(_const, constant))
    if not path.is_file():
        raise PretrainedError(f"sevenn:{name}: checkpoint {path} is missing from the installed sevenn package")
    return path


def load_model(path: Path):
    """(energy-only AtomGraphSequential taking type indices, checkpoint config)."""
    from sevenn.util import load_checkpoint

    from lmpbench.deploy import default_dtype

    checkpoint = load_checkpoint(str(path))
    with default_dtype(torch.float32):  # sevenn builds in the default dtype (nequip may have left float64)
        model = checkpoint.build_model(enable_cueq=False, enable_flash=False, enable_oeq=False)
    if "force_output" in model._modules:
        model.delete_module_by_key("force_output")
    model.eval_type_map = torch.tensor(False)
    model.set_is_batch_data(False)
    return model.eval(), checkpoint.config


def metadata_of(config: dict) -> dict:
    """r_max, type names (model type index order), message-passing layers and dtype of a sevenn config."""
    import sevenn._keys as KEY
    from ase.data import chemical_symbols

    type_map = config[KEY.TYPE_MAP]  # atomic number -> model type index
    names = [None] * len(type_map)
    for z, index in type_map.items():
        names[index] = chemical_symbols[z]
    dtype = {"single": "float32", "double": "float64"}.get(str(config.get(KEY.DTYPE, "single")), "float32")
    return {"r_max": float(config[KEY.CUTOFF]), "type_names": names, "num_layers": int(config[KEY.NUM_CONVOLUTION]),
            "model_dtype": dtype}


class SevenNetLocal(LocalLayout):
    """pair_nequip's local layout around a SevenNet energy model (``LocalLayout``)."""

    def __init__(self, model, model_dtype: str = "float32"):
        super().__init__(model_dtype)
        self.model = model

    def atomic_energies(self, data: dict[str, torch.Tensor], edge_vec: torch.Tensor) -> torch.Tensor:
        return self.model({"x": data["atom_types"], "edge_index": data["edge_index"], "edge_vec": edge_vec})["atomic_energy"]


def _message_gather(node_features: torch.Tensor, edge_dst: torch.Tensor, message: torch.Tensor) -> torch.Tensor:
    """sevenn's message_gather with the node count taken as a size, not ``len()`` (which make_fx
    turns into a constant, so that the traced model would only take the traced atom count)."""
    from sevenn.nn.util import broadcast

    index = broadcast(edge_dst, message, 0)
    out = message.new_zeros((node_features.shape[0],) + tuple(message.shape[1:]))
    return out.scatter_reduce_(0, index, message, reduce="sum")


@contextlib.contextmanager
def traceable():
    """sevenn made traceable with dynamic atom counts, for the AOTInductor export (same arithmetic)."""
    import sevenn.nn.convolution as convolution

    original = convolution.message_gather
    convolution.message_gather = _message_gather
    try:
        yield
    finally:
        convolution.message_gather = original


def calculator(path: Path, device: str = "cpu"):
    """sevenn's own ASE calculator of the checkpoint."""
    import warnings

    from sevenn.calculator import SevenNetCalculator

    from lmpbench.deploy import default_dtype

    # sevenn builds the model and the graph in torch's default dtype, which a nequip model loaded
    # in the same process may have left at float64: build and evaluate under float32
    with warnings.catch_warnings(), default_dtype(torch.float32):
        warnings.simplefilter("ignore")
        calc = SevenNetCalculator(model=str(path), device=device)
    calculate = calc.calculate

    def calculate_float32(*args, **kwargs):
        with default_dtype(torch.float32):
            return calculate(*args, **kwargs)

    calc.calculate = calculate_float32
    return calc


DEFAULT_PRETRAINED = "7net-0"
SINGLE_RANK_REASON = ("SevenNet's {layers} message-passing layers of {r_max:g} Å need a {depth:g} Å ghost shell in "
                      "the multi-rank (ghost) layout, thousands of ghost atoms per domain at tens of times the "
                      "model's cost; several ranks need per-layer feature exchange, which pair style mlff does not "
                      "have yet. Run it on one rank (a local-layout AOTInductor file)")


def pretrained_source(name: str, spec: str):
    """The deploy source of pretrained ``name``: metadata, the local-layout exporter, sevenn's calculator."""
    from lmpbench.contract import ModelMetadata
    from lmpbench.deploy import SourceModel, sha256

    from sevenn.util import load_checkpoint

    path = checkpoint_path(name)
    meta = metadata_of(load_checkpoint(str(path)).config)  # building the model takes longer: only on demand
    built = []

    def load():
        if not built:
            built.append(load_model(path)[0])
        return built[0]

    metadata = ModelMetadata(**meta)

    def export(source, out: Path, device: str, provenance: dict) -> None:
        export_local(SevenNetLocal(source.load(), source.metadata.model_dtype), source, out, device, provenance,
                     tracing=traceable)

    reason = SINGLE_RANK_REASON.format(layers=meta["num_layers"], r_max=meta["r_max"],
                                       depth=meta["num_layers"] * meta["r_max"])
    return SourceModel(path, "sevenn", metadata, sha256(path), ("aoti-local",), load, architecture="sevenn",
                       exporters={"aoti-local": export}, calculator=lambda: calculator(path),
                       reference="sevenn's ASE calculator (SevenNetCalculator)", check_elements=CHECK_ELEMENTS,
                       spec=spec, single_rank_reason=reason)
