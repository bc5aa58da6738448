"""Run folders that cannot be corrupted: one writer per folder, MPI worlds of the size asked
for, files replaced whole, and runs killed, starved of disk or signalled over and over that
resume to the bytes of an uninterrupted run."""

import json
import os
import random
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from lmpbench.cli.main import cli
from lmpbench.engine import lammps_environment
from lmpbench.folder_lock import FolderInUseError, FolderLock

LMPBENCH = [sys.executable, "-m", "lmpbench.cli.main"]
# SPC/Fw water, 3,000 steps in chunks of 250 with a restart after each: a few seconds of run
WATER_RUN = ["--model", "classical:spcfw", "--system", "water", "--timestep-fs", 0.5, "--steps", 3000,
             "--chunk-steps", 250, "--dump-every", 50, "--checkpoint-minutes", 0]


def start(out, *args, **kwargs):
    return subprocess.Popen([*LMPBENCH, "run", "--no-progress", *map(str, args), "--out", str(out)],
                            env=lammps_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)


def finish(out, *args, **kwargs):
    proc = subprocess.run([*LMPBENCH, "run", "--no-progress", *map(str, args), "--out", str(out)],
                          env=lammps_environment(), capture_output=True, text=True, timeout=600, **kwargs)
    return proc


def wait_for(out: Path, steps: int, proc, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads((out / "run.json").read_text()).get("steps_done", 0) >= steps:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    raise AssertionError(f"the run did not reach step {steps}")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    proc = finish(out, *WATER_RUN)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_folder_lock_names_its_holder(tmp_path):
    first = FolderLock(tmp_path / "run", "lmpbench run").acquire()
    with pytest.raises(FolderInUseError, match=rf"in use by lmpbench run on host {socket.gethostname()}, "
                                               rf"process {os.getpid()} \(since "):
        FolderLock(tmp_path / "run", "lmpbench analyze").acquire()
    first.release()
    FolderLock(tmp_path / "run", "lmpbench analyze").acquire().release()  # free again


def test_a_second_run_or_analysis_of_a_busy_folder_changes_nothing(uninterrupted, tmp_path):
    out = tmp_path / "busy"
    proc = start(out, *WATER_RUN)
    try:
        wait_for(out, 1000, proc)
        proc.send_signal(signal.SIGSTOP)  # paused, holding its lock, however fast this machine is
        holder = json.loads((out / ".lmpbench.lock").read_text())
        second = finish(out, *WATER_RUN)
        assert second.returncode == 2, second.stdout + second.stderr
        message = second.stderr.strip().splitlines()[-1]
        assert f"is in use by lmpbench run on host {holder['host']}, process {proc.pid}" in message
        analysis = CliRunner().invoke(cli, ["analyze", str(out)])
        assert analysis.exit_code == 1 and "is in use by lmpbench run" in analysis.output
        assert "--out" in analysis.output and not (out / "metrics.json").exists()
        elsewhere = CliRunner().invoke(cli, ["analyze", str(out), "--out", str(tmp_path / "live")])
        assert elsewhere.exit_code == 0, elsewhere.output  # reading a running run is fine
    finally:
        proc.send_signal(signal.SIGCONT)
        output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    # the first run was not disturbed: the same bytes as a run alone
    assert (out / "traj.dump").read_bytes() == (uninterrupted / "traj.dump").read_bytes()
    assert (out / "thermo.dat").read_bytes() == (uninterrupted / "thermo.dat").read_bytes()


def test_repeated_sigkills_then_resume_is_bitwise(uninterrupted, tmp_path):
    """SIGKILL at random moments (seeded), several times: whatever was being written (a dump
    frame, a restart file, run.json), the resumed run ends byte-identical to an uninterrupted one."""
    out = tmp_path / "killed"
    rng = random.Random(11)
    for target in sorted(rng.sample(range(100, 2900, 50), 4)):  # steps after which a kill comes
        proc = start(out, *WATER_RUN)
        wait_for(out, target, proc)
        time.sleep(rng.uniform(0.0, 0.3))  # and then a little later: inside a chunk, a dump frame, a restart
        proc.kill()
        proc.communicate()
        if json.loads((out / "run.json").read_text()).get("status") == "finished":
            break
    proc = finish(out, *WATER_RUN)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    assert (out / "thermo.dat").read_bytes() == (uninterrupted / "thermo.dat").read_bytes()
    assert (out / "traj.dump").read_bytes() == (uninterrupted / "traj.dump").read_bytes()


def test_crash_while_writing_a_frame_or_a_restart(uninterrupted, tmp_path):
    """The states a crash can leave, made by hand: a dump frame cut inside its step line, a
    half-written restart file beside the last good one, a stray temporary run.json. The
    resume ignores them and ends byte-identical."""
    out = tmp_path / "cut"
    proc = start(out, *WATER_RUN)
    wait_for(out, 1500, proc)
    proc.kill()
    proc.communicate()
    manifest = json.loads((out / "run.json").read_text())
    step = manifest["restart"]["step"]
    with open(out / "traj.dump", "a") as f:
        f.write(f"ITEM: TIMESTEP\n{step + 1}")  # killed inside the next frame's step line
    (out / "restart" / f"step_{step + 250}.restart").write_bytes(b"LammpS RestartF" + os.urandom(100))
    (out / ".run.json.partial").write_text('{"status": "fini')
    proc = finish(out, *WATER_RUN)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "traj.dump").read_bytes() == (uninterrupted / "traj.dump").read_bytes()
    assert (out / "thermo.dat").read_bytes() == (uninterrupted / "thermo.dat").read_bytes()


