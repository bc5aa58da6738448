"""The model contract between lmpbench and pair style ``mlff`` (version 1).

A deployable model is a TorchScript file whose ``forward(pos, edge_index, atom_types,
nlocal)`` returns per-atom energies, with a JSON metadata entry stored inside the file. The
normative text is ``pair_styles/README.md``; this module is its Python side: one place for
the version, the metadata keys and how they are written and read.
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

CONTRACT_VERSION = 1
METADATA_FILE = "mlff_metadata.json"  # name of the extra file inside the TorchScript archive
MODEL_DTYPES = {"float32": torch.float32, "float64": torch.float64}
GRAPHS = ("ghost", "exchange")  # graph layouts of TorchScript files (pair_styles/README.md)


class ContractError(ValueError):
    """A model or model file does not follow the contract."""


@dataclass(frozen=True)
class ModelMetadata:
    """What the pair style reads from a model file.

    r_max: cutoff of the graph, in the length unit of the LAMMPS run (Å for metal units).
    type_names: model type index -> element name, matched against ``pair_coeff`` names.
    num_layers: message-passing depth; 1 for a strictly local model. Sets the ghost cutoff.
    model_dtype: "float32" or "float64", the dtype positions are given to the model in.
    graph: "ghost" (the model sees complete neighbourhoods of num_layers x r_max) or
        "exchange" (a ghost shell of one r_max; the model calls mlff::ghost_exchange between
        its layers, see lmpbench.exchange).
    """

    r_max: float
    type_names: list[str]
    num_layers: int = 1
    model_dtype: str = "float64"
    graph: str = "ghost"
    contract_version: int = CONTRACT_VERSION
    extra: dict = field(default_factory=dict)  # provenance: versions, source sha256, ...

    def __post_init__(self):
        if not isinstance(self.r_max, (int, float)) or isinstance(self.r_max, bool) or not self.r_max > 0:
            raise ContractError(f"r_max must be positive, got {self.r_max}")
        if not isinstance(self.num_layers, int) or isinstance(self.num_layers, bool) or self.num_layers < 1:
            raise ContractError(f"num_layers must be >= 1, got {self.num_layers}")
        if not isinstance(self.model_dtype, str) or self.model_dtype not in MODEL_DTYPES:
            raise ContractError(f"model_dtype must be one of {sorted(MODEL_DTYPES)}, got {self.model_dtype!r}")
        if self.graph not in GRAPHS:
            raise ContractError(f"graph must be one of {', '.join(GRAPHS)}, got {self.graph!r}")
        if (not isinstance(self.type_names, list) or not self.type_names
                or not all(isinstance(t, str) for t in self.type_names) or len(set(self.type_names)) != len(self.type_names)):
            raise ContractError(f"type_names must be distinct and non-empty, got {self.type_names}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


# torch functions that torch_geometric (imported by sevenn and torchmd-net) replaces with Python
# wrappers when its hash_tensor module loads; TorchScript cannot compile calls to the wrappers
# ("Arguments for call are not valid"). name -> where torch_geometric keeps torch's own
TORCH_GEOMETRIC_WRAPPED = {"index_select": "_old_index_select", "select": "_old_select"}


@contextlib.contextmanager
def torch_functions_unwrapped():
    """Script inside this: torch's own functions where torch_geometric wrapped them, put back after."""
    wrapper_module = sys.modules.get("torch_geometric.hash_tensor")
    replaced = {}
    for name, kept in TORCH_GEOMETRIC_WRAPPED.items():
        original = getattr(wrapper_module, kept, None)
        if original is not None and getattr(torch, name) is not original:
            replaced[name] = getattr(torch, name)
            setattr(torch, name, original)
    try:
        yield
    finally:
        for name, wrapper in replaced.items():
            setattr(torch, name, wrapper)


def save_model(module: torch.nn.Module, path: str | Path, metadata: ModelMetadata) -> Path:
    """Script ``module`` and write it with its metadata to ``path``; returns the path."""
    with torch_functions_unwrapped():
        scripted = module if isinstance(module, torch.jit.ScriptModule) else torch.jit.script(module)
    scripted = scripted.to(MODEL_DTYPES[metadata.model_dtype]).eval()
    path = Path(path)
    torch.jit.save(scripted, str(path), _extra_files={METADATA_FILE: metadata.to_json()})
    return path


def read_metadata(path: str | Path) -> ModelMetadata:
    """Read the metadata of a model file, raising ContractError when it has none."""
    extra = {METADATA_FILE: ""}
    try:
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as err:  # torch raises many kinds (RuntimeError, IndexError, ...) for a damaged archive
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ContractError(f"{path} is not a TorchScript model file: {first}") from None
    if not extra[METADATA_FILE]:
        raise ContractError(f"{path} has no {METADATA_FILE}: it was not exported for the mlff contract")
    data = metadata_dict(extra[METADATA_FILE], path)
    if data.get("contract_version") != CONTRACT_VERSION:
        raise ContractError(
            f"{path} follows contract version {data.get('contract_version')}, expected {CONTRACT_VERSION}"
        )
    try:
        return ModelMetadata(**data)
    except TypeError as err:  # fields missing or unknown
        raise ContractError(f"{path}: {METADATA_FILE} does not describe a model ({err})") from None


def metadata_dict(text: str | bytes, path) -> dict:
    """The JSON object of a model file's metadata member, or ContractError."""
    try:
        data = json.loads(text)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise ContractError(f"{path}: its {METADATA_FILE} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ContractError(f"{path}: its {METADATA_FILE} holds a JSON {type(data).__name__}, not an object")
    return data
