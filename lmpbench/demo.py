"""The benchmark end to end on shipped data (`make demo`): deploy, run, analyse, report.

Models of different quality (two NequIP training-set sizes and an Allegro model, all made by
``lmpbench train`` from the shipped reference sets; ``lmpbench/data/README.md``) are
compiled here for this machine (``lmpbench deploy``, AOTInductor, each checked against its
architecture's ASE calculator), run in LAMMPS under each system's protocol, shortened, for
several seeds, scored against the shipped reference (``lmpbench analyze``) and gathered into
``lmpbench report``'s leaderboard, whose rank correlations say whether force error ranked
the models the way their simulations do.

The noise-floor row is the reference's second seed, cut to the demo's run length, scored
against its first seed: sampling noise grows as runs get shorter, so the shipped floor of the
full-length reference would make short runs look worse than the noise they carry.

Work is spread over one process per core (deploys, then runs); everything lands in ``out``
and a second call reuses what is there (finished runs, deployed files).
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path


@dataclass(frozen=True)
class DemoSystem:
    """One system of the demo: its shipped reference set and models, and the shortened protocol."""

    system: str  # lmpbench.systems name
    reference: str  # shipped reference set (lmpbench/data/datasets)
    models: tuple[str, ...]  # shipped model folders (lmpbench/data/models)
    length_ps: float
    dump_every: int  # steps between frames: the reference trajectory's spacing, so the noise floor compares
    chunk_steps: int  # steps between progress and speed updates


DEMO_SYSTEMS = (
    DemoSystem("water", "water-reference-short", ("water-nequip-40", "water-nequip-150", "water-allegro-150"),
               length_ps=2.0, dump_every=100, chunk_steps=200),
    DemoSystem("md17_ethanol", "md17_ethanol-reference-short",
               ("ethanol-nequip-40", "ethanol-nequip-150", "ethanol-allegro-150"),
               length_ps=2.0, dump_every=10, chunk_steps=400),
)
SEEDS = (1, 2, 3)
DEPLOY_TARGET = "aoti-local"  # one rank per run: the fastest exact path


class DemoError(RuntimeError):
    """A step of the demo failed; the message names the step and where to look."""


def shipped_model(name: str) -> Path:
    """Folder of a model shipped in ``lmpbench/data/models``."""
    from importlib import resources

    return Path(str(resources.files("lmpbench.data"))) / "models" / name


def workers() -> int:
    """Processes to run at once: the cores this process may use (each run takes one thread)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


@dataclass(frozen=True)
class RunJob:
    system: DemoSystem
    model: str
    seed: int
    model_file: Path
    folder: Path


def model_file(folder: Path, name: str, target: str) -> Path:
    from lmpbench.deploy import TARGETS

    return folder / f"{name}{TARGETS[target].suffix}"


def run_jobs(out: Path, systems=DEMO_SYSTEMS, seeds=SEEDS, target: str = DEPLOY_TARGET) -> list[RunJob]:
    return [RunJob(s, m, seed, model_file(out / "models", m, target), out / "runs" / s.system / m / f"seed{seed}")
            for s in systems for m in s.models for seed in seeds]


# ---------------------------------------------------------------------------------------------
# the work of one process (top-level functions: they cross to spawned processes)

def _quiet_worker() -> None:
    import warnings

    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")


def start_structure(system_name: str):
    """The system's shipped starting structure, as ``lmpbench run`` reads it (seed 1's frame)."""
    from lmpbench import runner, systems

    system = systems.get_system(system_name)
    return runner.read_structure(runner.RunConfig(system=system, protocol=systems.get_protocol(system.protocol),
                                                  model="classical:lj", seed=1, out=Path(".")))


def _deploy_one(name: str, system_name: str, out_file: Path, target: str) -> dict:
    from lmpbench.deploy import deploy

    _quiet_worker()
    started = time.perf_counter()
    lines = []
    # checked on the structure the runs start from (a molecule in vacuum, the water box)
    result = deploy(shipped_model(name) / "model.nequip.zip", out_file, target=target,
                    structure=start_structure(system_name), echo=lines.append)
    return {"model": name, "file": str(result.path), "seconds": time.perf_counter() - started,
            "check": [line for line in lines if "max |" in line]}


def _run_one(job: RunJob, reference_trajectory: Path) -> dict:
    from lmpbench import runner, systems
    from lmpbench.analysis.run_metrics import analyze

    _quiet_worker()
    system = systems.get_system(job.system.system)
    protocol = systems.get_protocol(system.protocol).replace(length_ps=job.system.length_ps,
                                                             dump_every=job.system.dump_every)
    config = runner.RunConfig(system=system, protocol=protocol, model=str(job.model_file), seed=job.seed,
                              out=job.folder, chunk_steps=job.system.chunk_steps, threads=1)
    result = runner.run(config, progress=False, echo=lambda *a, **k: None)
    analyze(job.folder, reference=reference_trajectory)
    return {"folder": str(job.folder), "status": result.status, "steps": result.steps_done}


def _noise_floor_at_length(demo: DemoSystem, out: Path) -> Path:
    """A copy of the shipped reference.json whose noise floor is that of runs ``demo.length_ps`` long."""
    from lmpbench.datasets.store import find_dataset, read_dataset
    from lmpbench.reference.noise import noise_floor

    _quiet_worker()
    first = find_dataset(demo.reference)
    seeds = sorted(first.folder.parent.glob("seed*"), key=lambda d: int(d.name[4:]))
    record = json.loads((first.folder.parent / "reference.json").read_text())
    record["noise_floor"] = noise_floor(demo.system, [read_dataset(d) for d in seeds], length_ps=demo.length_ps)
    record["noise_floor"]["note"] = (f"later seeds cut to their first {demo.length_ps:g} ps (the demo's run length) "
                                     f"and scored against {first.folder.parent / first.folder.name}")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "reference.json"
    path.write_text(json.dumps(record, indent=1))
    return path


