"""``lmpbench deploy``: trained models into files that pair style mlff runs, then checked.

Sources (``SOURCE_KINDS``): nequip checkpoints (``.ckpt``) and packages (``.nequip.zip``),
torchmd-net trainer checkpoints (``.ckpt`` too, told apart by content), and TorchScript
modules that follow the model contract (``.pt``/``.pth``, per-atom energies from
``forward(pos, edge_index, atom_types, nlocal)``).

Targets (``TARGETS``), all read by the same pair style, which picks its path from the file:

- ``aoti-local``: AOTInductor, local atoms with periodic cell shifts (nequip's pair_nequip
  layout and inputs); the fastest, one MPI rank only.
- ``aoti-ghost``: AOTInductor, local + ghost atoms, energy summed over local atoms and forces
  on all nodes computed inside the compiled model; exact on any number of ranks.
- ``torchscript-ghost``: the same layout in TorchScript, forces by autograd in the pair
  style; the fallback for models that do not export, and the only target for TorchScript
  sources.
- ``aoti-exchange`` / ``torchscript-exchange``: local + ghost atoms within one r_max, edges
  into local atoms only, node features exchanged between message-passing layers through
  LAMMPS's communication (``lmpbench.exchange``); exact on any number of ranks with a much
  thinner ghost shell than the ghost layout's num_layers x r_max. NequIP models.

Every deploy is checked: a test structure is evaluated in LAMMPS through the plugin and in
Python (nequip's ASE calculator for nequip models), and the file is only moved into place
when energies, forces and stress agree to the dtype's tolerance.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from ase import Atoms

from lmpbench import __version__
from lmpbench.contract import CONTRACT_VERSION, METADATA_FILE, ModelMetadata, save_model, torch_functions_unwrapped

LOCAL_MASK_FIELD = "mlff_local_mask"  # node field of the aoti-ghost inputs (1 for local atoms)
LOCAL_WEIGHT_FIELD = "mlff_local_weight"  # aoti-exchange input: a 1 per local atom (its length is their number)
GHOST_OUTPUTS = ["atomic_energy", "forces"]  # aoti-ghost and aoti-exchange


@contextlib.contextmanager
def serial_kernels():
    """Compile inside this: one torch thread. Inductor writes the thread count of the compiling
    process into its OpenMP loops, which then ignore `pair_style mlff threads N`: a file compiled
    in a fresh `lmpbench deploy` (as many threads as cores) oversubscribed the cores under mpirun
    (27 against 44 steps/s for one model on 2 ranks of 2 cores), and inductor's run-time thread
    count (cpp.dynamic_threads) did not help. Serial kernels leave the cores to the MPI ranks."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
EXCHANGE_INPUTS = ["pos", "edge_index", "atom_types", LOCAL_WEIGHT_FIELD]


class DeployError(ValueError):
    """A model cannot be deployed as asked; the message says why and what to change."""


class DeployCheckError(DeployError):
    """LAMMPS and the Python model disagree beyond tolerance."""


@dataclass(frozen=True)
class DeployTarget:
    name: str
    format: str  # "aotinductor" or "torchscript"
    graph: str  # "local" (one rank, cell shifts), "ghost" or "exchange" (any ranks)
    suffix: str  # the pair style tells formats apart by file suffix
    description: str

    @property
    def multi_rank(self) -> bool:
        return self.graph in ("ghost", "exchange")


TARGETS = {t.name: t for t in (
    DeployTarget("aoti-local", "aotinductor", "local", ".pt2",
                 "AOTInductor, local atoms + cell shifts (pair_nequip layout): fastest, one MPI rank"),
    DeployTarget("aoti-ghost", "aotinductor", "ghost", ".pt2",
                 "AOTInductor, local + ghost atoms: exact on any number of MPI ranks"),
    DeployTarget("torchscript-ghost", "torchscript", "ghost", ".pt",
                 "TorchScript, local + ghost atoms: exact on any number of ranks; fallback"),
    DeployTarget("aoti-exchange", "aotinductor", "exchange", ".pt2",
                 "AOTInductor, ghosts within one r_max and per-layer feature exchange: exact and "
                 "fastest on several MPI ranks"),
    DeployTarget("torchscript-exchange", "torchscript", "exchange", ".pt",
                 "TorchScript, per-layer feature exchange: exact on any number of ranks"),
)}

