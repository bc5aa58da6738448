"""Run folders of the published benchmark's own code (MDsim's ``simulate.py``).

A folder holds ``atoms.traj`` (ASE trajectory written by ASE MD: unwrapped positions, one
frame every ``save_freq`` steps), ``thermo.log`` (one row per saved frame:
``Time[ps] Etot[eV] Epot[eV] Ekin[eV] T[K]``, appended on restart), ``test_metric.json``
(the model's force and energy errors on the test split, in eV and eV/Å, as MDsim stores its
labels; ``early_stop`` when the run stopped on a temperature out of range), ``config.yml``
(the simulation config, when present), and for alanine dipeptide PLUMED's ``HILLS``,
``COLVAR`` and perhaps ``fes.dat``.

The time between frames comes from ``thermo.log``'s time column (``frame_interval_ps``); the
benchmark system from the user, else from the trajectory's composition (``SYSTEM_BY_FORMULA``).
The test errors are imported, not recomputed: ``imported_test_errors`` reads the three
layouts MDsim writes (``TEST_METRIC_LAYOUTS``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MDSIM_FILES = ("atoms.traj", "thermo.log")  # what makes a folder an MDsim run
TIME_TOLERANCE = 1e-3  # relative spread of the frame interval tolerated (thermo.log prints 4 decimals)


class MDsimError(ValueError):
    """An MDsim folder cannot be imported; the message names the file and the problem."""


def is_mdsim_folder(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and not (path / "run.json").exists() and all((path / f).is_file() for f in MDSIM_FILES)


# ------------------------------------------------------------ thermo.log


def read_thermo_log(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of MDsim's ``thermo.log`` by header name (``Time[ps]`` ...). A restart appends rows
    (and, from time 0, a header); a row whose time does not increase (the restart's repeat of
    the last saved frame) is dropped, as MDsim's trajectory holds that frame once."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise MDsimError(f"cannot read {path}: {err}") from None
    header, rows = None, []
    for number, line in enumerate(lines, 1):
        words = line.split()
        if not words:
            continue
        if words[0].startswith("Time"):
            if header is not None and words != header:
                raise MDsimError(f"{path}: line {number}: the columns change")
            header = words
            continue
        if header is None:
            raise MDsimError(f"{path}: no header line (Time[ps] ...) before the numbers")
        try:
            values = [float(w) for w in words]
        except ValueError:
            raise MDsimError(f"{path}: line {number} holds something that is not a number") from None
        if len(values) != len(header):
            raise MDsimError(f"{path}: line {number} has {len(values)} values for {len(header)} columns")
        if rows and values[0] <= rows[-1][0]:
            continue
        rows.append(values)
    if header is None or not rows:
        raise MDsimError(f"{path}: no thermo rows")
    data = np.array(rows)
    return {name: data[:, k] for k, name in enumerate(header)}


def frame_interval_ps(times_ps: np.ndarray, where: str) -> float:
    """The time between saved frames: the mean spacing of the times, refused when uneven."""
    if len(times_ps) < 2:
        raise MDsimError(f"{where}: one thermo row; the time between frames is unknown")
    steps = np.diff(times_ps)
    mean = float(steps.mean())
    if mean <= 0 or np.abs(steps - mean).max() > TIME_TOLERANCE * max(mean, 1e-3) + 1e-4:
        raise MDsimError(f"{where}: frames are not evenly spaced in time ({steps.min():g} to {steps.max():g} ps)")
    return mean


# ------------------------------------------------------------ test_metric.json


@dataclass(frozen=True)
class MetricLayout:
    """Where one of MDsim's evaluators put its errors in test_metric.json (eV and eV/Å)."""

    evaluator: str
    forces: str  # key of the force MAE, eV/Å
    energy_per_atom: str | None  # key of the energy MAE per atom, eV/atom
    energy_total: str | None  # key of the energy MAE per structure, eV (divided by the atoms when no per-atom key)
    nested: bool = False  # values are {"total", "numel", "metric"} dicts (OCP's evaluator)


TEST_METRIC_LAYOUTS = (
    MetricLayout("OCP trainer (SchNet, DimeNet, ForceNet, GemNet)", "forces_mae", None, "energy_mae", nested=True),
    MetricLayout("nequip-evaluate", "f_mae", "e/N_mae", "e_mae"),
    MetricLayout("DeePMD dp_test", "mae_f", "mae_ea", "mae_e"),
)