# ---------------------------------------------------------------------------------------------
# the driver

def run_demo(out: str | Path, progress: bool = True, echo=print, systems=DEMO_SYSTEMS, seeds=SEEDS,
             processes: int | None = None, target: str = DEPLOY_TARGET) -> dict:
    """Deploy, run, analyse and report; returns a summary with the report's files. ``target``:
    the deploy target (tests take TorchScript, which compiles in seconds)."""
    from lmpbench.datasets.store import find_dataset
    from lmpbench.report import build_report
    from lmpbench.report.export import headers, leaderboard_rows

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    processes = processes or workers()
    started = time.perf_counter()
    models = {m: s.system for s in systems for m in s.models}
    references = {s.system: find_dataset(s.reference).reference_trajectory for s in systems}
    jobs = run_jobs(out, systems, seeds, target)
    echo(f"lmpbench demo: {len(models)} models x {len(seeds)} seeds on {', '.join(s.system for s in systems)}; "
         f"{len(jobs)} runs, {processes} at a time, in {out}")
    try:
        with ProcessPoolExecutor(max_workers=processes, mp_context=get_context("spawn")) as pool:
            floors = {s.system: pool.submit(_noise_floor_at_length, s, out / "references" / s.system) for s in systems}
            deployed = _deploy_all(pool, models, out / "models", target, progress, echo)
            outcomes = _run_all(pool, jobs, references, progress, echo)
            reference_files = [future.result() for future in floors.values()]
    except BrokenProcessPool:
        raise DemoError(f"a worker process of the demo died (out of memory, or killed); what finished is kept in "
                        f"{out}: run the same command again to go on") from None
    echo("building the report")
    report = build_report([out / "runs"], out / "report", references=reference_files)
    summary = {"out": str(out), "minutes": (time.perf_counter() - started) / 60.0, "processes": processes,
               "deployed": deployed, "runs": outcomes, "report": {k: str(v) for k, v in report.files.items()},
               "tables": [{"system": t.system, "head": headers(t), "rows": leaderboard_rows(t), "sentence": t.sentence}
                          for t in report.tables]}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _progress_bar(progress: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    disable=not progress, transient=False)


def _deploy_all(pool, names: dict, folder: Path, target: str, progress: bool, echo) -> list[dict]:
    """Each model compiled for this machine (skipped when its file is there from a previous call)."""
    from lmpbench.deploy import DeployError, read_deployed_metadata

    folder.mkdir(parents=True, exist_ok=True)
    done, todo = [], []
    for name in sorted(names):
        path = model_file(folder, name, target)
        try:
            read_deployed_metadata(path)
            done.append({"model": name, "file": str(path), "seconds": 0.0, "check": ["deployed by an earlier call"]})
        except (DeployError, OSError, ValueError):
            todo.append(name)
    if not todo:
        return done
    with _progress_bar(progress) as bar:
        task = bar.add_task(f"deploying {len(todo)} models ({target}, checked against their calculators)",
                            total=len(todo))
        futures = {pool.submit(_deploy_one, name, names[name], model_file(folder, name, target), target): name
                   for name in todo}
        for future in _as_they_finish(futures):
            try:
                done.append(future.result())
            except Exception as err:  # noqa: BLE001 (a deploy's own error, shown as one line)
                raise DemoError(f"deploying {futures[future]} failed: {str(err).splitlines()[0]}") from None
            bar.advance(task)
    if not progress:
        echo(f"deployed {len(todo)} models into {folder}")
    return done


def _as_they_finish(futures):
    pending = set(futures)
    while pending:
        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
        yield from finished


def _steps_done(folder: Path) -> int:
    try:
        return int(json.loads((folder / "run.json").read_text()).get("steps_done") or 0)
    except (OSError, ValueError, AttributeError):
        return 0


def _run_all(pool, jobs: list[RunJob], references: dict, progress: bool, echo) -> list[dict]:
    """Every run, then its analysis; progress in MD steps summed over the runs (from their run.json)."""
    steps = {job.folder: round(job.system.length_ps * 1000.0 / _timestep_fs(job)) for job in jobs}
    outcomes = []
    with _progress_bar(progress) as bar:
        task = bar.add_task(f"running {len(jobs)} runs in LAMMPS (and analysing each)", total=sum(steps.values()))
        futures = {pool.submit(_run_one, job, references[job.system.system]): job for job in jobs}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=1.0)
            for future in finished:
                job = futures[future]
                try:
                    outcomes.append(future.result())
                except Exception as err:  # noqa: BLE001 (a failed run is reported, the others go on)
                    outcomes.append({"folder": str(job.folder), "status": "failed",
                                     "error": str(err).splitlines()[0] if str(err) else type(err).__name__})
            bar.update(task, completed=sum(min(_steps_done(j.folder), steps[j.folder]) for j in jobs))
        bar.update(task, completed=sum(steps.values()))
    if not progress:
        echo(f"{len(jobs)} runs done")
    return sorted(outcomes, key=lambda o: o["folder"])


def _timestep_fs(job: RunJob) -> float:
    from lmpbench import systems

    return systems.get_protocol(systems.get_system(job.system.system).protocol).timestep_fs
