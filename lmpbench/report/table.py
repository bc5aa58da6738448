"""The leaderboard: one table per system, one row per model, each cell a metric pooled over seeds.

Which runs are pooled: finished and collapsed runs that have a metrics.json (a whole run,
analysed). Interrupted, failed and still-running runs are listed with their status and left
out of the statistics (their stable time is cut short by something other than the model). A
metric a run lacks is left out of that cell's mean and counted as missing (the cell says
"n of N seeds"); it is never taken as zero.

The model's force and energy MAE are properties of the model, not of a seed: the mean over
every run of the model that has one, without an interval. Speed is pooled over every run that
timed its steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmpbench.report.collect import COMPLETE, RunRecord
from lmpbench.report.stats import kendall, mean_interval


@dataclass(frozen=True)
class Metric:
    name: str  # dotted name in RunRecord.values
    label: str
    unit: str
    better: str  # "lower", "higher" or "" (neither: a property compared with the reference)
    definition: str
    correlate: bool = False  # ranked against force MAE in the benchmark's question


METRICS = (
    Metric("forces_mae", "force MAE", "meV/Å", "lower",
           "MAE over every force component of the test frames (source per model: see the runs table)"),
    Metric("energy_mae", "energy MAE", "meV/atom", "lower", "MAE of the energy per atom on the test frames"),
    Metric("stability_ps", "stability", "ps", "higher",
           "simulated time before collapse by the paper's criterion: molecules, a bond 0.5 Å off its reference "
           "length; periodic systems, a 1 ps window whose RDF error exceeds the threshold", correlate=True),
    Metric("structural_stability_ps", "structural stability", "ps", "higher",
           "time before lmpbench's structural criterion fires (broken or new bonds, close contacts; an addition)"),
    Metric("rdf_mae", "RDF error", "", "lower",
           "mae(g, g_ref, 6) = 6 x mean|g - g_ref| over 500 bins on (0, 6] Å, mean over the partial RDFs",
           correlate=True),
    Metric("h_mae", "h(r) error", "", "lower",
           "mae(h, h_ref, 10) = 10 x mean|h - h_ref|, distance histogram, 500 bins on (0, 10] Å", correlate=True),
    Metric("diffusivity", "D", "1e-9 m²/s", "",
           "MSD/(6 tau) at the protocol's lag (water: O, 100 ps; LiPS-like: 35 ps), all time origins"),
    Metric("diffusivity_error", "|D - D_ref|", "1e-9 m²/s", "lower",
           "absolute difference from the mean D of the reference set's seeds", correlate=True),
    Metric("pmf_mae.phi", "PMF φ error", "kJ/mol·rad", "lower",
           "mae(PMF, PMF_ref, 6.28) of the 1-D free energy along phi", correlate=True),
    Metric("pmf_mae.psi", "PMF ψ error", "kJ/mol·rad", "lower",
           "mae(PMF, PMF_ref, 6.28) of the 1-D free energy along psi", correlate=True),
    Metric("energy_drift_abs", "|NVE drift|", "eV/atom/ps", "lower",
           "absolute least-squares slope of the total energy per atom (NVE runs)", correlate=True),
    Metric("steps_per_s", "speed", "steps/s", "higher", "production chunks only (the first chunk, with setup, "
           "excluded)"),
    Metric("ns_per_day", "speed", "ns/day", "higher", "steps/s x timestep"),
)
MODEL_METRICS = ("forces_mae", "energy_mae")  # properties of the model, pooled over all its runs
RUN_METRICS = ("steps_per_s", "ns_per_day")  # pooled over every run that has them


def metric(name: str) -> Metric:
    """The registered metric, or a partial RDF error (``rdf_mae.O-O``) made on the fly."""
    for m in METRICS:
        if m.name == name:
            return m
    if name.startswith("rdf_mae."):
        pair = name.split(".", 1)[1]
        return Metric(name, f"RDF error {pair}", "", "lower", f"mae(g, g_ref, 6) of the {pair} RDF")
    return Metric(name, name, "", "", name)


@dataclass
class Cell:
    metric: str
    mean: float | None
    low: float | None
    high: float | None
    std: float | None
    n: int  # seeds with a value
    of: int  # seeds that could have one
    values: list  # per run, None where missing
    reasons: list  # why values are missing (distinct)


@dataclass
class ModelRow:
    system: str
    model_id: str
    model_name: str
    source: str
    runs: list
    cells: dict = field(default_factory=dict)  # metric name -> Cell
    force_source: str | None = None

    @property
    def status_counts(self) -> dict:
        counts: dict = {}
        for run in self.runs:
            counts[run.status] = counts.get(run.status, 0) + 1
        return counts

    @property
    def collapsed(self) -> tuple[int, int]:
        """(collapsed runs, whole runs): the fraction of seeds that collapsed."""
        whole = [r for r in self.runs if r.status in COMPLETE]
        return sum(r.status == "collapsed" for r in whole), len(whole)

    @property
    def hardware(self) -> list:
        return sorted({r.hardware for r in self.runs if r.hardware})


@dataclass
class SystemTable:
    system: str
    rows: list  # ModelRow, sorted by name
    columns: list  # metric names shown, in METRICS order
    noise_floor: dict  # metric name -> value (reference against itself), empty without a reference
    noise_pairs: int
    reference: str | None
    correlations: dict  # metric name -> kendall() result
    sentence: str


def pool(runs: list, name: str) -> Cell:
    if name in MODEL_METRICS or name in RUN_METRICS:
        eligible = runs
    else:
        eligible = [r for r in runs if r.pooled]
    values = [r.values.get(name) for r in eligible]
    reasons = sorted({r.reasons.get(name, "not computed for this run") for r in eligible if r.values.get(name) is None})
    if name in MODEL_METRICS:  # one number per model: keep the seeds that have it, say nothing of the rest
        reasons = reasons if all(v is None for v in values) else []
        values = [v for v in values if v is not None] or values[:1]
    stats = mean_interval(values)
    if name in MODEL_METRICS:  # one model's repeated number: its seeds are no sample, so no interval
        stats["low"] = stats["high"] = None
    return Cell(name, stats["mean"], stats["low"], stats["high"], stats["std"], stats["n"], len(values), values, reasons)


def build_rows(records: list[RunRecord]) -> dict:
    """{system: [ModelRow]} over the readable runs."""
    groups: dict = {}
    for record in records:
        if record.status == "unreadable" or record.system is None:
            continue
        groups.setdefault((record.system, record.model_id), []).append(record)
    by_system: dict = {}
    for (system, model_id), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[1][0].model_name)):
        runs.sort(key=lambda r: (r.seed is None, r.seed or 0, str(r.folder)))
        row = ModelRow(system, model_id, runs[0].model_name, runs[0].source, runs,
                       force_source=next((r.force_source for r in runs if r.force_source), None))
        names = {k for r in runs for k in r.values}
        for name in names:
            row.cells[name] = pool(runs, name)
        by_system.setdefault(system, []).append(row)
    return by_system


def columns_of(rows: list, noise_floor: dict) -> list:
    present = {name for row in rows for name in row.cells} | set(noise_floor)
    ordered = [m.name for m in METRICS if m.name in present and m.name != "rdf_mae"]
    pairs = sorted(name for name in present if name.startswith("rdf_mae."))
    if pairs:  # the mean over pairs, then each pair, where the partial RDFs go
        after = [ordered.index(n) + 1 for n in ("stability_ps", "structural_stability_ps") if n in ordered]
        at = max(after) if after else len(ordered)
        ordered[at:at] = ["rdf_mae"] + pairs
    return ordered


def correlations(rows: list) -> dict:
    """Kendall tau between the models' force MAE and each simulation metric they have."""
    force = [row.cells["forces_mae"].mean if "forces_mae" in row.cells else None for row in rows]
    found = {}
    for m in METRICS:
        if m.correlate and any(m.name in row.cells for row in rows):
            other = [row.cells[m.name].mean if m.name in row.cells else None for row in rows]
            found[m.name] = kendall(force, other)
    return found


