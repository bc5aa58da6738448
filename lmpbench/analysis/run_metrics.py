"""``lmpbench analyze``: the benchmark's metrics of one run folder, against a reference run.

Which metrics a run gets follows its system (``METRIC_SETS``): periodic systems get partial
RDFs, the sliding-window RDF stability and the diffusivity; molecules get the bond
stability and h(r). NVE runs also get the energy drift. Curves are computed over the stable
frames only and the result says how many that was. The reference is another run folder
(e.g. the classical reference run of the same system), analysed the same way.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmpbench.analysis.geometry import BondStability
from lmpbench.analysis.msd import A2_PER_PS_TO_1E9_M2_S, MSD
from lmpbench.analysis.rdf import RDF, DistanceHistogram, mae
from lmpbench.analysis.trajectory import TrajectoryReader


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
    "water": PeriodicSettings((("O", "O"), ("H", "H"), ("H", "O")), 1.0, 3.0, "O", 100.0, 100.0),
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
    return None if element is None else manifest["type_elements"].index(element) + 1


def _frames(run_dir: Path):
    reader = TrajectoryReader(run_dir / "traj.dump")
    return reader, iter(reader)


def periodic_curves(run_dir: Path, settings: PeriodicSettings, until_step: int | None = None) -> dict:
    manifest = _manifest(run_dir)
    rdfs = {pair: RDF(RDF_R_MAX, RDF_BINS, _type_of(manifest, pair[0]), _type_of(manifest, pair[1])) for pair in settings.pairs}
    reader, frames = _frames(run_dir)
    n = 0
    for frame in frames:
        if until_step is not None and frame.step > until_step:
            break
        for rdf in rdfs.values():
            rdf.accumulate(frame)
        n += 1
    if n == 0:
        raise AnalysisError(f"{run_dir}: no frame to analyse")
    return {"r": next(iter(rdfs.values())).r, "g": {_pair_name(p): rdf.g for p, rdf in rdfs.items()}, "frames": n,
            "truncated": reader.truncated}


def _pair_name(pair) -> str:
    return "all" if pair == (None, None) else f"{pair[0]}-{pair[1]}"


def analyze(run_dir: str | Path, reference: str | Path | None = None) -> dict:
    """Metrics of ``run_dir`` (and errors against ``reference``); writes metrics.json and curves.npz."""
    run_dir = Path(run_dir)
    manifest = _manifest(run_dir)
    system = manifest["system"]
    protocol = manifest["protocol"]
    frame_dt_ps = protocol["dump_every"] * protocol["timestep_fs"] / 1000.0
    result = {"run": str(run_dir.resolve()), "system": system["name"], "status": manifest["status"],
              "run_collapse": manifest.get("collapse"), "frame_interval_ps": frame_dt_ps, "metrics": {}}
    curves = {}
    if reference is not None:
        ref_manifest = _manifest(Path(reference))
        if ref_manifest["system"]["name"] != system["name"]:
            raise AnalysisError(f"reference {reference} is a {ref_manifest['system']['name']} run, not {system['name']}")
        result["reference"] = {"run": str(Path(reference).resolve()),
                               "traj_sha256": hashlib.sha256((Path(reference) / "traj.dump").read_bytes()).hexdigest()}

    if system["name"] in METRIC_SETS:
        _periodic(run_dir, reference, METRIC_SETS[system["name"]], manifest, frame_dt_ps, result, curves)
    elif system["category"] == "molecule":
        _molecule(run_dir, reference, manifest, frame_dt_ps, result, curves)
    if protocol["ensemble"] == "nve":
        _energy_drift(run_dir, manifest, result)
    if protocol["ensemble"] == "langevin_metad":
        _free_energy(run_dir, reference, result, curves)

    (run_dir / "metrics.json").write_text(json.dumps(result, indent=2, default=float))
    np.savez(run_dir / "curves.npz", **curves)
    return result


def _periodic(run_dir, reference, settings, manifest, frame_dt_ps, result, curves):
    metrics = result["metrics"]
    window = max(1, round(settings.window_ps / frame_dt_ps))
    stable_until = None
    if reference is not None:
        ref = periodic_curves(Path(reference), settings)
        curves.update({f"g_ref_{k}": v for k, v in ref["g"].items()})
        # sliding windows of the run against the reference's whole RDF
        rdfs, count, windows = None, 0, []
        for frame in TrajectoryReader(run_dir / "traj.dump"):
            if count % window == 0:
                rdfs = {p: RDF(RDF_R_MAX, RDF_BINS, _type_of(manifest, p[0]), _type_of(manifest, p[1])) for p in settings.pairs}
                start_step = frame.step
            for rdf in rdfs.values():
                rdf.accumulate(frame)
            count += 1
            if count % window == 0:
                error = max(mae(rdfs[p].g, ref["g"][_pair_name(p)], RDF_R_MAX) for p in settings.pairs)
                windows.append((start_step, frame.step, error))
                if error > settings.threshold and stable_until is None:
                    stable_until = start_step
        metrics["rdf_window_errors"] = {"windows": windows, "window_ps": settings.window_ps,
                                        "threshold": settings.threshold}
    last_step = result["run_collapse"]["step"] if result["run_collapse"] else None
    if stable_until is not None:
        last_step = stable_until if last_step is None else min(last_step, stable_until)
    own = periodic_curves(run_dir, settings, until_step=last_step)
    curves["r"] = own["r"]
    curves.update({f"g_{k}": v for k, v in own["g"].items()})
    stable_ps = (own["frames"] - 1) * frame_dt_ps
    metrics["stability_ps"] = {"value": stable_ps, "unit": "ps",
                               "definition": f"time before the first {settings.window_ps} ps window whose RDF error "
                                             f"exceeds {settings.threshold} (or the run's own collapse)",
                               "frames_used": own["frames"], "truncated_dump": own["truncated"]}
    if reference is not None:
        metrics["rdf_mae"] = {_pair_name(p): {"value": mae(own["g"][_pair_name(p)], ref["g"][_pair_name(p)], RDF_R_MAX),
                                              "definition": "mae(g, g_ref, 6) = mean|g - g_ref| x 6 (paper)"}
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


def _molecule(run_dir, reference, manifest, frame_dt_ps, result, curves):
    metrics = result["metrics"]
    elements = manifest["type_elements"]
    stability = None
    hist = DistanceHistogram(H_R_MAX, H_BINS)
    reader = TrajectoryReader(run_dir / "traj.dump")
    for frame in reader:
        if stability is None:
            stability = BondStability([elements[t - 1] for t in frame.types])
        stability.accumulate(frame)
        if stability.first_unstable_step is not None:
            break
        hist.accumulate(frame)
    stable_ps = (hist.frames - 1) * frame_dt_ps if hist.frames else 0.0
    metrics["stability_ps"] = {"value": stable_ps, "unit": "ps",
                               "definition": "time before the first frame with a bond 0.5 Å off its reference length "
                                             "(reference: the first frame until datasets supply the mean)",
                               "first_unstable_step": stability.first_unstable_step if stability else None,
                               "frames_used": hist.frames, "truncated_dump": reader.truncated}
    curves["r_h"], curves["h"] = hist.r, hist.h
    if reference is not None:
        ref = DistanceHistogram(H_R_MAX, H_BINS)
        for frame in TrajectoryReader(Path(reference) / "traj.dump"):
            ref.accumulate(frame)
        curves["h_ref"] = ref.h
        metrics["h_mae"] = {"value": mae(hist.h, ref.h, H_R_MAX), "definition": "mae(h, h_ref, 10) (paper)"}


def _free_energy(run_dir, reference, result, curves):
    from lmpbench.analysis.fes import FreeEnergySurface
    from lmpbench.analysis.rdf import mae

    pmf_file = run_dir / "metad.pmf"
    if not pmf_file.is_file():
        result["metrics"]["fes"] = {"value": None, "reason": "no metad.pmf (COLVARS writes it at the end of a run)"}
        return
    fes = FreeEnergySurface.from_colvars_pmf(pmf_file)
    curves.update(phi_deg=fes.phi_deg, psi_deg=fes.psi_deg, fes_kJ_mol=fes.free_energy_kJ_mol,
                  pmf_phi=fes.pmf("phi"), pmf_psi=fes.pmf("psi"))
    if reference is not None:
        ref = FreeEnergySurface.from_colvars_pmf(Path(reference) / "metad.pmf")
        result["metrics"]["pmf_mae"] = {
            axis: {"value": mae(fes.pmf(axis), ref.pmf(axis), 6.28), "unit": "kJ/mol rad",
                   "definition": "mae(PMF, PMF_ref, 6.28), PMF from the 60 x 60 FES with kBT = 2.49 kJ/mol"}
            for axis in ("phi", "psi")}


def energy_drift_ev_atom_ps(time_ps: np.ndarray, etotal_eV: np.ndarray, natoms: int) -> float:
    """Least-squares slope of the total energy per atom against time (eV/atom/ps)."""
    return float(np.polyfit(time_ps, np.asarray(etotal_eV) / natoms, 1)[0])


def _energy_drift(run_dir, manifest, result):
    rows = np.loadtxt(run_dir / "thermo.dat", comments="#", ndmin=2)
    slope = energy_drift_ev_atom_ps(rows[:, 1], rows[:, 5], manifest["natoms"])
    result["metrics"]["energy_drift"] = {"value": slope, "unit": "eV/atom/ps",
                                         "definition": "least-squares slope of the total energy per atom (NVE)"}
