"""Mean-squared displacement and diffusivity.

MSD(tau) = < |r_i(t + tau) - r_i(t)|^2 >, averaged over the selected atoms and over every
time origin t (F - lag origins for a lag of ``lag`` frames; the reference code's origin
count is off by one, this one is not), from unwrapped positions with the selection's centre
of mass removed per frame, as LAMMPS's ``compute msd com yes`` does: weighted by mass, so a
selection of several species needs their masses (one species: any mass gives the plain
mean). The MSD itself is the plain mean over the selected atoms.

Exact and streaming: with x(t) the positions and d(t) = |x(t)|^2, per atom
    MSD(m) = [S1(m) - 2 S2(m)] / (F - m),  S1(m) = sum_{t<F-m} d(t) + sum_{t>=m} d(t),
    S2(m) = sum_{t<F-m} x(t) . x(t+m).
S1 needs only the totals and the first and last ``max_lag`` + 1 values of d. S2 is accumulated
block by block: frames come in blocks of B >= max_lag, and a block's products reach at most
into the next block, so block k is correlated (by FFT, zero-padded: no wrap-around) with
blocks k and k+1 as soon as k+1 is complete. Memory is two blocks, O(max_lag x atoms),
whatever the trajectory's length. Without ``max_lag`` every lag is computed and the whole
trajectory is one block.

The paper's diffusivity: D(tau) = MSD(tau) / (6 tau) at a fixed lag. The fitted one: per
atom, the slope of a least-squares line through its MSD over a lag window, divided by 6;
D is their mean and its standard error the spread over atoms / sqrt(atoms). Units: Å^2/ps
in, 1e-9 m^2/s = 10 Å^2/ps out (``D_1e9_m2_s``).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from lmpbench.analysis.trajectory import Frame

A2_PER_PS_TO_1E9_M2_S = 0.1  # 1 Å^2/ps = 1e-8 m^2/s = 10 x 1e-9 m^2/s -> divide by 10
MIN_BLOCK_FRAMES = 32  # very short blocks would spend their time in per-block overhead
FFT_BYTES = 1 << 25  # about 32 MB per transform


def _correlation(a: np.ndarray, following: np.ndarray | None, lags: int) -> np.ndarray:
    """sum_t a(t) . y(t + m) for m < lags, per atom, y = a followed by ``following``:
    a [Ta, N, 3] -> [lags, N]. Atoms are taken in groups so that the transforms stay near
    FFT_BYTES."""
    length = len(a) + (0 if following is None else len(following))
    n_fft = len(a) + max(length, lags)  # zero padding: no product wraps around
    group = max(1, FFT_BYTES // (n_fft * 3 * 16))
    out = np.empty((lags, a.shape[1]))
    for first in range(0, a.shape[1], group):
        atoms = slice(first, first + group)
        y = a[:, atoms] if following is None else np.concatenate([a[:, atoms], following[:, atoms]])
        fa = np.fft.rfft(a[:, atoms], n=n_fft, axis=0)
        fy = np.fft.rfft(y, n=n_fft, axis=0)
        out[:, atoms] = np.fft.irfft((fa.conj() * fy).sum(axis=2), n=n_fft, axis=0)[:lags]
    return out


class MSD:
    """Stream unwrapped positions of atoms of ``atom_type`` (a type, several, or None = all),
    then ``msd_A2``.

    ``max_lag`` (frames) bounds the lags computed and the memory used; None computes every lag
    and holds the whole trajectory of the selected atoms. ``masses`` ({type: mass}) weight the
    centre of mass; required when ``remove_com`` and the selection holds several types.
    """

    def __init__(self, atom_type: int | tuple[int, ...] | None = None, remove_com: bool = True,
                 max_lag: int | None = None, masses: dict[int, float] | None = None):
        self.atom_type, self.remove_com, self.max_lag = atom_type, remove_com, max_lag
        self.masses = dict(masses) if masses is not None else None
        self._select = None  # per-atom selection mask, from the first frame
        self._weights = None  # [N selected, 1] mass fractions of the centre of mass
        self.block_frames = None if max_lag is None else max(max_lag, MIN_BLOCK_FRAMES)
        self.frames = 0
        self.last_step: int | None = None
        self._block: np.ndarray | list | None = None  # the block being filled ([B, N, 3]; a list without max_lag)
        self._filled = 0  # frames in it
        self._previous: np.ndarray | None = None  # the last complete block, not yet correlated with its successor
        self._s2 = None  # [lags, N] sum of x(t).x(t+m) over the blocks done
        self._d_total = None  # [N] sum of d(t) over all frames
        self._d_head: list[np.ndarray] = []  # d(t) of the first max_lag + 1 frames
        self._d_tail: deque[np.ndarray] = deque(maxlen=None if max_lag is None else max_lag + 1)  # ... and the last
        self._result = None

    def accumulate(self, frame: Frame) -> "MSD":
        if not frame.unwrapped and any(frame.pbc):
            note = frame.extra.get("positions_note")  # why a reader could not unwrap them, when it says
            raise ValueError(f"MSD needs unwrapped positions (image flags or xu yu zu) at step {frame.step}"
                             + (f": {note}" if note else ""))
        if self._select is None or len(self._select) != len(frame.types):
            self._select = self._selection(frame)
        x = frame.positions[self._select]
        if self._d_total is not None and len(x) != len(self._d_total):
            raise ValueError(f"the number of selected atoms changed at step {frame.step}")
        if self._d_total is None:
            self._d_total = np.zeros(len(x))
            self._block = [] if self.block_frames is None else np.empty((self.block_frames, len(x), 3))
        if self.block_frames is None:
            self._block.append(np.empty((len(x), 3)))
        slot = self._block[self._filled]
        np.subtract(x, (self._weights * x).sum(axis=0) if self.remove_com else 0.0, out=slot)
        d = (slot * slot).sum(axis=1)
        self._d_total += d
        if self.max_lag is None or len(self._d_head) <= self.max_lag:
            self._d_head.append(d)
        self._d_tail.append(d)
        self._filled += 1
        self.frames += 1
        self.last_step = frame.step
        self._result = None
        if self._filled == self.block_frames:
            if self._previous is not None:
                self._add(_correlation(self._previous, self._block, self.max_lag + 1))
            # the full block becomes the previous one; the old previous's memory is refilled
            self._previous, self._block = self._block, (self._previous if self._previous is not None
                                                         else np.empty_like(self._block))
            self._filled = 0
        return self

    def _selection(self, frame: Frame) -> np.ndarray:
        """The selected atoms of the first frame, and their centre-of-mass weights."""
        wanted = None if self.atom_type is None else np.atleast_1d(self.atom_type)
        select = np.ones(len(frame.types), bool) if wanted is None else np.isin(frame.types, wanted)
        types = frame.types[select]
        if self.masses is not None:
            missing = sorted(set(types.tolist()) - set(self.masses))
            if missing:
                raise ValueError(f"MSD: no mass for atom type(s) {', '.join(map(str, missing))}")
            mass = np.array([self.masses[t] for t in types.tolist()], float)
        elif self.remove_com and len(np.unique(types)) > 1:
            raise ValueError("MSD with the centre of mass removed needs the masses of the selected types "
                             f"({', '.join(map(str, np.unique(types)))}): a centre of mass is mass-weighted")
        else:
            mass = np.ones(len(types))
        self._weights = (mass / mass.sum())[:, None] if len(mass) else mass[:, None]
        return select

    @property
    def lags(self) -> int:
        """Number of lags computed: 0 .. lags - 1 frames."""
        return self.frames if self.max_lag is None else min(self.max_lag + 1, self.frames)

    def _add(self, s2: np.ndarray) -> None:
        self._s2 = s2 if self._s2 is None else self._s2 + s2

    def per_atom_msd(self) -> np.ndarray:
        """[lags, atoms] MSD for lags 0 .. ``lags`` - 1, averaged over all time origins."""
        if self.frames < 2:
            raise RuntimeError("MSD needs at least two frames")
        if self._result is not None:
            return self._result
        lags = self.lags
        s2 = np.zeros((lags, len(self._d_total))) if self._s2 is None else self._s2[:lags].copy()
        # the blocks not yet correlated: the last complete one with the partial one, then the partial one
        current = None
        if self._filled:
            current = np.stack(self._block) if self.block_frames is None else self._block[:self._filled]
        block_lags = self.frames if self.max_lag is None else self.max_lag + 1
        if self._previous is not None:
            s2 += _correlation(self._previous, current, block_lags)[:lags]
        if current is not None:
            s2 += _correlation(current, None, block_lags)[:lags]
        # S1(m) = (total - last m values) + (total - first m values); the last m from the block(s) held
        head = np.cumsum(np.concatenate([np.zeros((1, len(self._d_total))), np.stack(self._d_head[:lags])]), axis=0)
        tail_d = np.stack(self._d_tail)[::-1]  # d(F-1), d(F-2), ...
        tail = np.cumsum(np.concatenate([np.zeros((1, tail_d.shape[1])), tail_d[:lags]]), axis=0)
        s1 = 2 * self._d_total - head[:lags] - tail[:lags]
        origins = (self.frames - np.arange(lags))[:, None]
        self._result = (s1 - 2 * s2) / origins
        return self._result

    def msd_A2(self) -> np.ndarray:
        return self.per_atom_msd().mean(axis=1)

    def diffusivity_at(self, lag_frames: int, frame_dt_ps: float) -> float:
        """The paper's D(tau) = MSD(tau) / (6 tau), in Å^2/ps."""
        msd = self.msd_A2()
        if not 0 < lag_frames < len(msd):
            raise ValueError(f"lag of {lag_frames} frames outside the 1..{len(msd) - 1} computed")
        return float(msd[lag_frames] / (6.0 * lag_frames * frame_dt_ps))

    def fitted_diffusivity(self, first_lag: int, last_lag: int, frame_dt_ps: float) -> tuple[float, float]:
        """(D, standard error) in Å^2/ps from per-atom linear fits over lags first..last."""
        per_atom = self.per_atom_msd()[first_lag:last_lag + 1]
        lags = np.arange(first_lag, last_lag + 1) * frame_dt_ps
        slopes = np.polyfit(lags, per_atom, 1)[0] / 6.0
        return float(slopes.mean()), float(slopes.std(ddof=1) / np.sqrt(len(slopes)))