# float64 as the issue fixes it; float32 sums of ~100 atoms lose about 1e-6 relative
TOLERANCES = {
    "float64": {"energy_eV": 1e-8, "forces_eV_A": 1e-8, "stress_eV_A3": 1e-8},
    "float32": {"energy_eV": 5e-3, "forces_eV_A": 5e-4, "stress_eV_A3": 1e-5},
}


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """nequip builds and converts data in the default dtype; a float64 model fed float32
    positions gives NaN without a word, so model work here runs under the model's dtype."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


# ---------------------------------------------------------------------------------------------
# sources


@dataclass
class SourceModel:
    """A model to deploy: where it is, what the contract needs to know, how to rebuild it."""

    path: Path
    kind: str
    metadata: ModelMetadata
    sha256: str
    targets: tuple[str, ...]  # supported targets, preferred first for one rank
    load: Callable = field(repr=False)  # () -> the model in Python (nequip GraphModel or contract module)
    architecture: str = ""  # the model's architecture when the kind holds several (nequip: nequip or allegro)
    # architecture adapters (pretrained models): their own exporters, reference calculator and check structure
    exporters: dict = field(default_factory=dict, repr=False)  # target -> (source, out, device, provenance) -> None
    calculator: Callable | None = field(default=None, repr=False)  # () -> the architecture's own ASE calculator
    reference: str = ""  # that calculator, in words
    check_elements: tuple[str, ...] = ()  # elements of the default check structure (default: all the model's)
    spec: str = ""  # a pretrained model's name as given (sevenn:7net-0), recorded so --check can rebuild it
    # the default check structure's least nearest-neighbour distance (Å), for models whose cost grows steeply with
    # the neighbours inside a short cutoff (light elements at covalent distances pack 86 atoms within 3 Å)
    check_min_distance: float = 0.0


def _nequip_num_layers(model) -> int:
    """Message-passing depth of a nequip model: its interaction blocks (1 for strictly local)."""
    blocks = sum(type(m).__name__ == "InteractionBlock" for m in model.modules())
    return max(1, blocks)


def _nequip_architecture(model) -> str:
    """``allegro`` for models built by nequip-allegro (same framework, files and route), else ``nequip``.
    (A packaged model's modules live under ``<torch_package_N>.allegro...``.)"""
    packages = {part for m in model.modules() for part in type(m).__module__.split(".")[:2]}
    return "allegro" if "allegro" in packages else "nequip"


def _load_nequip(path: Path) -> SourceModel:
    from nequip.utils.global_state import set_global_state

    set_global_state()

    def load(compile_mode: str = "eager"):
        from nequip.model.saved_models.load_utils import load_saved_model

        with default_dtype(torch.float64):
            model = load_saved_model(str(path), compile_mode=compile_mode)
        return model.eval()

    try:
        model = load()
    except Exception as err:  # nequip raises many kinds; the user needs the file named
        nor = " (nor a torchmd-net checkpoint)" if path.suffix == ".ckpt" else ""
        raise DeployError(f"{path} is not a loadable nequip checkpoint or package{nor}: {str(err).splitlines()[0]}") from None
    if "atomic_energy" not in getattr(model, "irreps_out", {}):
        raise DeployError(f"{path}: the model has no per-atom energies (atomic_energy), which the pair style needs")
    meta = model.metadata
    metadata = ModelMetadata(r_max=float(meta["r_max"]), type_names=meta["type_names"].split(" "),
                             num_layers=_nequip_num_layers(model), model_dtype=meta["model_dtype"])
    architecture = _nequip_architecture(model)
    # nequip's interaction blocks carry the per-layer exchange hook; Allegro is strictly local
    targets = (("aoti-local", "aoti-exchange", "aoti-ghost", "torchscript-exchange", "torchscript-ghost")
               if architecture == "nequip" and metadata.num_layers > 1 else ("aoti-local", "aoti-ghost", "torchscript-ghost"))
    return SourceModel(path, "nequip", metadata, sha256(path), targets, load, architecture=architecture)


def _load_torchscript(path: Path) -> SourceModel:
    from lmpbench.contract import ContractError, read_metadata

    try:
        metadata = read_metadata(path)
    except ContractError as err:
        raise DeployError(str(err)) from None

    def load():
        return torch.jit.load(str(path), map_location="cpu").eval()

    return SourceModel(path, "torchscript", metadata, sha256(path), ("torchscript-ghost",), load)


@dataclass(frozen=True)
class SourceKind:
    name: str
    suffixes: tuple[str, ...]
    load: Callable[[Path], SourceModel]
    claims: Callable[[Path], bool] | None = None  # for a suffix kinds share: whether the file's content is this kind's


def _is_torchmdnet(path: Path) -> bool:
    from lmpbench.architectures.torchmdnet import is_checkpoint

    return is_checkpoint(path)


def _load_torchmdnet(path: Path) -> SourceModel:
    from lmpbench.architectures.torchmdnet import TorchMDNetError, checkpoint_source

    try:
        return checkpoint_source(path)
    except TorchMDNetError as err:
        raise DeployError(str(err)) from None


def _is_sevenn(path: Path) -> bool:
    from lmpbench.architectures.sevenn import is_checkpoint

    return is_checkpoint(path)


def _load_sevenn(path: Path) -> SourceModel:
    from lmpbench.architectures.sevenn import checkpoint_source

    return checkpoint_source(path)


def _load_chgnet(path: Path) -> SourceModel:
    from lmpbench.architectures.chgnet import checkpoint_source

    return checkpoint_source(path)


SOURCE_KINDS = (
    # torchmd-net's trainer writes .ckpt too: its checkpoints are told from nequip's by their state's names
    SourceKind("torchmdnet", (".ckpt",), _load_torchmdnet, claims=_is_torchmdnet),
    SourceKind("nequip", (".ckpt", ".nequip.zip"), _load_nequip),
    # sevenn's trainer writes .pth (lmpbench train --arch sevenn keeps model.pth): told from TorchScript by content
    SourceKind("sevenn", (".pth",), _load_sevenn, claims=_is_sevenn),
    # chgnet's trainer writes .pth.tar (lmpbench train --arch chgnet keeps model.pth.tar); no other kind does
    SourceKind("chgnet", (".pth.tar",), _load_chgnet),
    SourceKind("torchscript", (".pt", ".pth"), _load_torchscript),
)


def _load_pretrained(spec: str) -> SourceModel:
    """``ARCH:NAME`` (or ``ARCH`` alone for the architecture's default model), weights from the installed wheel."""
    arch, _, name = spec.partition(":")
    if arch not in PRETRAINED_ARCHITECTURES:
        raise DeployError(f"{spec}: no model file of that name, and {arch!r} names no architecture with pretrained "
                          f"models (known: {', '.join(PRETRAINED_ARCHITECTURES)})")
    import importlib

    module = importlib.import_module(f"lmpbench.architectures.{PRETRAINED_ARCHITECTURES[arch]}")
    try:
        return module.pretrained_source(name or module.DEFAULT_PRETRAINED, spec)
    except module.PretrainedError as err:
        raise DeployError(str(err)) from None


PRETRAINED_ARCHITECTURES = {"sevenn": "sevenn", "chgnet": "chgnet"}  # prefix of a pretrained name -> lmpbench.architectures module


def load_source(path: str | Path) -> SourceModel:
    if not Path(path).exists() and str(path).split(":")[0] in PRETRAINED_ARCHITECTURES:
        return _load_pretrained(str(path))
    path = Path(path)
    if not path.is_file():
        raise DeployError(f"model file {path} does not exist (pretrained models are named "
                          f"{' or '.join(a + ':NAME' for a in PRETRAINED_ARCHITECTURES)})")
    for kind in SOURCE_KINDS:
        if path.name.endswith(kind.suffixes) and (kind.claims is None or kind.claims(path)):
            return kind.load(path)
    known = ", ".join(dict.fromkeys(s for k in SOURCE_KINDS for s in k.suffixes))  # kinds may share a suffix
    raise DeployError(f"{path}: unknown model file type (expected one of {known})")


# ---------------------------------------------------------------------------------------------
# exports


class NequIPAtomEnergies(torch.nn.Module):
    """Contract forward around an energy-only nequip model: no cell, so edge vectors are
    pos[j] - pos[i], as the ghost layout needs."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pos: torch.Tensor, edge_index: torch.Tensor, atom_types: torch.Tensor, nlocal: int):
        out = self.model({"pos": pos, "edge_index": edge_index, "atom_types": atom_types})
        return out["atomic_energy"].reshape(-1)


class NequIPGhostForces(torch.nn.Module):
    """aoti-ghost model: atomic energies of all nodes and forces -d(sum of local energies)/dpos
    on all nodes, the local atoms marked by the ``mlff_local_mask`` node field."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.model_dtype = model.model_dtype
        self.type_names = model.type_names

    def forward(self, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pos = data["pos"]
        with torch.enable_grad():
            pos.requires_grad_(True)
            out = self.model({"pos": pos, "edge_index": data["edge_index"], "atom_types": data["atom_types"]})
            atomic_energy = out["atomic_energy"]
            local_energy = (atomic_energy.reshape(-1) * data[LOCAL_MASK_FIELD]).sum()
            (grad,) = torch.autograd.grad([local_energy], [pos], create_graph=self.training)
        return {"atomic_energy": atomic_energy, "forces": -grad}


def _energy_only(model):
    from nequip.model.modify_utils import modify

    return modify(model, [{"modifier": "disable_ForceStressOutput"}])


def _provenance(source: SourceModel, target: DeployTarget, device: str) -> dict[str, str]:
    import nequip

    info = {
        "lmpbench_version": __version__,
        **({"source_spec": source.spec} if source.spec else {}),
        "torch_version": torch.__version__,
        "nequip_version": nequip.__version__,
        "source_file": str(source.path.resolve()),
        "source_sha256": source.sha256,
        "source_kind": source.kind,
        "target": target.name,
        "device": device,
    }
    if source.architecture:
        from importlib.metadata import PackageNotFoundError, version

        info["architecture"] = source.architecture
        package = {"allegro": "nequip-allegro", "sevenn": "sevenn", "chgnet": "chgnet",
                   "torchmdnet": "torchmd-net"}.get(source.architecture)
        if package:
            with contextlib.suppress(PackageNotFoundError):
                info[f"{source.architecture}_version"] = version(package)
    if device == "cpu":
        info["cpu_isa"] = torch.backends.cpu.get_cpu_capability()
    else:
        major, minor = torch.cuda.get_device_capability()
        info["gpu_arch"] = f"sm_{major}{minor}"
    return info


def _export_torchscript(source: SourceModel, out: Path, device: str, provenance: dict, graph: str) -> None:
    metadata = ModelMetadata(r_max=source.metadata.r_max, type_names=source.metadata.type_names,
                             num_layers=source.metadata.num_layers, model_dtype=source.metadata.model_dtype,
                             graph=graph, extra=provenance)
    if source.kind == "torchscript":
        save_model(source.load(), out, metadata)
        return
    from e3nn.util.jit import script
    from nequip.utils.compile import prepare_model_for_compile

    with default_dtype(torch.float64), torch_functions_unwrapped():
        model = prepare_model_for_compile(_energy_only(source.load()), device)
        if graph == "exchange":
            from lmpbench.exchange import ExchangeEnergies, NequIPExchangeNodes

            _enable_exchange(model, source)
            scripted = script(ExchangeEnergies(NequIPExchangeNodes(model)))
        else:
            scripted = script(NequIPAtomEnergies(model))
    torch.jit.save(scripted, str(out), _extra_files={METADATA_FILE: metadata.to_json()})


def _export_torchscript_ghost(source: SourceModel, out: Path, device: str, provenance: dict) -> None:
    _export_torchscript(source, out, device, provenance, "ghost")


def _export_torchscript_exchange(source: SourceModel, out: Path, device: str, provenance: dict) -> None:
    _export_torchscript(source, out, device, provenance, "exchange")


def _enable_exchange(model, source: SourceModel) -> None:
    # raises ExchangeUnavailableError, which moves `auto` on to the next target
    from lmpbench.exchange import enable_nequip_exchange

    enable_nequip_exchange(model, source.metadata.num_layers)


def _aoti_metadata(source: SourceModel, target: DeployTarget, model, inputs, outputs, provenance) -> dict:
    from nequip.utils.aoti_metadata import NEQUIP_AOTI_INPUTS_KEY, NEQUIP_AOTI_OUTPUTS_KEY, serialize_aoti_keys
    from nequip.utils.global_state import get_latest_global_state

    meta = dict(model.metadata)
    meta.update(get_latest_global_state(only_metadata_related=True))
    meta.update(provenance)
    meta.update({
        "contract_version": CONTRACT_VERSION,
        "graph": target.graph,
        "num_layers": source.metadata.num_layers,
        NEQUIP_AOTI_INPUTS_KEY: serialize_aoti_keys(inputs),
        NEQUIP_AOTI_OUTPUTS_KEY: serialize_aoti_keys(outputs),
    })
    return {k: str(int(v)) if isinstance(v, bool) else str(v) for k, v in meta.items()}


def _dynamic_dims() -> dict:
    """One frame; any number of nodes and edges (as nequip-compile's pair_nequip target)."""
    return {
        "graph": torch.export.Dim.STATIC,
        "node": torch.export.Dim("num_nodes", min=2, max=torch.inf),
        "edge": torch.export.Dim("num_edges", min=2, max=torch.inf),
    }


def _export_aoti_local(source: SourceModel, out: Path, device: str, provenance: dict) -> None:
    from nequip.scripts._compile_utils import COMPILE_TARGET_DICT
    from nequip.model.saved_models.load_utils import load_saved_model
    from nequip.utils.aot import aot_export_model

    spec = COMPILE_TARGET_DICT["pair_nequip"]
    with default_dtype(torch.float64):
        model, data = load_saved_model(str(source.path), return_data_dict=True)
        data = spec["data_settings"](dict(data))
        metadata = _aoti_metadata(source, TARGETS["aoti-local"], model, spec["input"], spec["output"], provenance)
        aot_export_model(model=model, device=device, input_fields=spec["input"], output_fields=spec["output"],
                         data={k: v.to(device).contiguous() for k, v in data.items()}, batch_map=_dynamic_dims(),
                         output_path=str(out), inductor_configs={"aot_inductor.metadata": metadata})


def _export_aoti_ghost(source: SourceModel, out: Path, device: str, provenance: dict) -> None:
    from nequip.data._key_registry import register_fields
    from nequip.model.saved_models.load_utils import load_saved_model
    from nequip.utils.aot import aot_export_model

    from lmpbench.graphs import ghost_graph

    register_fields(node_fields=[LOCAL_MASK_FIELD])
    inputs = ["pos", "edge_index", "atom_types", LOCAL_MASK_FIELD]
    outputs = GHOST_OUTPUTS
    with default_dtype(torch.float64):
        loaded, example = load_saved_model(str(source.path), return_data_dict=True)
        wrapper = NequIPGhostForces(_energy_only(loaded))
        # trace on a real ghost graph of the checkpoint's example frame
        nodes = ghost_graph(_example_atoms(example), source.metadata.type_names, source.metadata.r_max,
                            source.metadata.num_layers)
        dtype = torch.float64 if source.metadata.model_dtype == "float64" else torch.float32
        mask = torch.zeros(len(nodes.positions), dtype=dtype)
        mask[: nodes.nlocal] = 1.0
        data = {"pos": torch.tensor(nodes.positions, dtype=dtype), "edge_index": torch.from_numpy(nodes.edge_index),
                "atom_types": torch.from_numpy(nodes.atom_types), LOCAL_MASK_FIELD: mask}
        metadata = _aoti_metadata(source, TARGETS["aoti-ghost"], loaded, inputs, outputs, provenance)
        # AOTInductor compiles for the strides it is traced with: trace with the contiguous
        # tensors the pair style passes
        aot_export_model(model=wrapper, device=device, input_fields=inputs, output_fields=outputs,
                         data={k: v.to(device).contiguous() for k, v in data.items()}, batch_map=_dynamic_dims(),
                         output_path=str(out), inductor_configs={"aot_inductor.metadata": metadata})


def _example_atoms(example: dict) -> Atoms:
    """A nequip checkpoint's example frame, to trace on."""
    return Atoms(numbers=example["atomic_numbers"].numpy(), positions=example["pos"].numpy(),
                 cell=example["cell"].reshape(3, 3).numpy(), pbc=example["pbc"].reshape(3).numpy())


def _export_aoti_exchange(source: SourceModel, out: Path, device: str, provenance: dict) -> None:
    """aoti-exchange: ghosts within one r_max, edges into local atoms, traced with a dynamic
    number of local atoms (the length of the ``mlff_local_weight`` input)."""
    from nequip.model.saved_models.load_utils import load_saved_model
    from nequip.utils.compile import prepare_model_for_compile

    from lmpbench.exchange import ExchangeForces, NequIPExchangeNodes, compile_exchange, example_inputs

    with default_dtype(torch.float64):
        loaded, example = load_saved_model(str(source.path), return_data_dict=True)
        model = _energy_only(loaded)
        _enable_exchange(model, source)
        wrapper = prepare_model_for_compile(ExchangeForces(NequIPExchangeNodes(model)), device)
        metadata = _aoti_metadata(source, TARGETS["aoti-exchange"], loaded, EXCHANGE_INPUTS, GHOST_OUTPUTS, provenance)
        compile_exchange(wrapper, example_inputs(_example_atoms(example), source.metadata, device), out, metadata)


def contract_aoti_metadata(metadata: ModelMetadata, target: str, inputs: list[str], outputs: list[str],
                           provenance: dict) -> dict[str, str]:
    """AOTInductor metadata of an adapter's model: the contract keys the pair style reads, and provenance."""
    from nequip.utils.aoti_metadata import NEQUIP_AOTI_INPUTS_KEY, NEQUIP_AOTI_OUTPUTS_KEY, serialize_aoti_keys

    meta = dict(provenance)
    meta.update({"contract_version": CONTRACT_VERSION, "graph": TARGETS[target].graph, "r_max": metadata.r_max,
                 "type_names": " ".join(metadata.type_names), "num_layers": metadata.num_layers,
                 "model_dtype": metadata.model_dtype,
                 NEQUIP_AOTI_INPUTS_KEY: serialize_aoti_keys(inputs), NEQUIP_AOTI_OUTPUTS_KEY: serialize_aoti_keys(outputs)})
    return {k: str(v) for k, v in meta.items()}


LOCAL_INPUTS = ["pos", "edge_index", "atom_types", "cell", "edge_cell_shift"]  # pair_nequip's layout
LOCAL_OUTPUTS = ["atomic_energy", "forces", "virial"]


def local_example(atoms: Atoms, metadata: ModelMetadata) -> dict[str, torch.Tensor]:
    """Inputs of the local layout for ``atoms`` (a periodic cell), in the model's dtype: to trace with."""
    from ase.neighborlist import neighbor_list

    dtype = torch.float64 if metadata.model_dtype == "float64" else torch.float32
    i, j, shifts = neighbor_list("ijS", atoms, metadata.r_max)
    index = {name: k for k, name in enumerate(metadata.type_names)}
    return {"pos": torch.tensor(atoms.positions, dtype=dtype),
            "edge_index": torch.from_numpy(np.stack([i, j]).astype(np.int64)),
            "atom_types": torch.tensor([index[s] for s in atoms.get_chemical_symbols()], dtype=torch.int64),
            "cell": torch.tensor(atoms.cell.array, dtype=dtype).view(1, 3, 3),
            "edge_cell_shift": torch.tensor(shifts, dtype=dtype)}


def export_aoti(wrapper: torch.nn.Module, out: Path, device: str, inputs: list[str], outputs: list[str],
                data: dict[str, torch.Tensor], metadata: dict[str, str], inductor_configs: dict | None = None) -> None:
    """Compile ``wrapper`` (dict in, dict out, forces inside) with nequip's AOTInductor export route;
    ``inductor_configs``: the adapter's own inductor settings."""
    from nequip.utils.aot import aot_export_model

    aot_export_model(model=wrapper, device=device, input_fields=inputs, output_fields=outputs,
                     data={k: v.to(device).contiguous() for k, v in data.items()}, batch_map=_dynamic_dims(),
                     output_path=str(out),
                     inductor_configs={"aot_inductor.metadata": metadata, **(inductor_configs or {})})


EXPORTERS = {
    "aoti-local": _export_aoti_local,
    "aoti-ghost": _export_aoti_ghost,
    "torchscript-ghost": _export_torchscript_ghost,
    "aoti-exchange": _export_aoti_exchange,
    "torchscript-exchange": _export_torchscript_exchange,
}


def _causes(err: BaseException):
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__


def _missing_training_file(err: BaseException) -> str | None:
    """The file a failed nequip load did not find, when that is why it failed."""
    return next((str(e.filename) for e in _causes(err) if isinstance(e, FileNotFoundError) and e.filename), None)


def _first_line_of_chain(err: BaseException) -> str:
    """First line of the error and of the error that caused it (wrappers such as hydra's cut
    the useful part: 'Error in call to target ...:')."""
    lines = [str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__ for e in _causes(err)]
    return lines[0] + (f" ({lines[-1]})" if len(lines) > 1 and lines[-1] != lines[0] else "")


# ---------------------------------------------------------------------------------------------
# check


@dataclass
class CheckReport:
    """Largest differences between LAMMPS (through the plugin) and the Python model."""

    natoms: int
    reference: str
    energy_eV: float
    forces_eV_A: float
    stress_eV_A3: float
    tolerance: dict
    structure: str = ""  # what was evaluated, in words

    @property
    def passed(self) -> bool:
        return all(getattr(self, k) <= tol for k, tol in self.tolerance.items())

    def lines(self) -> list[str]:
        rows = [f"check on {self.structure or f'{self.natoms} atoms'}, LAMMPS vs {self.reference}:"]
        for key, label in (("energy_eV", "energy (eV)"), ("forces_eV_A", "forces (eV/Å)"), ("stress_eV_A3", "stress (eV/Å³)")):
            value, tol = getattr(self, key), self.tolerance[key]
            rows.append(f"  max |Δ| {label:15s} {value:10.3e}  (tolerance {tol:.0e}) {'ok' if value <= tol else 'FAILED'}")
        return rows


def default_structure(type_names: list[str], seed: int = 7, min_distance: float = 0.0) -> Atoms:
    """A rattled, sheared fcc alloy of the model's elements (108 atoms), nearest-neighbour
    distance from covalent radii (at least ``min_distance``), in LAMMPS orientation."""
    from ase.build import bulk
    from ase.data import atomic_numbers, covalent_radii

    from lmpbench.structures import lammps_oriented

    rng = np.random.default_rng(seed)
    elements = [s for s in type_names if s in atomic_numbers]
    if not elements:
        raise DeployError(f"cannot build a test structure: no element among the model's types {type_names}; pass one")
    nn_distance = max(2 * np.mean([covalent_radii[atomic_numbers[s]] for s in elements]), min_distance)
    atoms = bulk(elements[0], "fcc", a=nn_distance * np.sqrt(2), cubic=True).repeat((3, 3, 3))
    atoms.symbols[:] = rng.choice(elements, size=len(atoms))
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + np.array([[0.01, 0.06, 0.03], [0, -0.02, 0.05], [0, 0, 0.02]])),
                   scale_atoms=True)
    atoms.rattle(0.05, seed=seed)
    return lammps_oriented(atoms)


