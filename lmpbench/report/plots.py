"""The report's figures (matplotlib, PNG files): models of one system side by side, against the reference.

Each function takes a ``SystemTable`` and a folder, writes one PNG and returns a ``Figure``
(file and caption), or None when the runs hold nothing to plot (the caption of the page then
says so). Curves come from the runs' curves.npz (``lmpbench analyze``), temperatures from
thermo.dat; a model's curve is the mean over its pooled seeds. The per-run curve plots are
``lmpbench.analysis.plots.plot_curves``, the same as ``analyze --plot``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmpbench.report.table import SystemTable, metric


@dataclass
class Figure:
    file: Path
    title: str
    caption: str


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def _curves(run) -> dict:
    if run.curves is None:
        return {}
    try:
        with np.load(run.curves) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError):  # a damaged curves.npz: the run's numbers still count, its curves do not
        return {}


def _model_curves(row, keys) -> dict:
    """{key: mean over the row's pooled runs that have it}."""
    found: dict = {}
    for run in (r for r in row.runs if r.pooled):
        curves = _curves(run)
        for key in keys:
            if key in curves:
                found.setdefault(key, []).append(curves[key])
    return {k: np.mean(v, axis=0) for k, v in found.items() if len({a.shape for a in v}) == 1}


def _first_curve(table: SystemTable, key: str):
    for row in table.rows:
        for run in row.runs:
            curves = _curves(run)
            if key in curves:
                return curves
    return None


def structure_overlay(table: SystemTable, out: Path) -> Figure | None:
    """Partial RDFs (periodic systems) or h(r) (molecules) of each model over the reference's."""
    keys = sorted({k for row in table.rows for run in row.runs for k in _curves(run)
                   if (k.startswith("g_") and not k.startswith("g_ref_")) or k == "h"})
    if not keys:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(4.4 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        x_key, ref_key = ("r_h", "h_ref") if key == "h" else ("r", f"g_ref_{key[2:]}")
        for row in table.rows:
            mean = _model_curves(row, [key, x_key])
            if key in mean and x_key in mean:
                ax.plot(mean[x_key], mean[key], label=row.model_name)
        ref = _first_curve(table, ref_key)
        if ref is not None and x_key in ref:
            ax.plot(ref[x_key], ref[ref_key], "k--", label="reference")
        ax.set(xlabel="r (Å)", ylabel="h(r) (1/Å)" if key == "h" else "g(r)",
               title="distance histogram h(r)" if key == "h" else f"RDF {key[2:]}")
        ax.legend(fontsize=7)
    what = "h(r)" if keys == ["h"] else "partial RDFs"
    return Figure(_save(fig, out / f"{table.system}_structure.png"), f"{table.system}: {what} against the reference",
                  f"{what} over each run's stable frames, mean over the model's pooled seeds; dashed: the reference.")


def diffusion(table: SystemTable, out: Path, d_ref: float | None) -> Figure | None:
    """MSD curves when the runs saved them, and D per model with its seed interval."""
    rows = [row for row in table.rows if row.cells.get("diffusivity") and row.cells["diffusivity"].mean is not None]
    msd_rows = [(row, _model_curves(row, ["msd_lag_ps"] + [k for run in row.runs for k in _curves(run)
                                                            if k.startswith("msd_") and k != "msd_lag_ps"]))
                for row in table.rows]
    msd_rows = [(row, c) for row, c in msd_rows if "msd_lag_ps" in c and len(c) > 1]
    if not rows and not msd_rows:
        return None
    plt = _pyplot()
    panels = bool(msd_rows) + bool(rows)
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.4), squeeze=False)
    axes = list(axes[0])
    if msd_rows:
        ax = axes.pop(0)
        for row, curves in msd_rows:
            for key in (k for k in curves if k.startswith("msd_") and k != "msd_lag_ps"):
                ax.plot(curves["msd_lag_ps"], curves[key], label=f"{row.model_name} {key[4:]}")
        ax.set(xlabel="lag (ps)", ylabel="MSD (Å²)", title="mean-squared displacement")
        ax.legend(fontsize=7)
    if not rows:
        return Figure(_save(fig, out / f"{table.system}_diffusion.png"), f"{table.system}: MSD",
                      "MSD over all time origins, mean over the model's pooled seeds; no run has a D.")
    ax_d = axes[0]  # what is left: the D panel
    for i, row in enumerate(rows):
        cell = row.cells["diffusivity"]
        err = None if cell.low is None else [[cell.mean - cell.low], [cell.high - cell.mean]]
        ax_d.errorbar([i], [cell.mean], yerr=err, fmt="o", capsize=4)
    if d_ref is not None:
        ax_d.axhline(d_ref, color="k", ls="--", label="reference")
        ax_d.legend(fontsize=7)
    ax_d.set_xticks(range(len(rows)), [row.model_name for row in rows], rotation=20, fontsize=7)
    ax_d.set(ylabel="D (1e-9 m²/s)", title="diffusivity, mean and 95% t interval")
    return Figure(_save(fig, out / f"{table.system}_diffusion.png"),
                  f"{table.system}: {'MSD and ' if msd_rows else ''}diffusivity",
                  "D = MSD/(6 tau) at the protocol's lag; error bars: 95% t interval over seeds; dashed: the reference "
                  "set's mean D." + ("" if d_ref is not None else " No reference D was given.")
                  + ("" if msd_rows else " (The runs' curves.npz hold no MSD curve.)"))


