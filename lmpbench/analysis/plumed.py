"""PLUMED's files for alanine dipeptide's free energy: ``HILLS``, ``fes.dat`` grids, ``COLVAR``.

The published benchmark (MDsim) runs well-tempered metadynamics on phi and psi with PLUMED
and scores ``plumed sum_hills --hills HILLS --mintozero --bin 60,60``; its reference FES is
such a ``fes.dat``. All three are PLUMED text files: ``#! FIELDS name ...`` names the
columns, ``#! SET key value`` lines carry settings (``min_phi -pi``, ``nbins_phi 60``,
``periodic_phi true``), then rows of numbers (blank lines between grid rows). Angles are in
radians; energies in PLUMED's energy unit of the run (kJ/mol unless its ``UNITS`` line says
otherwise), read as kJ/mol, as the paper does (``energy_to_kJ_mol`` converts otherwise).

Free-energy conventions (``FES_CONVENTIONS``); a surface of one is never compared with one
of the other:

- ``free_energy`` (paper parity): what ``sum_hills`` writes by default and what the
  reference ``fes.dat`` holds, F(s) = -sum_k w_k G_k(s), shifted to a zero minimum, with w_k
  the heights as written in HILLS. PLUMED writes a well-tempered hill's height multiplied by
  gamma/(gamma - 1) (its ``MetaD::writeGaussian``; the first hill of a run with HEIGHT=1.2 and
  BIASFACTOR=6 reads 1.44), so this sum is the well-tempered estimate
  F = -(gamma/(gamma - 1)) V of the bias V the run applied. COLVARS's ``.pmf`` output is the
  same estimate (it multiplies its bias by (T + dT)/dT = gamma/(gamma - 1)), and an unbiased
  histogram estimates the same F.
- ``negative_bias``: F = -V = -((gamma - 1)/gamma) sum_k w_k G_k(s), the applied bias
  itself (``sum_hills --negbias``); not a free-energy estimate unless gamma is infinite.

G_k(s) = prod_d exp(-(s_d - c_kd)^2 / (2 sigma_kd^2)) with periodic (minimum-image)
differences on periodic variables. PLUMED's grid sum truncates each hill beyond about
3.5 sigma (below 0.2% of its height); the sum here does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmpbench.analysis.fes import FreeEnergySurface


class PlumedError(ValueError):
    """A PLUMED file cannot be read or used; the message names the file and the problem."""


@dataclass(frozen=True)
class FESConvention:
    formula: str
    paper: bool  # the published benchmark's convention (its reference fes.dat)
    estimates_free_energy: bool


FES_CONVENTIONS = {
    "free_energy": FESConvention(
        "F = -sum_k w_k G_k = -(gamma/(gamma-1)) V, w_k the HILLS heights as PLUMED writes them (plumed sum_hills "
        "--mintozero; COLVARS .pmf; an unbiased histogram estimates the same F)", paper=True, estimates_free_energy=True),
    "negative_bias": FESConvention(
        "F = -V = -((gamma-1)/gamma) sum_k w_k G_k, the bias the run applied (plumed sum_hills --negbias)",
        paper=False, estimates_free_energy=False),
}
PAPER_CONVENTION = "free_energy"


def check_convention(name: str) -> FESConvention:
    if name not in FES_CONVENTIONS:
        raise PlumedError(f"free-energy convention must be one of {', '.join(FES_CONVENTIONS)}, not {name!r}")
    return FES_CONVENTIONS[name]


def _number(text: str) -> float:
    """A PLUMED bound: a number, or pi with an optional sign and factor (-pi, 2pi, 2*pi)."""
    word = text.strip().lower().replace("*", "")
    if word.endswith("pi"):
        factor = word[:-2]
        return (-1.0 if factor == "-" else float(factor) if factor not in ("", "+") else 1.0) * math.pi
    return float(word)


@dataclass
class PlumedTable:
    """One PLUMED text file: column names, ``#! SET`` settings and the numbers [rows, columns]."""

    path: Path
    fields: list[str]
    settings: dict[str, str]
    data: np.ndarray
    cut_last_line: int | None = None  # a last line the writer did not finish (a run stopped mid-write), dropped

    def column(self, name: str) -> np.ndarray:
        return self.data[:, self.fields.index(name)]

    def is_periodic(self, name: str) -> bool:
        """PLUMED says ``periodic_<name> true`` in grids and gives min/max bounds for periodic
        variables in HILLS and COLVAR."""
        flag = self.settings.get(f"periodic_{name}")
        return flag.lower() == "true" if flag is not None else f"min_{name}" in self.settings

    def bounds(self, name: str) -> tuple[float, float]:
        try:
            return _number(self.settings[f"min_{name}"]), _number(self.settings[f"max_{name}"])
        except (KeyError, ValueError):
            return -math.pi, math.pi