def check_structure(source: SourceModel) -> Atoms:
    """The structure deploy checks ``source`` on (and traces its compiled files with) when none is given."""
    return default_structure(list(source.check_elements) or source.metadata.type_names,
                             min_distance=source.check_min_distance)


def lammps_evaluate(model_file: Path, atoms: Atoms, type_names: list[str], pair_args: str = "") -> dict:
    """Energy (eV), forces (eV/Å, in the order of ``atoms``) and stress (eV/Å³, ASE's sign and
    Voigt order xx yy zz yz xz xy) of ``atoms`` through pair style mlff, in this process."""
    from lmpbench.engine import open_lammps
    from lmpbench.structures import boundary, lammps_oriented, write_lammps_data

    atoms = lammps_oriented(atoms)
    elements = [s for s in type_names if s in set(atoms.get_chemical_symbols())]
    with tempfile.TemporaryDirectory() as tmp:
        data = write_lammps_data(Path(tmp) / "check.data", atoms, elements)
        lmp = open_lammps()
        try:
            try:
                lmp.commands_string("\n".join([
                    "units metal", "atom_modify map array", f"boundary {boundary(atoms)}", f"read_data {data}",
                    f"pair_style mlff {pair_args}", f"pair_coeff * * {model_file} {' '.join(elements)}",
                    "thermo_style custom step pe pxx pyy pzz pyz pxz pxy vol", "run 0 post no"]))
            except Exception as err:  # the lammps module raises bare Exception with LAMMPS's ERROR line
                raise DeployError(f"LAMMPS could not evaluate {model_file}: {str(err).splitlines()[0]}") from None
            n = len(atoms)
            forces = np.ctypeslib.as_array(lmp.gather_atoms("f", 1, 3)).reshape(n, 3).copy()
            pressure = np.array([lmp.get_thermo(k) for k in ("pxx", "pyy", "pzz", "pyz", "pxz", "pxy")])
            nktv2p = lmp.extract_global("nktv2p")
            energy = lmp.get_thermo("pe")
        finally:
            lmp.close()
    return {"energy": energy, "forces": forces, "stress": -pressure / nktv2p, "atoms": atoms}


