"""``lmpbench reference``: reference data and trajectories made here with real reference potentials.

One module per engine (``lammps_classical``, ``xtb``, ``openmm_peptide``); ``RECIPES`` is the
registry: for each benchmark system, the engine that makes its reference and the engine's
settings in the full mode (the benchmark's protocol) and the short mode (minutes, for the
tests and the demo). Every seed of a reference becomes a dataset folder (``datasets.store``):
labelled frames split for training, and the reference trajectory ``lmpbench analyze
--reference`` reads. Two or more seeds give the noise floor of every metric: each later seed's
trajectory scored against the first seed's, as a model's run would be (``noise.json``).

Layout of ``lmpbench reference SYSTEM -o DIR --seeds 2``::

    DIR/reference.json   the set: system, engine, mode, seeds, noise floor
    DIR/seed1/           a dataset folder (dataset.json, splits, reference trajectory)
    DIR/seed2/
"""

from __future__ import annotations

import importlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lmpbench.datasets import store
from lmpbench.files import write_atomic


class ReferenceError(ValueError):  # noqa: A001  (user-facing: a reference cannot be made as asked)
    """A reference cannot be made as asked; the message says why and what to install or change."""


@dataclass(frozen=True)
class Settings:
    """How long an engine samples and how its frames are split.

    ``length_ps`` of sampling after ``equilibrate_ps`` (not kept); a dataset frame every
    ``sample_every`` MD steps; ``test`` test frames and the split ``sizes`` (train, val)."""

    length_ps: float
    sample_every: int
    test: int
    sizes: dict
    equilibrate_ps: float = 0.0


@dataclass(frozen=True)
class Recipe:
    system: str
    engine: str  # module in lmpbench.reference, with generate(recipe, settings, seed, folder, echo)
    description: str
    short: Settings
    full: Settings
    parameters: dict = field(default_factory=dict)  # engine-specific


@dataclass
class EngineOutput:
    """What an engine made for one seed: labelled frames (eV, Å) in time order, the reference
    trajectory it wrote into the folder, and its provenance."""

    frames: list
    reference_trajectory: str
    source: dict  # engine, version, parameters, seed, wall_s
    frame_dt_ps: float  # time between the reference trajectory's frames


MD17_SIZES = {"1k": (950, 50), "10k": (9500, 500)}
SHORT_SIZES = {"40": (36, 4), "150": (140, 10)}  # two training-set sizes: models of different quality
RECIPES = {r.system: r for r in (
    Recipe("water", "lammps_classical", "64 flexible SPC/Fw waters with PPPM in LAMMPS, the water protocol (NVT 300 K)",
           short=Settings(10.0, 50, 40, SHORT_SIZES, equilibrate_ps=1.0),
           full=Settings(1000.0, 10, 10000, {"1k": (950, 50), "10k": (9500, 500), "90k": (85500, 4500)},
                         equilibrate_ps=10.0),
           parameters={"forcefield": "spcfw"}),
    Recipe("cuzr_liquid", "lammps_classical", "liquid Cu50Zr50 with the Mendelev EAM in LAMMPS (NVT 1500 K), "
           "the offline stand-in for LiPS", short=Settings(5.0, 20, 40, SHORT_SIZES, equilibrate_ps=1.0),
           full=Settings(100.0, 10, 2000, {"1k": (950, 50), "7k": (7600, 400)}, equilibrate_ps=5.0),
           parameters={"forcefield": "eam-cuzr"}),
    Recipe("md17_ethanol", "xtb", "ethanol in vacuum, GFN2-xTB (tblite), NVT 500 K at 0.5 fs as MD17",
           short=Settings(2.0, 10, 100, SHORT_SIZES, equilibrate_ps=0.2),
           full=Settings(100.0, 10, 10000, MD17_SIZES, equilibrate_ps=1.0), parameters={"method": "GFN2-xTB"}),
    Recipe("md17_aspirin", "xtb", "aspirin in vacuum, GFN2-xTB (tblite), NVT 500 K at 0.5 fs as MD17",
           short=Settings(2.0, 10, 100, SHORT_SIZES, equilibrate_ps=0.2),
           full=Settings(100.0, 10, 10000, MD17_SIZES, equilibrate_ps=1.0), parameters={"method": "GFN2-xTB"}),
    Recipe("alanine_dipeptide", "openmm_peptide", "alanine dipeptide, AMBER ff96 + OBC2 implicit solvent in OpenMM, "
           "Langevin 300 K, no constraints at 1 fs", short=Settings(20.0, 50, 100, SHORT_SIZES, equilibrate_ps=2.0),
           full=Settings(5000.0, 100, 10000, {"38k": (38000, 2000)}, equilibrate_ps=100.0),
           parameters={"timestep_fs": 1.0, "friction_per_ps": 1.0}),
)}


def recipe(system: str) -> Recipe:
    if system not in RECIPES:
        raise ReferenceError(f"no reference recipe for system {system!r}; lmpbench makes references for "
                             f"{', '.join(RECIPES)}")
    return RECIPES[system]


def _engine(name: str):
    return importlib.import_module(f"lmpbench.reference.{name}")


def default_folder(system: str, short: bool) -> Path:
    return store.user_root() / f"{system}-reference{'-short' if short else ''}"


def make_reference(system: str, out: str | Path | None = None, *, short: bool = False, seeds: int = 1,
                   first_seed: int = 1, settings: Settings | None = None, echo=print) -> dict:
    """Make ``seeds`` references of ``system`` (seeds ``first_seed``, ``first_seed + 1``, ...)
    into ``out``; returns the set record (``reference.json``). A seed whose dataset is complete
    is kept, so an interrupted call resumes where it stopped. ``settings`` replaces the recipe's
    (the tests' tiny references)."""
    rec = recipe(system)
    if seeds < 1:
        raise ReferenceError("--seeds must be at least 1")
    engine = _engine(rec.engine)
    engine.check_available()
    mode = "custom" if settings else "short" if short else "full"
    settings = settings or (rec.short if short else rec.full)
    out = Path(out) if out is not None else default_folder(system, short)
    out.mkdir(parents=True, exist_ok=True)
    datasets = []
    for seed in range(first_seed, first_seed + seeds):
        folder = out / f"seed{seed}"
        try:
            datasets.append(store.read_dataset(folder))
            echo(f"{folder}: already made, kept")
            continue
        except store.DatasetError:
            pass
        echo(f"{system}: seed {seed}, {mode} mode ({settings.length_ps:g} ps with {rec.engine})")
        start = time.monotonic()
        made = engine.generate(rec, settings, seed, folder, echo)
        made.source.update(wall_s=round(time.monotonic() - start, 1), seed=seed, mode=mode)
        manifest = store.write_dataset(folder, made.frames, name=f"{out.name}-seed{seed}", system=system,
                                       source=made.source, test=settings.test, sizes=settings.sizes,
                                       reference_trajectory=made.reference_trajectory,
                                       notes={"reference_frame_dt_ps": made.frame_dt_ps, "settings": asdict(settings)},
                                       compress=True)
        datasets.append(store.Dataset(folder, manifest))
    from lmpbench.reference.noise import noise_floor

    record = {"system": system, "engine": rec.engine, "description": rec.description, "mode": mode,
              "settings": asdict(settings), "parameters": rec.parameters,
              "seeds": [d.folder.name for d in datasets],
              "noise_floor": noise_floor(system, datasets) if len(datasets) > 1 else None,
              "command": store.command_line()}
    write_atomic(out / "reference.json", json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return dict(record, folder=str(out.resolve()))
