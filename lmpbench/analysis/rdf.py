"""Radial distribution functions and distance histograms.

``RDF`` (periodic systems; the benchmark's water and LiPS metric):
    g_AB(r_k) = C_k / (F * rho_AB * V_k),  V_k = 4/3 pi (r_{k+1}^3 - r_k^3)
where C_k counts ordered pairs (i in A, j in B, i != j) at minimum-image distance in bin k
summed over F frames. Paper parity (``normalization="paper"``): rho_AB = N_A N_B / V, i.e.
all N*N pair entries per frame, as freud and ovito normalise. Variant ``"n_n_minus_1"``:
rho_AA = N_A (N_A - 1) / V for A == B (MDAnalysis's exclusion convention); labelled in the
results. Distances in Å, 500 bins on (0, r_max] by default; r_max may not exceed half the
cell's smallest width (beyond it the minimum image is not unique). The pair counts come from
``pairs.pair_counts``, one cell-list pass per frame shared by all partial RDFs of the frame.

``DistanceHistogram`` (molecules; the benchmark's h(r) for MD17): all interatomic distances
of each frame, no periodic images, density-normalised histogram (integral 1), 500 bins on
(0, 10] Å by default.
"""

from __future__ import annotations

import numpy as np

from lmpbench.analysis.pairs import pair_counts
from lmpbench.analysis.trajectory import Frame

NORMALIZATIONS = ("paper", "n_n_minus_1")


def mae(x: np.ndarray, y: np.ndarray, factor: float) -> float:
    """The benchmark's curve error: mean(|x - y|) * factor (an L1 integral over the axis)."""
    return float(np.mean(np.abs(np.asarray(x) - np.asarray(y))) * factor)


class _Histogram:
    """Distance counts in equal bins on (0, r_max], accumulated frame by frame."""

    def __init__(self, r_max: float, bins: int):
        self.edges = np.linspace(0.0, r_max, bins + 1)
        self._counts = np.zeros(bins)
        self.frames = 0

    @property
    def r(self) -> np.ndarray:
        """Bin centres (Å)."""
        return 0.5 * (self.edges[1:] + self.edges[:-1])

    def _require_frames(self) -> None:
        if self.frames == 0:
            raise RuntimeError(f"{type(self).__name__} has seen no frame: call accumulate() first")


class RDF(_Histogram):
    """Partial RDF between atoms of types ``a`` and ``b`` (LAMMPS type numbers; None = all)."""

    def __init__(self, r_max: float = 6.0, bins: int = 500, a: int | None = None, b: int | None = None,
                 normalization: str = "paper"):
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        super().__init__(r_max, bins)
        self.r_max, self.a, self.b, self.normalization = r_max, a, b, normalization
        self._density_sum = 0.0  # sum over frames of rho_AB

    def accumulate(self, frame: Frame) -> "RDF":
        needed = None if self.a is None or self.b is None else frozenset((self.a, self.b))
        counts = pair_counts(frame, self.r_max, len(self._counts), needed)
        if max(self.a or 0, self.b or 0) < len(counts):  # else a type absent from the frame: no pairs
            selected = counts[slice(None) if self.a is None else self.a, slice(None) if self.b is None else self.b]
            self._counts += selected.reshape(-1, selected.shape[-1]).sum(axis=0)
        n_a = len(frame.types) if self.a is None else int(np.count_nonzero(frame.types == self.a))
        n_b = len(frame.types) if self.b is None else int(np.count_nonzero(frame.types == self.b))
        same = self.a == self.b
        pairs = n_a * (n_b - 1) if (same and self.normalization == "n_n_minus_1") else n_a * n_b
        self._density_sum += pairs / frame.volume
        self.frames += 1
        return self

    def merge(self, other: "RDF") -> "RDF":
        """Add the frames another RDF of the same pair, bins and normalisation has seen."""
        self._counts += other._counts
        self._density_sum += other._density_sum
        self.frames += other.frames
        return self

    @property
    def g(self) -> np.ndarray:
        self._require_frames()
        shell = 4.0 / 3.0 * np.pi * (self.edges[1:] ** 3 - self.edges[:-1] ** 3)
        return self._counts / (self._density_sum * shell)


class DistanceHistogram(_Histogram):
    """h(r): density-normalised histogram of all interatomic distances (no images)."""

    def __init__(self, r_max: float = 10.0, bins: int = 500):
        super().__init__(r_max, bins)

    def accumulate(self, frame: Frame) -> "DistanceHistogram":
        from scipy.spatial.distance import pdist

        self._counts += np.histogram(pdist(frame.positions), bins=self.edges)[0]
        self.frames += 1
        return self

    @property
    def h(self) -> np.ndarray:
        self._require_frames()
        return self._counts / (self._counts.sum() * np.diff(self.edges))