def python_evaluate(source: SourceModel, atoms: Atoms) -> tuple[dict, str]:
    """The same quantities from the model in Python: nequip's ASE calculator for nequip
    models, the architecture's own calculator for adapters, the contract forward on an unrolled periodic graph
    for TorchScript ones."""
    if source.calculator is not None:
        atoms = atoms.copy()
        atoms.calc = source.calculator()
        return ({"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(),
                 "stress": atoms.get_stress(voigt=True) if atoms.pbc.all() else np.zeros(6)}, source.reference)
    if source.kind == "nequip":
        from nequip.integrations.ase import NequIPCalculator

        with default_dtype(torch.float64):
            calc = NequIPCalculator._from_saved_model(str(source.path), device="cpu")
            atoms = atoms.copy()
            atoms.calc = calc
            result = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(),
                      "stress": atoms.get_stress(voigt=True) if atoms.pbc.all() else np.zeros(6)}
        return result, "nequip's ASE calculator"

    from lmpbench.graphs import contract_energy_forces, ghost_graph

    meta = source.metadata
    graph = ghost_graph(atoms, meta.type_names, meta.r_max, meta.num_layers)
    energy, forces = contract_energy_forces(source.load(), graph)
    return {"energy": energy, "forces": forces, "stress": None}, "the TorchScript model on a Python-built periodic graph"


