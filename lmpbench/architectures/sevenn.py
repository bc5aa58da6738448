"""SevenNet (``sevenn`` 0.13): pretrained universal models whose weights ship in the wheel, and
models trained with ``lmpbench train --arch sevenn`` (sevenn's own trainer).

``lmpbench deploy sevenn:7net-0 -o model.pt2`` builds the model from the checkpoint inside the
installed ``sevenn`` package (no network), wraps it into the pair style's local layout and
compiles it with AOTInductor (nequip's make_fx export route; forces and virial are computed
inside the compiled graph). The reference of the deploy check is sevenn's own ASE calculator.
A checkpoint of sevenn's trainer (``checkpoint_best.pth``, kept by ``lmpbench train`` as
``model.pth``) deploys the same way: ``lmpbench deploy model.pth -o model.pt2``.

Training (``--arch sevenn``): the ``sevenn`` console script with an input YAML that
``build_config`` writes (sevenn's own format: ``model``, ``train``, ``data``), reading the
dataset's extended XYZ splits as they are (ASE). sevenn trains in float32 only (its trainer
refuses double precision). Loss: per-atom energy and force MSE, weight 1:1; Adam; learning rate
reduced on plateaus of the validation loss; sevenn's own energy shift (per-atom mean) and scale
(force RMS). sevenn writes ``checkpoint_best.pth`` after every epoch that lowers the validation
loss; that is the kept checkpoint. sevenn has no time limit: ``--max-minutes`` is lmpbench's
(it interrupts the trainer, keeping the best checkpoint written by then).

The adapter: sevenn's ``AtomGraphSequential`` with its force module removed and its type map
evaluated outside (``x`` = the model's type index, as sevenn's own LAMMPS deploy does) takes
``x``, ``edge_index`` (row 0 the centre, row 1 the neighbour) and ``edge_vec`` = pos[j] -
pos[i] + shift·cell, the same convention as nequip's pair_nequip layout; it returns per-atom
energies. Forces are -dE/dpos, scattered from dE/d(edge_vec); the virial is
-Σ_edges edge_vec ⊗ dE/d(edge_vec) (LAMMPS's sign, Σ r ⊗ f).

Several MPI ranks: the exchange layout (``aoti-exchange``, ``torchscript-exchange``). Ghosts
within one r_max, edges into local atoms only; a ``NodeFeatureExchange`` layer inserted before
each interaction layer after the first refreshes the ghost rows of the node features ``x``
from their owners (``lmpbench.exchange``). Node-wise layers run on ghost rows too (their
inputs are their owners' after the exchange, so they are right there as well); the messages
into local atoms are then exact, as are their energies. The ghost layout would need a
num_layers × r_max ghost shell (25 Å for SevenNet-0), tens of times the model's cost.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
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


def exchange_model(model, num_layers: int):
    """``model`` (energy-only ``AtomGraphSequential``, changed in place: give it a model of its
    own, not the source's cached one) with a ``NodeFeatureExchange`` of the node features before
    the first module of each interaction layer after the first (sevenn names a layer's modules
    ``{layer}_...``). Not a deep copy: e3nn may hold scripted functions, which cannot be copied."""
    from sevenn import _keys as KEY

    from lmpbench.exchange import ExchangeUnavailableError, NodeFeatureExchange, load_operators

    load_operators()
    modules, layers = OrderedDict(), []
    for name, module in model._modules.items():
        layer = name.split("_", 1)[0]
        if layer.isdigit() and layer not in layers:
            layers.append(layer)
            if len(layers) > 1:
                modules[f"{layer}_ghost_exchange"] = NodeFeatureExchange(KEY.NODE_FEATURE)
        modules[name] = module
    if len(layers) != num_layers:
        raise ExchangeUnavailableError(f"the model has {len(layers)} numbered layers for {num_layers} convolutions")
    model._modules.clear()
    model._modules.update(modules)
    return model


class SevenNetExchangeNodes(torch.nn.Module):
    """The exchange layout's nodes module (``lmpbench.exchange``) around a SevenNet energy model
    with exchange layers: per-node energies, local atoms first."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pos: torch.Tensor, edge_index: torch.Tensor, atom_types: torch.Tensor,
                local_rows: torch.Tensor) -> torch.Tensor:
        edge_vec = torch.index_select(pos, 0, edge_index[1]) - torch.index_select(pos, 0, edge_index[0])
        data = {"x": atom_types, "edge_index": edge_index, "edge_vec": edge_vec}
        return self.model(data)["atomic_energy"].reshape(-1)


def export_torchscript_exchange(source, out: Path, device: str, provenance: dict) -> None:
    from e3nn.util.jit import script

    from lmpbench.contract import save_model, torch_functions_unwrapped
    from lmpbench.exchange import ExchangeEnergies

    meta = source.metadata
    nodes = SevenNetExchangeNodes(exchange_model(load_model(source.path)[0], meta.num_layers))
    with torch_functions_unwrapped():  # sevenn's calculator imports torch_geometric
        scripted = script(ExchangeEnergies(nodes).to(device))
    save_model(scripted, out, type(meta)(
        r_max=meta.r_max, type_names=meta.type_names, num_layers=meta.num_layers, model_dtype=meta.model_dtype,
        graph="exchange", extra=provenance))


