"""``lmpbench analyze``: the benchmark's metrics of one run folder, against a reference run.

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
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmpbench.analysis.geometry import BondStability, bond_lengths, bonds
from lmpbench.analysis.msd import A2_PER_PS_TO_1E9_M2_S, MSD
from lmpbench.analysis.rdf import NORMALIZATIONS, RDF, DistanceHistogram, mae
from lmpbench.analysis.trajectory import TrajectoryReader, open_trajectory


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
}
RDF_R_MAX, RDF_BINS, H_R_MAX, H_BINS = 6.0, 500, 10.0, 500


def _manifest(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    if not path.is_file():
        raise AnalysisError(f"{run_dir} is not a run folder (no run.json)")
    manifest = json.loads(path.read_text())
    if not (run_dir / "traj.dump").is_file():
        raise AnalysisError(f"{run_dir} has no traj.dump to analyse")
    return manifest


def _type_of(manifest: dict, element: str | None) -> int | None:
    if element is None:
        return None
    if element not in manifest["type_elements"]:
        raise AnalysisError(f"the run has no {element} atoms (its elements: {' '.join(manifest['type_elements'])})")
    return manifest["type_elements"].index(element) + 1


@dataclass
class Reference:
    """What the run is compared with: a run folder (its traj.dump) or a reference data file."""

    path: Path
    elements: list[str]  # the run's type order, applied to the reference's element symbols
    every: int = 1

    @property
    def is_run(self) -> bool:
        return self.path.is_dir()

    @property
    def file(self) -> Path:
        return self.path / "traj.dump" if self.is_run else self.path

    def frames(self):
        if self.is_run:
            return TrajectoryReader(self.file, step=self.every)
        return open_trajectory(self.file, self.elements, step=self.every)

    def record(self) -> dict:
        digest = hashlib.sha256()
        with open(self.file, "rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
        return {"path": str(self.path.resolve()), "kind": "run" if self.is_run else "data file",
                "file_sha256": digest.hexdigest(), "every": self.every}


def _reference(reference, manifest: dict, every: int) -> Reference | None:
    if reference is None:
        return None
    ref = Reference(Path(reference), manifest["type_elements"], every)
    if ref.is_run:
        ref_manifest = _manifest(ref.path)
        if ref_manifest["system"]["name"] != manifest["system"]["name"]:
            raise AnalysisError(f"reference {reference} is a {ref_manifest['system']['name']} run, "
                                f"not {manifest['system']['name']}")
        if ref_manifest["type_elements"] != manifest["type_elements"]:
            raise AnalysisError(f"reference {reference} numbers its elements {ref_manifest['type_elements']}, "
                                f"the run {manifest['type_elements']}")
    elif not ref.path.is_file():
        raise AnalysisError(f"reference {reference} does not exist")
    return ref


def _rdfs(manifest: dict, settings: PeriodicSettings, normalization: str) -> dict:
    return {pair: RDF(RDF_R_MAX, RDF_BINS, _type_of(manifest, pair[0]), _type_of(manifest, pair[1]), normalization)
            for pair in settings.pairs}


def curves_of(frames, manifest: dict, settings: PeriodicSettings, normalization: str = "paper") -> dict:
    """Partial RDFs over all of ``frames`` (the reference's)."""
    rdfs = _rdfs(manifest, settings, normalization)
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


def analyze(run_dir: str | Path, reference: str | Path | None = None, reference_every: int = 1,
            test_data: str | Path | None = None, test_frames: int | None = None,
            rdf_normalization: str = "paper") -> dict:
    """Metrics of ``run_dir`` (and errors against ``reference``); writes metrics.json and curves.npz.
    ``rdf_normalization``: "paper" (N_A N_B / V, the default) or the labelled variant "n_n_minus_1"."""
    if rdf_normalization not in NORMALIZATIONS:
        raise AnalysisError(f"RDF normalisation must be one of {', '.join(NORMALIZATIONS)}, not {rdf_normalization!r}")
    run_dir = Path(run_dir)
    manifest = _manifest(run_dir)
    system = manifest["system"]
    protocol = manifest["protocol"]
    frame_dt_ps = protocol["dump_every"] * protocol["timestep_fs"] / 1000.0
    result = {"run": str(run_dir.resolve()), "system": system["name"], "status": manifest["status"],
              "run_collapse": manifest.get("collapse"), "frame_interval_ps": frame_dt_ps, "metrics": {}}
    curves = {}
    ref = _reference(reference, manifest, reference_every)
    if ref is not None:
        result["reference"] = ref.record()

    if system["name"] in METRIC_SETS:
        result["rdf_normalization"] = rdf_normalization
        _periodic(run_dir, ref, METRIC_SETS[system["name"]], manifest, frame_dt_ps, result, curves, rdf_normalization)
    elif system["category"] == "molecule":
        _molecule(run_dir, ref, manifest, frame_dt_ps, result, curves)
    if protocol["ensemble"] == "nve":
        _energy_drift(run_dir, manifest, result)
    if system.get("dihedrals") and {"phi", "psi"} <= set(system["dihedrals"]):
        _free_energy(run_dir, ref, manifest, result, curves)
    if test_data is not None:
        result["metrics"]["forces"] = _test_errors(manifest, test_data, test_frames)

    # written whole or not at all: a failure never leaves half a file or a pair that disagrees
    staged_metrics, staged_curves = run_dir / ".metrics.json.partial", run_dir / ".curves.partial.npz"
    staged_metrics.write_text(json.dumps(result, indent=2, default=float))
    np.savez(staged_curves, **curves)
    os.replace(staged_curves, run_dir / "curves.npz")
    os.replace(staged_metrics, run_dir / "metrics.json")
    return result


def _periodic(run_dir, ref, settings, manifest, frame_dt_ps, result, curves, normalization):
    metrics = result["metrics"]
    window = max(1, round(settings.window_ps / frame_dt_ps))
    ref_g = None
    if ref is not None:
        ref_curves = curves_of(ref.frames(), manifest, settings, normalization=normalization)
        ref_g = ref_curves["g"]
        curves.update({f"g_ref_{k}": v for k, v in ref_g.items()})
    collapse_step = result["run_collapse"]["step"] if result["run_collapse"] else None
    # One pass over the run: consecutive windows against the reference's whole RDF, and the
    # run's own RDF over its stable part (the windows before the first that fails, plus that
    # window's first frame, none past the run's own collapse). Pair counts are cached per
    # frame, so a frame counted twice is counted once.
    own, windows, failed, pending = _rdfs(manifest, settings, normalization), [], False, False
    reader = TrajectoryReader(run_dir / "traj.dump")
    for count, frame in enumerate(reader):
        if count % window == 0:
            in_window, stable_part, first = _rdfs(manifest, settings, normalization), _rdfs(manifest, settings, normalization), frame
        for pair in settings.pairs:
            in_window[pair].accumulate(frame)
            if collapse_step is None or frame.step <= collapse_step:
                stable_part[pair].accumulate(frame)
        pending = True
        if (count + 1) % window:
            continue
        pending = False
        error = None
        if ref_g is not None:
            error = max(mae(in_window[p].g, ref_g[_pair_name(p)], RDF_R_MAX) for p in settings.pairs)
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
        raise AnalysisError(f"{run_dir}: no frame to analyse")
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
    if ref_g is not None:
        metrics["rdf_mae"] = {_pair_name(p): {"value": mae(own_g[_pair_name(p)], ref_g[_pair_name(p)], RDF_R_MAX),
                                              "definition": "mae(g, g_ref, 6) = mean|g - g_ref| x 6 (paper)",
                                              "normalization": normalization + (" (paper)" if normalization == "paper" else " (variant)")}
                              for p in settings.pairs}
    metrics["diffusivity"] = _diffusivity(run_dir, manifest, settings, frame_dt_ps, stable_ps)


def _diffusivity(run_dir, manifest, settings, frame_dt_ps, stable_ps):
    if stable_ps < settings.min_stable_ps:
        return {"value": None, "reason": f"needs at least {settings.min_stable_ps} ps stable, has {stable_ps:g} ps"}
    lag = round(settings.lag_ps / frame_dt_ps)
    msd = MSD(atom_type=_type_of(manifest, settings.diffusing), max_lag=lag)  # memory O(lag), not O(run)
    skip = round(settings.skip_ps / frame_dt_ps)
    for frame in TrajectoryReader(run_dir / "traj.dump", start=skip, stop=round(stable_ps / frame_dt_ps) + 1):
        msd.accumulate(frame)
    d = msd.diffusivity_at(lag, frame_dt_ps)
    fit, err = msd.fitted_diffusivity(max(1, lag // 4), lag, frame_dt_ps)
    return {"value": d * A2_PER_PS_TO_1E9_M2_S, "unit": "1e-9 m^2/s", "species": settings.diffusing,
            "definition": f"MSD/(6 tau) at tau = {settings.lag_ps} ps, all time origins, centre of mass removed",
            "fitted": {"value": fit * A2_PER_PS_TO_1E9_M2_S, "standard_error": err * A2_PER_PS_TO_1E9_M2_S,
                       "window_ps": [max(1, lag // 4) * frame_dt_ps, lag * frame_dt_ps]}}


def _molecule(run_dir, ref, manifest, frame_dt_ps, result, curves):
    metrics = result["metrics"]
    elements = manifest["type_elements"]
    first = next(iter(TrajectoryReader(run_dir / "traj.dump", stop=1)), None)
    if first is None:
        raise AnalysisError(f"{run_dir}: no frame to analyse")
    symbols = [elements[t - 1] for t in first.types]
    pairs, _ = bonds(symbols, first.positions)  # the benchmark's bonds: natural_cutoffs on the first frame
    reference_lengths, lengths_from = None, "the run's first frame (no reference given)"
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
            lengths_from = "the run's first frame (the reference orders its atoms differently)"
    stability = BondStability(symbols, reference_lengths=reference_lengths, pairs=pairs)
    hist = DistanceHistogram(H_R_MAX, H_BINS)
    reader = TrajectoryReader(run_dir / "traj.dump")
    for frame in reader:
        stability.accumulate(frame)
        if stability.first_unstable_step is not None:
            break
        hist.accumulate(frame)
    stable_ps = (hist.frames - 1) * frame_dt_ps if hist.frames else 0.0
    metrics["stability_ps"] = {"value": stable_ps, "unit": "ps",
                               "definition": "time before the first frame with a bond 0.5 Å off its reference length",
                               "reference_bond_lengths": lengths_from, "bonds": len(pairs[0]),
                               "first_unstable_step": stability.first_unstable_step,
                               "frames_used": hist.frames, "truncated_dump": reader.truncated}
    if hist.frames:
        curves["r_h"], curves["h"] = hist.r, hist.h
    if ref is not None:
        curves["h_ref"] = ref_hist.h
        if hist.frames:
            metrics["h_mae"] = {"value": mae(hist.h, ref_hist.h, H_R_MAX), "definition": "mae(h, h_ref, 10) (paper)"}


def _free_energy(run_dir, ref, manifest, result, curves):
    """Ramachandran histogram of the run; FES from its metadynamics output when it has one
    (a biased run's histogram is not its FES), else from the histogram."""
    from lmpbench.analysis.fes import FreeEnergySurface, Ramachandran

    dihedrals = manifest["system"]["dihedrals"]
    quads = [tuple(i - 1 for i in dihedrals[name]) for name in ("phi", "psi")]

    def histogram(frames):
        rama = Ramachandran(*quads)
        for frame in frames:
            rama.accumulate(frame)
        return rama

    def from_histogram(rama, what: str) -> tuple[FreeEnergySurface, str]:
        if rama.frames == 0:
            raise AnalysisError(f"{what}: no frames for a free-energy surface")
        return rama.surface(), f"histogram of {rama.frames} frames ({rama.empty_bins} empty bins at one count)"

    def from_bias(folder: Path) -> tuple[FreeEnergySurface, str]:
        return FreeEnergySurface.from_colvars_pmf(folder / "metad.pmf"), "metadynamics bias (COLVARS)"

    is_metad = manifest["protocol"]["ensemble"] == "langevin_metad"
    own_rama = histogram(TrajectoryReader(run_dir / "traj.dump"))
    curves["ramachandran_counts"] = own_rama.counts
    if is_metad and not (run_dir / "metad.pmf").is_file():
        result["metrics"]["fes"] = {"value": None, "reason": "no metad.pmf (COLVARS writes it at the end of a run)"}
        return
    fes, source = from_bias(run_dir) if is_metad else from_histogram(own_rama, str(run_dir))
    curves.update(phi_deg=fes.phi_deg, psi_deg=fes.psi_deg, fes_kJ_mol=fes.free_energy_kJ_mol,
                  pmf_phi=fes.pmf("phi"), pmf_psi=fes.pmf("psi"))
    result["metrics"]["fes"] = {"value": None, "source": source, "reason": "a surface: see curves.npz"}
    if ref is not None:
        if ref.is_run and (ref.path / "metad.pmf").is_file():
            ref_fes, ref_source = from_bias(ref.path)
        else:
            ref_fes, ref_source = from_histogram(histogram(ref.frames()), f"reference {ref.path}")
        curves.update(fes_ref_kJ_mol=ref_fes.free_energy_kJ_mol, pmf_ref_phi=ref_fes.pmf("phi"), pmf_ref_psi=ref_fes.pmf("psi"))
        result["metrics"]["pmf_mae"] = {
            axis: {"value": mae(fes.pmf(axis), ref_fes.pmf(axis), 6.28), "unit": "kJ/mol rad", "reference_source": ref_source,
                   "definition": "mae(PMF, PMF_ref, 6.28), PMF from the 60 x 60 FES with kBT = 2.49 kJ/mol"}
            for axis in ("phi", "psi")}


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


def _energy_drift(run_dir, manifest, result):
    rows = np.loadtxt(run_dir / "thermo.dat", comments="#", ndmin=2)
    slope = energy_drift_ev_atom_ps(rows[:, 1], rows[:, 5], manifest["natoms"])
    result["metrics"]["energy_drift"] = {"value": slope, "unit": "eV/atom/ps",
                                         "definition": "least-squares slope of the total energy per atom (NVE)"}
