"""Reading what ``lmpbench run``, ``analyze`` and ``reference`` wrote: run folders and reference sets.

A run folder is read from its files only (``run.json``, ``metrics.json``, ``curves.npz``,
``thermo.dat``); nothing is recomputed. Every run becomes a ``RunRecord`` whatever state it is
in: finished, collapsed, interrupted, failed, still running, not analysed, or unreadable (with
the reason). Its metrics are flattened to dotted names (``rdf_mae.O-O``), each a number or
missing with the reason; a missing metric stays missing (None), never zero.

Force MAE of a run, in this order (``force_error``):
  1. ``metrics.json`` ``forces`` (``lmpbench analyze --test-data``, or imported from MDsim's
     test_metric.json, then labelled imported);
  2. the ``train.json`` beside the model's source file, when the deployed model's metadata
     names one (``source_file``: the checkpoint or package ``lmpbench deploy`` read), its
     ``test`` split errors;
  3. else missing, with the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmpbench.manifest import ManifestError, read_run_manifest

# statuses whose metrics describe a whole run; the others end early for reasons not the model's
COMPLETE = ("finished", "collapsed")


class ReportError(ValueError):
    """The report cannot be made as asked; the message says why."""


@dataclass
class RunRecord:
    folder: Path
    status: str  # finished, collapsed, interrupted, failed, running, not finished (MDsim), unreadable
    source: str = ""  # "lammps" or "mdsim (imported)"; empty when unreadable
    system: str | None = None
    model_id: str | None = None  # sha256 of the deployed file, classical:NAME, or mdsim:NAME
    model_name: str | None = None
    seed: int | None = None
    values: dict = field(default_factory=dict)  # dotted metric name -> float or None
    reasons: dict = field(default_factory=dict)  # dotted metric name -> why it is missing
    notes: list = field(default_factory=list)  # what the reader should know (not analysed, unreadable ...)
    collapse: dict | None = None
    hardware: str | None = None
    force_source: str | None = None
    frame_dt_ps: float | None = None
    timestep_fs: float | None = None
    elements: list = field(default_factory=list)
    trajectory: Path | None = None
    metrics: dict = field(default_factory=dict)  # metrics.json's "metrics" table, as written
    model_file: str | None = None  # the deployed file the run used
    model_source: str | None = None  # the file it was deployed from (its metadata's source_file)

    @property
    def analysed(self) -> bool:
        return bool(self.metrics)

    @property
    def pooled(self) -> bool:
        """Whether the run's metrics enter the statistics over seeds (a whole run, analysed)."""
        return self.status in COMPLETE and self.analysed

    @property
    def curves(self) -> Path | None:
        path = self.folder / "curves.npz"
        return path if path.is_file() else None

    @property
    def label(self) -> str:
        return f"{self.model_name or '?'} seed {self.seed if self.seed is not None else '?'}"


@dataclass
class ReferenceSet:
    """A reference set's noise floor (``reference.json`` of ``lmpbench reference --seeds 2``)."""

    path: Path
    system: str
    noise_floor: dict  # dotted metric name -> mean over the seed pairs
    pairs: int  # seed pairs behind each value
    per_seed: dict  # seed name -> {dotted name: value}


def find_run_folders(paths) -> tuple[list[Path], list[RunRecord]]:
    """Run folders named by ``paths`` (a run folder, its run.json/metrics.json, or a folder of run
    folders such as ``lmpbench batch``'s root), and an unreadable record for each path that
    holds none."""
    folders, bad = [], []
    for given in map(Path, paths):
        if given.is_file() and given.name in ("run.json", "metrics.json"):
            given = given.parent
        if not given.exists():
            bad.append(RunRecord(given, "unreadable", notes=[f"{given} does not exist"]))
        elif _is_run_folder(given):
            folders.append(given)
        elif given.is_dir():
            inside = sorted({p.parent for name in ("run.json", "metrics.json", "atoms.traj") for p in given.rglob(name)
                             if _is_run_folder(p.parent)})
            if inside:
                folders += inside
            else:
                bad.append(RunRecord(given, "unreadable", notes=[f"{given} is not a run folder and holds none "
                                                                 "(no run.json or metrics.json)"]))
        else:
            bad.append(RunRecord(given, "unreadable", notes=[f"{given} is a file, not a run folder"]))
    unique = list(dict.fromkeys(p.resolve() for p in folders))
    return unique, bad


