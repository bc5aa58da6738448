"""The report as one self-contained HTML page: inline CSS, figures as base64 PNG, no scripts, no network."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from html import escape
from pathlib import Path

from lmpbench import __version__
from lmpbench.files import write_atomic
from lmpbench.report.export import RUN_HEAD, _counts, headers, leaderboard_rows, methods, metric_rows, run_rows
from lmpbench.report.table import metric

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #eee; }
tr.noise td { background: #f6f3e6; font-style: italic; }
td.missing, p.missing { color: #a00; }
.status-collapsed { color: #a40; } .status-failed, .status-unreadable { color: #a00; }
.status-interrupted, .status-running { color: #660; }
p.answer { font-weight: 600; background: #eef4ff; padding: 0.5em; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; max-width: 960px; }
figcaption { font-size: 0.8em; color: #444; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _figure(path: Path, title: str, caption: str) -> str:
    return f"<figure>{_image(path, title)}<figcaption><b>{escape(title)}</b>. {escape(caption)}</figcaption></figure>"


def _table(head: list, rows: list, row_classes=None, cell_titles=None) -> str:
    out = ["<table><tr>" + "".join(f"<th>{escape(str(h))}</th>" for h in head) + "</tr>"]
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = []
        for j, value in enumerate(row):
            title = cell_titles[i][j] if cell_titles and cell_titles[i] and j < len(cell_titles[i]) else ""
            attrs = (f' title="{escape(title)}" class="missing"' if title else "")
            cells.append(f"<td{attrs}>{escape(str(value))}</td>")
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</table>"


def _missing_titles(table) -> list:
    """Per leaderboard cell, the reasons a value is missing (shown on hover), else ''."""
    titles = []
    for row in table.rows:
        titles.append(["", "", ""] + ["; ".join(row.cells[name].reasons) if name in row.cells and row.cells[name].reasons
                                      else ("not computed for this model" if name not in row.cells else "")
                                      for name in table.columns])
    return titles + [[]]


def _system_section(report, table) -> str:
    parts = [f"<h2 id='{escape(table.system)}'>{escape(table.system)}</h2>"]
    if table.reference:
        parts.append(f"<p>Reference set: <code>{escape(table.reference)}</code> ({table.noise_pairs} seed pair(s) "
                     "in its noise floor).</p>")
    else:
        parts.append("<p>No reference set given for this system: no noise-floor row, no reference D.</p>")
    rows = leaderboard_rows(table)
    classes = [""] * len(table.rows) + (["noise"] if table.noise_floor else [])
    parts.append(_table(headers(table), rows, classes, _missing_titles(table)))
    parts.append("<p>Cells: mean [95% t interval] over the pooled seeds (stability: mean ± standard deviation "
                 "[interval]), (n/N seeds) when some lack the value; "
                 "— missing (hover for why); ≤nf at or below the noise floor.</p>")
    parts.append(f"<p class='answer'>{escape(table.sentence)}</p>")
    corr_rows = [[metric(name).label, _num(r.get("tau")), _interval(r), _num(r.get("p")), r["n"], r.get("reason", "")]
                 for name, r in table.correlations.items()]
    if corr_rows:
        parts.append(_table(["simulation metric", "Kendall τ vs force MAE", "95% interval", "p", "models", "note"],
                            corr_rows))
    hardware = sorted({h for row in table.rows for h in row.hardware})
    parts.append("<p>Hardware of the speed columns: " + escape("; ".join(hardware) or "not recorded") + ".</p>")
    for problem in report.figure_problems.get(table.system, []):
        parts.append(f"<p class='missing'>{escape(problem)}</p>")
    for figure in report.figures.get(table.system, []):
        parts.append(_figure(figure.file, figure.title, figure.caption))
    for title, snap in report.snapshots.get(table.system, []):
        if isinstance(snap, str):
            parts.append(f"<p>{escape(title)}: {escape(snap)}</p>")
        else:
            parts.append(_figure(snap.file, title, f"Drawn with {snap.method}."))
    return "\n".join(parts)


def _num(value) -> str:
    return "—" if value is None else f"{value:+.3f}" if abs(value) <= 1 else f"{value:.3g}"


def _interval(result: dict) -> str:
    return "—" if result.get("low") is None else f"[{result['low']:+.2f}, {result['high']:+.2f}]"


def _runs_section(report) -> str:
    rows = run_rows(report)
    classes = [f"status-{r.status.replace(' ', '-')}" for r in report.records]
    parts = ["<h2 id='runs'>Runs</h2>", _table(RUN_HEAD, rows, classes)]
    plotted = [(r, report.run_plots.get(r.folder) or []) for r in report.records]
    plotted = [(r, files) for r, files in plotted if files]
    if plotted:
        parts.append("<h3>Curves of each run (as <code>lmpbench analyze --plot</code>)</h3>")
    for record, files in plotted:
        parts.append(f"<details><summary>{escape(record.label)} — {escape(str(record.folder))} ({escape(record.status)})"
                     "</summary>" + "".join(_figure(f, f"{record.label}: {f.stem}", "") for f in files) + "</details>")
    return "\n".join(parts)


def page(report) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"<h1>lmpbench report</h1><p>Made {now} by lmpbench {escape(__version__)} from "
            f"{len(report.records)} run folder(s): {escape(_counts(report.records))}. Systems: "
            + ", ".join(f"<a href='#{escape(t.system)}'>{escape(t.system)}</a>" for t in report.tables) + ".</p>"]
    if not report.tables:
        body.append("<p>No readable run: see the runs table.</p>")
    body += [_system_section(report, table) for table in report.tables]
    body.append(_runs_section(report))
    body.append("<h2 id='methods'>Methods</h2><dl>" + "".join(f"<dt><b>{escape(t)}</b></dt><dd>{escape(x)}</dd>"
                                                               for t, x in methods()) + "</dl>")
    body.append("<h2 id='metrics'>Metrics and units</h2>" + _table(["metric", "unit", "better", "definition"],
                                                                  metric_rows()))
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>lmpbench report</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_html(report, path: Path) -> Path:
    return write_atomic(path, page(report))
