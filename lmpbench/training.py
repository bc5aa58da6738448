"""``lmpbench train``: train a model on a dataset split with its architecture's own trainer.

The training folder (``out``)::

    config.yaml            the config the trainer read (defaults, then --config, then options)
    run/                   the trainer's own folder (nequip: hydra logs, last checkpoint, CSV log; sevenn:
                           log.sevenn, lc.csv; torchmd-train: metrics.csv, the data converted for it)
    trainer.log            the trainer's stdout and stderr
    model.ckpt             the kept checkpoint (best validation, moved out of run/), what ``lmpbench deploy`` takes
                           (nequip, allegro, torchmd-net's: .ckpt; sevenn: model.pth)
    model.nequip.zip       the same model in portable form (nequip and allegro, unless --no-package)
    training_curve.csv     epoch, train loss, validation force/energy MAE
    training_curve.png
    train.json             the record: data, split, options, test MAE, timing; written last

A folder without ``train.json`` is an unfinished training. The test-set errors come from the
architecture's own ASE calculator on the dataset's test split (independent of LAMMPS):
force MAE over every component in meV/Å, energy MAE per atom in meV/atom (none for
forces-only data).

Config: the architecture's defaults for the system's category (``Architecture.defaults``)
build a complete config; a ``--config`` YAML is merged over it (its keys win; lists are
replaced whole); then ``--max-epochs``, ``--max-minutes`` and ``--seed``, when given, win
over both. A trainer with no time limit of its own (sevenn, torchmd-train) is stopped by
lmpbench at ``--max-minutes``, frozen at a moment its kept checkpoint is whole.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lmpbench.architectures import ArchitectureError, TrainingRequest, config_text, get_architecture
from lmpbench.datasets.store import DatasetError, Dataset, command_line, find_dataset, sha256_of
from lmpbench.files import write_atomic
from lmpbench.systems import System

RECORD = "train.json"
CONFIG = "config.yaml"
RUN_DIR = "run"
LOG = "trainer.log"
CURVE_CSV = "training_curve.csv"
CURVE_PNG = "training_curve.png"
CURVE_COLUMNS = ("epoch", "train_loss", "val_forces_mae_meV_A", "val_energy_mae_meV_atom")
DEFAULT_MAX_EPOCHS = 100  # when neither --max-epochs nor --max-minutes is given


class TrainingError(ValueError):
    """A training cannot start as asked; the message says what to change."""


class TrainerFailedError(TrainingError):
    """The trainer (or its packager) failed; the message points at the log kept in the folder."""


def _outputs(arch) -> tuple[str, ...]:
    """Every name a training writes into its folder (what --force replaces)."""
    model = "model" + arch.checkpoint_suffixes[0]
    packaged = ("model" + arch.package_suffix,) if arch.package_suffix else ()
    return (RECORD, CONFIG, RUN_DIR, LOG, model, *packaged, CURVE_CSV, CURVE_PNG)


def _prepare_folder(out: Path, arch, force: bool) -> None:
    """An empty or new folder; with ``force``, a previous training's files are removed (only
    those: anything else in the folder makes it not a training folder, and it is refused)."""
    if out.exists() and not out.is_dir():
        raise TrainingError(f"{out} exists and is not a folder")
    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not present:
        out.mkdir(parents=True, exist_ok=True)
        return
    ours = set(_outputs(arch))
    if not force:
        raise TrainingError(f"{out} is not empty ({', '.join(present[:4])}{' ...' if len(present) > 4 else ''}); "
                            "give a new folder, or --force to replace a previous training there")
    foreign = [name for name in present if name not in ours and not name.startswith(".")]
    if foreign:
        raise TrainingError(f"--force replaces a previous training only; {out} also holds {', '.join(foreign[:4])}")
    (out / RECORD).unlink(missing_ok=True)  # first: a half-removed folder must not look finished
    for name in present:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def _read_user_config(path: Path) -> dict:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        config = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except (OSError, OmegaConfBaseException, ValueError) as err:
        raise TrainingError(f"cannot read --config {path}: {str(err).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise TrainingError(f"--config {path}: a YAML mapping of config keys is needed (got {type(config).__name__})")
    return config


def _merge(defaults: dict, overrides: dict) -> dict:
    """``overrides`` over ``defaults``: mappings merge key by key, anything else (lists too) replaces."""
    merged = dict(defaults)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _datasets_inside(folder: str | Path) -> str:
    """A hint when ``folder`` holds datasets rather than being one (a reference set holds one per seed)."""
    folder = Path(folder)
    inside = sorted(p.parent.name for p in folder.glob("*/dataset.json")) if folder.is_dir() else []
    return f"; it holds the datasets {', '.join(inside)}: give one, e.g. --data {folder / inside[0]}" if inside else ""


def _data_elements(dataset: Dataset, train_file: Path) -> set[str]:
    """Elements of the data: the manifest's (from the first frame) and those of the first
    training frame, read cheaply (the training file can hold 10^5 frames)."""
    from ase.io import read

    elements = set(dataset.manifest.get("elements") or [])
    try:
        elements |= set(read(train_file, index=0).get_chemical_symbols())
    except Exception as err:  # ASE raises many kinds for unreadable files
        raise TrainingError(f"cannot read {train_file}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    return elements


def _device(device: str) -> tuple[str, str]:
    """(torch device, lightning accelerator) for ``device`` ("auto", "cpu" or "cuda")."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda: this torch has no CUDA or no GPU is visible")
    return device, {"cuda": "gpu", "cpu": "cpu"}[device]


