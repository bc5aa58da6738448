from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from lmpbench import engine, plugin  # noqa: E402
from lmpbench.contract import ModelMetadata, save_model  # noqa: E402
from lmpbench.models import LennardJones, Morse, ToyMessagePassing  # noqa: E402

TESTS = Path(__file__).parent

# LAMMPS-side parameters of the reference pair styles and the same numbers as models.
# Model type order is the reverse of LAMMPS type order, so the element mapping is exercised.
LJ = {"epsilon": [[0.0125, 0.0105], [0.0105, 0.0100]], "sigma": [[2.7, 2.55], [2.55, 2.4]], "r_max": 6.0}
MORSE = {"d0": [[0.30, 0.25], [0.25, 0.20]], "alpha": [[1.5, 1.4], [1.4, 1.3]], "r0": [[2.9, 2.8], [2.8, 2.7]], "r_max": 5.5}
ELEMENTS = ["Cu", "Ni"]  # LAMMPS types 1, 2
MODEL_TYPES = ["Ni", "Cu"]  # model types 0, 1


def _reverse(table):
    return [row[::-1] for row in table[::-1]]


@pytest.fixture(scope="session", autouse=True)
def built_plugin():
    try:
        return plugin.plugin_path()
    except plugin.PluginNotBuiltError as err:
        pytest.exit(f"{err} (make test builds it)", returncode=2)


@pytest.fixture(scope="session")
def model_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    files = {}

    def save(name, model, **meta):
        files[name] = save_model(model, d / f"{name}.pt", ModelMetadata(type_names=MODEL_TYPES, **meta))

    save("lj", LennardJones(_reverse(LJ["epsilon"]), _reverse(LJ["sigma"]), LJ["r_max"], num_types=2), r_max=LJ["r_max"])
    save("lj32", LennardJones(_reverse(LJ["epsilon"]), _reverse(LJ["sigma"]), LJ["r_max"], num_types=2),
         r_max=LJ["r_max"], model_dtype="float32")
    save("morse", Morse(*(_reverse(MORSE[k]) for k in ("d0", "alpha", "r0")), MORSE["r_max"], num_types=2), r_max=MORSE["r_max"])
    save("mp2", ToyMessagePassing(2, 3.5, num_layers=2, seed=1), r_max=3.5, num_layers=2)
    save("mp3", ToyMessagePassing(2, 3.0, num_layers=3, seed=2), r_max=3.0, num_layers=3)
    return files


def lj_lines() -> str:
    e, s = LJ["epsilon"], LJ["sigma"]
    return "\n".join([f"pair_style lj/cut {LJ['r_max']}"] + [
        f"pair_coeff {i + 1} {j + 1} {e[i][j]} {s[i][j]}" for i in range(2) for j in range(i, 2)])


def morse_lines() -> str:
    d, a, r = (MORSE[k] for k in ("d0", "alpha", "r0"))
    return "\n".join([f"pair_style morse {MORSE['r_max']}"] + [
        f"pair_coeff {i + 1} {j + 1} {d[i][j]} {a[i][j]} {r[i][j]}" for i in range(2) for j in range(i, 2)])


def mlff_lines(model: Path, elements=ELEMENTS, style_args: str = "") -> str:
    return f"pair_style mlff {style_args}\npair_coeff * * {model} {' '.join(elements)}"


def run_inprocess(deck: str) -> dict:
    from lammps_helpers import state

    lmp = engine.open_lammps()
    try:
        lmp.commands_string(deck)
        return state(lmp)
    finally:
        lmp.close()


def run_mpi(deck: str, nprocs: int, tmp_path: Path) -> dict:
    deck_file = tmp_path / f"deck_{nprocs}.in"
    deck_file.write_text(deck)
    out = tmp_path / f"state_{nprocs}.npz"
    cmd = [str(engine.mpirun_executable()), "-np", str(nprocs), sys.executable, str(TESTS / "mpi_eval.py"), str(deck_file), str(out)]
    proc = subprocess.run(cmd, env=engine.lammps_environment(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = dict(np.load(out))
    assert int(data.pop("nprocs")) == nprocs
    return data


def run_lmp(deck: str, workdir: Path) -> subprocess.CompletedProcess:
    """Run the wheel's lmp binary on ``deck`` as a separate program."""
    (workdir / "in.lmp").write_text(deck)
    return subprocess.run([str(engine.lmp_executable()), "-nocite", "-in", "in.lmp", "-log", "none"], cwd=workdir,
                          env=engine.lammps_environment(), capture_output=True, text=True, timeout=300)


def assert_states_close(a: dict, b: dict, rtol: float, keys=("pe", "pressure", "forces", "pe_atom")):
    """Every quantity equal to ``rtol`` relative to its largest magnitude."""
    for key in keys:
        x, y = np.asarray(a[key]), np.asarray(b[key])
        scale = max(np.abs(y).max(), 1e-300)
        err = np.abs(x - y).max() / scale
        assert err <= rtol, f"{key}: max relative difference {err:.3g} > {rtol:g}"


# --- a tiny NequIP model, trained once per session, and its deployments -----------------------

NEQUIP_ELEMENTS = ["Cu", "Au"]


@pytest.fixture(scope="session")
def nequip_ckpt(tmp_path_factory) -> Path:
    from lmpbench.models.toy_nequip import train_toy_nequip

    return train_toy_nequip(tmp_path_factory.mktemp("nequip"), elements=NEQUIP_ELEMENTS)


@pytest.fixture(scope="session")
def deployed(nequip_ckpt, tmp_path_factory) -> dict[str, Path]:
    """The toy model deployed to every target (each deploy checks itself on a test alloy)."""
    from lmpbench.deploy import TARGETS, deploy

    out = tmp_path_factory.mktemp("deployed")
    return {name: deploy(nequip_ckpt, out / f"toy_{name}{t.suffix}", target=name, echo=lambda *a: None).path
            for name, t in TARGETS.items()}


def cuau_alloy(cells: int = 3, triclinic: bool = True, seed: int = 3):
    """A rattled fcc CuAu alloy in LAMMPS orientation, optionally sheared."""
    from ase.build import bulk

    from lmpbench.structures import lammps_oriented

    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "fcc", a=3.8, cubic=True).repeat((cells, cells, cells))
    atoms.symbols[:] = rng.choice(NEQUIP_ELEMENTS, size=len(atoms))
    if triclinic:
        atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0.08, -0.05], [0, 0.98, 0.07], [0, 0, 1.02]]), scale_atoms=True)
    atoms.rattle(0.06, seed=seed)
    return lammps_oriented(atoms)