def _agreement(m: Metric, result: dict) -> str:
    """Whether force MAE ranks the models as the metric does: 'agrees', 'disagrees' or 'open'."""
    if result.get("tau") is None:
        return "open"
    aligned = result["tau"] if m.better == "lower" else -result["tau"]  # + : lower force MAE, better metric
    if result.get("low") is not None:
        low, high = (result["low"], result["high"]) if m.better == "lower" else (-result["high"], -result["low"])
        settled = low > 0 or high < 0
    else:
        settled = result["p"] < 0.05
    if not settled:
        return "open"
    return "agrees" if aligned > 0 else "disagrees"


def correlation_sentence(system: str, rows: list, found: dict) -> str:
    """The benchmark's question for ``system`` answered in one sentence, whatever the numbers say."""
    with_force = sum(1 for row in rows if row.cells.get("forces_mae") and row.cells["forces_mae"].mean is not None)
    head = f"{system} ({len(rows)} model(s), {with_force} with a force MAE): "
    if not found:
        return head + "no simulation metric to rank against force MAE."
    parts, verdicts, skipped = [], {}, []
    for name, result in found.items():
        m = metric(name)
        if result.get("tau") is None:
            skipped.append(m.label)
            continue
        interval = (f"95% interval [{result['low']:+.2f}, {result['high']:+.2f}]" if result.get("low") is not None
                    else "no interval (fewer than 5 models)")
        parts.append(f"{m.label} τ = {result['tau']:+.2f} ({interval}, p = {result['p']:.2g}, n = {result['n']})")
        verdicts.setdefault(_agreement(m, result), []).append(m.label)
    not_ranked = (f"too few models with both values (or no spread) to rank force MAE against {', '.join(skipped)}"
                  if skipped else "")
    if not parts:
        return head + not_ranked + " (a rank correlation needs at least 3 models)."
    settled = [f"a lower force MAE went with a {'better' if k == 'agrees' else 'worse'} {', '.join(v)}"
               for k, v in verdicts.items() if k != "open"]
    if verdicts.get("open"):
        settled.append(f"no rank agreement was established for {', '.join(verdicts['open'])}")
    return (head + "Kendall tau of force MAE with " + "; ".join(parts) + ": " + "; ".join(settled)
            + (f"; {not_ranked}" if not_ranked else "") + ".")