def export_aoti_exchange(source, out: Path, device: str, provenance: dict) -> None:
    from lmpbench.deploy import EXCHANGE_INPUTS, GHOST_OUTPUTS, check_structure, contract_aoti_metadata
    from lmpbench.exchange import ExchangeForces, compile_exchange, example_inputs

    meta = source.metadata
    wrapper = ExchangeForces(SevenNetExchangeNodes(exchange_model(load_model(source.path)[0], meta.num_layers))).to(device)
    inputs = example_inputs(check_structure(source), meta, device)
    with traceable():
        compile_exchange(wrapper, inputs, out,
                         contract_aoti_metadata(meta, "aoti-exchange", EXCHANGE_INPUTS, GHOST_OUTPUTS, provenance))


def pretrained_source(name: str, spec: str):
    """The deploy source of pretrained ``name``: metadata, the local-layout exporter, sevenn's calculator."""
    return checkpoint_source(checkpoint_path(name), spec=spec, check_elements=CHECK_ELEMENTS)


def is_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a checkpoint of sevenn's trainer: its pickle holds sevenn's
    ``model_state_dict`` and its model type (``E3_equivariant_model``)."""
    from lmpbench.architectures import checkpoint_pickle_holds

    return checkpoint_pickle_holds(path, b"model_state_dict", b"E3_equivariant_model")


def checkpoint_source(path: Path, spec: str = "", check_elements: tuple[str, ...] = ()):
    """The deploy source of a sevenn checkpoint (pretrained or trained): metadata, the local-layout
    exporter, sevenn's calculator. ``check_elements``: those of the default check structure (default:
    the model's own, which a trained model has few of)."""
    from lmpbench.contract import ModelMetadata
    from lmpbench.deploy import DeployError, SourceModel, sha256

    from sevenn.util import load_checkpoint

    path = Path(path)
    try:
        meta = metadata_of(load_checkpoint(str(path)).config)  # building the model takes longer: only on demand
    except Exception as err:  # sevenn raises many kinds (KeyError, RuntimeError, ...) for a bad checkpoint
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DeployError(f"{path} is not a loadable sevenn checkpoint: {first}") from None
    built = []

    def load():
        if not built:
            built.append(load_model(path)[0])
        return built[0]

    metadata = ModelMetadata(**meta)

    def export(source, out: Path, device: str, provenance: dict) -> None:
        export_local(SevenNetLocal(source.load(), source.metadata.model_dtype), source, out, device, provenance,
                     tracing=traceable)

    return SourceModel(path, "sevenn", metadata, sha256(path), ("aoti-local", "aoti-exchange", "torchscript-exchange"),
                       load, architecture="sevenn",
                       exporters={"aoti-local": export, "aoti-exchange": export_aoti_exchange,
                                  "torchscript-exchange": export_torchscript_exchange},
                       calculator=lambda: calculator(path), reference="sevenn's ASE calculator (SevenNetCalculator)",
                       check_elements=tuple(check_elements or meta["type_names"]), spec=spec)


# ---------------------------------------------------------------------------------------------
# training: sevenn's own trainer (the `sevenn` console script) as a registry entry

# lmpbench's hyperparameter names; float32: sevenn's trainer has no double precision. Molecules
# (6 Å, a few atoms) get more features; periodic systems (hundreds of atoms per frame) fewer and
# smaller batches, as nequip's entry.
DEFAULTS = {
    "molecule": {"num_layers": 2, "l_max": 1, "num_features": 32, "radial_mlp_depth": 1, "radial_mlp_width": 32,
                 "batch_size": 4, "learning_rate": 0.01, "model_dtype": "float32"},
    "periodic": {"num_layers": 2, "l_max": 1, "num_features": 16, "radial_mlp_depth": 1, "radial_mlp_width": 16,
                 "batch_size": 2, "learning_rate": 0.01, "model_dtype": "float32"},
}
UNLIMITED_EPOCHS = 1_000_000  # --max-minutes without --max-epochs: lmpbench stops the trainer
CHECKPOINT = "checkpoint_best.pth"  # written by sevenn after each epoch that lowers the validation loss
CURVE = "lc.csv"  # sevenn's per-epoch learning curve