def read_table(path: str | Path) -> PlumedTable:
    """Parse a PLUMED text file (appended restarts repeat the header; the columns must not change).
    A malformed last line without a final newline is a write cut short (the run was stopped) and
    is dropped, and said so; a malformed line elsewhere is an error."""
    path = Path(path)
    fields, settings, rows = None, {}, []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise PlumedError(f"cannot read PLUMED file {path}: {err}") from None
    lines = text.splitlines()
    cut = None
    for number, line in enumerate(lines, 1):
        words = line.split()
        if not words:
            continue
        if words[0] == "#!" and len(words) > 1 and words[1] == "FIELDS":
            if fields is not None and words[2:] != fields:
                raise PlumedError(f"{path}: line {number}: the columns change ({' '.join(words[2:])})")
            fields = words[2:]
        elif words[0] == "#!" and len(words) > 3 and words[1] == "SET":
            settings[words[2]] = words[3]
        elif words[0].startswith("#"):
            continue
        else:
            if fields is None:
                raise PlumedError(f"{path}: not a PLUMED file (no '#! FIELDS' line before the numbers)")
            unfinished = number == len(lines) and not text.endswith("\n")
            try:
                if len(words) != len(fields):
                    raise PlumedError(f"{path}: line {number} has {len(words)} values for {len(fields)} columns")
                try:
                    rows.append([float(w) for w in words])
                except ValueError:
                    raise PlumedError(f"{path}: line {number} holds something that is not a number") from None
            except PlumedError:
                if not unfinished:
                    raise
                cut = number
    if fields is None:
        raise PlumedError(f"{path}: not a PLUMED file (no '#! FIELDS' line)")
    if not rows:
        raise PlumedError(f"{path}: no data rows")
    return PlumedTable(path, fields, settings, np.array(rows), cut)


def is_plumed_file(path: str | Path) -> bool:
    """Whether ``path`` starts like a PLUMED output (its first line is ``#! FIELDS ...``)."""
    try:
        with open(path, "rb") as f:
            return f.readline().startswith(b"#! FIELDS")
    except OSError:
        return False


def _phi_psi(names: list[str], path: Path) -> tuple[str, str]:
    """The phi and psi variables among ``names``: by name when they are called so, else in order."""
    if len(names) != 2:
        raise PlumedError(f"{path}: holds {len(names)} collective variables ({' '.join(names)}); phi and psi need 2")
    by_name = [next((n for n in names if n.split(".")[-1].lower() == want), None) for want in ("phi", "psi")]
    return tuple(by_name) if all(by_name) else tuple(names)


# ---------------------------------------------------------------- HILLS