def _is_run_folder(path: Path) -> bool:
    """A lmpbench run folder, an analysed folder, or an MDsim run folder (atoms.traj + thermo.log)."""
    return path.is_dir() and (any((path / name).is_file() for name in ("run.json", "metrics.json"))
                              or all((path / name).is_file() for name in ("atoms.traj", "thermo.log")))


def read_run(folder: Path) -> RunRecord:
    """The record of one run folder; never raises for what the folder holds."""
    folder = Path(folder)
    metrics_doc, metrics_problem = _read_metrics(folder / "metrics.json")
    if (folder / "run.json").is_file():
        try:
            manifest = read_run_manifest(folder / "run.json")
        except ManifestError as err:
            return RunRecord(folder, "unreadable", notes=[str(err)])
        record = _from_manifest(folder, manifest)
    elif metrics_doc is not None and metrics_doc.get("imported"):
        record = _from_imported(folder, metrics_doc)
    elif metrics_doc is None and (folder / "atoms.traj").is_file():
        return RunRecord(folder, "not analysed", source="mdsim (imported)", notes=[metrics_problem])
    else:
        return RunRecord(folder, "unreadable", notes=[metrics_problem or f"{folder}: metrics.json without run.json "
                                                      "is not an imported (MDsim) run"])
    if metrics_problem:
        record.notes.append(metrics_problem)
    if metrics_doc is not None:
        metrics = metrics_doc.get("metrics")
        if isinstance(metrics, dict):
            record.metrics = metrics
            if _is_number(metrics_doc.get("frame_interval_ps")):
                record.frame_dt_ps = float(metrics_doc["frame_interval_ps"])
        else:
            record.notes.append(f"{folder / 'metrics.json'} has no metrics table")
    _flatten_metrics(record)
    return record


def _read_metrics(path: Path) -> tuple[dict | None, str | None]:
    if not path.is_file():
        return None, f"not analysed: {path.parent} has no metrics.json (run lmpbench analyze on it)"
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"{path} cannot be read as JSON ({err})"
    if not isinstance(doc, dict):
        return None, f"{path} is not a JSON object"
    return doc, None