def _thermo(run) -> np.ndarray | None:
    path = run.folder / "thermo.dat"
    if not path.is_file():
        return None
    try:
        rows = np.loadtxt(path, comments="#", ndmin=2)
    except ValueError:
        return None
    return rows if rows.shape[1] >= 3 and len(rows) else None


def _windows(run) -> np.ndarray | None:
    """The run's RDF-window errors as rows (last step, error), or None when it has none readable."""
    record = run.metrics.get("rdf_window_errors")
    if not isinstance(record, dict) or not record.get("windows") or not run.timestep_fs:
        return None
    try:
        data = np.array([w[1:3] for w in record["windows"]], dtype=float)
    except (TypeError, ValueError, IndexError):  # not a list of (first step, last step, error)
        return None
    return data if data.ndim == 2 and data.shape[1] == 2 else None


def stability_over_time(table: SystemTable, out: Path) -> Figure | None:
    """Temperature of every seed against time (collapse marked), and the RDF-window errors."""
    runs = [(row, run) for row in table.rows for run in row.runs]
    thermo = [(row, run, t) for row, run in runs if (t := _thermo(run)) is not None]
    windows = [(row, run, w) for row, run in runs if (w := _windows(run)) is not None]
    if not thermo and not windows:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2 if windows else 1, figsize=(9.6 if windows else 5.2, 3.6), squeeze=False)
    colors = {row.model_id: f"C{i % 10}" for i, row in enumerate(table.rows)}
    labelled = set()

    def label(row):  # one legend entry per model, not per seed
        if row.model_id in labelled:
            return None
        labelled.add(row.model_id)
        return row.model_name

    for row, run, rows in thermo:
        axes[0][0].plot(rows[:, 1], rows[:, 2], color=colors[row.model_id], lw=0.8, label=label(row))
        if run.collapse and run.collapse.get("time_ps") is not None:
            axes[0][0].axvline(run.collapse["time_ps"], color=colors[row.model_id], ls=":", lw=1)
    axes[0][0].set(xlabel="time (ps)", ylabel="T (K)", title="temperature, one line per seed (dotted: collapse)")
    if thermo and max(float(np.nanmax(t[:, 2])) for _, _, t in thermo) > 5000:  # a blown-up run: keep the rest readable
        axes[0][0].set_yscale("symlog", linthresh=1000)
    if thermo:
        axes[0][0].legend(fontsize=6)
    if windows:
        ax = axes[0][1]
        labelled.clear()
        for row, run, data in windows:
            ax.plot(data[:, 0] * run.timestep_fs / 1000.0, data[:, 1], "o-", ms=2, color=colors[row.model_id],
                    label=label(row))
        threshold = windows[0][1].metrics["rdf_window_errors"].get("threshold")
        if isinstance(threshold, (int, float)):
            ax.axhline(threshold, color="k", ls="--", label="collapse threshold")
        ax.set(xlabel="time (ps)", ylabel="window RDF error", title="RDF error of each 1 ps window")
        ax.legend(fontsize=6)
    return Figure(_save(fig, out / f"{table.system}_stability.png"), f"{table.system}: stability over time per seed",
                  "Temperature from each run's thermo.dat (log scale above 1000 K when a run heats past 5000 K); right, where the runs were analysed "
                  "against a reference: each window's RDF error and the collapse threshold.")