def check(model_file: str | Path, source: SourceModel, atoms: Atoms | None = None, pair_args: str = "") -> CheckReport:
    """Evaluate ``atoms`` (default: ``check_structure(source)``) in LAMMPS and in Python."""
    meta = source.metadata
    if atoms is None:
        atoms = check_structure(source)
        described = (f"lmpbench's test structure, a rattled and sheared fcc {'-'.join(sorted(set(atoms.get_chemical_symbols())))} "
                     f"crystal of {len(atoms)} atoms in a periodic triclinic cell")
    else:
        described = (f"the given structure, {atoms.get_chemical_formula()} ({len(atoms)} atoms, "
                     f"{'periodic' if atoms.pbc.all() else 'not periodic' if not atoms.pbc.any() else 'partly periodic'})")
    unknown = sorted(set(atoms.get_chemical_symbols()) - set(meta.type_names))
    if unknown:
        raise DeployError(f"structure has element(s) {', '.join(unknown)} that the model lacks (it has {' '.join(meta.type_names)})")
    lmp = lammps_evaluate(Path(model_file), atoms, meta.type_names, pair_args)
    ref, reference = python_evaluate(source, lmp["atoms"])
    stress = 0.0 if ref["stress"] is None or not lmp["atoms"].pbc.all() else float(np.abs(lmp["stress"] - ref["stress"]).max())
    return CheckReport(len(atoms), reference, abs(lmp["energy"] - ref["energy"]),
                       float(np.abs(lmp["forces"] - ref["forces"]).max()), stress, TOLERANCES[meta.model_dtype],
                       described)