def _script(name: str) -> Path:
    """A console script of this environment (the trainer that matches lmpbench's torch)."""
    path = Path(sys.executable).parent / name
    if not path.is_file():
        raise TrainingError(f"{name} is not installed next to this Python ({path.parent})")
    return path


def _last_error_line(log: Path) -> str:
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return line[:240]
    return lines[-1][:240] if lines else ""


def _thread_environment(threads: int) -> dict:
    """The environment of the trainer: torch's intra-op threads follow OMP_NUM_THREADS (more
    threads than free cores slow torch down many times over, so the count is explicit)."""
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))


def _stop_with_a_whole_checkpoint(proc: subprocess.Popen, arch, run_dir: Path, patience_s: float = 60.0) -> None:
    """Stop a trainer that has no time limit of its own without losing its checkpoint: freeze it
    (SIGSTOP), and if the checkpoint it would be kept by is complete (it loads), kill it there; if
    the trainer was writing it, let it run a moment (SIGCONT) and try again. A signal it could catch
    (SIGINT) may land inside the write and leave a truncated file, as sevenn's trainer does."""
    waited, pause = 0.0, 0.1
    while proc.poll() is None:
        proc.send_signal(signal.SIGSTOP)
        checkpoint = arch.find_checkpoint(run_dir)
        try:
            whole = checkpoint is not None and (arch.checkpoint_epoch(checkpoint) or 0) >= 0
        except Exception:  # a checkpoint being written does not load; any error says so
            whole = False
        if whole or waited > patience_s:
            proc.kill()  # a frozen process dies at once, writing nothing more
            break
        proc.send_signal(signal.SIGCONT)
        time.sleep(pause)
        waited, pause = waited + pause, min(2 * pause, 2.0)
    proc.wait()


def _run_trainer(cmd: list[str], cwd: Path, log: Path, arch, run_dir: Path, env: dict, echo,
                 deadline: float | None = None) -> tuple[int, bool]:
    """Run the trainer with its output in ``log``; echo each finished epoch as it appears. At
    ``deadline`` (time.time()), a trainer without a time limit of its own is stopped with its
    checkpoint whole. Returns (exit status, whether it was stopped so)."""
    shown, stopped = 0, False
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT, env=env)
        try:
            while proc.poll() is None:
                try:
                    proc.wait(timeout=min(5.0, max(0.1, deadline - time.time())) if deadline else 5)
                except subprocess.TimeoutExpired:
                    pass
                if deadline is not None and time.time() >= deadline and proc.poll() is None:
                    echo(f"  --max-minutes reached: stopping {arch.train_script}")
                    _stop_with_a_whole_checkpoint(proc, arch, run_dir)
                    stopped = True
                rows = arch.read_curve(run_dir)
                for row in rows[shown:]:
                    echo("  " + _curve_line(row))
                shown = max(shown, len(rows))
        except BaseException:  # Ctrl-C or a failing echo: never leave the trainer running
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
            proc.terminate()
            proc.wait()
            raise
    return proc.returncode, stopped


