"""Mean-squared displacement and diffusivity.

MSD(tau) = < |r_i(t + tau) - r_i(t)|^2 >, averaged over the selected atoms and over every
time origin t (F - lag origins for a lag of ``lag`` frames; the reference code's origin
count is off by one, this one is not), from unwrapped positions with the selection's centre
of mass removed per frame (equal masses assumed: the benchmark selects one species).
Computed with the FFT algorithm (Calandrini et al.), exact.

The paper's diffusivity: D(tau) = MSD(tau) / (6 tau) at a fixed lag. The fitted one: per
atom, the slope of a least-squares line through its MSD over a lag window, divided by 6;
D is their mean and its standard error the spread over atoms / sqrt(atoms). Units: Å^2/ps
in, 1e-9 m^2/s = 10 Å^2/ps out (``D_1e9_m2_s``).
"""

from __future__ import annotations

import numpy as np

from lmpbench.analysis.trajectory import Frame

A2_PER_PS_TO_1E9_M2_S = 0.1  # 1 Å^2/ps = 1e-8 m^2/s = 10 x 1e-9 m^2/s -> divide by 10


class MSD:
    """Collect unwrapped positions of atoms of ``atom_type`` (None = all), then ``msd_A2``."""

    def __init__(self, atom_type: int | None = None, remove_com: bool = True):
        self.atom_type, self.remove_com = atom_type, remove_com
        self._positions: list[np.ndarray] = []
        self.steps: list[int] = []

    def accumulate(self, frame: Frame) -> "MSD":
        if not frame.unwrapped and any(frame.pbc):
            raise ValueError(f"MSD needs unwrapped positions (image flags or xu yu zu) at step {frame.step}")
        x = frame.positions if self.atom_type is None else frame.positions[frame.types == self.atom_type]
        if self._positions and len(x) != len(self._positions[0]):
            raise ValueError(f"the number of selected atoms changed at step {frame.step}")
        self._positions.append(x - x.mean(axis=0) if self.remove_com else x.copy())
        self.steps.append(frame.step)
        return self

    def per_atom_msd(self) -> np.ndarray:
        """[lags, atoms] MSD for every lag 0..F-1, averaged over all time origins."""
        if len(self._positions) < 2:
            raise RuntimeError("MSD needs at least two frames")
        x = np.stack(self._positions)  # [F, N, 3]
        nframes = x.shape[0]
        # MSD(m) = S1(m) - 2 S2(m); S2 the autocorrelation by FFT, S1 from running sums
        d = (x**2).sum(axis=2)  # [F, N]
        d = np.concatenate([d, np.zeros((1, d.shape[1]))])
        total = 2 * d.sum(axis=0)
        s1 = np.empty((nframes, x.shape[1]))
        for m in range(nframes):
            total = total - d[m - 1] - d[nframes - m]
            s1[m] = total / (nframes - m)
        n_fft = 2 * nframes
        f = np.fft.rfft(x, n=n_fft, axis=0)
        acf = np.fft.irfft(f * f.conj(), n=n_fft, axis=0)[:nframes].sum(axis=2)
        s2 = acf / (nframes - np.arange(nframes))[:, None]
        return s1 - 2 * s2

    def msd_A2(self) -> np.ndarray:
        return self.per_atom_msd().mean(axis=1)

    def diffusivity_at(self, lag_frames: int, frame_dt_ps: float) -> float:
        """The paper's D(tau) = MSD(tau) / (6 tau), in Å^2/ps."""
        msd = self.msd_A2()
        if not 0 < lag_frames < len(msd):
            raise ValueError(f"lag of {lag_frames} frames outside the trajectory's 1..{len(msd) - 1}")
        return float(msd[lag_frames] / (6.0 * lag_frames * frame_dt_ps))

    def fitted_diffusivity(self, first_lag: int, last_lag: int, frame_dt_ps: float) -> tuple[float, float]:
        """(D, standard error) in Å^2/ps from per-atom linear fits over lags first..last."""
        per_atom = self.per_atom_msd()[first_lag:last_lag + 1]
        lags = np.arange(first_lag, last_lag + 1) * frame_dt_ps
        slopes = np.polyfit(lags, per_atom, 1)[0] / 6.0
        return float(slopes.mean()), float(slopes.std(ddof=1) / np.sqrt(len(slopes)))