# ---------------------------------------------------------------------------------------------
# deploy


@dataclass
class DeployResult:
    path: Path
    target: DeployTarget
    source: SourceModel
    report: CheckReport
    fallback_reason: str | None = None

    def pair_lines(self, elements: list[str]) -> str:
        return f"pair_style mlff\npair_coeff * * {self.path} {' '.join(elements)}"


def choose_target(source: SourceModel, target: str, ranks: int) -> list[str]:
    """Targets to try in order: the requested one, or for ``auto`` the fastest that runs on
    ``ranks`` ranks, then the TorchScript fallback."""
    if target != "auto":
        if target not in TARGETS:
            raise DeployError(f"unknown target {target!r}; choose from {', '.join(TARGETS)} or auto")
        if target not in source.targets:
            raise DeployError(f"{source.kind} models deploy to {', '.join(source.targets)}, not {target}")
        if ranks > 1 and not TARGETS[target].multi_rank:
            multi_rank = [t for t in source.targets if TARGETS[t].multi_rank]
            raise DeployError(f"target {target} runs on one MPI rank only; "
                              + (f"use {' or '.join(multi_rank)} for {ranks}" if multi_rank
                                 else f"{source.spec or source.path} has no multi-rank target"))
        return [target]
    usable = [t for t in source.targets if ranks == 1 or TARGETS[t].multi_rank]
    if not usable:
        raise DeployError(f"{source.spec or source.path} runs on one MPI rank only (--ranks {ranks} asked): "
                          "it has no multi-rank target")
    return usable