@dataclass
class Hills:
    """The hills of a metadynamics run: centres [K, 2] (rad), widths [K, 2] (rad), heights [K]
    as written (energy unit of the file), bias factor gamma (None: not well-tempered), and
    which of the two variables are periodic, with their periods."""

    path: Path
    names: tuple[str, str]
    centres: np.ndarray
    sigmas: np.ndarray
    heights: np.ndarray
    bias_factor: float | None
    periods: tuple[float | None, float | None]
    cut_last_line: int | None = None  # an unfinished last line that was dropped

    def evaluate(self, phi_rad: np.ndarray, psi_rad: np.ndarray, chunk: int = 256) -> np.ndarray:
        """sum_k w_k G_k on the grid phi x psi: [len(phi), len(psi)], in the file's energy unit.

        Separable: G_k(phi, psi) = g_k(phi) g_k(psi), so the sum is A^T B with A [K, n_phi] and
        B [K, n_psi]; taken in chunks of hills so memory stays small for long runs."""
        total = np.zeros((len(phi_rad), len(psi_rad)))
        for first in range(0, len(self.heights), chunk):
            part = slice(first, first + chunk)
            a = self._gaussian(phi_rad, 0, part) * self.heights[part, None]
            b = self._gaussian(psi_rad, 1, part)
            total += a.T @ b
        return total

    def _gaussian(self, x: np.ndarray, axis: int, part: slice) -> np.ndarray:
        d = np.asarray(x, float)[None, :] - self.centres[part, axis, None]
        period = self.periods[axis]
        if period is not None:  # minimum image, as PLUMED's difference() on a periodic variable
            d -= period * np.round(d / period)
        return np.exp(-0.5 * (d / self.sigmas[part, axis, None]) ** 2)

    def surface(self, convention: str = PAPER_CONVENTION, phi_rad: np.ndarray | None = None,
                psi_rad: np.ndarray | None = None, energy_to_kJ_mol: float = 1.0) -> FreeEnergySurface:
        """The FES of ``convention`` on the grid (default: PLUMED's 60 x 60 periodic grid over
        [-pi, pi), points -pi + k 2pi/60, as ``sum_hills --bin 60,60`` gives), zero minimum, kJ/mol."""
        check_convention(convention)
        phi_rad = plumed_grid_points() if phi_rad is None else np.asarray(phi_rad, float)
        psi_rad = plumed_grid_points() if psi_rad is None else np.asarray(psi_rad, float)
        free = -self.evaluate(phi_rad, psi_rad)
        if convention == "negative_bias":
            if self.bias_factor is None:
                raise PlumedError(f"{self.path}: no biasf column, so the hills are not well-tempered and the bias is "
                                  "the free-energy estimate itself: use the free_energy convention")
            free *= (self.bias_factor - 1.0) / self.bias_factor
        free = (free - free.min()) * energy_to_kJ_mol
        source = f"PLUMED hills {self.path} ({len(self.heights)} hills" + (
            f", bias factor {self.bias_factor:g}" if self.bias_factor else "") + (
            f"; unfinished line {self.cut_last_line} dropped)" if self.cut_last_line else ")")
        return FreeEnergySurface(np.degrees(phi_rad), np.degrees(psi_rad), free, source=source, convention=convention)


def plumed_grid_points(bins: int = 60, low: float = -math.pi, high: float = math.pi) -> np.ndarray:
    """Points of PLUMED's periodic grid of ``bins`` bins over [low, high): low + k (high - low)/bins."""
    return low + (high - low) * np.arange(bins) / bins


