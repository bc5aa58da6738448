"""Entry point ``lmpbench``: a root group and thin subcommands over the library."""

from __future__ import annotations

import shlex
import warnings
from pathlib import Path

import click

from lmpbench import __version__


@click.group()
@click.version_option(__version__, prog_name="lmpbench")
def cli():
    """Benchmark machine-learning force fields by running them in LAMMPS."""


@cli.group()
def plugin():
    """Build and locate the mlff pair-style plugin."""


@plugin.command("build")
@click.option("--lammps-headers", type=click.Path(exists=True, file_okay=False),
              help="Folder with LAMMPS headers (pair.h ...) of your own LAMMPS install.")
@click.option("--lammps-source", type=click.Path(exists=True, file_okay=False),
              help="A LAMMPS source tree to build against (uses its src/).")
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="Parallel compile jobs.")
@click.option("--if-stale", is_flag=True, help="Do nothing when the plugin is newer than its sources.")
@click.option("-v", "--verbose", is_flag=True, help="Echo the CMake output.")
def plugin_build(lammps_headers, lammps_source, jobs, if_stale, verbose):
    """Compile pair style mlff against this environment's LAMMPS and torch."""
    from lmpbench import plugin as lib

    if lammps_headers and lammps_source:
        raise click.UsageError("give --lammps-headers or --lammps-source, not both")
    if if_stale and not (lammps_headers or lammps_source) and not lib.is_stale():
        click.echo(f"up to date: {lib.plugin_path()}")
        return
    try:
        path = lib.build(lammps_headers, lammps_source, jobs=jobs, echo=click.echo if verbose else None)
    except lib.PluginBuildError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"built {path}")


@plugin.command("path")
@click.option("--dir", "as_dir", is_flag=True, help="Print the folder to put on LAMMPS_PLUGIN_PATH.")
def plugin_path(as_dir):
    """Print where the built plugin is (for `plugin load` or LAMMPS_PLUGIN_PATH)."""
    from lmpbench import plugin as lib

    try:
        path = lib.plugin_path()
    except lib.PluginNotBuiltError as err:
        raise click.ClickException(str(err)) from None
    click.echo(path.parent if as_dir else path)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("structure", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--out", type=click.Path(dir_okay=False),
              help="Deployed file to write: .pt2 (AOTInductor targets) or .pt (TorchScript targets).")
@click.option("--target", type=click.Choice(["auto", "aoti-local", "aoti-exchange", "aoti-ghost", "torchscript-exchange",
                                             "torchscript-ghost"]), default="auto", show_default=True,
              help="auto: aoti-local for one rank; for several, aoti-exchange (per-layer ghost exchange) where the "
                   "architecture has the hook, else aoti-ghost; TorchScript as fallback.")
@click.option("--ranks", type=click.IntRange(min=1), default=1, show_default=True,
              help="MPI ranks the model will run on (several need a ghost target).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float64"]), help="Model dtype (TorchScript sources only).")
@click.option("--check", "check_only", is_flag=True,
              help="Only check MODEL, an already deployed file, on STRUCTURE (default: a test alloy).")
@click.option("--source", type=click.Path(exists=True, dir_okay=False),
              help="With --check: the trained model to compare with (default: the one recorded in the file).")
def deploy(model, structure, out, target, ranks, device, dtype, check_only, source):
    """Deploy a trained MODEL (nequip or Allegro .ckpt / .nequip.zip, a torchmd-net .ckpt, a sevenn .pth,
    a contract TorchScript .pt, or a pretrained model by name: sevenn:7net-0) for pair style mlff, and check it against the
    model in Python (the architecture's own ASE calculator)."""
    from lmpbench import deploy as lib

    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.export / inductor chatter
    warnings.filterwarnings("ignore", category=UserWarning)
    atoms = _read_structure(structure) if structure else None
    try:
        if check_only:
            if out:
                raise click.UsageError("--check reads a deployed file; it writes nothing, so -o makes no sense")
            report = lib.check(model, lib.source_for_check(model, source), atoms, pair_args=f"device {device}")
            for line in report.lines():
                click.echo(line)
            if not report.passed:
                raise click.ClickException(f"{model} disagrees with {report.reference} beyond tolerance")
            return
        if not out:
            raise click.UsageError("give the file to write with -o/--out (e.g. -o model.pt2)")
        if structure is not None and source:
            raise click.UsageError("--source only goes with --check")
        result = lib.deploy(model, out, target=target, ranks=ranks, device=device, dtype=dtype, structure=atoms,
                            echo=click.echo)
    except lib.DeployError as err:
        raise click.ClickException(str(err)) from None
    note = f" (fallback: {result.fallback_reason})" if result.fallback_reason else ""
    click.echo(f"wrote {result.path} [{result.target.name}: {result.target.description}]{note}")
    click.echo("use in LAMMPS (one element per atom type, in your type order; these are the model's):")
    click.echo(result.pair_lines(result.source.metadata.type_names))