def build_tables(records: list[RunRecord], references: dict) -> list[SystemTable]:
    tables = []
    for system, rows in build_rows(records).items():
        reference = references.get(system)
        floor = dict(reference.noise_floor) if reference else {}
        found = correlations(rows)
        tables.append(SystemTable(system, rows, columns_of(rows, floor), floor,
                                  reference.pairs if reference else 0, str(reference.path) if reference else None,
                                  found, correlation_sentence(system, rows, found)))
    return tables


def format_value(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return f"{value:.2e}"


SPREAD_SHOWN = ("stability_ps",)  # cells that also show the seeds' standard deviation


def format_cell(cell: Cell | None) -> str:
    """'mean [low, high] (n/N)' with the seed count when some are missing, '± s' for the
    stability; '—' when none."""
    if cell is None or cell.mean is None:
        return "—"
    text = format_value(cell.mean)
    if cell.metric in SPREAD_SHOWN and cell.std is not None:
        text += f" ± {format_value(cell.std)}"
    if cell.low is not None:
        text += f" [{format_value(cell.low)}, {format_value(cell.high)}]"
    if cell.n < cell.of and cell.metric not in MODEL_METRICS:
        text += f" ({cell.n}/{cell.of} seeds)"
    return text


def within_noise(table: SystemTable, cell: Cell | None) -> bool:
    """An error metric whose mean is at or below the reference's own noise floor."""
    m = metric(cell.metric) if cell else None
    floor = table.noise_floor.get(cell.metric) if cell else None
    return bool(m and m.better == "lower" and floor is not None and cell.mean is not None and cell.mean <= floor)
