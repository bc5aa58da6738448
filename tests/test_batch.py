"""lmpbench batch: job-array scripts that pass bash -n, reach the scheduler, quote their values."""

import json
import os
import stat
import subprocess

from click.testing import CliRunner

from lmpbench.cli.main import cli
from lmpbench.engine import lammps_environment


def invoke(*args):
    return CliRunner().invoke(cli, ["batch", *map(str, args)])


def test_slurm_script_and_fake_sbatch(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "sbatch_calls.txt"
    fake = bin_dir / "sbatch"
    fake.write_text(f'#!/bin/bash\necho "$PWD $*" >> {record}\ngrep "^#SBATCH" "$1" >> {record}\necho "Submitted batch job 42"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    root = tmp_path / "campaign with spaces"
    result = invoke("--models", "classical:lj", "--models", "classical:spcfw", "--systems", "water", "--seeds", "1-3",
                    "--out", root, "--time", "02:00:00", "--submit")
    assert result.exit_code == 0, result.output
    assert "Submitted batch job 42" in result.output
    job = root / "job.sh"
    assert subprocess.run(["bash", "-n", str(job)]).returncode == 0
    calls = record.read_text()
    assert f"{root} {job}" in calls  # submitted from the campaign folder
    assert "#SBATCH --array=0-5" in calls and "#SBATCH --time=02:00:00" in calls and "--signal=B:TERM@" in calls
    tasks = json.loads((root / "tasks.json").read_text())["tasks"]
    assert [(t["model"], t["seed"]) for t in tasks] == [("classical:lj", 1), ("classical:lj", 2), ("classical:lj", 3),
                                                        ("classical:spcfw", 1), ("classical:spcfw", 2),
                                                        ("classical:spcfw", 3)]


def test_array_task_runs_and_resubmission_skips_it(tmp_path):
    """Task 0 of a generated script runs for real (a folder name with a quote in it), and a
    second run of the same task finds it finished."""
    root = tmp_path / "it's a run"
    result = invoke("--models", "classical:lj", "--systems", "md17_ethanol", "--seeds", "5", "--out", root,
                    "--run-arg=--steps", "--run-arg=100", "--run-arg=--temperature", "--run-arg=50",
                    "--run-arg=--collapse-criteria", "--run-arg=paper")  # the LJ stand-in has no bonds
    assert result.exit_code == 0, result.output
    env = dict(lammps_environment(), SLURM_ARRAY_TASK_ID="0")
    first = subprocess.run(["bash", str(root / "job.sh")], env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    manifest = json.loads((root / "lj" / "md17_ethanol" / "seed5" / "run.json").read_text())
    assert manifest["status"] == "finished" and manifest["seed"] == 5 and manifest["steps_done"] == 100
    again = subprocess.run(["bash", str(root / "job.sh")], env=env, capture_output=True, text=True, timeout=300)
    assert "already finished" in again.stdout


def test_pbs_and_local_scripts_pass_bash_n(tmp_path):
    for scheduler in ("pbs", "local"):
        result = invoke("--models", "classical:lj", "--systems", "water", "--seeds", "1,2", "--out",
                        tmp_path / scheduler, "--scheduler", scheduler, "--np", 2)
        assert result.exit_code == 0, result.output
        text = (tmp_path / scheduler / "job.sh").read_text()
        assert subprocess.run(["bash", "-n", str(tmp_path / scheduler / "job.sh")]).returncode == 0
        assert "--np 2 ;;" in text and "mpirun" not in text  # lmpbench starts its own MPI
    assert "#PBS -J 0-1" in (tmp_path / "pbs" / "job.sh").read_text()


def test_dry_run_writes_nothing(tmp_path):
    result = invoke("--models", "classical:lj", "--systems", "water", "--systems", "md17_ethanol", "--seeds", "1-2",
                    "--out", tmp_path / "dry", "--dry-run")
    assert result.exit_code == 0 and "4 task(s); nothing written" in result.output
    assert not (tmp_path / "dry").exists()


def test_bad_batch_input(tmp_path):
    assert "unknown system 'nope'" in invoke("--models", "classical:lj", "--systems", "nope", "--seeds", "1",
                                             "--out", tmp_path / "a").output
    assert "give seeds as" in invoke("--models", "classical:lj", "--systems", "water", "--seeds", "x",
                                     "--out", tmp_path / "a").output
    assert "does not exist" in invoke("--models", tmp_path / "absent.pt2", "--systems", "water", "--seeds", "1",
                                      "--out", tmp_path / "a").output