def build_config(request):
    """sevenn's input YAML (as a dict) for ``request``."""
    from lmpbench.architectures import ArchitectureError

    hp = request.hyperparameters
    if not request.has_energy:
        raise ArchitectureError("sevenn trains on energies and forces together; this dataset has forces only "
                                "(train it with --arch nequip, which trains on forces alone)")
    if hp.get("model_dtype", "float32") != "float32":
        raise ArchitectureError(f"sevenn trains in float32 only (model_dtype {hp['model_dtype']} asked)")
    if request.val_file is None:
        raise ArchitectureError("sevenn needs a validation file (the dataset's val split)")
    return {
        "model": {
            "chemical_species": list(request.type_names),
            "cutoff": float(request.cutoff_A),
            "channel": hp["num_features"],
            "lmax": hp["l_max"],
            "num_convolution_layer": hp["num_layers"],
            "weight_nn_hidden_neurons": [hp["radial_mlp_width"]] * hp["radial_mlp_depth"],
            "radial_basis": {"radial_basis_name": "bessel", "bessel_basis_num": 8},
            "cutoff_function": {"cutoff_function_name": "poly_cut", "poly_cut_p_value": 6},
            "is_parity": False,
            "self_connection_type": "nequip",
            "conv_denominator": "avg_num_neigh",
            "train_shift_scale": False,
            "train_denominator": False,
        },
        "train": {
            "random_seed": request.seed,
            "is_train_stress": False,  # the datasets carry no stress labels
            "epoch": request.max_epochs if request.max_epochs is not None else UNLIMITED_EPOCHS,
            "optimizer": "adam",
            "optim_param": {"lr": hp["learning_rate"]},
            "scheduler": "reducelronplateau",
            "scheduler_param": {"factor": 0.6, "patience": 5},
            "force_loss_weight": 1.0,
            "per_epoch": UNLIMITED_EPOCHS,  # no periodic checkpoints: the best one is kept
            "error_record": [["Energy", "MAE"], ["Force", "MAE"], ["TotalLoss", "None"]],
            "best_metric": "TotalLoss",
            "device": "cuda" if request.accelerator == "gpu" else "cpu",
        },
        "data": {
            "batch_size": hp["batch_size"],
            "shift": "per_atom_energy_mean",
            "scale": "force_rms",
            "load_trainset_path": [str(request.train_file)],
            "load_validset_path": [str(request.val_file)],
        },
    }


def option_overrides(max_epochs: int | None, max_minutes: float | None, seed: int | None) -> dict:
    train = {}
    if max_epochs is not None:
        train["epoch"] = max_epochs
    elif max_minutes is not None:
        train["epoch"] = UNLIMITED_EPOCHS  # until lmpbench stops it
    if seed is not None:
        train["random_seed"] = seed
    return {"train": train} if train else {}


def train_arguments(config_dir: Path, config_name: str, run_dir: Path) -> list[str]:
    # -s: sevenn's log to stdout as well (trainer.log); its own copy is run/log.sevenn
    return [str(config_dir / f"{config_name}.yaml"), "-w", str(run_dir), "-s"]


def find_checkpoint(run_dir: Path) -> Path | None:
    return run_dir / CHECKPOINT if (run_dir / CHECKPOINT).is_file() else None


def read_curve(run_dir: Path) -> list[dict]:
    """One row per epoch from sevenn's lc.csv: training loss (sevenn's weighted total) and the
    validation MAEs (sevenn's Energy is per atom) in meV."""
    import csv

    path = run_dir / CURVE
    if not path.is_file():
        return []

    def number(row: dict, key: str, factor: float = 1.0) -> float | None:
        try:
            return float(row[key]) * factor
        except (KeyError, TypeError, ValueError):
            return None

    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            forces = number(row, "validset_Force_MAE", 1000.0)
            if number(row, "epoch") is None or forces is None:  # a line being written
                continue
            rows.append({"epoch": int(float(row["epoch"])), "train_loss": number(row, "trainset_TotalLoss"),
                         "val_forces_mae_meV_A": forces,
                         "val_energy_mae_meV_atom": number(row, "validset_Energy_MAE", 1000.0)})
    return rows


def checkpoint_epoch(checkpoint: Path) -> int | None:
    """The epoch (sevenn counts from 1) after which sevenn saved ``checkpoint``."""
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=False)
    epoch = state.get("epoch") if isinstance(state, dict) else None
    return int(epoch) if epoch is not None else None


def _register():
    from lmpbench.architectures import Architecture, register

    return register(Architecture(
        name="sevenn",
        description="SevenNet (E(3)-equivariant message passing, NequIP-like), sevenn 0.13 and its trainer (float32)",
        checkpoint_suffixes=(".pth",),
        train_script="sevenn",
        defaults=DEFAULTS,
        build_config=build_config,
        option_overrides=option_overrides,
        train_arguments=train_arguments,
        find_checkpoint=find_checkpoint,
        read_curve=read_curve,
        calculator=calculator,
        checkpoint_epoch=checkpoint_epoch,
        stops_at_max_minutes=False,
        checkpoint_note="sevenn's own checkpoint (model, config, optimizer state); SevenNetCalculator(model=FILE) "
                        "loads it, lmpbench deploy takes it",
    ))


SEVENN = _register()
