"""``lmpbench batch``: one job-array script for a model x system x seed matrix.

Each array task runs ``lmpbench run`` into its own folder. ``lmpbench run`` resumes an
unfinished folder and skips a finished one, so a preempted or timed-out array is simply
submitted again as is. The scheduler is asked to send SIGTERM shortly before the time limit;
the run then writes a restart and exits cleanly. Every value that reaches the script is
shell-quoted.

Several ranks per task: by default the task runs ``lmpbench run --np K``, which starts the
MPI that lmpbench is installed with (the mpich wheel's ``mpiexec``; inside an allocation it
places the ranks on the allocated cores). A scheduler's own launcher works only where it
speaks that MPI's process-management interface: ``--launcher srun`` (``srun --mpi=pmi2``) is
for clusters where that is known to work. Either way each rank checks that its MPI world has
K ranks, so a launcher that starts K single-rank copies instead stops before writing.
"""

from __future__ import annotations

import itertools
import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lmpbench.files import write_atomic


class BatchError(ValueError):
    """The batch cannot be written as asked."""


@dataclass(frozen=True)
class Scheduler:
    name: str
    submit: str | None  # submit command, None for local
    task_variable: str  # environment variable holding the array index
    directive: str  # prefix of header lines
    array_line: str  # directive body for an array of n tasks ({last} = n - 1)
    time_line: str
    ranks_line: str
    log_line: str
    signal_line: str | None = None


SCHEDULERS = {s.name: s for s in (
    # logs are relative to the script's folder (submitted from there): directives take no quoting
    Scheduler("slurm", "sbatch", "SLURM_ARRAY_TASK_ID", "#SBATCH", "--array=0-{last}", "--time={time}",
              "--ntasks={np}", "--output=logs/%A_%a.out", signal_line="--signal=B:TERM@{grace}"),
    Scheduler("pbs", "qsub", "PBS_ARRAY_INDEX", "#PBS", "-J 0-{last}", "-l walltime={time}",
              "-l select=1:ncpus={np}:mpiprocs={np}", "-o logs/"),
    Scheduler("local", None, "LMPBENCH_TASK_ID", "#", "tasks 0-{last}", "no time limit", "{np} rank(s)",
              "logs in {logs}"),
)}

# how a task of several ranks is started: prefix of the `lmpbench run --np K` line, and the
# schedulers it works with (None: any)
LAUNCHERS = {
    "lmpbench": ("", None),  # lmpbench run --np K starts the mpich wheel's mpiexec itself
    "srun": ("srun --mpi=pmi2 --ntasks={np} ", ("slurm",)),  # only where srun speaks this MPICH's PMI
}


@dataclass(frozen=True)
class Task:
    index: int
    model: str
    system: str
    seed: int
    out: Path

    def command(self, lmpbench: str, run_args: list[str]) -> list[str]:
        return [lmpbench, "run", "--no-progress", "--model", self.model, "--system", self.system,
                "--seed", str(self.seed), "--out", str(self.out), *run_args]


def tasks(models: list[str], systems: list[str], seeds: list[int], root: Path) -> list[Task]:
    """The matrix, one folder per (model, system, seed): ROOT/<model stem>/<system>/seed<N>."""
    stems = {}
    for model in models:
        stem = model.split(":", 1)[1] if model.startswith("classical:") else Path(model).name.split(".")[0]
        if stem in stems.values():
            raise BatchError(f"two models share the folder name {stem!r}; rename one of the files")
        stems[model] = stem
    return [Task(k, model, system, seed, root / stems[model] / system / f"seed{seed}")
            for k, (model, system, seed) in enumerate(itertools.product(models, systems, seeds))]