def test_repeated_sigterm_during_the_checkpoint(uninterrupted, tmp_path):
    """SIGTERM again and again while the restart is written: the run ends `interrupted` with a
    clean exit, and resumes with every frame and thermo row once. (Not bitwise: the restart is
    taken where the signal came, and LAMMPS rebuilds its neighbour lists there.)"""
    out = tmp_path / "term"
    proc = start(out, *WATER_RUN)
    wait_for(out, 750, proc)
    for _ in range(6):
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "interrupted" and "SIGTERM" in manifest["reason"], output
    assert (out / manifest["restart"]["file"]).is_file()
    proc = finish(out, *WATER_RUN)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    steps = [int(line.split()[0]) for line in (out / "thermo.dat").read_text().splitlines() if not line.startswith("#")]
    dump = (out / "traj.dump").read_text().splitlines()
    frames = [int(dump[k + 1]) for k, line in enumerate(dump) if line == "ITEM: TIMESTEP"]
    assert steps == frames == list(range(0, 3001, 50))


def test_a_full_disk_is_a_clear_error_and_the_folder_resumes(uninterrupted, tmp_path):
    """A file-size limit set on the running process (prlimit, after MPI started) stands in for
    a full disk: the run stops with an error naming the problem, and once there is room again
    the same command resumes to the same bytes."""
    import resource

    out = tmp_path / "full"
    proc = start(out, *WATER_RUN)
    wait_for(out, 500, proc)
    limit = (out / "traj.dump").stat().st_size + 60_000  # about five more frames
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (limit, limit))
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, output
    last = output.strip().splitlines()[-1]
    assert last.startswith("Error: run failed at step") and "File too large" in last, output
    assert "Traceback" not in output
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
    proc = finish(out, *WATER_RUN)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "traj.dump").read_bytes() == (uninterrupted / "traj.dump").read_bytes()
    assert (out / "thermo.dat").read_bytes() == (uninterrupted / "thermo.dat").read_bytes()


def test_resume_refuses_a_changed_model(tmp_path):
    from lmpbench.contract import ModelMetadata, save_model
    from lmpbench.models import Morse

    model = tmp_path / "model.pt"
    save_model(Morse(0.1, 1.5, 1.2, r_max=3.0, num_types=2), model, ModelMetadata(r_max=3.0, type_names=["O", "H"]))
    args = ["--model", model, "--system", "water", "--steps", 40, "--dump-every", 20, "--collapse-criteria", "paper"]
    proc = finish(tmp_path / "run", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    before = (tmp_path / "run" / "run.json").read_bytes()
    save_model(Morse(0.2, 1.5, 1.2, r_max=3.0, num_types=2), model, ModelMetadata(r_max=3.0, type_names=["O", "H"]))
    proc = finish(tmp_path / "run", *args)
    assert proc.returncode == 2
    assert "model file" in proc.stderr and "changed since this run started" in proc.stderr
    assert (tmp_path / "run" / "run.json").read_bytes() == before


def _fake(bin_dir: Path, name: str, text: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_batch_launchers_and_mpi_world_check(tmp_path, monkeypatch):
    """A fake sbatch runs the array's task 0 at once. With the default launcher the task starts
    lmpbench's own MPI and runs on 2 ranks; with a srun that starts 2 single-rank copies (no
    PMI), every copy refuses before writing anything."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # like SLURM, it opens the task's output file (in logs/) before the script runs
    _fake(bin_dir, "sbatch", 'cd "$(dirname "$1")" && [ -d logs ] || { echo "sbatch: no folder logs/" >&2; exit 1; }\n'
                             'SLURM_ARRAY_TASK_ID=0 bash "$1" > logs/task0.out 2>&1\n'
                             'echo "Submitted batch job 7"\n')
    _fake(bin_dir, "srun", """n=1; args=()
for a in "$@"; do case "$a" in --ntasks=*) n="${a#--ntasks=}" ;; --mpi=*) ;; *) args+=("$a") ;; esac; done
pids=()
for i in $(seq 0 $((n - 1))); do SLURM_STEP_NUM_TASKS="$n" SLURM_PROCID="$i" "${args[@]}" & pids+=($!); done
status=0; for p in "${pids[@]}"; do wait "$p" || status=1; done; exit $status
""")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for key, value in lammps_environment().items():
        monkeypatch.setenv(key, value)
    common = ["batch", "--models", "classical:spcfw", "--systems", "water", "--seeds", "1", "--scheduler", "slurm",
              "--np", "2", "--run-arg=--steps", "--run-arg=200", "--run-arg=--dump-every", "--run-arg=20", "--submit"]
    good = CliRunner().invoke(cli, [*common, "--out", str(tmp_path / "good")])
    assert good.exit_code == 0 and "Submitted batch job 7" in good.output, good.output
    manifest = json.loads((tmp_path / "good" / "spcfw" / "water" / "seed1" / "run.json").read_text())
    assert manifest["status"] == "finished" and manifest["mpi_ranks"] == 2
    wrong = CliRunner().invoke(cli, [*common, "--launcher", "srun", "--out", str(tmp_path / "wrong")])
    assert wrong.exit_code == 0, wrong.output
    log = (tmp_path / "wrong" / "logs" / "task0.out").read_text()
    assert log.count("this MPI world has 1 rank(s) but --np 2 was asked") == 2, log
    assert not (tmp_path / "wrong" / "spcfw" / "water" / "seed1").exists()
    assert "srun --mpi=pmi2 --ntasks=2" in (tmp_path / "wrong" / "job.sh").read_text()
    refused = CliRunner().invoke(cli, [*common[:-1], "--scheduler", "pbs", "--launcher", "srun",
                                       "--out", str(tmp_path / "pbs")])
    assert refused.exit_code == 2 and "launcher srun works with slurm only" in refused.output