def deploy(model: str | Path, out: str | Path, target: str = "auto", ranks: int = 1, device: str = "cpu",
           dtype: str | None = None, structure: Atoms | None = None, echo=print) -> DeployResult:
    """Deploy ``model`` to ``out`` and check it; ``out`` is replaced only by a checked file."""
    source = load_source(model)
    if dtype is not None and dtype != source.metadata.model_dtype:
        if source.kind != "torchscript":
            raise DeployError(f"{model} was trained with model_dtype {source.metadata.model_dtype}; {source.kind} fixes "
                              f"the dtype at training, so it cannot be deployed as {dtype}")
        meta = source.metadata
        source.metadata = ModelMetadata(meta.r_max, meta.type_names, meta.num_layers, dtype, extra=meta.extra)
    if device == "cuda" and not torch.cuda.is_available():
        raise DeployError("--device cuda: this torch has no CUDA or no GPU is visible")
    out = Path(out).resolve()
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK):
        raise DeployError(f"cannot write {out}: {out.parent} is not a writable folder")
    candidates = choose_target(source, target, ranks)
    if structure is not None:  # before compiling (minutes for large models), not after
        unknown = sorted(set(structure.get_chemical_symbols()) - set(source.metadata.type_names))
        if unknown:
            raise DeployError(f"structure has element(s) {', '.join(unknown)} that {source.spec or source.path} does "
                              f"not cover (it has {' '.join(source.metadata.type_names)})")
    fallback_reason = None
    for name in candidates:
        spec = TARGETS[name]
        if out.suffix != spec.suffix:
            if target != "auto":
                raise DeployError(f"target {name} writes a {spec.suffix} file; name the output *{spec.suffix}")
            continue
        # the file is written under its final name in a hidden folder beside it (AOTInductor
        # packages record their name inside), checked, and only then moved into place
        staging_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        staging = staging_dir / out.name
        names = source.metadata.type_names
        types = ", ".join(names) if len(names) <= 12 else f"{len(names)} elements"
        echo(f"deploying {source.spec or source.path} ({source.architecture or source.kind}, {types}, r_max "
             f"{source.metadata.r_max}, {source.metadata.num_layers} layer(s)) as {name} on {device}")
        try:
            with serial_kernels():
                source.exporters.get(name, EXPORTERS[name])(source, staging, device, _provenance(source, spec, device))
        except DeployError:
            raise
        except Exception as err:  # an export that fails moves on to the fallback
            missing = _missing_training_file(err) if source.kind == "nequip" else None
            if missing:
                shutil.rmtree(staging_dir, ignore_errors=True)
                raise DeployError(
                    f"{model}: nequip rebuilds a checkpoint's data module when it loads one, and its training data "
                    f"file {missing} does not exist (a checkpoint moved from another machine?); restore the file, or "
                    "deploy a .nequip.zip made with `nequip-package` where it was trained: a package deploys "
                    "anywhere") from None
            fallback_reason = f"{name} failed: {_first_line_of_chain(err)}"
            echo(fallback_reason)
            shutil.rmtree(staging_dir, ignore_errors=True)
            continue
        try:
            report = check(staging, source, structure, pair_args=f"device {device}")
        except BaseException:
            shutil.rmtree(staging_dir, ignore_errors=True)
            raise
        for line in report.lines():
            echo(line)
        if not report.passed:
            rejected = out.with_name(out.name + ".rejected")
            staging.replace(rejected)
            shutil.rmtree(staging_dir, ignore_errors=True)
            raise DeployCheckError(f"deployed model disagrees with {report.reference} beyond tolerance; "
                                   f"kept as {rejected} for inspection, {out} left as it was")
        staging.replace(out)
        shutil.rmtree(staging_dir, ignore_errors=True)
        return DeployResult(out, spec, source, report, fallback_reason)
    raise DeployError(f"no target could deploy {model} to {out}" + (f" ({fallback_reason})" if fallback_reason else "")
                      + f"; tried {', '.join(candidates)} (a .pt output takes the TorchScript targets, .pt2 the AOTInductor ones)")


