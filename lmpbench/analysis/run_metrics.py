"""``lmpbench analyze``: the benchmark's metrics of one run folder or trajectory file.

What is analysed is a ``Subject``: a trajectory, the element and mass of each atom type, the
time between saved frames and, when known, the benchmark system. A run folder gives all of
it through its run.json (``analyze``); a trajectory file (``analyze_trajectory``) takes them
from the user (elements, a LAMMPS data file or the dump's element column; the timestep and
dump interval, or a benchmark system's protocol), and either a benchmark system's metric set
or a custom one (``CustomMetrics``: partial RDFs and MSDs of chosen species).

Which metrics a run gets follows its system (``METRIC_SETS``): periodic systems get partial
RDFs, the sliding-window RDF stability and the diffusivity; molecules get the bond
stability and h(r). NVE runs also get the energy drift. Curves are computed over the stable
frames only and the result says how many that was.

The reference is another run folder of the same system (e.g. its classical reference run),
analysed the same way, or a reference data file (the paper's .npz/.npy datasets, extxyz, a
LAMMPS dump; ``reference_every`` spaces its frames like the run's). Molecules take their
reference bond lengths as the mean over the reference frames (paper) when the reference has
the run's atom order, else from the run's first frame, and say which. Alanine dipeptide gets
the Ramachandran histogram; its reference FES comes from the reference's metadynamics output
when it has one, else from the reference frames' histogram. ``test_data`` adds the force and
energy errors of the run's deployed model on labelled frames.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lmpbench.analysis import atom_types
from lmpbench.analysis.geometry import BondStability, StructuralStability, bond_lengths, bonds
from lmpbench.analysis.msd import A2_PER_PS_TO_1E9_M2_S, MSD
from lmpbench.analysis.rdf import NORMALIZATIONS, RDF, DistanceHistogram, mae
from lmpbench.analysis.mdsim import is_mdsim_folder
from lmpbench.analysis.trajectory import TrajectoryReader, open_trajectory
from lmpbench.manifest import ManifestError, read_run_manifest


class AnalysisError(ValueError):
    """A run folder cannot be analysed; the message says why."""


@dataclass(frozen=True)
class PeriodicSettings:
    pairs: tuple[tuple[str | None, str | None], ...]  # element pairs; (None, None) = all atoms
    window_ps: float  # sliding RDF window
    threshold: float  # window error that marks collapse (max over pairs)
    diffusing: str  # species whose diffusivity is reported
    min_stable_ps: float  # diffusivity only with at least this much stable time
    lag_ps: float  # the paper's fixed lag
    skip_ps: float = 0.0  # dropped from the start for the diffusivity


METRIC_SETS = {
    # H-O first: its pair counts (all atoms) then serve O-O and H-H as well
    "water": PeriodicSettings((("H", "O"), ("O", "O"), ("H", "H")), 1.0, 3.0, "O", 100.0, 100.0),
    "lips": PeriodicSettings(((None, None),), 1.0, 1.0, "Li", 40.0, 35.0, skip_ps=5.0),
    # LiPS's settings for its offline stand-in, with copper as the diffusing species
    "cuzr_liquid": PeriodicSettings(((None, None),), 1.0, 1.0, "Cu", 40.0, 35.0, skip_ps=5.0),
}
RDF_R_MAX, RDF_BINS, H_R_MAX, H_BINS = 6.0, 500, 10.0, 500
MIN_CURVE_PS = 1.0  # an RDF or h(r) over less stable time than one RDF window is not computed


def _manifest(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    if not path.is_file():
        raise AnalysisError(f"{run_dir} is not a run folder (no run.json; an MDsim run folder has atoms.traj and "
                            "thermo.log)")
    try:
        manifest = read_run_manifest(path)
    except ManifestError as err:
        raise AnalysisError(str(err)) from None
    if not (run_dir / "traj.dump").is_file():
        raise AnalysisError(f"{run_dir} has no traj.dump to analyse")
    return manifest


@dataclass
class Subject:
    """What is analysed: a trajectory and what it takes to read it as the benchmark does."""

    trajectory: Path
    types: atom_types.TypeMap  # element and mass of each atom type
    frame_dt_ps: float | None  # time between saved frames (None: unknown; time metrics refused)
    out: Path  # folder of metrics.json and curves.npz
    system: dict | None = None  # the benchmark system (fields of systems.System), None for custom metrics
    ensemble: str | None = None
    folder: Path | None = None  # a run folder: its metad.pmf, thermo.dat, run.json
    manifest: dict = field(default_factory=dict)  # a run folder's run.json
    finished: bool | None = None  # whether the trajectory is complete (None: judge from the file)
    wrapped: bool | None = None  # ASE files: positions wrapped into the cell (None: decided from the data)
    fes_convention: str = "free_energy"  # plumed.FES_CONVENTIONS: the one surfaces are read and compared in
    fes_reference: Path | None = None  # a reference free-energy file (PLUMED fes.dat / HILLS / COLVAR, COLVARS .pmf)
    bias_factor: float | None = None  # well-tempered metadynamics' gamma (a COLVARS surface's negative bias needs it)
    imported_metrics: dict = field(default_factory=dict)  # metrics taken from the run's own files (MDsim)
    drop_repeated_frames: bool = False  # ASE files: skip a frame equal to the previous one (MDsim restarts)

    @property
    def elements(self) -> list[str]:
        return list(self.types.elements)

    def frames(self, start: int = 0, stop: int | None = None, step: int = 1):
        return open_trajectory(self.trajectory, self.elements, start, stop, step, finished=self.finished,
                               wrapped=self.wrapped, drop_repeats=self.drop_repeated_frames)

    @classmethod
    def of_run(cls, run_dir: Path) -> "Subject":
        manifest = _manifest(run_dir)
        protocol = manifest["protocol"]
        return cls(run_dir / "traj.dump", atom_types.from_elements(manifest["type_elements"], source="run.json"),
                   protocol["dump_every"] * protocol["timestep_fs"] / 1000.0, run_dir, manifest["system"],
                   protocol["ensemble"], run_dir, manifest, finished=manifest["status"] != "running",
                   bias_factor=protocol.get("metad_bias_factor"))


def _type_of(types: atom_types.TypeMap, element: str | None) -> int | None:
    """LAMMPS type of ``element`` (None: all atoms)."""
    if element is None:
        return None
    try:
        return types.type_of(element)
    except atom_types.TypeMapError as err:
        raise AnalysisError(str(err)) from None


@dataclass
class Reference:
    """What the run is compared with: a run folder (its traj.dump) or a reference data file."""

    path: Path
    elements: list[str]  # the run's type order, applied to the reference's element symbols
    every: int = 1
    wrapped: bool | None = None  # ASE files: as Subject.wrapped

    @property
    def is_run(self) -> bool:
        return self.path.is_dir()

    @property
    def file(self) -> Path:
        if not self.is_run:
            return self.path
        return self.path / ("atoms.traj" if is_mdsim_folder(self.path) else "traj.dump")

    def frames(self):
        return open_trajectory(self.file, self.elements, step=self.every, wrapped=self.wrapped)

    def record(self) -> dict:
        digest = hashlib.sha256()
        with open(self.file, "rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
        kind = ("MDsim run" if is_mdsim_folder(self.path) else "run") if self.is_run else "data file"
        return {"path": str(self.path.resolve()), "kind": kind,
                "file_sha256": digest.hexdigest(), "every": self.every}


def _reference(reference, subject: Subject, every: int) -> Reference | None:
    if reference is None:
        return None
    ref = Reference(Path(reference), subject.elements, every, subject.wrapped)
    if ref.is_run and is_mdsim_folder(ref.path):
        pass  # an MDsim folder records no system or type order: its element symbols are mapped to the run's
    elif ref.is_run:
        ref_manifest = _manifest(ref.path)
        name = subject.system["name"] if subject.system else None
        if name is not None and ref_manifest["system"]["name"] != name:
            raise AnalysisError(f"reference {reference} is a {ref_manifest['system']['name']} run, not {name}")
        if ref_manifest["type_elements"] != subject.elements:
            raise AnalysisError(f"reference {reference} numbers its elements {ref_manifest['type_elements']}, "
                                f"the trajectory {subject.elements}")
    elif not ref.path.is_file():
        raise AnalysisError(f"reference {reference} does not exist")
    return ref


def _rdfs(types: atom_types.TypeMap, pairs, normalization: str, r_max: float = RDF_R_MAX,
          bins: int = RDF_BINS) -> dict:
    return {pair: RDF(r_max, bins, _type_of(types, pair[0]), _type_of(types, pair[1]), normalization) for pair in pairs}


def curves_of(frames, types: atom_types.TypeMap, pairs, normalization: str = "paper", r_max: float = RDF_R_MAX,
              bins: int = RDF_BINS) -> dict:
    """Partial RDFs over all of ``frames`` (the reference's)."""
    rdfs = _rdfs(types, pairs, normalization, r_max, bins)
    n = 0
    for frame in frames:
        for rdf in rdfs.values():
            rdf.accumulate(frame)
        n += 1
    if n == 0:
        raise AnalysisError(f"{getattr(frames, 'path', 'trajectory')}: no frame to analyse")
    return {"r": next(iter(rdfs.values())).r, "g": {_pair_name(p): rdf.g for p, rdf in rdfs.items()}, "frames": n,
            "truncated": getattr(frames, "truncated", None)}


def _pair_name(pair) -> str:
    return "all" if pair == (None, None) else f"{pair[0]}-{pair[1]}"


class RDFWindows:
    """The benchmark's RDF-window criterion, frame by frame: consecutive windows of
    ``window`` frames, each window's partial RDFs against the reference's (``ref_g``, by pair
    name); ``add(frame)`` returns the window's error (the largest over the pairs) when the
    frame completes a window, else None. ``analyze`` and the in-run check both use it."""

    def __init__(self, types: atom_types.TypeMap, settings: PeriodicSettings, ref_g: dict, window: int,
                 normalization: str = "paper"):
        self.types, self.settings, self.ref_g, self.window = types, settings, ref_g, window
        self.normalization, self.count, self.first = normalization, 0, None
        self._in_window = None

    def add(self, frame) -> float | None:
        if self.count % self.window == 0:
            self._in_window, self.first = _rdfs(self.types, self.settings.pairs, self.normalization), frame
        for rdf in self._in_window.values():
            rdf.accumulate(frame)
        self.count += 1
        if self.count % self.window:
            return None
        return max(mae(self._in_window[p].g, self.ref_g[_pair_name(p)], RDF_R_MAX) for p in self.settings.pairs)


def reference_rdfs(reference, elements: list[str], system_name: str, every: int = 1,
                   normalization: str = "paper") -> dict:
    """The reference's partial RDFs for ``system_name``'s metric set, by pair name (for the
    in-run RDF-window check); ``reference`` is a run folder or a reference data file."""
    settings = METRIC_SETS[system_name]
    ref = Reference(Path(reference), list(elements), every)
    if not ref.file.is_file():
        raise AnalysisError(f"reference {reference} has no trajectory to read")
    return curves_of(ref.frames(), atom_types.from_elements(elements), settings.pairs, normalization)["g"]


@dataclass(frozen=True)
class CustomMetrics:
    """The metrics asked for on a trajectory that is no benchmark system's run.

    ``rdf_pairs``: element pairs (None, None = all atoms) whose RDFs are computed over every
    frame (and compared with the reference's, ``mae(g, g_ref, r_max)``); ``msd``: selections
    (tuples of elements; empty = all atoms) whose MSD over all time origins up to ``lag_ps``
    (default: half the trajectory) gives D = MSD/(6 tau) at that lag and a fitted D.
    """

    rdf_pairs: tuple = ()
    msd: tuple = ()
    lag_ps: float | None = None
    r_max: float = RDF_R_MAX
    bins: int = RDF_BINS


def analyze(run_dir: str | Path, reference: str | Path | None = None, reference_every: int = 1,
            test_data: str | Path | None = None, test_frames: int | None = None,
            rdf_normalization: str = "paper", out: str | Path | None = None, *,
            reference_fes: str | Path | None = None, fes_convention: str = "free_energy",
            system: str | None = None, wrapped: bool | None = None) -> dict:
    """Metrics of ``run_dir`` (and errors against ``reference``); writes metrics.json and
    curves.npz there, or to ``out`` (e.g. while the run is still going: a run holds its folder).
    ``rdf_normalization``: "paper" (N_A N_B / V, the default) or the labelled variant "n_n_minus_1".
    ``reference_fes``: a reference free-energy file (PLUMED fes.dat, HILLS or COLVAR, COLVARS
    .pmf), compared in ``fes_convention`` (``plumed.FES_CONVENTIONS``).

    An MDsim run folder (atoms.traj + thermo.log, no run.json) is imported (``analyze_mdsim``);
    ``system`` and ``wrapped`` are for those (a lmpbench run folder records its system)."""
    _check_normalization(rdf_normalization)
    _check_convention(fes_convention)
    if is_mdsim_folder(run_dir):
        return analyze_mdsim(run_dir, reference, reference_every, rdf_normalization, out, reference_fes=reference_fes,
                             fes_convention=fes_convention, system=system, wrapped=wrapped)
    subject = Subject.of_run(Path(run_dir))
    subject.fes_convention, subject.wrapped = fes_convention, wrapped
    subject.fes_reference = Path(reference_fes) if reference_fes is not None else None
    if out is not None:
        subject.out = Path(out)
        _check_out(subject.out, subject.folder)
    result = {"run": str(subject.folder.resolve()), "system": subject.system["name"],
              "status": subject.manifest["status"], "run_collapse": subject.manifest.get("collapse")}
    return _analyze(subject, result, reference, reference_every, test_data, test_frames, rdf_normalization)


def analyze_trajectory(path: str | Path, *, elements=None, data_file: str | Path | None = None,
                       timestep_fs: float | None = None, every: int | None = None, system: str | None = None,
                       custom: CustomMetrics | None = None, reference: str | Path | None = None,
                       reference_every: int = 1, out: str | Path | None = None, rdf_normalization: str = "paper",
                       finished: bool | None = None, wrapped: bool | None = None,
                       reference_fes: str | Path | None = None, fes_convention: str = "free_energy",
                       ensemble: str | None = None) -> dict:
    """Metrics of a trajectory file (LAMMPS dump, extxyz, ...): a benchmark ``system``'s metric set
    or ``custom`` ones; writes metrics.json and curves.npz to ``out`` (default: beside the file).
    ``wrapped``: ASE files' periodic positions were wrapped (None: decided from the data).

    Elements of the atom types: ``elements`` (type order), else ``data_file``'s Masses, else the
    dump's element column; masses from the data file, else the elements' standard masses. Time
    between frames: ``every`` steps (default: the step difference of the first two frames) of
    ``timestep_fs`` (default: the system's protocol). ``ensemble``: how the trajectory was made when
    not by the system's protocol (e.g. "unbiased" for a plain-MD reference of a metadynamics
    system: its free-energy surface then comes from its Ramachandran histogram)."""
    from lmpbench import systems

    _check_normalization(rdf_normalization)
    _check_convention(fes_convention)
    path = Path(path)
    if (system is None) == (custom is None):
        raise AnalysisError("give a benchmark system (--system) or the metrics to compute (--rdf, --msd), not "
                            + ("both" if system else "neither"))
    try:
        system_def = systems.get_system(system) if system else None
    except systems.SystemError as err:
        raise AnalysisError(str(err)) from None
    protocol = systems.get_protocol(system_def.protocol) if system_def else None
    reader = open_trajectory(path, elements, stop=2, finished=finished, wrapped=wrapped)
    first_two = _first_frames(reader)
    if not first_two:
        raise AnalysisError(f"{path}: no frame to analyse")
    types = _type_map(path, first_two[0], elements, data_file)
    if system_def is not None and not set(types.elements) <= set(system_def.elements):
        raise AnalysisError(f"{path} has elements {' '.join(types.elements)}; system {system} has "
                            f"{' '.join(system_def.elements)}")
    timestep_fs = timestep_fs if timestep_fs is not None else (protocol.timestep_fs if protocol else None)
    steps_are_md_steps = isinstance(reader, TrajectoryReader)  # other formats number their frames 0, 1, ...
    if every is None and steps_are_md_steps and len(first_two) == 2 and first_two[1].step > first_two[0].step:
        every = first_two[1].step - first_two[0].step
    frame_dt_ps = every * timestep_fs / 1000.0 if every and timestep_fs else None
    out = Path(out) if out is not None else path.parent
    _check_out(out, path)
    ensemble = ensemble or (protocol.ensemble if protocol else None)
    subject = Subject(path, types, frame_dt_ps, out, asdict(system_def) if system_def else None,
                      ensemble, finished=finished, wrapped=wrapped,
                      fes_convention=fes_convention, fes_reference=Path(reference_fes) if reference_fes else None,
                      bias_factor=protocol.metad_bias_factor if protocol else None)
    result = {"trajectory": str(path.resolve()), "system": system, "types": types.record(),
              "timestep_fs": timestep_fs, "dump_every_steps": every}
    if getattr(reader, "positions_kind", None):
        result["positions"] = {"kind": reader.positions_kind, "reason": reader.positions_reason}
    return _analyze(subject, result, reference, reference_every, None, None, rdf_normalization, custom)


def analyze_mdsim(folder: str | Path, reference: str | Path | None = None, reference_every: int = 1,
                  rdf_normalization: str = "paper", out: str | Path | None = None, *,
                  reference_fes: str | Path | None = None, fes_convention: str = "free_energy",
                  system: str | None = None, wrapped: bool | None = None) -> dict:
    """Metrics of an MDsim run folder (``lmpbench.analysis.mdsim``), the same metrics.json as a
    lmpbench run's, marked imported: frames from atoms.traj, the time between them from
    thermo.log, the system from ``system`` or the composition, the force/energy errors imported
    from test_metric.json, the free energy from its HILLS or fes.dat."""
    from lmpbench import systems
    from lmpbench.analysis import fes_files, mdsim

    folder = Path(folder)
    try:
        thermo = mdsim.read_thermo_log(folder / "thermo.log")
        time_column = next((k for k in thermo if k.startswith("Time")), None)
        frame_dt_ps = mdsim.frame_interval_ps(thermo[time_column], str(folder / "thermo.log"))
    except mdsim.MDsimError as err:
        raise AnalysisError(str(err)) from None
    reader = open_trajectory(folder / "atoms.traj", wrapped=wrapped, drop_repeats=True)
    frames = sum(1 for _ in _checked(reader))  # one pass: the frame count (restart repeats dropped) to set beside thermo.log
    first = _first_frames(open_trajectory(folder / "atoms.traj", wrapped=wrapped, stop=1))
    if not first:
        raise AnalysisError(f"{folder / 'atoms.traj'}: no frame to analyse")
    symbols = list(first[0].extra["symbols"])
    name = system or mdsim.system_of(symbols)
    if name is None:
        raise AnalysisError(f"{folder}: which benchmark system is this ({len(symbols)} atoms of "
                            f"{' '.join(sorted(set(symbols)))})? Give --system")
    try:
        system_def = systems.get_system(name)
    except systems.SystemError as err:
        raise AnalysisError(str(err)) from None
    if not set(symbols) <= set(system_def.elements):
        raise AnalysisError(f"{folder} has elements {' '.join(sorted(set(symbols)))}; system {name} has "
                            f"{' '.join(system_def.elements)}")
    protocol = systems.get_protocol(system_def.protocol)
    out_dir = Path(out) if out is not None else folder
    _check_out(out_dir, folder)
    types = atom_types.from_elements(list(system_def.elements), source=f"system {name}")
    config = mdsim.folder_config(folder)
    try:
        forces = mdsim.imported_test_errors(folder / "test_metric.json", len(symbols))
    except mdsim.MDsimError as err:
        raise AnalysisError(str(err)) from None
    # MDsim writes early_stop into test_metric.json when simulate() returns: without it the run did not end there
    collapse, status = None, {True: "collapsed", False: "finished"}.get(forces.get("early_stop"), "not finished")
    if status == "collapsed":
        collapse = {"step": frames - 1, "reason": "MDsim stopped the run: temperature out of range (0.1 K to "
                    "100,000 K); steps of an imported run count saved frames"}
    fes_file = fes_files.run_surface_file(folder)
    subject = Subject(folder / "atoms.traj", types, frame_dt_ps, out_dir, asdict(system_def), protocol.ensemble,
                      folder, finished=True, wrapped=wrapped, fes_convention=fes_convention,
                      fes_reference=Path(reference_fes) if reference_fes else None,
                      bias_factor=protocol.metad_bias_factor, imported_metrics={"forces": forces},
                      drop_repeated_frames=True)
    model = mdsim.model_name(folder, config)
    result = {"run": str(folder.resolve()), "system": name, "imported": True, "model": model,
              "status": status, "run_collapse": collapse,
              "source": {"kind": "mdsim", "folder": str(folder.resolve()), "model": model,
                         "files": sorted(p.name for p in folder.iterdir() if p.is_file()),
                         "frames": "atoms.traj (ASE trajectory)",
                         "time_axis": f"thermo.log {time_column}: {frame_dt_ps:g} ps between frames, "
                                      f"{len(thermo[time_column])} rows",
                         "trajectory_frames": frames, "repeated_frames_dropped": reader.repeats_dropped,
                         "frames_match_thermo_rows": frames == len(thermo[time_column]),
                         "free_energy": fes_file.name if fes_file else None,
                         "config": json.loads(json.dumps({k: config[k] for k in (
                             "identifier", "seed", "save_freq", "steps", "integrator", "integrator_config", "plumed",
                             "init_idx") if k in config}, default=str))},
              "types": types.record(),
              "positions": {"kind": reader.positions_kind, "reason": reader.positions_reason}}
    return _analyze(subject, result, reference, reference_every, None, None, rdf_normalization)


def _first_frames(reader) -> list:
    return list(_checked(reader))


def _checked(reader):
    """The reader's frames, its errors as AnalysisError."""
    try:
        yield from reader
    except ValueError as err:  # TrajectoryError is a ValueError
        raise AnalysisError(str(err)) from None


def _check_convention(convention: str) -> None:
    from lmpbench.analysis import plumed

    try:
        plumed.check_convention(convention)
    except plumed.PlumedError as err:
        raise AnalysisError(str(err)) from None


def _check_normalization(normalization: str) -> None:
    if normalization not in NORMALIZATIONS:
        raise AnalysisError(f"RDF normalisation must be one of {', '.join(NORMALIZATIONS)}, not {normalization!r}")


def _type_map(path: Path, first, elements, data_file) -> atom_types.TypeMap:
    try:
        if data_file is not None:
            types = atom_types.from_data_file(data_file, elements)
        elif elements:
            types = atom_types.from_elements(elements)
        else:
            types = atom_types.from_element_column(first, path)
    except atom_types.TypeMapError as err:
        raise AnalysisError(str(err)) from None
    if types is None:
        raise AnalysisError(f"{path}: which element is each atom type? Give --elements (in type order), "
                            "--data (a LAMMPS data file), or dump an element column")
    ntypes = int(first.types.max())
    if ntypes > len(types.elements):
        raise AnalysisError(f"{path} has {ntypes} atom types but {len(types.elements)} elements were given "
                            f"({' '.join(types.elements)})")
    return types


def _check_out(out: Path, trajectory: Path) -> None:
    """Refuse to replace another trajectory's (or run's) results in the same folder."""
    existing = out / "metrics.json"
    if not existing.is_file():
        return
    try:
        written = json.loads(existing.read_text())
        owner = written.get("trajectory") or written.get("run")
    except (OSError, ValueError, AttributeError):
        owner = None
    if owner != str(trajectory.resolve()):
        raise AnalysisError(f"{existing} holds the results of {owner or 'something else'}; "
                            "give another folder with --out")


def _analyze(subject: Subject, result: dict, reference, reference_every, test_data, test_frames,
             normalization: str, custom: CustomMetrics | None = None) -> dict:
    """Compute and write, holding the output folder's lock throughout (a run writing there, or
    another analysis, would change the files under it)."""
    from lmpbench.folder_lock import FolderInUseError, FolderLock

    try:
        lock = FolderLock(subject.out, "lmpbench analyze").acquire()
    except FolderInUseError as err:
        raise AnalysisError(f"{err}; or write the results elsewhere with --out") from None
    try:
        return _compute(subject, result, reference, reference_every, test_data, test_frames, normalization, custom)
    finally:
        lock.release()


def _compute(subject: Subject, result: dict, reference, reference_every, test_data, test_frames,
             normalization: str, custom: CustomMetrics | None = None) -> dict:
    from lmpbench.analysis.fes_files import is_fes_file

    result.update(frame_interval_ps=subject.frame_dt_ps, metrics={})
    curves = {}
    if reference is not None and subject.fes_reference is None and is_fes_file(reference):
        subject.fes_reference, reference = Path(reference), None  # a free-energy file is a reference for the FES only
    if subject.fes_reference is not None:
        result["reference_fes"] = {"path": str(subject.fes_reference.resolve())}
    ref = _reference(reference, subject, reference_every)
    if ref is not None:
        result["reference"] = ref.record()
    system = subject.system
    if custom is not None:
        result["rdf_normalization"] = normalization
        _custom(subject, ref, custom, result, curves, normalization)
    elif system["name"] in METRIC_SETS:
        result["rdf_normalization"] = normalization
        _periodic(subject, ref, METRIC_SETS[system["name"]], result, curves, normalization)
    elif system["category"] == "molecule":
        _molecule(subject, ref, result, curves)
    if subject.ensemble == "nve" and subject.folder is not None:
        _energy_drift(subject, result)
    if system and system.get("dihedrals") and {"phi", "psi"} <= set(system["dihedrals"]):
        _free_energy(subject, ref, result, curves)
    elif subject.fes_reference is not None:
        raise AnalysisError(f"a free-energy reference ({subject.fes_reference}) is for alanine dipeptide's phi/psi "
                            f"surface; system {system['name'] if system else 'custom'} has none")
    if test_data is not None:
        result["metrics"]["forces"] = _test_errors(subject.manifest, test_data, test_frames)
    result["metrics"].update(subject.imported_metrics)
    _write(subject.out, result, curves)
    return result


def _write(out: Path, result: dict, curves: dict) -> None:
    """curves.npz, then metrics.json, each replaced whole: a failure never leaves half a file,
    and metrics.json (what readers look at first) is the last to change."""
    import io

    from lmpbench.files import write_atomic

    out.mkdir(parents=True, exist_ok=True)
    metrics_text = json.dumps(result, indent=2, default=float)  # both made before either is written
    buffer = io.BytesIO()
    np.savez(buffer, **curves)
    write_atomic(out / "curves.npz", buffer.getvalue())
    write_atomic(out / "metrics.json", metrics_text)


def _needs_time(subject: Subject, what: str) -> float:
    if subject.frame_dt_ps is None:
        raise AnalysisError(f"{what} needs the time between frames: give --timestep-fs and --every (MD steps "
                            "between frames; a LAMMPS dump's step numbers give it when it has two frames)")
    return subject.frame_dt_ps


def _periodic(subject, ref, settings, result, curves, normalization):
    metrics = result["metrics"]
    frame_dt_ps = _needs_time(subject, "the stability and diffusivity of a periodic system")
    window = max(1, round(settings.window_ps / frame_dt_ps))
    ref_g = None
    if ref is not None:
        ref_curves = curves_of(ref.frames(), subject.types, settings.pairs, normalization=normalization)
        ref_g = ref_curves["g"]
        curves.update({f"g_ref_{k}": v for k, v in ref_g.items()})
    collapse = result.get("run_collapse")
    collapse_step = collapse["step"] if collapse else None
    # One pass over the run: consecutive windows against the reference's whole RDF, and the
    # run's own RDF over its stable part (the windows before the first that fails, plus that
    # window's first frame, none past the run's own collapse). Pair counts are cached per
    # frame, so a frame counted twice is counted once.
    own, windows, failed, pending = _rdfs(subject.types, settings.pairs, normalization), [], False, False
    structure = StructuralStability(subject.elements, subject.system.get("fixed_bonds", True))
    checker = RDFWindows(subject.types, settings, ref_g, window, normalization) if ref_g is not None else None
    reader = subject.frames()
    for count, frame in enumerate(reader):
        if structure.first_broken_step is None:
            structure.accumulate(frame)
        if count % window == 0:
            stable_part, first = _rdfs(subject.types, settings.pairs, normalization), frame
        for pair in settings.pairs:
            if collapse_step is None or frame.step <= collapse_step:
                stable_part[pair].accumulate(frame)
        error = checker.add(frame) if checker is not None else None
        pending = True
        if (count + 1) % window:
            continue
        pending = False
        if error is not None:
            windows.append((first.step, frame.step, error))
        if failed:
            continue
        if error is not None and error > settings.threshold:
            failed = True
            if collapse_step is None or first.step <= collapse_step:
                for rdf in own.values():
                    rdf.accumulate(first)
        else:
            for pair, rdf in own.items():
                rdf.merge(stable_part[pair])
    if pending and not failed:  # the last, incomplete window
        for pair, rdf in own.items():
            rdf.merge(stable_part[pair])
    frames_used = next(iter(own.values())).frames
    if frames_used == 0:
        raise AnalysisError(f"{subject.trajectory}: no frame to analyse")
    if ref_g is not None:
        metrics["rdf_window_errors"] = {"windows": windows, "window_ps": settings.window_ps,
                                        "threshold": settings.threshold, "reference_frames": ref_curves["frames"]}
    own_g = {_pair_name(p): rdf.g for p, rdf in own.items()}
    curves["r"] = next(iter(own.values())).r
    curves.update({f"g_{k}": v for k, v in own_g.items()})
    stable_ps = (frames_used - 1) * frame_dt_ps
    metrics["stability_ps"] = {"value": stable_ps, "unit": "ps",
                               "definition": f"time before the first {settings.window_ps} ps window whose RDF error "
                                             f"exceeds {settings.threshold} (or the run's own collapse)",
                               "frames_used": frames_used, "truncated_dump": reader.truncated}
    metrics["structural_stability_ps"] = structure.record(frame_dt_ps)
    if ref_g is not None:
        metrics["rdf_mae"] = _rdf_errors(own_g, ref_g, settings.pairs, normalization, RDF_R_MAX)
        if frames_used < window:
            reason = _too_few(frames_used, window, frame_dt_ps)
            metrics["rdf_mae"] = {pair: {"value": None, "reason": reason} for pair in metrics["rdf_mae"]}
    metrics["diffusivity"] = _diffusivity(subject, settings, stable_ps)


def _too_few(frames: int, needed: int, frame_dt_ps: float) -> str:
    return (f"not computable: {frames} stable frame(s), fewer than the {needed} of one {MIN_CURVE_PS:g} ps window "
            f"({frame_dt_ps:g} ps apart)")


def _rdf_errors(own_g: dict, ref_g: dict, pairs, normalization: str, r_max: float) -> dict:
    return {_pair_name(p): {"value": mae(own_g[_pair_name(p)], ref_g[_pair_name(p)], r_max),
                            "definition": f"mae(g, g_ref, {r_max:g}) = mean|g - g_ref| x {r_max:g}"
                                          + (" (paper)" if r_max == RDF_R_MAX else ""),
                            "normalization": normalization + (" (paper)" if normalization == "paper" else " (variant)")}
            for p in pairs}


def _diffusivity(subject, settings, stable_ps):
    if stable_ps < settings.min_stable_ps:
        return {"value": None, "reason": f"needs at least {settings.min_stable_ps} ps stable, has {stable_ps:g} ps"}
    frame_dt_ps = subject.frame_dt_ps
    lag = round(settings.lag_ps / frame_dt_ps)
    skip = round(settings.skip_ps / frame_dt_ps)
    msd = MSD(atom_type=_type_of(subject.types, settings.diffusing), max_lag=lag, masses=subject.types.masses)
    for frame in subject.frames(start=skip, stop=round(stable_ps / frame_dt_ps) + 1):  # memory O(lag), not O(run)
        msd.accumulate(frame)
    return _diffusion_record(msd, lag, frame_dt_ps, settings.diffusing,
                             f"MSD/(6 tau) at tau = {settings.lag_ps} ps, all time origins, centre of mass removed")


def _diffusion_record(msd: MSD, lag: int, frame_dt_ps: float, species: str, definition: str) -> dict:
    d = msd.diffusivity_at(lag, frame_dt_ps)
    first = max(1, lag // 4)
    fit, err = msd.fitted_diffusivity(first, lag, frame_dt_ps)
    return {"value": d * A2_PER_PS_TO_1E9_M2_S, "unit": "1e-9 m^2/s", "species": species, "definition": definition,
            "fitted": {"value": fit * A2_PER_PS_TO_1E9_M2_S, "standard_error": err * A2_PER_PS_TO_1E9_M2_S,
                       "window_ps": [first * frame_dt_ps, lag * frame_dt_ps]}}


def _custom(subject, ref, custom: CustomMetrics, result, curves, normalization):
    """RDFs over every frame and MSDs up to a lag, for the pairs and species asked for."""
    metrics = result["metrics"]
    frames = 0
    if custom.rdf_pairs:
        own = curves_of(subject.frames(), subject.types, custom.rdf_pairs, normalization, custom.r_max, custom.bins)
        frames = own["frames"]
        curves["r"] = own["r"]
        curves.update({f"g_{k}": v for k, v in own["g"].items()})
        metrics["rdf"] = {"frames_used": frames, "r_max_A": custom.r_max, "bins": custom.bins,
                          "normalization": normalization, "truncated_dump": own["truncated"]}
        if ref is not None:
            ref_g = curves_of(ref.frames(), subject.types, custom.rdf_pairs, normalization, custom.r_max, custom.bins)["g"]
            curves.update({f"g_ref_{k}": v for k, v in ref_g.items()})
            metrics["rdf_mae"] = _rdf_errors(own["g"], ref_g, custom.rdf_pairs, normalization, custom.r_max)
    if not custom.msd:
        return
    frame_dt_ps = _needs_time(subject, "an MSD")
    if not frames:
        frames = sum(1 for _ in subject.frames())
    lag = round(custom.lag_ps / frame_dt_ps) if custom.lag_ps else (frames - 1) // 2
    if not 0 < lag < frames:
        raise AnalysisError(f"{subject.trajectory}: {frames} frames {frame_dt_ps:g} ps apart leave no MSD lag of "
                            f"{lag * frame_dt_ps:g} ps (give --lag-ps below {(frames - 1) * frame_dt_ps:g})")
    msds = {"all" if not selection else "+".join(selection):
            MSD(atom_type=tuple(_type_of(subject.types, e) for e in selection) or None, max_lag=lag,
                masses=subject.types.masses)
            for selection in custom.msd}
    for frame in subject.frames():  # one pass for every selection
        for msd in msds.values():
            msd.accumulate(frame)
    metrics["diffusivity"] = {}
    for name, msd in msds.items():
        curves[f"msd_{name}"] = msd.msd_A2()
        metrics["diffusivity"][name] = _diffusion_record(
            msd, lag, frame_dt_ps, name, f"MSD/(6 tau) at tau = {lag * frame_dt_ps:g} ps, all time origins, "
                                         "mass-weighted centre of mass of the selection removed")
    curves["msd_lag_ps"] = np.arange(lag + 1) * frame_dt_ps


def _molecule(subject, ref, result, curves):
    metrics = result["metrics"]
    frame_dt_ps = _needs_time(subject, "the stability of a molecule")
    elements = subject.elements
    first = next(iter(subject.frames(stop=1)), None)
    if first is None:
        raise AnalysisError(f"{subject.trajectory}: no frame to analyse")
    symbols = [elements[t - 1] for t in first.types]
    pairs, _ = bonds(symbols, first.positions)  # the benchmark's bonds: natural_cutoffs on the first frame
    reference_lengths, lengths_from = None, "the first frame (no reference given)"
    if ref is not None:
        ref_hist, sums, n, same_order = DistanceHistogram(H_R_MAX, H_BINS), 0.0, 0, True
        for frame in ref.frames():
            ref_hist.accumulate(frame)
            same_order = same_order and np.array_equal(frame.types, first.types)
            if same_order:
                sums = sums + bond_lengths(frame.positions, pairs)
                n += 1
        if same_order and n:
            reference_lengths, lengths_from = sums / n, f"mean over {n} reference frames (paper)"
        else:
            lengths_from = "the first frame (the reference orders its atoms differently)"
    stability = BondStability(symbols, reference_lengths=reference_lengths, pairs=pairs)
    structure = StructuralStability(elements, subject.system.get("fixed_bonds", True))
    hist = DistanceHistogram(H_R_MAX, H_BINS)
    reader = subject.frames()
    for frame in reader:
        if structure.first_broken_step is None:
            structure.accumulate(frame)
        if stability.first_unstable_step is None:
            stability.accumulate(frame)
            if stability.first_unstable_step is None:
                hist.accumulate(frame)
        if stability.first_unstable_step is not None and structure.first_broken_step is not None:
            break
    stable_ps = (hist.frames - 1) * frame_dt_ps if hist.frames else 0.0
    metrics["stability_ps"] = {"value": stable_ps, "unit": "ps",
                               "definition": "time before the first frame with a bond 0.5 Å off its reference length",
                               "reference_bond_lengths": lengths_from, "bonds": len(pairs[0]),
                               "first_unstable_step": stability.first_unstable_step,
                               "frames_used": hist.frames, "truncated_dump": reader.truncated}
    metrics["structural_stability_ps"] = structure.record(frame_dt_ps)
    if hist.frames:
        curves["r_h"], curves["h"] = hist.r, hist.h
    if ref is not None:
        curves["h_ref"] = ref_hist.h
        needed = max(1, round(MIN_CURVE_PS / frame_dt_ps))
        if hist.frames >= needed:
            metrics["h_mae"] = {"value": mae(hist.h, ref_hist.h, H_R_MAX), "definition": "mae(h, h_ref, 10) (paper)"}
        else:
            metrics["h_mae"] = {"value": None, "reason": _too_few(hist.frames, needed, frame_dt_ps)}


def _free_energy(subject, ref, result, curves):
    """Ramachandran histogram of the run; FES from its metadynamics output when it has one
    (a biased run's histogram is not its FES: COLVARS metad.pmf, PLUMED HILLS or fes.dat),
    else from the histogram. The reference's FES: the free-energy file given, else the
    reference run's metadynamics output, else the histogram of the reference frames. Surfaces
    are read in ``subject.fes_convention`` and only compared within it; a surface read from
    hills is summed on the other surface's grid (PLUMED's grid when both are hills)."""
    from lmpbench.analysis import fes_files, plumed
    from lmpbench.analysis.fes import Ramachandran

    metrics, convention = result["metrics"], subject.fes_convention
    dihedrals = subject.system["dihedrals"]
    quads = [tuple(i - 1 for i in dihedrals[name]) for name in ("phi", "psi")]

    def histogram(frames):
        rama = Ramachandran(*quads)
        for frame in frames:
            rama.accumulate(frame)
        return rama

    def reader(what, file=None, rama=None, bias_factor=None):
        """A surface source: read(grid) -> surface, and whether it sets its own grid."""
        if file is not None:
            fixed = not fes_files.is_hills(file)
            return (lambda grid: fes_files.surface_from_file(file, convention, bias_factor, grid)), fixed
        if rama.frames == 0:
            raise AnalysisError(f"{what}: no frames for a free-energy surface")
        if convention != "free_energy":
            raise fes_files.FESFileError(f"{what}: a histogram estimates the free energy, not the {convention} "
                                         "convention")
        return (lambda grid: rama.surface()), True

    is_metad = subject.ensemble == "langevin_metad"
    own_rama = histogram(subject.frames())
    curves["ramachandran_counts"] = own_rama.counts
    own_file = fes_files.run_surface_file(subject.folder or subject.trajectory.parent) if is_metad else None
    if is_metad and own_file is None:
        metrics["fes"] = {"value": None, "reason": "no metadynamics output (COLVARS metad.pmf, written at the end of "
                                                   f"a run; PLUMED HILLS or fes.dat): looked for {', '.join(fes_files.RUN_FES_FILES)}"}
        return
    try:
        own_read, own_fixed = reader(str(subject.trajectory), own_file, own_rama, subject.bias_factor)
        ref_read = None
        if subject.fes_reference is not None:
            ref_read, ref_fixed = reader("reference", subject.fes_reference, bias_factor=subject.bias_factor)
        elif ref is not None:
            ref_file = fes_files.run_surface_file(ref.path) if ref.is_run else None
            ref_read, ref_fixed = reader(f"reference {ref.path}", ref_file,
                                         histogram(ref.frames()) if ref_file is None else None, subject.bias_factor)
        if ref_read is not None and ref_fixed and not own_fixed:  # hills summed where the reference has its values
            ref_fes = ref_read(None)
            fes = own_read((ref_fes.phi_deg, ref_fes.psi_deg))
        else:
            fes = own_read(None)
            ref_fes = ref_read((fes.phi_deg, fes.psi_deg)) if ref_read is not None else None
    except fes_files.FESFileError as err:
        raise AnalysisError(str(err)) from None
    curves.update(phi_deg=fes.phi_deg, psi_deg=fes.psi_deg, fes_kJ_mol=fes.free_energy_kJ_mol,
                  pmf_phi=fes.pmf("phi"), pmf_psi=fes.pmf("psi"))
    metrics["fes"] = {"value": None, "source": fes.source, "convention": convention,
                      "convention_formula": plumed.FES_CONVENTIONS[convention].formula,
                      "paper_convention": plumed.FES_CONVENTIONS[convention].paper,
                      "reason": "a surface: see curves.npz"}
    if ref_fes is None:
        return
    broken_at = _first_unstable_step(result)
    if broken_at is not None:  # the bias (or histogram) covers the broken part too: not the model's FES
        reason = (f"not computable: the run became unstable at step {broken_at}, and its free-energy surface "
                  "includes what came after")
        metrics["pmf_mae"] = {axis: {"value": None, "reason": reason} for axis in ("phi", "psi")}
        curves.update(pmf_ref_phi=ref_fes.pmf("phi"), pmf_ref_psi=ref_fes.pmf("psi"))
        return
    try:
        errors, ref_on_grid = fes_files.pmf_errors(fes, ref_fes)
    except fes_files.FESFileError as err:
        raise AnalysisError(str(err)) from None
    for record in errors.values():
        record["reference_source"] = ref_fes.source
    metrics["pmf_mae"] = errors
    curves.update(fes_ref_kJ_mol=ref_on_grid.free_energy_kJ_mol, pmf_ref_phi=ref_on_grid.pmf("phi"),
                  pmf_ref_psi=ref_on_grid.pmf("psi"))


def _first_unstable_step(result: dict) -> int | None:
    """The earliest step at which the run collapsed or the paper's bond criterion fired."""
    steps = [(result.get("run_collapse") or {}).get("step"),
             result["metrics"].get("stability_ps", {}).get("first_unstable_step")]
    steps = [s for s in steps if s is not None]
    return min(steps) if steps else None


def _test_errors(manifest, test_data, test_frames) -> dict:
    from lmpbench.analysis.errors import force_energy_errors

    if manifest["model"]["kind"] != "deployed":
        return {"value": None, "reason": f"the run's model is {manifest['model']['kind']}, not a deployed file"}
    errors = force_energy_errors(manifest["model"]["file"], test_data, test_frames)
    return {"value": errors["forces_mae_meV_A"], "unit": "meV/Å", "energy_mae_meV_atom": errors["energy_mae_meV_atom"],
            "frames": errors["frames"], "data": str(Path(test_data).resolve()),
            "definition": "MAE over every force component of the labelled frames, model evaluated in LAMMPS"}


def energy_drift_ev_atom_ps(time_ps: np.ndarray, etotal_eV: np.ndarray, natoms: int) -> float:
    """Least-squares slope of the total energy per atom against time (eV/atom/ps)."""
    return float(np.polyfit(time_ps, np.asarray(etotal_eV) / natoms, 1)[0])


def _energy_drift(subject, result):
    rows = np.loadtxt(subject.folder / "thermo.dat", comments="#", ndmin=2)
    slope = energy_drift_ev_atom_ps(rows[:, 1], rows[:, 5], subject.manifest["natoms"])
    result["metrics"]["energy_drift"] = {"value": slope, "unit": "eV/atom/ps",
                                         "definition": "least-squares slope of the total energy per atom (NVE)"}