def free_energy(table: SystemTable, out: Path) -> Figure | None:
    """Ramachandran free-energy surfaces: one per model (its first seed with one) and the reference."""
    panels, reference = [], None
    for row in table.rows:
        for run in row.runs:
            curves = _curves(run)
            if "fes_kJ_mol" in curves:
                panels.append((row.model_name, curves["fes_kJ_mol"], curves["phi_deg"], curves["psi_deg"]))
                if reference is None and "fes_ref_kJ_mol" in curves:
                    reference = ("reference", curves["fes_ref_kJ_mol"], curves["phi_deg"], curves["psi_deg"])
                break
    if not panels:
        return None
    panels += [reference] if reference else []
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for ax, (name, fes, phi, psi) in zip(axes[0], panels):
        shown = np.where(np.isfinite(fes), fes, np.nan)
        image = ax.imshow(np.asarray(shown).T, origin="lower", extent=(phi[0], phi[-1], psi[0], psi[-1]),
                          cmap="viridis", vmax=np.nanmin(shown) + 40 if np.isfinite(shown).any() else None, aspect="auto")
        ax.set(xlabel="φ (degrees)", ylabel="ψ (degrees)", title=name)
        fig.colorbar(image, ax=ax, label="F (kJ/mol)")
    return Figure(_save(fig, out / f"{table.system}_fes.png"), f"{table.system}: free-energy surfaces",
                  "F(φ, ψ) of each model's first seed with a surface, beside the reference's (colour up to 40 kJ/mol "
                  "above the minimum).")


def overview(table: SystemTable, out: Path) -> Figure | None:
    """Force MAE against stability, coloured by the structure error: the benchmark's question in one picture."""
    error_name = next((n for n in ("rdf_mae", "h_mae", "pmf_mae.phi") if n in table.columns), None)
    points, skipped = [], []
    for row in table.rows:
        force, stable = row.cells.get("forces_mae"), row.cells.get("stability_ps")
        if force is None or force.mean is None or stable is None or stable.mean is None:
            skipped.append(row.model_name)
            continue
        error = row.cells.get(error_name) if error_name else None
        points.append((row, force.mean, stable, error.mean if error else None))
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    colored = [p for p in points if p[3] is not None]
    vmin, vmax = (min(p[3] for p in colored), max(p[3] for p in colored)) if colored else (0, 1)
    scatter = None
    for row, force, stable, error in points:
        err = None if stable.low is None else [[stable.mean - stable.low], [stable.high - stable.mean]]
        ax.errorbar([force], [stable.mean], yerr=err, fmt="none", ecolor="0.6", capsize=3)
        if error is None:
            ax.scatter([force], [stable.mean], marker="x", color="0.3")
        else:
            scatter = ax.scatter([force], [stable.mean], c=[error], vmin=vmin, vmax=vmax or 1, cmap="plasma", s=60)
        ax.annotate(row.model_name, (force, stable.mean), fontsize=7, xytext=(4, 4), textcoords="offset points")
    if scatter is not None:
        fig.colorbar(scatter, ax=ax, label=metric(error_name).label)
    ax.set(xlabel="force MAE (meV/Å)", ylabel="stability (ps)", title=f"{table.system}: force error vs simulation")
    caption = (f"Each model: force MAE against the mean stability (bars: 95% t interval over seeds), coloured by "
               f"{metric(error_name).label if error_name else 'nothing (no structure error)'}; x: that error is missing.")
    if skipped:
        caption += f" Not plotted (no force MAE or stability): {', '.join(skipped)}."
    return Figure(_save(fig, out / f"{table.system}_overview.png"), f"{table.system}: force MAE vs stability vs "
                  f"{metric(error_name).label if error_name else 'structure error'}", caption)


def run_curves(run, out: Path) -> list[Path]:
    """The per-run curve plots of ``analyze --plot`` for one run."""
    from lmpbench.analysis.plots import plot_curves

    if run.curves is None:
        return []
    out.mkdir(parents=True, exist_ok=True)
    try:
        return plot_curves(run.curves, out)
    except (OSError, ValueError, KeyError):  # a damaged or partial curves.npz: the run is listed without plots
        return []