def _curve_line(row: dict) -> str:
    parts = [f"epoch {row['epoch']}"]
    if row.get("train_loss") is not None:
        parts.append(f"train loss {row['train_loss']:.4g}")
    if row.get("val_forces_mae_meV_A") is not None:
        parts.append(f"val force MAE {row['val_forces_mae_meV_A']:.2f} meV/Å")
    if row.get("val_energy_mae_meV_atom") is not None:
        parts.append(f"val energy MAE {row['val_energy_mae_meV_atom']:.2f} meV/atom")
    return ", ".join(parts)


def write_curve(rows: list[dict], csv_path: Path, png_path: Path, title: str) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CURVE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in CURVE_COLUMNS})
    write_atomic(csv_path, text.getvalue())

    import matplotlib

    matplotlib.use("Agg")  # files only: no display on clusters
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (loss_ax, mae_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = [r["epoch"] for r in rows]
    loss_ax.plot(epochs, [r.get("train_loss") or np.nan for r in rows], "o-", ms=3)
    loss_ax.set(xlabel="epoch", ylabel="training loss (weighted sum)", yscale="log")
    mae_ax.plot(epochs, [r.get("val_forces_mae_meV_A") or np.nan for r in rows], "o-", ms=3, label="force (meV/Å)")
    if any(r.get("val_energy_mae_meV_atom") is not None for r in rows):
        mae_ax.plot(epochs, [r.get("val_energy_mae_meV_atom") or np.nan for r in rows], "s-", ms=3,
                    label="energy (meV/atom)")
    mae_ax.set(xlabel="epoch", ylabel="validation MAE", yscale="log")
    for ax in (loss_ax, mae_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    mae_ax.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


def errors_on_test_split(arch, checkpoint: Path, test_file: Path, device: str, has_energy: bool,
                         max_frames: int | None = None, total: int | None = None, threads: int | None = None,
                         echo=None) -> dict:
    """Force MAE (meV/Å, every component) and energy MAE (meV/atom) of ``checkpoint`` on the
    frames of ``test_file``, through the architecture's ASE calculator. ``echo`` gets a
    progress line every 30 s (of ``total`` frames, when known)."""
    import torch
    from ase.io import iread

    from lmpbench.deploy import default_dtype

    force_abs_sum, force_components, energy_errors, frames = 0.0, 0, [], 0
    started = last_report = time.time()
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with default_dtype(torch.float64):
            calc = arch.calculator(checkpoint, device)
            for atoms in iread(str(test_file), index=f":{max_frames}" if max_frames else ":"):
                reference_forces = atoms.get_forces()
                reference_energy = atoms.get_potential_energy() if has_energy else None
                atoms.calc = calc
                force_abs_sum += float(np.abs(atoms.get_forces() - reference_forces).sum())
                force_components += reference_forces.size
                if has_energy:
                    energy_errors.append(abs(atoms.get_potential_energy() - reference_energy) / len(atoms))
                frames += 1
                if echo is not None and time.time() - last_report > 30:
                    last_report = time.time()
                    echo(f"  tested {frames}{f' of {total}' if total else ''} frames ({frames / (last_report - started):.1f}/s)")
    finally:
        torch.set_num_threads(previous_threads)
    if frames == 0:
        raise TrainingError(f"{test_file} holds no frames to test on")
    return {"frames": frames,
            "forces_mae_meV_A": 1000.0 * force_abs_sum / force_components,
            "energy_mae_meV_atom": 1000.0 * float(np.mean(energy_errors)) if has_energy else None}


def train(system: System, data: str | Path, size: str, out: str | Path, arch: str = "nequip",
          config_file: str | Path | None = None, max_epochs: int | None = None, max_minutes: float | None = None,
          seed: int | None = None, device: str = "auto", test_frames: int | None = None, package: bool = True,
          threads: int = 1, force: bool = False, echo=print) -> dict:
    """Train ``arch`` for ``system`` on split ``size`` of dataset ``data`` into folder ``out``;
    returns the record written to ``out/train.json``. Every check on the input runs before
    the folder is touched."""
    started = time.time()
    try:
        architecture = get_architecture(arch)
        hyperparameters = architecture.hyperparameters(system.category)
        dataset = find_dataset(data)
        train_file, val_file = dataset.split_file(size, "train"), dataset.split_file(size, "val")
        for path in (train_file, val_file, dataset.test_file):
            if not path.is_file():
                raise TrainingError(f"dataset {dataset.name}: {path.name} is missing from {dataset.folder}")
    except (ArchitectureError, DatasetError) as err:
        raise TrainingError(str(err) + _datasets_inside(data)) from None
    extra = sorted(_data_elements(dataset, train_file) - set(system.elements))
    if extra:
        raise TrainingError(f"dataset {dataset.name} has element(s) {', '.join(extra)} that system {system.name} lacks "
                            f"(its elements: {', '.join(system.elements)}); train it for a system with those elements")
    if max_epochs is not None and max_epochs < 1:
        raise TrainingError(f"--max-epochs must be at least 1, got {max_epochs}")
    if max_minutes is not None and not max_minutes > 0:
        raise TrainingError(f"--max-minutes must be positive, got {max_minutes}")
    if threads < 1:
        raise TrainingError(f"--threads must be at least 1, got {threads}")
    if test_frames is not None and test_frames < 1:
        raise TrainingError(f"--test-frames must be at least 1, got {test_frames}")
    user_config = _read_user_config(Path(config_file)) if config_file else {}
    torch_device, accelerator = _device(device)
    has_energy = bool(dataset.manifest.get("has_energy", True))
    trainer = _script(architecture.train_script)
    packager = _script(architecture.package_script) if package and architecture.package_script else None

    request = TrainingRequest(
        type_names=tuple(system.elements), cutoff_A=system.cutoff_A, train_file=train_file.resolve(),
        val_file=val_file.resolve(), has_energy=has_energy, hyperparameters=hyperparameters,
        seed=1 if seed is None else seed,
        max_epochs=max_epochs if max_epochs is not None or max_minutes is not None else DEFAULT_MAX_EPOCHS,
        max_minutes=max_minutes, accelerator=accelerator)
    try:
        # options given on the command line win over the --config file
        config = _merge(_merge(architecture.build_config(request), user_config),
                        architecture.option_overrides(max_epochs, max_minutes, seed))
        # trainers with their own data format: the data is read and checked here, written below
        write_data = architecture.prepare_data(request) if architecture.prepare_data else None
    except ArchitectureError as err:
        raise TrainingError(str(err)) from None

    out = Path(out).resolve()
    _prepare_folder(out, architecture, force)
    write_atomic(out / CONFIG, config_text(config))
    run_dir, log = out / RUN_DIR, out / LOG
    if write_data is not None:
        run_dir.mkdir()
        write_data(run_dir)
    cmd = [str(trainer), *architecture.train_arguments(out, Path(CONFIG).stem, run_dir)]
    echo(f"training {architecture.name} for {system.name} on {dataset.name} split {size} "
         f"({dataset.manifest['split']['sizes'][size]['train']['frames']} train / "
         f"{dataset.manifest['split']['sizes'][size]['val']['frames']} val frames) on {torch_device}; log: {log}")
    train_started = time.time()
    env = _thread_environment(threads)
    if architecture.train_environment is not None:
        env.update(architecture.train_environment(accelerator))
    deadline = (train_started + 60 * max_minutes
                if max_minutes is not None and not architecture.stops_at_max_minutes else None)
    returncode, interrupted = _run_trainer(cmd, out, log, architecture, run_dir, env, echo, deadline)
    train_wall_s = time.time() - train_started
    checkpoint = architecture.find_checkpoint(run_dir)
    if returncode != 0 and not (interrupted and checkpoint is not None):
        why = _last_error_line(log)
        raise TrainerFailedError(f"{architecture.train_script} failed (exit {returncode}){': ' + why if why else ''}; "
                                 f"see {log}")
    if checkpoint is None:
        raise TrainerFailedError(f"{architecture.train_script} finished without a checkpoint (did no epoch finish "
                                 f"within --max-minutes?); see {log}")

    model = out / ("model" + architecture.checkpoint_suffixes[0])
    checkpoint_epoch = architecture.checkpoint_epoch(checkpoint)
    os.replace(checkpoint, model)  # moved, not copied: a checkpoint can be megabytes and folders get shipped
    if architecture.finish_checkpoint is not None:
        architecture.finish_checkpoint(model, run_dir)
    packaged = None
    if packager is not None:
        packaged = out / ("model" + architecture.package_suffix)
        proc = subprocess.run([str(packager), *architecture.package_arguments(model, packaged)], cwd=out,
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0 or not packaged.is_file():
            with open(log, "a") as sink:
                sink.write(proc.stdout + proc.stderr)
            raise TrainerFailedError(f"{architecture.package_script} failed (exit {proc.returncode}); see {log}")

    curve = architecture.read_curve(run_dir)
    write_curve(curve, out / CURVE_CSV, out / CURVE_PNG,
                f"{architecture.name} on {dataset.name} ({size}), system {system.name}")
    n_test = dataset.manifest["split"]["test"]["frames"]
    echo(f"testing {model.name} on {min(n_test, test_frames or n_test)} of the {n_test} test frames "
         f"({dataset.test_file.name}) with {architecture.name}'s ASE calculator")
    errors = errors_on_test_split(architecture, model, dataset.test_file, torch_device, has_energy, test_frames,
                                  total=min(n_test, test_frames or n_test), threads=threads, echo=echo)

    import torch

    record = {
        "arch": architecture.name,
        "system": system.name,
        "system_cutoff_A": system.cutoff_A,  # the model's own is in config.yaml (a --config may change it)
        "type_names": list(system.elements),
        "dataset": {"name": dataset.name, "folder": str(dataset.folder.resolve()),
                    "manifest_sha256": sha256_of(dataset.folder / "dataset.json"),
                    "test_file_sha256": dataset.manifest.get("files", {}).get(dataset.test_file.name, {}).get("sha256"),
                    "has_energy": has_energy},
        "size": size,
        "train_frames": dataset.manifest["split"]["sizes"][size]["train"]["frames"],
        "val_frames": dataset.manifest["split"]["sizes"][size]["val"]["frames"],
        "seed": config.get("seed", request.seed),
        "hyperparameters": hyperparameters,
        "config_file": str(Path(config_file).resolve()) if config_file else None,
        # as given (None: not given); the limits in force are in config.yaml
        "options": {"max_epochs": max_epochs, "max_minutes": max_minutes, "seed": seed, "device": device,
                    "test_frames": test_frames, "package": package, "threads": threads},
        "epochs_done": len(curve),
        "stopped_at_max_minutes": interrupted,  # lmpbench interrupted a trainer without a time limit of its own
        "checkpoint": {"file": model.name, "moved_from": str(checkpoint.relative_to(out)),
                       "epoch": checkpoint_epoch, "note": architecture.checkpoint_note},
        "package": packaged.name if packaged else None,
        "test": {"file": dataset.test_file.name, **errors,
                 "evaluated_with": f"{architecture.name}'s ASE calculator ({torch_device}, float64 inputs"
                                   f"{', ' + hyperparameters['model_dtype'] + ' model' if 'model_dtype' in hyperparameters else ''})"},
        "final_val": curve[-1] if curve else None,
        "train_wall_s": round(train_wall_s, 2),
        "wall_s": round(time.time() - started, 2),
        "device": torch_device,
        "device_name": torch.cuda.get_device_name() if torch_device == "cuda" else _cpu_name(),
        "cpu_cores": os.cpu_count(),
        "threads": threads,
        "versions": _versions(),
        "command": command_line(),
        "trainer_command": cmd,
    }
    if not has_energy:
        record["test"]["energy_mae_reason"] = ("the dataset has forces only (manifest has_energy false): trained on "
                                               "forces alone, so the model's energy zero is arbitrary")
    write_atomic(out / RECORD, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return record


def _cpu_name() -> str:
    from lmpbench.cpu import read_cpuinfo

    names = [line.partition(":")[2].strip() for line in read_cpuinfo().splitlines() if line.startswith("model name")]
    return names[0] if names else platform.machine()


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("lmpbench", "nequip", "nequip-allegro", "sevenn", "torchmd-net", "torch", "lightning", "ase"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