def _read_structure(path):
    from ase.io import read

    try:
        return read(path)
    except Exception as err:  # ASE raises many kinds for unreadable files
        raise click.BadParameter(f"cannot read {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
                                 param_hint="STRUCTURE") from None


@cli.command("run")
@click.option("--model", required=True,
              help="Deployed model file (lmpbench deploy), or classical:NAME for a reference force field.")
@click.option("--system", "system_name", required=True, help="Benchmark system (see `lmpbench systems`).")
@click.option("--seed", type=int, default=1, show_default=True, help="Velocity seed (and frame choice).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run folder (created; reused to resume).")
@click.option("--structure", type=click.Path(exists=True, dir_okay=False), help="Starting structure (any ASE format).")
@click.option("--systems-file", type=click.Path(exists=True, dir_okay=False), help="TOML file with user systems.")
@click.option("--steps", type=click.IntRange(min=1), help="Steps to run (default: the protocol's length).")
@click.option("--length-ps", type=float, help="Simulated time (default: the protocol's).")
@click.option("--timestep-fs", type=float)
@click.option("--temperature", "temperature_K", type=float)
@click.option("--dump-every", type=click.IntRange(min=1))
@click.option("--ensemble", type=click.Choice(["nvt", "nve", "npt", "langevin_metad"]))
@click.option("--set", "protocol_set", multiple=True, metavar="FIELD=VALUE",
              help="Override any protocol field, e.g. --set thermostat_damp_steps=100 --set metad_pace=250.")
