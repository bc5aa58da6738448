"""Free-energy surfaces from the files runs leave, in one convention at a time.

``FES_FILE_KINDS``: the files a surface can come from, each with how to recognise it and how
to read it in a convention (``plumed.FES_CONVENTIONS``):

- COLVARS ``metad.pmf`` (lmpbench runs): the well-tempered estimate -(gamma/(gamma-1)) V
  (free_energy); the negative bias is it times (gamma-1)/gamma, gamma from the run's protocol.
- PLUMED ``HILLS``: summed on the grid asked for, in either convention (gamma from its biasf).
- PLUMED grid (``fes.dat``, ``sum_hills`` output): holds free_energy (``sum_hills`` default);
  the negative bias needs the hills (refused).
- PLUMED ``COLVAR`` of an unbiased run: the phi/psi histogram, F = -kBT ln p (free_energy).

``run_surface`` finds a run folder's own surface (``RUN_FES_FILES``, first present wins);
``pmf_errors`` compares a surface with a reference of the same convention, on the same grid
(the reference is interpolated onto the run's grid when they differ, and the record says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from lmpbench.analysis import plumed
from lmpbench.analysis.fes import FreeEnergySurface, Ramachandran
from lmpbench.analysis.rdf import mae


class FESFileError(ValueError):
    """A surface cannot be read in the convention asked for; the message says why."""


def _is_colvars_pmf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.readline().split()[:2] == [b"#", b"2"]
    except (OSError, IndexError):
        return False


def _plumed_fields(path: Path) -> list[str]:
    with open(path, "rb") as f:
        return f.readline().decode(errors="replace").split()[2:]


def _read_colvars(path: Path, convention: str, bias_factor: float | None, grid) -> FreeEnergySurface:
    surface = FreeEnergySurface.from_colvars_pmf(path)
    surface.source = "metadynamics bias (COLVARS)"
    if convention == "negative_bias":
        if not bias_factor:
            raise FESFileError(f"{path}: the negative bias needs the run's bias factor")
        return surface.scaled((bias_factor - 1.0) / bias_factor, "negative_bias",
                              f"times (gamma-1)/gamma = {(bias_factor - 1.0) / bias_factor:.4g} (gamma {bias_factor:g})")
    return surface


def _read_hills(path: Path, convention: str, bias_factor, grid) -> FreeEnergySurface:
    hills = plumed.read_hills(path)
    if grid is None:
        return hills.surface(convention)
    return hills.surface(convention, np.radians(grid[0]), np.radians(grid[1]))


def _read_grid(path: Path, convention: str, bias_factor, grid) -> FreeEnergySurface:
    if convention != "free_energy":
        raise FESFileError(f"{path}: a sum_hills grid holds the free energy; the negative bias needs the HILLS file")
    return plumed.read_grid(path)


def _read_colvar(path: Path, convention: str, bias_factor, grid) -> FreeEnergySurface:
    if convention != "free_energy":
        raise FESFileError(f"{path}: a histogram of samples estimates the free energy, not a bias")
    phi, psi, names = plumed.read_colvar(path)
    surface = Ramachandran((0, 1, 2, 3), (0, 1, 2, 3)).accumulate_angles(phi, psi).surface()
    surface.source = f"PLUMED COLVAR {path} ({names}): {surface.source}"
    return surface


@dataclass(frozen=True)
class FESFileKind:
    name: str
    recognise: Callable[[Path], bool]
    read: Callable  # (path, convention, bias_factor, grid (phi_deg, psi_deg) or None) -> FreeEnergySurface


FES_FILE_KINDS = (
    FESFileKind("COLVARS .pmf", _is_colvars_pmf, _read_colvars),
    FESFileKind("PLUMED HILLS", lambda p: is_hills(p), _read_hills),
    FESFileKind("PLUMED COLVAR", lambda p: plumed.is_plumed_file(p) and _plumed_fields(p)[:1] == ["time"],
                _read_colvar),
    FESFileKind("PLUMED grid", plumed.is_plumed_file, _read_grid),
)
RUN_FES_FILES = ("metad.pmf", "HILLS", "fes.dat")  # a run folder's own surface, first present wins


def is_hills(path: str | Path) -> bool:
    """Whether ``path`` is a PLUMED HILLS file (summed on any grid; other surfaces have theirs)."""
    return plumed.is_plumed_file(path) and "height" in _plumed_fields(Path(path))


def is_fes_file(path: str | Path) -> bool:
    path = Path(path)
    return path.is_file() and any(kind.recognise(path) for kind in FES_FILE_KINDS)


def surface_from_file(path: str | Path, convention: str = plumed.PAPER_CONVENTION, bias_factor: float | None = None,
                      grid: tuple[np.ndarray, np.ndarray] | None = None) -> FreeEnergySurface:
    """The surface in ``path`` (any of ``FES_FILE_KINDS``) in ``convention``; ``grid`` (phi_deg,
    psi_deg) is where hills are summed (default PLUMED's 60 x 60 grid)."""
    plumed.check_convention(convention)
    path = Path(path)
    if not path.is_file():
        raise FESFileError(f"free-energy file {path} does not exist")
    kind = next((k for k in FES_FILE_KINDS if k.recognise(path)), None)
    if kind is None:
        raise FESFileError(f"{path}: not a free-energy file lmpbench reads (COLVARS .pmf, PLUMED HILLS, fes.dat grid "
                           "or COLVAR)")
    try:
        return kind.read(path, convention, bias_factor, grid)
    except (plumed.PlumedError, ValueError) as err:
        raise FESFileError(str(err)) from None


def run_surface_file(folder: Path) -> Path | None:
    return next((folder / name for name in RUN_FES_FILES if (folder / name).is_file()), None)


def pmf_errors(fes: FreeEnergySurface, ref: FreeEnergySurface) -> tuple[dict, FreeEnergySurface]:
    """mae(PMF, PMF_ref, 6.28) for phi and psi (kJ/mol rad), refusing surfaces of different
    conventions; the reference on the run's grid (interpolated when the grids differ) comes back
    for the curves."""
    if fes.convention != ref.convention:
        raise FESFileError(f"the run's surface is {fes.convention} and the reference's {ref.convention}: surfaces of "
                           "different conventions are not compared")
    note = "same grid"
    if not fes.same_grid(ref):
        ref = ref.on_grid(fes.phi_deg, fes.psi_deg)
        note = "reference interpolated (periodic, bilinear) onto the run's grid points"
    errors = {axis: {"value": mae(fes.pmf(axis), ref.pmf(axis), 6.28), "unit": "kJ/mol rad",
                     "convention": fes.convention, "grid": note,
                     "definition": "mae(PMF, PMF_ref, 6.28), PMF from the 60 x 60 FES with kBT = 2.49 kJ/mol"}
              for axis in ("phi", "psi")}
    return errors, ref
