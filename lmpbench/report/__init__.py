"""``lmpbench report``: a leaderboard of models x systems x seeds from finished analyses.

Reads run folders (``run.json``, ``metrics.json``, ``curves.npz``, ``thermo.dat``) and
reference sets (``reference.json``: the noise floor), never runs or recomputes anything, and
writes into ``out``:

    report.html      self-contained page (figures embedded as base64 PNG)
    report.md        the same tables in Markdown, figures linked from plots/
    leaderboard.csv  one row per system, model and metric: mean, 95% interval, seeds
    runs.csv         one row per run: status, collapse, every metric value
    report.json      all of it, with the methods
    plots/           the PNG figures

Modules: ``collect`` (reading files), ``stats`` (intervals, Kendall tau), ``table`` (pooling
over seeds, the correlation sentence), ``plots`` and ``snapshot`` (figures), ``html`` and
``export`` (writing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lmpbench.report.collect import (ReportError, add_diffusivity_errors, find_run_folders, name_models, read_reference,
                                     read_run, reference_diffusivity)

__all__ = ["Report", "ReportError", "build_report"]

MAX_COLLAPSE_SNAPSHOTS = 4  # per system: one per model, at most this many


@dataclass
class Report:
    out: Path
    records: list
    references: dict  # system -> ReferenceSet
    tables: list  # table.SystemTable
    figures: dict = field(default_factory=dict)  # system -> [plots.Figure]
    snapshots: dict = field(default_factory=dict)  # system -> [(title, snapshot.Snapshot)]
    run_plots: dict = field(default_factory=dict)  # run folder -> [PNG paths]
    figure_problems: dict = field(default_factory=dict)  # system -> [why a figure is missing]
    files: dict = field(default_factory=dict)  # kind -> path written


def read_references(paths) -> dict:
    references = {}
    for path in paths:
        reference = read_reference(path)
        if reference.system in references:
            raise ReportError(f"two reference sets for {reference.system}: {references[reference.system].path} and "
                              f"{reference.path}")
        references[reference.system] = reference
    return references


def build_report(run_dirs, out, references=(), *, snapshots: bool = True, run_plots: bool = False) -> Report:
    """Read ``run_dirs`` (run folders or folders of them) and the ``references`` (reference set
    folders or reference.json files), write the report files into ``out``; returns what was
    written. Unreadable runs are listed with their reason; only bad references or an unusable
    ``out`` raise ``ReportError``. ``run_plots``: also each run's own curves (as ``analyze
    --plot``; about a second per run, so off by default)."""
    from lmpbench.report import export, html
    from lmpbench.report.table import build_tables

    if not run_dirs:
        raise ReportError("give at least one run folder (or a folder of run folders)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out} exists and is not a folder")
    refs = read_references(references)
    folders, records = find_run_folders(run_dirs)
    records += [read_run(folder) for folder in folders]
    name_models(records)
    add_diffusivity_errors(records, refs)
    report = Report(out, records, refs, build_tables(records, refs))
    out.mkdir(parents=True, exist_ok=True)
    _figures(report, snapshots, run_plots)
    report.files["html"] = html.write_html(report, out / "report.html")
    report.files.update(export.write_all(report))
    return report


def _figures(report: Report, snapshots: bool, run_plots: bool) -> None:
    from lmpbench.report import plots

    folder = report.out / "plots"
    for table in report.tables:
        d_ref = reference_diffusivity(report.references.get(table.system))
        makers = [("overview", plots.overview, ()), ("structure", plots.structure_overlay, ()),
                  ("diffusion", plots.diffusion, (d_ref,)), ("stability", plots.stability_over_time, ()),
                  ("free energy", plots.free_energy, ())]
        report.figures[table.system], report.figure_problems[table.system] = [], []
        for name, make, extra in makers:
            try:
                figure = make(table, folder, *extra)
            except (ValueError, TypeError, KeyError, IndexError) as err:  # malformed values in a run's files
                report.figure_problems[table.system].append(f"{name} figure not drawn: {type(err).__name__}: {err}")
                continue
            if figure is not None:
                report.figures[table.system].append(figure)
        if snapshots:
            report.snapshots[table.system] = _snapshots(table, folder / "snapshots")
    if run_plots:
        for i, record in enumerate(r for r in report.records if r.curves is not None):
            report.run_plots[record.folder] = plots.run_curves(record, folder / "runs" / f"{i:03d}")


def _snapshots(table, folder: Path) -> list:
    """The system's first frame (from its first run with a trajectory) and each model's first collapse frame."""
    from lmpbench.report.snapshot import frame_at, render

    found = []
    runs = [run for row in table.rows for run in row.runs if run.trajectory is not None]
    first = next(iter(runs), None)
    if first is not None:
        _add(found, f"{table.system}: first frame ({first.label})", first, None, folder / f"{table.system}_first.png",
             frame_at, render)
    collapsed = [next((r for r in row.runs if r.status == "collapsed" and r.collapse and r.trajectory is not None), None)
                 for row in table.rows]
    for run in [r for r in collapsed if r is not None][:MAX_COLLAPSE_SNAPSHOTS]:
        step = run.collapse.get("step")
        name = f"{table.system}_collapse_{len(found)}.png"
        _add(found, f"{run.label}: collapse frame (step {step}: {run.collapse.get('reason')})", run, step,
             folder / name, frame_at, render)
    return found


def _add(found, title, run, step, path, frame_at, render) -> None:
    try:
        frame = frame_at(run.trajectory, run.elements, step)
    except (OSError, ValueError) as err:  # an unreadable trajectory: no picture, the page says why
        found.append((title, f"no picture: {run.trajectory} cannot be read ({err})"))
        return
    if frame is None:
        found.append((title, f"no picture: {run.trajectory} has no frame"))
        return
    found.append((title, render(frame, run.elements, path)))