def source_for_check(deployed: str | Path, source: str | Path | None = None) -> SourceModel:
    """The Python model to check ``deployed`` against: ``source`` when given, else the source
    recorded in the file (when it is still there, unchanged), else the file itself for
    TorchScript files (evaluated in Python on an independently built graph)."""
    deployed = Path(deployed)
    if source is not None:
        return load_source(source)
    meta = read_deployed_metadata(deployed)
    if meta.get("source_spec"):
        return load_source(meta["source_spec"])
    recorded = meta.get("source_file")
    if recorded and Path(recorded).is_file() and sha256(recorded) == meta.get("source_sha256"):
        return load_source(recorded)
    if deployed.suffix == ".pt":
        return load_source(deployed)
    why = f"its recorded source {recorded} is gone or changed" if recorded else "it records no source model"
    raise DeployError(f"cannot check {deployed}: {why}; give the trained model with --source")


def read_deployed_metadata(path: str | Path) -> dict[str, str]:
    """Metadata of a deployed file (TorchScript or AOTInductor), flat strings."""
    path = Path(path)
    if not path.is_file():
        raise DeployError(f"deployed model file {path} does not exist")
    if path.suffix == ".pt2":
        from torch._inductor import aoti_load_package

        try:
            return dict(aoti_load_package(str(path)).get_metadata())
        except Exception as err:
            raise DeployError(f"{path} is not a loadable AOTInductor package: {str(err).splitlines()[0]}") from None
    extra = {METADATA_FILE: ""}
    try:
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as err:  # torch raises many kinds (RuntimeError, IndexError, ...) for a damaged archive
        raise DeployError(f"{path} is not a TorchScript model: {_first_line_of_chain(err)}") from None
    from lmpbench.contract import ContractError, metadata_dict

    try:
        data = metadata_dict(extra[METADATA_FILE] or "{}", path)
    except ContractError as err:
        raise DeployError(str(err)) from None
    provenance, type_names = data.get("extra", {}), data.get("type_names", [])
    if not isinstance(provenance, dict) or not isinstance(type_names, list) or not all(isinstance(t, str) for t in type_names):
        raise DeployError(f"{path}: its {METADATA_FILE} has no list of type names or a malformed 'extra' table")
    flat = {k: v for k, v in data.items() if k != "extra"}
    flat.update(provenance)
    flat["type_names"] = " ".join(type_names)
    return {k: str(v) for k, v in flat.items()}