def read_hills(path: str | Path) -> Hills:
    """A HILLS file of two variables (``time cv1 cv2 sigma_cv1 sigma_cv2 height [biasf]``)."""
    table = read_table(path)
    if table.settings.get("multivariate", "false").lower() == "true":
        raise PlumedError(f"{table.path}: multivariate hills (correlated widths) are not supported")
    names = [f for f in table.fields if f"sigma_{f}" in table.fields]
    if "height" not in table.fields or not names:
        raise PlumedError(f"{table.path}: not a HILLS file (needs sigma_<cv> and height columns; has "
                          f"{' '.join(table.fields)})")
    phi, psi = _phi_psi(names, table.path)
    sigmas = np.stack([table.column(f"sigma_{phi}"), table.column(f"sigma_{psi}")], axis=1)
    if (sigmas <= 0).any():
        raise PlumedError(f"{table.path}: a hill has a width of zero or less")
    bias_factor = None
    if "biasf" in table.fields:
        factors = np.unique(table.column("biasf"))
        if len(factors) != 1:
            raise PlumedError(f"{table.path}: the bias factor changes within the file ({', '.join(map(str, factors))})")
        bias_factor = float(factors[0]) if factors[0] > 1.0 else None  # PLUMED writes -F directly for gamma 1

    def period(name):
        if not table.is_periodic(name):
            return None
        low, high = table.bounds(name)
        return high - low

    return Hills(table.path, (phi, psi), np.stack([table.column(phi), table.column(psi)], axis=1), sigmas,
                 table.column("height"), bias_factor, (period(phi), period(psi)), table.cut_last_line)


# ---------------------------------------------------------------- fes.dat grids


def read_grid(path: str | Path, convention: str = PAPER_CONVENTION, energy_to_kJ_mol: float = 1.0) -> FreeEnergySurface:
    """A 2-D PLUMED grid (``sum_hills`` output: ``phi psi file.free [der_phi der_psi]``, first
    variable fastest). ``convention``: what the file holds (``sum_hills`` without ``--negbias``:
    free_energy). Shifted to a zero minimum, kJ/mol."""
    check_convention(convention)
    table = read_table(path)
    if len(table.fields) < 3:
        raise PlumedError(f"{table.path}: a free-energy grid needs two variables and a value ({' '.join(table.fields)})")
    value = table.fields[2]
    phi, psi = _phi_psi(table.fields[:2], table.path)
    x, y = table.column(table.fields[0]), table.column(table.fields[1])
    nx, ny = len(np.unique(np.round(x, 9))), len(np.unique(np.round(y, 9)))
    if nx * ny != len(x):
        raise PlumedError(f"{table.path}: {len(x)} rows are not a full {nx} x {ny} grid")
    values = table.column(value).reshape(ny, nx)  # second variable slowest
    if not (np.allclose(x.reshape(ny, nx), x[:nx][None, :]) and np.allclose(y.reshape(ny, nx), y[::nx][:, None])):
        raise PlumedError(f"{table.path}: rows are not ordered as a PLUMED grid (first variable fastest)")
    axes = {table.fields[0]: x[:nx], table.fields[1]: y[::nx]}
    phi_rad, psi_rad = axes[phi], axes[psi]
    surface = values.T if phi == table.fields[0] else values  # -> [phi, psi]
    if not np.isfinite(surface).all():
        raise PlumedError(f"{table.path}: the grid holds non-finite values")
    surface = (surface - surface.min()) * energy_to_kJ_mol
    return FreeEnergySurface(np.degrees(phi_rad), np.degrees(psi_rad), surface,
                             source=f"PLUMED grid {table.path} (column {value})", convention=convention)


# ---------------------------------------------------------------- COLVAR


def read_colvar(path: str | Path) -> tuple[np.ndarray, np.ndarray, str]:
    """phi and psi samples (degrees) of a COLVAR file, and the names used. A COLVAR that records
    a metadynamics bias (a ``*.bias`` column) holds biased samples, refused: their histogram is
    not the free energy (use the run's HILLS)."""
    table = read_table(path)
    biased = [f for f in table.fields if f.endswith(".bias") or f.endswith(".rbias")]
    if biased:
        raise PlumedError(f"{table.path}: records the bias {biased[0]}: its samples are biased, and their histogram "
                          "is not the free energy; give the run's HILLS instead")
    names = [f for f in table.fields if f != "time"]
    if len(names) > 2:
        wanted = [n for n in names if n.split(".")[-1].lower() in ("phi", "psi")]
        names = wanted if len(wanted) == 2 else names
    phi, psi = _phi_psi(names, table.path)
    return np.degrees(table.column(phi)), np.degrees(table.column(psi)), f"{phi}, {psi}"
