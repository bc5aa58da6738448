"""The report as files other tools read: Markdown, CSV (leaderboard and runs) and JSON.

The methods text (``methods``) is shared with the HTML page, so both state the same rules.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from lmpbench.files import write_atomic
from lmpbench.report.collect import __doc__ as COLLECT_DOC
from lmpbench.report.stats import INTERVAL_METHOD, TAU_METHOD
from lmpbench.report.table import METRICS, format_cell, format_value, metric, within_noise


def methods() -> list:
    """(title, text) paragraphs stating how every number of the report was made."""
    force_rule = COLLECT_DOC.split("Force MAE of a run, in this order (``force_error``):", 1)[1].strip()
    force_rule = " ".join(force_rule.replace("``", "").split())
    return [
        ("Pooling", "Statistics pool the finished and collapsed runs that have a metrics.json. Interrupted, failed "
                    "and unfinished runs are listed with their status but not pooled. A metric a run lacks is left "
                    "out of the mean and the cell says how many seeds had it (n/N); it is never counted as zero."),
        ("Interval over seeds", INTERVAL_METHOD + ". None with a single seed."),
        ("Rank correlation", TAU_METHOD + ". Each model's value is its mean over seeds; models missing either "
                             "value are left out. Positive tau with an error metric, or negative tau with stability, "
                             "means a lower force MAE went with a better simulation."),
        ("Noise floor", "The reference scored against itself: each later seed of the reference set analysed as a run, "
                        "with the first seed as its reference (reference.json noise_floor.mean). An error at or "
                        "below it (marked ≤nf) cannot be told from the reference's own sampling noise."),
        ("Force MAE of a model", force_rule),
        ("Collapsed", "fraction of the finished and collapsed runs that collapsed (the run's own check: temperature "
                      "out of [0.1, 1e5] K, lost atoms, non-finite energy, or lmpbench's structural / RDF-window "
                      "criteria during the run)."),
    ]


CELL_LEGEND = ("Cells: mean [95% t interval] over the pooled seeds (stability: mean ± standard deviation [interval]), "
               "(n/N seeds) when some lack the value; — missing (the reason in runs.csv and leaderboard.csv); "
               "≤nf at or below the noise floor.")


def metric_rows() -> list:
    return [(m.label, m.unit or "dimensionless", m.better or "closer to the reference", m.definition) for m in METRICS]


def _status_text(row) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(row.status_counts.items()))


def leaderboard_rows(table) -> list:
    """Rows of [model, seeds, collapsed, *cells] for one system, the noise floor last."""
    rows = []
    for row in table.rows:
        k, n = row.collapsed
        cells = []
        for name in table.columns:
            text = format_cell(row.cells.get(name))
            cells.append(text + (" ≤nf" if within_noise(table, row.cells.get(name)) else ""))
        rows.append([row.model_name + (" (imported)" if row.source != "lammps" else ""), _status_text(row),
                     f"{k}/{n}" if n else "—", *cells])
    if table.noise_floor:
        rows.append([f"noise floor (reference vs itself, {table.noise_pairs} seed pair(s))", "", "",
                     *[format_value(table.noise_floor.get(name)) for name in table.columns]])
    return rows


def headers(table) -> list:
    return ["model", "runs", "collapsed"] + [f"{metric(n).label}" + (f" ({metric(n).unit})" if metric(n).unit else "")
                                             for n in table.columns]


def _markdown_table(head: list, rows: list) -> str:
    def clean(text):
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(clean, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(clean, row)) + " |" for row in rows]
    return "\n".join(lines)


def markdown(report) -> str:
    parts = ["# lmpbench report", "", f"{len(report.records)} run folder(s): " + _counts(report.records) + ".", "",
             CELL_LEGEND, ""]
    for table in report.tables:
        parts += [f"## {table.system}", "", _markdown_table(headers(table), leaderboard_rows(table)), "",
                  table.sentence, ""]
        parts += [f"{problem}" for problem in report.figure_problems.get(table.system, [])]
        for figure in report.figures.get(table.system, []):
            parts += [f"![{figure.title}]({_relative(figure.file, report.out)})", "", f"*{figure.caption}*", ""]
        for title, snap in report.snapshots.get(table.system, []):
            if isinstance(snap, str):
                parts += [f"{title}: {snap}", ""]
            else:
                parts += [f"![{title}]({_relative(snap.file, report.out)})", "", f"*{title}; drawn with {snap.method}*", ""]
    parts += ["## Runs", "", _markdown_table(RUN_HEAD, [r[:len(RUN_HEAD)] for r in run_rows(report)]), ""]
    parts += ["## Methods", ""] + [f"- **{title}**: {text}" for title, text in methods()] + [""]
    parts += ["## Metrics", "", _markdown_table(["metric", "unit", "better", "definition"], metric_rows()), ""]
    return "\n".join(parts)


def _relative(path: Path, root: Path) -> str:
    return os.path.relpath(path, root)


def _counts(records) -> str:
    counts: dict = {}
    for record in records:
        counts[record.status] = counts.get(record.status, 0) + 1
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


RUN_HEAD = ["folder", "system", "model", "seed", "source", "status", "collapse", "force MAE source", "notes"]


def run_rows(report) -> list:
    rows = []
    for r in report.records:
        collapse = f"step {r.collapse.get('step')}: {r.collapse.get('reason')}" if r.collapse else ""
        rows.append([str(r.folder), r.system or "", r.model_name or "", "" if r.seed is None else r.seed, r.source,
                     r.status, collapse, r.force_source or "", "; ".join(r.notes)])
    return rows


def _csv(head: list, rows: list) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(head)
    writer.writerows(rows)
    return buffer.getvalue()


def leaderboard_csv(report) -> str:
    head = ["system", "model", "model_id", "metric", "unit", "mean", "ci95_low", "ci95_high", "std", "n_seeds",
            "of_seeds", "values", "noise_floor", "missing_reasons"]
    rows = []
    for table in report.tables:
        for row in table.rows:
            for name in table.columns:
                cell = row.cells.get(name)
                if cell is None:
                    continue
                rows.append([table.system, row.model_name, row.model_id, name, metric(name).unit, cell.mean, cell.low,
                             cell.high, cell.std, cell.n, cell.of, ";".join("" if v is None else repr(v) for v in cell.values),
                             table.noise_floor.get(name), "; ".join(cell.reasons)])
    return _csv(head, rows)


def runs_csv(report) -> str:
    names = sorted({k for r in report.records for k in r.values})
    rows = [row + [r.values.get(k) for k in names] for row, r in zip(run_rows(report), report.records)]
    return _csv(RUN_HEAD + names, rows)


def as_json(report) -> dict:
    def cell(c):
        return {"mean": c.mean, "ci95": [c.low, c.high], "std": c.std, "n": c.n, "of": c.of, "values": c.values,
                "missing_reasons": c.reasons}

    return {
        "methods": dict(methods()),
        "metrics": {m.name: {"label": m.label, "unit": m.unit, "better": m.better, "definition": m.definition}
                    for m in METRICS},
        "systems": {t.system: {
            "reference": t.reference, "noise_floor": t.noise_floor, "noise_floor_seed_pairs": t.noise_pairs,
            "columns": t.columns, "sentence": t.sentence, "kendall_tau_vs_force_mae": t.correlations,
            "models": [{"name": row.model_name, "model_id": row.model_id, "source": row.source,
                        "force_mae_source": row.force_source, "statuses": row.status_counts,
                        "collapsed": list(row.collapsed), "hardware": row.hardware,
                        "runs": [str(r.folder) for r in row.runs],
                        "cells": {name: cell(c) for name, c in row.cells.items()}} for row in t.rows]}
            for t in report.tables},
        "runs": [{"folder": str(r.folder), "system": r.system, "model": r.model_name, "model_id": r.model_id,
                  "seed": r.seed, "source": r.source, "status": r.status, "pooled": r.pooled, "collapse": r.collapse,
                  "hardware": r.hardware, "force_mae_source": r.force_source, "values": r.values,
                  "missing_reasons": r.reasons, "notes": r.notes} for r in report.records],
        "figures": {s: [{"file": _relative(f.file, report.out), "title": f.title, "caption": f.caption} for f in figs]
                    for s, figs in report.figures.items()},
        "snapshots": {s: [{"title": t, "file": _relative(x.file, report.out), "method": x.method} if not isinstance(x, str)
                          else {"title": t, "problem": x} for t, x in snaps] for s, snaps in report.snapshots.items()},
    }


def write_all(report) -> dict:
    out = report.out
    files = {"markdown": out / "report.md", "leaderboard_csv": out / "leaderboard.csv", "runs_csv": out / "runs.csv",
             "json": out / "report.json"}
    write_atomic(files["markdown"], markdown(report))
    write_atomic(files["leaderboard_csv"], leaderboard_csv(report))
    write_atomic(files["runs_csv"], runs_csv(report))
    write_atomic(files["json"], json.dumps(as_json(report), indent=1, ensure_ascii=False, default=str))
    return files