@click.option("--chunk-steps", type=click.IntRange(min=1), help="Steps per chunk (default: 10 dump intervals).")
@click.option("--checkpoint-minutes", type=float, default=5.0, show_default=True, help="Restart-file interval.")
@click.option("--dump", "dump_extra", multiple=True, type=click.Choice(["velocities", "forces"]),
              help="Also dump velocities / forces.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="Torch threads per rank.")
@click.option("--np", "nprocs", type=click.IntRange(min=1),
              help="MPI ranks: starts the MPI lmpbench runs with (the mpich wheel's mpiexec); under a launcher "
                   "already (mpiexec, srun), only checks that its world has this many ranks.")
@click.option("--collapse-criteria", type=click.Choice(["all", "paper"]), default="all", show_default=True,
              help="all: the benchmark's criteria plus lmpbench's structural and energy-band checks on every saved "
                   "frame; paper: the benchmark's only.")
@click.option("--reference", type=click.Path(exists=True),
              help="Water, LiPS: a reference run folder or data file; the run stops at the first 1 ps RDF window "
                   "whose error exceeds the benchmark's threshold, as analyze would call it unstable.")
@click.option("--reference-every", type=click.IntRange(min=1), default=1, show_default=True,
              help="Use every K-th reference frame.")
@click.option("--no-progress", is_flag=True)
def run_cmd(model, system_name, seed, out, structure, systems_file, steps, length_ps, timestep_fs, temperature_K,
            dump_every, ensemble, protocol_set, chunk_steps, checkpoint_minutes, dump_extra, device, threads, nprocs,
            collapse_criteria, reference, reference_every, no_progress):
    """Run MODEL on a benchmark SYSTEM in LAMMPS, with checkpoints, resume and collapse detection."""
    from lmpbench.stop_signals import block_stop_signals

    block_stop_signals()  # before numpy, torch or MPI start threads
    from lmpbench import runner, systems

    if steps is not None and length_ps is not None:
        raise click.UsageError("give --steps or --length-ps, not both")
    from lmpbench.engine import launched_as_mpi_rank

    if nprocs and nprocs > 1 and not launched_as_mpi_rank():
        # start the MPI this lmpbench runs with; each rank then checks that its world has
        # nprocs ranks (under a launcher already, never start another: check the world only)
        import os
        import sys

        from lmpbench.engine import lammps_environment, mpirun_executable

        os.execve(str(mpirun_executable()), [str(mpirun_executable()), "-np", str(nprocs), sys.executable, "-m",
                  "lmpbench.cli.main", *sys.argv[1:]], lammps_environment())
    try:
        user_systems, user_protocols = systems.load_user_systems(systems_file) if systems_file else ({}, {})
        system = systems.get_system(system_name, user_systems)
        base = systems.get_protocol(system.protocol, user_protocols)
        # one replace, so the protocol is validated as a whole (--set wins over the options)
        protocol = base.replace(**{**dict(length_ps=length_ps, timestep_fs=timestep_fs, temperature_K=temperature_K,
                                          dump_every=dump_every, ensemble=ensemble),
                                   **systems.parse_assignments(base, protocol_set)})
        config = runner.RunConfig(system=system, protocol=protocol, model=model, seed=seed, out=Path(out),
                                  structure=Path(structure) if structure else None, steps=steps, chunk_steps=chunk_steps,
                                  checkpoint_minutes=checkpoint_minutes, dump_extra=tuple(dump_extra), device=device,
                                  threads=threads, collapse_criteria=collapse_criteria,
                                  reference=Path(reference) if reference else None, reference_every=reference_every,
                                  ranks=nprocs)
        result = runner.run(config, progress=not no_progress, echo=click.echo)
    except (systems.SystemError, runner.RunError) as err:
        raise click.UsageError(str(err)) from None
    if result.status == "failed":  # the run could not go on (a full disk, a LAMMPS error): not a result
        raise click.ClickException(f"run failed at step {result.steps_done} in {result.folder}: {result.reason}; "
                                   "fix the cause and run the same command to resume")
    if result.is_root:
        speed = result.manifest.get("speed") or {}
        click.echo(f"{result.status}: {result.steps_done} steps in {result.folder}"
                   + (f" ({speed['steps_per_s']:.1f} steps/s, {speed['ns_per_day']:.3f} ns/day)" if speed else ""))


@cli.command()
@click.option("--models", required=True, multiple=True, help="Deployed model files or classical:NAME (repeatable).")
@click.option("--systems", "system_names", required=True, multiple=True, help="Benchmark systems (repeatable).")
@click.option("--seeds", required=True, help="Seeds: 1,2,3 or 1-5.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Root of the run folders.")
@click.option("--scheduler", type=click.Choice(["slurm", "pbs", "local"]), default="slurm", show_default=True)
@click.option("--np", "nprocs", type=click.IntRange(min=1), default=1, show_default=True, help="MPI ranks per task.")
@click.option("--time", "time_limit", default="24:00:00", show_default=True, help="Wall time per task.")
@click.option("--directive", multiple=True, help="Extra scheduler directive, e.g. --directive=--partition=gpu.")
@click.option("--run-arg", "run_args", multiple=True, help="Extra `lmpbench run` argument (repeatable).")
@click.option("--launcher", type=click.Choice(["lmpbench", "srun"]), default="lmpbench", show_default=True,
              help="Several ranks: `lmpbench run --np K` starts the mpich wheel's mpiexec itself; srun (--mpi=pmi2, "
                   "SLURM only) where srun is known to speak this MPICH's PMI.")
@click.option("--submit", is_flag=True, help="Submit the script (sbatch/qsub; local runs it).")
@click.option("--dry-run", is_flag=True, help="Print the tasks and write nothing.")
def batch(models, system_names, seeds, out, scheduler, nprocs, time_limit, directive, run_args, launcher, submit,
          dry_run):
    """Write one job-array script running every (model, system, seed) with resume semantics."""
    from lmpbench import batch as lib
    from lmpbench import systems

    try:
        seed_list = _parse_seeds(seeds)
        for name in system_names:
            systems.get_system(name)
        for model in models:
            if not model.startswith("classical:") and not Path(model).is_file():
                raise click.BadParameter(f"model file {model} does not exist", param_hint="--models")
        task_list = lib.tasks(list(models), list(system_names), seed_list, Path(out).resolve())
        if dry_run:
            for t in task_list:
                click.echo(f"{t.index:4d}  {t.model}  {t.system}  seed {t.seed}  -> {t.out}")
            click.echo(f"{len(task_list)} task(s); nothing written (--dry-run)")
            return
        job, manifest, answer = lib.write(task_list, scheduler, Path(out).resolve(), list(run_args), submit=submit,
                                          np=nprocs, time=time_limit, extra_directives=list(directive),
                                          launcher=launcher)
    except (lib.BatchError, systems.SystemError) as err:
        raise click.UsageError(str(err)) from None
    click.echo(f"wrote {job} ({len(task_list)} tasks) and {manifest}")
    if answer is not None:
        click.echo(answer)
    elif lib.SCHEDULERS[scheduler].submit:
        click.echo(f"submit with: cd {shlex.quote(str(job.parent))} && {lib.SCHEDULERS[scheduler].submit} job.sh")


def _parse_seeds(text: str) -> list[int]:
    seeds = []
    try:
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                lo, hi = part.split("-", 1)
                seeds += list(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise click.BadParameter(f"{text!r}: give seeds as 1,2,3 or 1-5", param_hint="--seeds") from None
    return seeds


@cli.command()
@click.argument("path", type=click.Path(exists=True))
@click.option("--reference", type=click.Path(exists=True),
              help="Reference: a run folder of the same system (e.g. its classical run) or a reference data file "
                   "(MD17 .npz, MDsim .npy, extxyz, LAMMPS dump).")
@click.option("--reference-every", type=click.IntRange(min=1), default=1, show_default=True,
              help="Use every K-th reference frame (space them like the run's frames).")
@click.option("--test-data", type=click.Path(exists=True, dir_okay=False),
              help="Run folders: labelled frames (energies and forces) for the force/energy errors of the run's model.")
@click.option("--test-frames", type=click.IntRange(min=1), help="Evaluate only the first N labelled frames.")
@click.option("--rdf-normalization", type=click.Choice(["paper", "n_n_minus_1"]), default="paper", show_default=True,
              help="RDF density: N_A N_B / V (paper parity) or N_A (N_A - 1) / V for like pairs (a labelled variant).")
@click.option("--elements", multiple=True, metavar="E1,E2,...",
              help="Trajectory files: the element of each atom type, in type order (O,H or repeated).")
@click.option("--data", "data_file", type=click.Path(exists=True, dir_okay=False),
              help="Trajectory files: a LAMMPS data file whose Masses give the masses (and elements) of the types.")
@click.option("--timestep-fs", type=click.FloatRange(min=0, min_open=True),
              help="Trajectory files: the MD timestep (default: the --system's protocol).")
@click.option("--every", type=click.IntRange(min=1),
              help="Trajectory files: MD steps between frames (default: from the dump's step numbers).")
@click.option("--system", "system_name", help="Trajectory files: apply this benchmark system's metric set.")
@click.option("--rdf", "rdf_pairs", multiple=True, metavar="A-B",
              help="Trajectory files: a partial RDF to compute, e.g. O-O (repeatable; 'all' for all atoms).")
@click.option("--msd", "msd_species", multiple=True, metavar="SPECIES",
              help="Trajectory files: MSD and diffusivity of a species, e.g. O, or Li,P (one selection), or all.")
@click.option("--lag-ps", type=click.FloatRange(min=0, min_open=True),
              help="Trajectory files: the MSD lag for D (default: half the trajectory).")
@click.option("--r-max", type=click.FloatRange(min=0, min_open=True), default=6.0, show_default=True,
              help="Trajectory files: RDF range (Å) of --rdf.")
@click.option("--bins", type=click.IntRange(min=1), default=500, show_default=True, help="RDF bins of --rdf.")
@click.option("--reference-fes", type=click.Path(exists=True, dir_okay=False),
              help="Alanine dipeptide: a reference free-energy file (PLUMED fes.dat, HILLS or COLVAR; COLVARS .pmf).")
@click.option("--fes-convention", type=click.Choice(["free_energy", "negative_bias"]), default="free_energy",
              show_default=True,
              help="Free-energy surfaces as the well-tempered estimate -(g/(g-1)) V (paper parity: PLUMED sum_hills, "
                   "COLVARS .pmf) or the negative bias -V (sum_hills --negbias); only one convention is compared.")
@click.option("--wrapped/--unwrapped", "wrapped", default=None,
              help="ASE files (.traj, extxyz): the positions were wrapped into the cell (they are unwrapped from "
                   "consecutive frames) or not. Default: decided from the data.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for metrics.json and curves.npz (default: the run folder, or beside the file).")
@click.option("--plot", is_flag=True, help="Also write PNG plots of the curves.")
def analyze(path, reference, reference_every, test_data, test_frames, rdf_normalization, elements, data_file,
            timestep_fs, every, system_name, rdf_pairs, msd_species, lag_ps, r_max, bins, reference_fes, fes_convention,
            wrapped, out, plot):
    """Compute the benchmark's metrics of PATH, a run folder (`lmpbench run`, or an MDsim run
    folder: atoms.traj, thermo.log, test_metric.json, HILLS) or a trajectory file (LAMMPS
    dump, extxyz, ASE .traj); writes metrics.json and curves.npz.

    \b
    A trajectory file needs the element of each atom type (--elements O,H, --data FILE or an
    element column in the dump) and what to compute: a benchmark system's metric set
    (--system water) or custom metrics (--rdf O-O --rdf O-H --msd O).
    """
    from lmpbench.analysis import run_metrics
    from lmpbench.analysis.trajectory import TrajectoryError

    trajectory_options = {"--elements": elements, "--data": data_file, "--timestep-fs": timestep_fs, "--every": every,
                          "--system": system_name, "--rdf": rdf_pairs, "--msd": msd_species, "--lag-ps": lag_ps}
    fes_options = {"reference_fes": reference_fes, "fes_convention": fes_convention, "wrapped": wrapped}
    try:
        if Path(path).is_dir():
            from lmpbench.analysis.mdsim import is_mdsim_folder

            mdsim_folder = is_mdsim_folder(path)  # records no system: --system may name it
            given = [name for name, value in trajectory_options.items() if value and not (mdsim_folder and name == "--system")]
            if given:
                raise click.UsageError(f"{path} is a run folder: it records what {', '.join(given)} would say; "
                                       "these options are for trajectory files")
            if test_data and mdsim_folder:
                raise click.UsageError("--test-data evaluates a lmpbench run's deployed model; an MDsim folder's errors "
                                       "are imported from its test_metric.json")
            result = run_metrics.analyze(path, reference, reference_every, test_data, test_frames, rdf_normalization,
                                         out=out, system=system_name, **fes_options)
            out_dir = Path(out) if out else Path(path)
        else:
            if test_data:
                raise click.UsageError("--test-data evaluates a run folder's model; PATH is a trajectory file")
            custom = None
            if rdf_pairs or msd_species or lag_ps:
                custom = run_metrics.CustomMetrics(tuple(_pair(p) for p in rdf_pairs),
                                                   tuple(_species(s) for s in msd_species), lag_ps, r_max, bins)
            result = run_metrics.analyze_trajectory(
                path, elements=_words(elements) or None, data_file=data_file, timestep_fs=timestep_fs, every=every,
                system=system_name, custom=custom, reference=reference, reference_every=reference_every, out=out,
                rdf_normalization=rdf_normalization, **fes_options)
            out_dir = Path(out) if out else Path(path).parent
    except (run_metrics.AnalysisError, TrajectoryError, ValueError, RuntimeError) as err:
        raise click.ClickException(str(err)) from None
    except OSError as err:
        raise click.ClickException(f"{err.filename or path}: {err.strerror or err}") from None
    for line in _metric_lines(result["metrics"]):
        click.echo(line)
    click.echo(f"wrote {out_dir / 'metrics.json'} and curves.npz")
    if plot:
        from lmpbench.analysis.plots import plot_curves

        pictures = plot_curves(out_dir / "curves.npz")
        click.echo("plots: " + (", ".join(str(p) for p in pictures) if pictures else "none (no curves)"))


def _words(values) -> list[str]:
    """Repeated or comma/space-separated option values as one list."""
    return [w for value in values for w in value.replace(",", " ").split()]


def _pair(text: str):
    if text == "all":
        return (None, None)
    a, sep, b = text.partition("-")
    if not sep or not a or not b:
        raise click.BadParameter(f"{text!r}: give a pair of elements as A-B, e.g. O-H, or 'all'", param_hint="--rdf")
    return (a, b)


def _species(text: str) -> tuple[str, ...]:
    return () if text == "all" else tuple(_words([text]))


def _metric_lines(metrics: dict) -> list[str]:
    """A short summary: one line per value, with its unit or why it is missing."""
    lines = []

    def line(name, metric):
        value = metric["value"]
        text = f"{name:20s} {value if value is None else f'{value:.6g}'} {metric.get('unit', '')}"
        if value is None and "reason" in metric:
            text += f"  ({metric['reason']})"
        elif metric.get("imported"):
            text += f"  ({metric.get('source', 'imported')})"
        lines.append(text.rstrip())

    for name, metric in metrics.items():
        if isinstance(metric, dict) and "value" in metric:
            line(name, metric)
        elif name in ("rdf_mae", "pmf_mae", "diffusivity") and isinstance(metric, dict):
            for key, sub in metric.items():
                line(f"{name} {key}", sub)
    return lines


@cli.command("train")
@click.option("--system", "system_name", required=True, help="Benchmark system (elements, cutoff, category).")
@click.option("--data", required=True, help="Dataset: a name (see `lmpbench data list`) or a dataset folder.")
@click.option("--size", required=True, help="Split size of the dataset to train on (e.g. 1k, 10k).")
@click.option("-o", "--out", type=click.Path(file_okay=False), required=True,
              help="Training folder (new or empty; --force replaces a previous training there).")
@click.option("--arch", default="nequip", show_default=True,
              help="Architecture (registry entry): nequip, allegro, sevenn (SevenNet, float32), tensornet or "
                   "equivariant-transformer (torchmd-net's).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML in the trainer's own format, merged over the defaults (its keys win).")
@click.option("--max-epochs", type=click.IntRange(min=1), help="Epochs to train (default 100 without --max-minutes).")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), help="Training time limit.")
@click.option("--seed", type=int, help="Training seed (default 1).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: cuda when a GPU is visible.")
@click.option("--test-frames", type=click.IntRange(min=1), help="Evaluate only the first N test frames.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="CPU threads of torch (training and test); more than free cores slows it down many times.")
@click.option("--no-package", is_flag=True, help="Skip the portable package of the model (e.g. .nequip.zip).")
@click.option("--systems-file", type=click.Path(exists=True, dir_okay=False), help="TOML file with user systems.")
@click.option("--force", is_flag=True, help="Replace a previous training in --out.")
def train_cmd(system_name, data, size, out, arch, config_file, max_epochs, max_minutes, seed, device, test_frames,
              threads, no_package, systems_file, force):
    """Train a model on a dataset split with the architecture's own trainer; writes the checkpoint
    (for `lmpbench deploy`), the config used, the test MAE and the training curve."""
    from lmpbench import systems, training

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    try:
        user_systems, _ = systems.load_user_systems(systems_file) if systems_file else ({}, {})
        system = systems.get_system(system_name, user_systems)
        record = training.train(system, data, size, out, arch=arch, config_file=config_file, max_epochs=max_epochs,
                                max_minutes=max_minutes, seed=seed, device=device, test_frames=test_frames,
                                package=not no_package, threads=threads, force=force, echo=click.echo)
    except training.TrainerFailedError as err:
        raise click.ClickException(str(err)) from None
    except (systems.SystemError, training.TrainingError) as err:
        raise click.UsageError(str(err)) from None
    test = record["test"]
    energy = (f"{test['energy_mae_meV_atom']:.2f} meV/atom" if test["energy_mae_meV_atom"] is not None
              else "none (forces-only data)")
    click.echo(f"{record['epochs_done']} epochs in {record['train_wall_s']:.0f} s on {record['device']}; test "
               f"({test['frames']} frames): force MAE {test['forces_mae_meV_A']:.2f} meV/Å, energy MAE {energy}")
    folder = Path(out).resolve()
    click.echo(f"wrote {folder / 'train.json'}; deploy with: lmpbench deploy {folder / record['checkpoint']['file']} "
               f"-o {folder / 'model.pt2'}")


@cli.command()
def systems():
    """List the benchmark systems and their protocols."""
    from lmpbench.systems import PROTOCOLS, SYSTEMS

    for s in SYSTEMS.values():
        p = PROTOCOLS[s.protocol]
        where = s.structure or "needs --structure"
        click.echo(f"{s.name:22s} {s.category:9s} {' '.join(s.elements):10s} {p.ensemble:15s} dt {p.timestep_fs} fs, "
                   f"{p.temperature_K:g} K, {p.length_ps:g} ps, frame every {p.dump_every}  [{where}]")


@cli.command()
@click.option("--out", type=click.Path(file_okay=False), default="demo_output", show_default=True,
              help="Folder for the deployed models, runs, references and report (a second call reuses them).")
@click.option("--processes", type=click.IntRange(min=1), default=None,
              help="Runs at once (default: the cores this process may use; each run takes one thread).")
@click.option("--no-progress", is_flag=True)
def demo(out, processes, no_progress):
    """The benchmark end to end on shipped data: shipped models deployed here, run in LAMMPS on
    water and ethanol for three seeds, scored against the shipped reference, and a report."""
    from lmpbench.demo import DemoError, run_demo
    from lmpbench.report.collect import ReportError

    warnings.filterwarnings("ignore")
    try:
        summary = run_demo(out, progress=not no_progress, echo=click.echo, processes=processes)
    except (DemoError, ReportError) as err:
        raise click.ClickException(str(err)) from None
    for table in summary["tables"]:
        click.echo(f"\n{table['system']}")
        _echo_table(table["head"], table["rows"])
        click.echo(table["sentence"])
    failed = [r for r in summary["runs"] if r["status"] == "failed"]
    for run in failed:
        click.echo(f"failed: {run['folder']}: {run.get('error', 'see its run.json')}")
    click.echo(f"\n{len(summary['runs'])} runs in {summary['minutes']:.1f} min on {summary['processes']} process(es)")
    click.echo(f"report: {summary['report']['html']}")
    click.echo(f"        {summary['report'].get('markdown', '')}  (tables as CSV/JSON beside it)")


def _echo_table(head: list, rows: list) -> None:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        click.echo("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())


@cli.command("demo-scaling")
@click.option("--out", type=click.Path(file_okay=False), default="demo_scaling_output", show_default=True,
              help="Folder for the demo's model, runs and summary.")
@click.option("--steps", type=click.IntRange(min=10), default=200, show_default=True)
def demo_scaling(out, steps):
    """Train a tiny NequIP model (CuAu), deploy it, run it in LAMMPS on 1 and 2 ranks, analyse."""
    from lmpbench.decks import LammpsRunError
    from lmpbench.deploy import DeployError
    from lmpbench.scaling_demo import run_scaling_demo

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    try:
        summary = run_scaling_demo(out, steps=steps, echo=click.echo)
    except (LammpsRunError, DeployError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"\n{summary['atoms']} atoms, {steps} NVE steps, model {summary['model']}")
    click.echo(f"{'path':>17} {'ranks':>5}  {'steps/s':>8}  {'drift eV/atom/ps':>17}  {'max |dE_tot| vs first':>21}  folder")
    for r in summary["runs"]:
        click.echo(f"{r['target']:>17} {r['ranks']:>5}  {r['steps_per_s']:8.1f}  {r['energy_drift_eV_atom_ps']:17.2e}  "
                   f"{r['max_abs_etotal_diff_vs_first_eV']:21.2e}  {r['folder']}")
    a = summary["analysis"]
    click.echo(f"analysed {a['frames']} frames of {a['trajectory']}: RDF first peak at {a['rdf_first_peak_A']:.2f} Å, "
               f"MSD {a['msd_A2_at_last_lag']:.3g} Å^2 after {a['last_lag_steps']} steps")
    click.echo(f"analysis: {a['metrics']}, curves {a['curves']}, plots {', '.join(a['plots'])}")
    click.echo(f"summary: {Path(out).resolve() / 'summary.json'}")


@cli.group()
def data():
    """The paper's datasets: fetch them, list what is present ($LMPBENCH_DATA or
    ~/.local/share/lmpbench/datasets)."""


@data.command("fetch")
@click.argument("name")
@click.option("--from-file", type=click.Path(exists=True, dir_okay=False),
              help="The published file, downloaded elsewhere (e.g. water.npy): used instead of the network.")
@click.option("--sha256", help="The file's sha256: refused if it differs (default: the known or recorded one).")
@click.option("--force", is_flag=True, help="Rebuild the dataset even if it is present.")
def data_fetch(name, from_file, sha256, force):
    """Download dataset NAME (resumable), check its sha256, convert to eV and Å, write the
    paper's splits (seed 123) as extxyz and the reference trajectory."""
    from lmpbench.datasets.fetch import fetch_dataset
    from lmpbench.datasets.sources import DATASET_SOURCES
    from lmpbench.datasets.store import DatasetError

    if name not in DATASET_SOURCES:
        raise click.BadParameter(f"unknown dataset {name!r}; one of {', '.join(DATASET_SOURCES)}", param_hint="NAME")

    def progress(done, total):
        click.echo(f"\r{name}: {done / 1e6:.1f}" + (f" of {total / 1e6:.1f}" if total else "") + " MB",
                   nl=total is not None and done >= total, err=True)

    try:
        result = fetch_dataset(name, from_file=from_file, sha256=sha256, force=force, progress=progress,
                               echo=lambda line: click.echo(line, err=True))
    except DatasetError as err:
        raise click.ClickException(str(err)) from None
    except OSError as err:
        raise click.ClickException(f"{err.filename or name}: {err.strerror or err}") from None
    dataset, source = result.dataset, result.dataset.manifest["source"]
    if result.status == "present":
        click.echo(f"{name} is present in {dataset.folder} (sha256 {source['sha256']}); --force rebuilds it")
        return
    check = f"verified against the {source['sha256_checked_against']} one" if source["sha256_verified"] else "recorded"
    sizes = ", ".join(f"{size} {parts['train']['frames']}/{parts['val']['frames']}"
                      for size, parts in dataset.manifest["split"]["sizes"].items())
    manifest = dataset.manifest
    click.echo(f"{name}: {source['file']} ({source['bytes']} bytes, {result.obtained}), sha256 {source['sha256']} ({check})")
    click.echo(f"wrote {dataset.folder}: {manifest['frames']} frames, test {manifest['split']['test']['frames']}, "
               f"train/val {sizes}; reference trajectory {manifest['reference_trajectory']}")


@data.command("list")
def data_list():
    """The datasets present, with their size and the sha256 of their source file."""
    from lmpbench.datasets.fetch import present_datasets
    from lmpbench.datasets.sources import DATASET_SOURCES

    summaries = present_datasets()
    for s in summaries:
        frames = f"{s.frames} frames" if s.frames is not None else "incomplete"
        click.echo(f"{s.name:22s} {s.system or '-':20s} {frames:>14s} {s.bytes / 1e6:10.1f} MB  "
                   f"sha256 {s.sha256 or '-'}  {s.folder}")
    missing = [name for name in DATASET_SOURCES if name not in {s.name for s in summaries}]
    if not summaries:
        click.echo("no datasets present")
    if missing:
        click.echo(f"not fetched: {', '.join(missing)} (lmpbench data fetch NAME)")


@cli.command("reference")
@click.argument("system_name", metavar="SYSTEM")
@click.option("-o", "--out", type=click.Path(file_okay=False),
              help="Folder of the reference set (default: SYSTEM-reference[-short] in the dataset folder).")
@click.option("--short", is_flag=True, help="A small version in minutes (tests, the demo) instead of the full protocol.")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Independent references; two or more give the noise floor of every metric.")
@click.option("--first-seed", type=click.IntRange(min=1), default=1, show_default=True)
def reference_cmd(system_name, out, short, seeds, first_seed):
    """Make reference data and trajectories of SYSTEM with its real reference potential.

    Each seed becomes a dataset (labelled frames split for `lmpbench train`, and the reference
    trajectory for `lmpbench analyze --reference`); with several seeds, reference.json holds the
    noise floor: every metric of each later seed against the first."""
    from lmpbench.datasets.store import DatasetError
    from lmpbench.reference import RECIPES, ReferenceError, make_reference

    if system_name not in RECIPES:
        raise click.UsageError(f"no reference recipe for {system_name!r}; choose from {', '.join(RECIPES)}")
    try:
        record = make_reference(system_name, out, short=short, seeds=seeds, first_seed=first_seed, echo=click.echo)
    except (ReferenceError, DatasetError) as err:
        raise click.ClickException(str(err)) from None
    floor = record["noise_floor"]
    if floor:
        for name, value in floor["mean"].items():
            click.echo(f"noise floor {name}: {value:.4g}")
    click.echo(f"wrote {record['folder']}: {', '.join(record['seeds'])} and reference.json")


@cli.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--out", type=click.Path(file_okay=False), required=True,
              help="Folder for report.html, report.md, leaderboard.csv, runs.csv, report.json and plots/.")
@click.option("--reference", "references", multiple=True, type=click.Path(exists=True),
              help="A reference set (folder or reference.json of `lmpbench reference --seeds 2`): its noise floor and "
                   "reference D (repeatable, one per system).")
@click.option("--no-snapshots", is_flag=True, help="Skip the rendered first and collapse frames.")
@click.option("--run-plots", is_flag=True, help="Also each run's own curves, as `analyze --plot` (about 1 s per run).")
def report_cmd(run_dirs, out, references, no_snapshots, run_plots):
    """Leaderboard of models x systems x seeds from analysed run folders.

    RUN_DIRS are run folders (`lmpbench run` + `lmpbench analyze`, or imported MDsim runs) or
    folders holding them (e.g. a `lmpbench batch` root). Finished, collapsed, interrupted and
    failed runs are all listed; a folder that cannot be read is listed with the reason."""
    from lmpbench.report import ReportError, build_report

    try:
        result = build_report(run_dirs, out, references, snapshots=not no_snapshots, run_plots=run_plots)
    except ReportError as err:
        raise click.ClickException(str(err)) from None
    except OSError as err:
        raise click.ClickException(f"{err.filename or out}: {err.strerror or err}") from None
    unreadable = [r for r in result.records if r.status == "unreadable"]
    click.echo(f"{len(result.records)} run folder(s), {len(result.tables)} system(s)"
               + (f"; unreadable: {len(unreadable)} (see the runs table)" if unreadable else ""))
    for table in result.tables:
        click.echo(table.sentence)
    for kind, path in result.files.items():
        click.echo(f"{kind}: {path}")


if __name__ == "__main__":
    cli()