def imported_test_errors(path: str | Path, natoms: int) -> dict:
    """The benchmark's force/energy error entry from MDsim's ``test_metric.json``: force MAE in
    meV/Å, energy MAE in meV/atom, labelled as imported."""
    path = Path(path)
    if not path.is_file():
        return {"value": None, "reason": "the folder has no test_metric.json"}
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise MDsimError(f"{path}: not JSON: {err}") from None
    if not isinstance(metrics, dict):
        raise MDsimError(f"{path}: not a JSON object")

    def value(key):
        entry = metrics.get(key)
        entry = entry.get("metric") if isinstance(entry, dict) else entry
        return float(entry) if isinstance(entry, (int, float)) and not isinstance(entry, bool) else None

    layout = next((lay for lay in TEST_METRIC_LAYOUTS if value(lay.forces) is not None), None)
    if layout is None:
        return {"value": None, "reason": f"{path.name} has no force error (keys: {', '.join(sorted(metrics)) or 'none'}; "
                                         "MDsim skips it with --no_evaluate)"}
    energy, energy_how = None, None
    if layout.energy_per_atom and value(layout.energy_per_atom) is not None:
        energy, energy_how = value(layout.energy_per_atom), f"{layout.energy_per_atom} (eV/atom)"
    elif layout.energy_total and value(layout.energy_total) is not None:
        energy, energy_how = value(layout.energy_total) / natoms, f"{layout.energy_total} (eV) / {natoms} atoms"
    record = {"value": 1000.0 * value(layout.forces), "unit": "meV/Å",
              "energy_mae_meV_atom": None if energy is None else 1000.0 * energy,
              "imported": True, "source": f"imported from test_metric.json ({layout.evaluator})",
              "definition": f"imported from test_metric.json: {layout.forces} (eV/Å) x 1000"
                            + (f"; energy {energy_how} x 1000" if energy_how else "; no energy error"),
              "file": str(path.resolve())}
    for key in ("num_params", "running_time", "early_stop", "simulated_frames"):
        if key in metrics:
            record[key] = metrics[key]
    return record


# ------------------------------------------------------------ the system and the model


@dataclass(frozen=True)
class FormulaSystem:
    formula: dict  # element -> count in the trajectory
    system: str  # lmpbench.systems name
    periodic: bool


SYSTEM_BY_FORMULA = (
    FormulaSystem({"C": 2, "H": 6, "O": 1}, "md17_ethanol", False),
    FormulaSystem({"C": 9, "H": 8, "O": 4}, "md17_aspirin", False),
    FormulaSystem({"C": 10, "H": 8}, "md17_naphthalene", False),
    FormulaSystem({"C": 7, "H": 6, "O": 3}, "md17_salicylic_acid", False),
    FormulaSystem({"C": 6, "H": 12, "N": 2, "O": 2}, "alanine_dipeptide", False),
)
SYSTEM_BY_ELEMENTS = ((frozenset({"H", "O"}), "water"), (frozenset({"Li", "P", "S"}), "lips"))


def system_of(symbols: list[str]) -> str | None:
    """The benchmark system a trajectory's composition names, or None. MDsim puts molecules in a
    periodic box too, so the formula decides molecules and the element set periodic systems."""
    counts = {s: symbols.count(s) for s in set(symbols)}
    for entry in SYSTEM_BY_FORMULA:
        if counts == entry.formula:
            return entry.system
    return next((name for elements, name in SYSTEM_BY_ELEMENTS if set(counts) == elements), None)


def folder_config(folder: Path) -> dict:
    """MDsim's ``config.yml`` of the run (empty when absent or unreadable: it only adds labels)."""
    path = folder / "config.yml"
    if not path.is_file():
        return {}
    try:
        import yaml

        config = yaml.safe_load(path.read_text())
    except Exception:  # a label source only: a config it cannot read is skipped, not fatal
        return {}
    return config if isinstance(config, dict) else {}


def model_name(folder: Path, config: dict) -> str | None:
    """The model's name when the folder says it: config.yml's model_dir (MDsim runs live in
    ``<model_dir>/md_<identifier>_<seed>``), else the parent folder's name."""
    model_dir = config.get("model_dir")
    if isinstance(model_dir, str) and model_dir.strip():
        return Path(model_dir).name
    return folder.resolve().parent.name if folder.name.startswith("md") else None