def script(task_list: list[Task], scheduler: Scheduler, run_args: list[str], np: int = 1, time: str = "24:00:00",
           job_name: str = "lmpbench", extra_directives: list[str] = (), logs: Path = Path("logs"),
           grace_s: int = 120, launcher: str = "lmpbench") -> str:
    """The job-array script (bash)."""
    if launcher not in LAUNCHERS:
        raise BatchError(f"unknown launcher {launcher!r}; choose {', '.join(LAUNCHERS)}")
    prefix, schedulers = LAUNCHERS[launcher]
    if schedulers is not None and scheduler.name not in schedulers:
        raise BatchError(f"launcher {launcher} works with {', '.join(schedulers)} only, not {scheduler.name}")
    lmpbench = str(Path(sys.executable).parent / "lmpbench")
    q = shlex.quote
    header = [f"{scheduler.directive} " + line for line in (
        scheduler.array_line.format(last=len(task_list) - 1),
        scheduler.time_line.format(time=time),
        scheduler.ranks_line.format(np=np),
        scheduler.log_line.format(logs="logs"),
        *([scheduler.signal_line.format(grace=grace_s)] if scheduler.signal_line else []),
        *extra_directives,
    )]
    if scheduler.name == "slurm":
        header.insert(0, f"#SBATCH --job-name={q(job_name)}")
    elif scheduler.name == "pbs":
        header.insert(0, f"#PBS -N {q(job_name)}")
    launch = prefix.format(np=np) if np > 1 else ""
    ranks = ["--np", str(np)] if np > 1 else []  # each rank checks its world's size against it
    # exec: the scheduler's SIGTERM before the time limit must reach lmpbench (or srun), not bash
    cases = "\n".join(f"  {t.index}) exec {launch}{shlex.join(t.command(lmpbench, [*run_args, *ranks]))} ;;"
                      for t in task_list)
    body = f"""
# lmpbench batch: {len(task_list)} task(s). Each runs `lmpbench run` into its own folder, which
# resumes unfinished runs and skips finished ones: resubmit this script as is after preemption.
set -euo pipefail
cd {q(str(logs.parent))}
mkdir -p logs

run_task() {{
  case "$1" in
{cases}
    *) echo "lmpbench batch: no task $1 (0-{len(task_list) - 1})" >&2; return 2 ;;
  esac
}}
"""
    if scheduler.name == "local":
        body += f"""
if [ -n "${{{scheduler.task_variable}:-}}" ]; then
  run_task "${scheduler.task_variable}"
else
  for task in $(seq 0 {len(task_list) - 1}); do (run_task "$task") || echo "task $task failed" >&2; done
fi
"""
    else:
        body += f'\nrun_task "${{{scheduler.task_variable}:?not running as a job-array task}}"\n'
    return "#!/bin/bash\n" + "\n".join(header) + "\n" + body


def write(task_list: list[Task], scheduler_name: str, folder: Path, run_args: list[str], submit: bool = False,
          **script_options) -> tuple[Path, Path, str | None]:
    """Write ``job.sh`` and ``tasks.json`` into ``folder``; submit when asked. Returns the
    script, the task manifest and the scheduler's answer."""
    if scheduler_name not in SCHEDULERS:
        raise BatchError(f"unknown scheduler {scheduler_name!r}; choose {', '.join(SCHEDULERS)}")
    if not task_list:
        raise BatchError("no task: give at least one model, system and seed")
    scheduler = SCHEDULERS[scheduler_name]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "logs").mkdir(exist_ok=True)  # schedulers open the task's output file there before the script runs
    job = folder / "job.sh"
    write_atomic(job, script(task_list, scheduler, run_args, logs=folder / "logs", **script_options))
    job.chmod(0o755)
    manifest = folder / "tasks.json"
    write_atomic(manifest, json.dumps({"scheduler": scheduler_name, "script": str(job), "run_args": run_args, "tasks": [
        {"index": t.index, "model": t.model, "system": t.system, "seed": t.seed, "out": str(t.out)} for t in task_list]},
        indent=2))
    answer = None
    if submit:
        if scheduler.submit is None:
            proc = subprocess.run(["bash", str(job)], capture_output=True, text=True)
        else:
            if shutil.which(scheduler.submit) is None:
                raise BatchError(f"{scheduler.submit} is not on PATH: submit {job} on the cluster's login node")
            proc = subprocess.run([scheduler.submit, str(job)], capture_output=True, text=True, cwd=folder)
        if proc.returncode != 0:
            raise BatchError(f"submitting {job} failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
        answer = proc.stdout.strip()
    return job, manifest, answer