def _seed(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _table(value) -> dict | None:
    """``value`` when it is a JSON object, else None: fields readers rely on but run.json does not check."""
    return value if isinstance(value, dict) else None


def _from_manifest(folder: Path, manifest: dict) -> RunRecord:
    model = manifest["model"]
    if model["kind"] == "deployed":
        model_id = str(model.get("sha256") or model.get("file"))
        name = Path(str(model.get("file") or "model")).stem
    else:
        model_id = f"{model['kind']}:{model.get('name', '?')}"
        name = model_id
    record = RunRecord(folder, manifest["status"], source="lammps", system=manifest["system"]["name"], model_id=model_id,
                       model_name=name, seed=_seed(manifest.get("seed")), collapse=_table(manifest.get("collapse")),
                       hardware=_hardware(manifest), elements=list(manifest["type_elements"]),
                       trajectory=folder / "traj.dump" if (folder / "traj.dump").is_file() else None)
    protocol = manifest["protocol"]
    record.frame_dt_ps = protocol["dump_every"] * protocol["timestep_fs"] / 1000.0
    record.timestep_fs = float(protocol["timestep_fs"])
    record.model_file = model.get("file")
    metadata = model.get("metadata")
    record.model_source = metadata.get("source_file") if isinstance(metadata, dict) else None
    speed = _table(manifest.get("speed")) or {}
    for key in ("steps_per_s", "ns_per_day"):
        value = speed.get(key)
        record.values[key] = float(value) if _is_number(value) else None
        if value is None:
            record.reasons[key] = "no timed steps recorded (a run shorter than two chunks, or not started)"
    if manifest["status"] not in COMPLETE:
        record.notes.append(f"{manifest['status']}: {manifest.get('reason') or 'no reason recorded'}")
    return record


def _from_imported(folder: Path, doc: dict) -> RunRecord:
    source = _table(doc.get("source")) or {}
    name = str(doc.get("model") or source.get("model") or folder.name)
    status = doc.get("status") if doc.get("status") in ("finished", "collapsed") else "not finished"
    system = doc.get("system") if isinstance(doc.get("system"), str) else None
    record = RunRecord(folder, status, source="mdsim (imported)", system=system,
                       model_id=f"mdsim:{name}", model_name=f"{name} (MDsim)",
                       seed=_seed((_table(source.get("config")) or {}).get("seed")), collapse=_table(doc.get("run_collapse")),
                       hardware="not recorded (imported MDsim run)",
                       elements=[str(e) for e in (_table(doc.get("types")) or {}).get("elements") or []],
                       trajectory=folder / "atoms.traj" if (folder / "atoms.traj").is_file() else None)
    for key in ("steps_per_s", "ns_per_day"):
        record.values[key], record.reasons[key] = None, "not recorded by MDsim"
    record.notes.append("imported from an MDsim run folder (not run by lmpbench)")
    return record


def _hardware(manifest: dict) -> str:
    meta = (manifest.get("model") or {}).get("metadata") or {}
    arch = meta.get("gpu_arch") or meta.get("cpu_isa") if isinstance(meta, dict) else None
    parts = [manifest.get("host") or "host not recorded", manifest.get("device") or "device not recorded"]
    if arch:
        parts[-1] += f" ({arch})"
    parts.append(f"{manifest.get('mpi_ranks', '?')} MPI rank(s) x {manifest.get('threads', '?')} thread(s)")
    return ", ".join(parts)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def _take(record: RunRecord, name: str, entry) -> None:
    """One metric entry ({"value": ..., "reason": ...}) into the record's flat values."""
    if isinstance(entry, dict) and _is_number(entry.get("value")):
        record.values[name] = float(entry["value"])
    else:
        record.values[name] = None
        reason = entry.get("reason") if isinstance(entry, dict) else None
        record.reasons[name] = reason or "not in metrics.json"


def _flatten_metrics(record: RunRecord) -> None:
    metrics = record.metrics
    for name in ("stability_ps", "structural_stability_ps", "h_mae", "energy_drift", "diffusivity"):
        if name in metrics:
            _take(record, name, metrics[name])
    for group in ("rdf_mae", "pmf_mae"):
        if isinstance(metrics.get(group), dict):
            for part, entry in metrics[group].items():
                _take(record, f"{group}.{part}", entry)
    pairs = [k for k in record.values if k.startswith("rdf_mae.")]
    if pairs:  # the mean over the partial RDFs, only when every pair has its error
        values = [record.values[k] for k in pairs]
        record.values["rdf_mae"] = float(np.mean(values)) if all(v is not None for v in values) else None
        if record.values["rdf_mae"] is None:
            missing = next(k for k in pairs if record.values[k] is None)
            record.reasons["rdf_mae"] = f"{missing}: {record.reasons.get(missing, 'missing')}"
    if "energy_drift" in record.values and record.values["energy_drift"] is not None:
        record.values["energy_drift_abs"] = abs(record.values["energy_drift"])
    force_error(record)


def force_error(record: RunRecord) -> None:
    """``forces_mae`` and ``energy_mae`` of the run by the module's rule, and where they came from."""
    entry = record.metrics.get("forces")
    if isinstance(entry, dict) and _is_number(entry.get("value")):
        record.values["forces_mae"] = float(entry["value"])
        energy = entry.get("energy_mae_meV_atom")
        record.values["energy_mae"] = float(energy) if _is_number(energy) else None
        record.force_source = ("imported (MDsim test_metric.json)" if entry.get("imported")
                               else "metrics.json (analyze --test-data)")
        return
    train = _train_json(record.model_source)
    if train is not None:
        test = train.get("test") or {}
        if _is_number(test.get("forces_mae_meV_A")):
            record.values["forces_mae"] = float(test["forces_mae_meV_A"])
            energy = test.get("energy_mae_meV_atom")
            record.values["energy_mae"] = float(energy) if _is_number(energy) else None
            record.force_source = "train.json beside the model's source (its test split)"
            return
    reason = (entry.get("reason") if isinstance(entry, dict) else None) or (
        "no test error: run lmpbench analyze --test-data, or deploy from a lmpbench train folder")
    record.values["forces_mae"] = record.values["energy_mae"] = None
    record.reasons["forces_mae"] = record.reasons["energy_mae"] = reason


def _train_json(source_file: str | None) -> dict | None:
    if not source_file:
        return None
    path = Path(source_file).parent / "train.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def read_reference(path) -> ReferenceSet:
    """A reference set folder or its reference.json; raises ReportError naming the problem."""
    path = Path(path)
    file = path / "reference.json" if path.is_dir() else path
    try:
        doc = json.loads(file.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path} is not a reference set (no reference.json; make one with lmpbench reference "
                          "SYSTEM --seeds 2 -o DIR)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"{file} cannot be read as JSON ({err})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("system"), str):
        raise ReportError(f"{file} is not a reference set record (no system)")
    floor = doc.get("noise_floor") or {}
    if not isinstance(floor, dict):
        raise ReportError(f"{file}: noise_floor is not a table")
    mean = {k: float(v) for k, v in (floor.get("mean") or {}).items() if _is_number(v)}
    per_seed = {k: v for k, v in (floor.get("seeds") or {}).items() if isinstance(v, dict)}
    pairs = [k for k in mean if k.startswith("rdf_mae.")]
    if pairs:
        mean["rdf_mae"] = float(np.mean([mean[k] for k in pairs]))
    return ReferenceSet(file, doc["system"], mean, len(per_seed), per_seed)


def reference_diffusivity(reference: ReferenceSet | None) -> float | None:
    """The reference's D: the mean of the diffusivities its seeds recorded (1e-9 m^2/s), or None."""
    if reference is None:
        return None
    values = [v["diffusivity"] for v in reference.per_seed.values() if _is_number(v.get("diffusivity"))]
    return float(np.mean(values)) if values else None


def add_diffusivity_errors(records: list[RunRecord], references: dict) -> None:
    """``diffusivity_error`` = |D - D_ref| for runs whose system has a reference D."""
    for record in records:
        if "diffusivity" not in record.values:
            continue
        d_ref = reference_diffusivity(references.get(record.system))
        if record.values["diffusivity"] is None:
            record.values["diffusivity_error"] = None
            record.reasons["diffusivity_error"] = record.reasons.get("diffusivity", "no D")
        elif d_ref is None:
            record.values["diffusivity_error"] = None
            record.reasons["diffusivity_error"] = "no reference D (a --reference set whose seeds record D)"
        else:
            record.values["diffusivity_error"] = abs(record.values["diffusivity"] - d_ref)


def name_models(records: list[RunRecord]) -> None:
    """Display names unique per model: a file stem shared by two models gets its folder added."""
    by_name: dict = {}
    for record in records:
        if record.model_id is not None:
            by_name.setdefault(record.model_name, set()).add(record.model_id)
    for record in records:
        if record.model_id is not None and len(by_name.get(record.model_name, ())) > 1:
            folder = Path(record.model_file or "").parent.name
            record.model_name = f"{record.model_name} ({folder or 'model'}, {record.model_id[:8]})"
