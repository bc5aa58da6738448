"""Wrapped or unwrapped positions in a periodic cell: tell them apart from the data, and
unwrap a wrapped trajectory from its consecutive frames.

A trajectory file that holds no image flags (ASE .traj, extxyz) does not say whether its
positions were wrapped into the cell. ASE MD does not wrap (the MDsim runs' ``atoms.traj``
hold unwrapped positions); extxyz datasets usually are wrapped. The data tell, from the
fractional coordinates s = x · cell⁻¹ on the periodic axes:

- positions outside the cell (some s < 0 or s ≥ 1, beyond ``INSIDE_TOLERANCE``): not wrapped;
- a jump of more than half a cell between consecutive frames (|Δs| > 1/2): wrapped (an atom
  that crossed a boundary reappeared on the other side);
- neither: no atom crossed a boundary, and wrapped and unwrapped positions are the same;
- both: contradictory (frames too far apart, or wrapped into another cell): the user says
  (``--wrapped`` / ``--unwrapped``); until then the positions are used as they are, which
  suits RDFs, and an MSD is refused with that request.

Unwrapping (``Unwrapper``): x_u(t) = x_u(t-1) + (Δs - round(Δs)) · cell(t), the minimum-image
displacement between consecutive frames, on the periodic axes. It is right when no atom
moves half a cell or more between frames; since the data cannot show such a move, a
minimum-image step larger than ``MAX_UNWRAP_STEP`` of a cell on any axis is refused as
frames too far apart in time to unwrap (``Unwrapper`` raises; ``WrapEvidence.unwrappable`` says
so beforehand, and a reader then keeps the wrapped positions, marked as such, for RDFs).
"""

from __future__ import annotations

import numpy as np

INSIDE_TOLERANCE = 1e-6  # fractional; wrapped files written in text may sit a rounding off [0, 1)
MAX_UNWRAP_STEP = 0.25  # largest minimum-image step (fraction of a cell) trusted when unwrapping


class UnwrapError(ValueError):
    """Positions cannot be classified or unwrapped; the message says why and what to give."""


def _fractional(positions: np.ndarray, cell: np.ndarray) -> np.ndarray:
    return np.linalg.solve(cell.T, positions.T).T


def is_periodic_cell(cell: np.ndarray, pbc) -> bool:
    """Whether the positions can be wrapped at all: some periodic axis and a full-rank cell."""
    return any(pbc) and abs(np.linalg.det(cell)) > 1e-9


class WrapEvidence:
    """Streams frames (positions [N, 3], cell [3, 3], pbc) and says whether they were wrapped.

    ``accumulate(positions, cell, pbc)``, then ``verdict``: "unwrapped", "wrapped", "no
    boundary crossing" (the positions are the same either way) or "ambiguous", with
    ``reason``; ``unwrappable``: whether wrapped frames are close enough to unwrap.
    """

    def __init__(self):
        self.outside_frame: int | None = None  # first frame with a position outside the cell
        self.jump_frame: int | None = None  # first frame that jumps more than half a cell
        self.largest_step, self.largest_step_frame = 0.0, None  # largest minimum-image step (fraction of a cell)
        self.frames = 0
        self._previous: np.ndarray | None = None

    def accumulate(self, positions: np.ndarray, cell: np.ndarray, pbc) -> "WrapEvidence":
        axes = np.asarray(pbc, bool)
        s = _fractional(positions, cell)[:, axes]
        if self.outside_frame is None and ((s < -INSIDE_TOLERANCE) | (s >= 1.0 + INSIDE_TOLERANCE)).any():
            self.outside_frame = self.frames
        if self._previous is not None and len(s) == len(self._previous) and s.size:
            step = s - self._previous
            if self.jump_frame is None and (np.abs(step) > 0.5).any():
                self.jump_frame = self.frames
            largest = float(np.abs(step - np.round(step)).max())
            if largest > self.largest_step:
                self.largest_step, self.largest_step_frame = largest, self.frames
        self._previous = s
        self.frames += 1
        return self

    @property
    def verdict(self) -> str:
        if self.outside_frame is not None and self.jump_frame is not None:
            return "ambiguous"
        if self.outside_frame is not None:
            return "unwrapped"
        if self.jump_frame is not None:
            return "wrapped"
        return "no boundary crossing"

    @property
    def unwrappable(self) -> bool:
        return self.largest_step <= MAX_UNWRAP_STEP

    @property
    def reason(self) -> str:
        verdict = self.verdict
        if verdict == "ambiguous":
            return (f"positions lie outside the cell (frame {self.outside_frame}: not wrapped) yet jump by more than "
                    f"half a cell between consecutive frames (frame {self.jump_frame}: wrapped, or frames too far "
                    "apart); used as they are: say which with --wrapped or --unwrapped")
        if verdict == "wrapped" and not self.unwrappable:
            return (f"wrapped (jumps of more than half a cell, first at frame {self.jump_frame}), but an atom moves "
                    f"{self.largest_step:.2f} of the cell between frames {self.largest_step_frame - 1} and "
                    f"{self.largest_step_frame}: too far apart in time to unwrap reliably (limit {MAX_UNWRAP_STEP}), "
                    "so the positions stay wrapped; save frames more often, or give unwrapped positions")
        if verdict == "unwrapped":
            return f"positions outside the cell (first at frame {self.outside_frame}), no jump of half a cell"
        if verdict == "wrapped":
            return (f"all positions inside the cell, jumps of more than half a cell between consecutive frames "
                    f"(first at frame {self.jump_frame})")
        return f"all positions inside the cell and no jump of half a cell in {self.frames} frames"


class Unwrapper:
    """Unwraps consecutive frames of a wrapped periodic trajectory: ``unwrap(positions, cell,
    pbc)`` returns the unwrapped positions of this frame (the first frame is kept as it is).
    ``where`` names the trajectory in errors."""

    def __init__(self, where: str = "trajectory", max_step: float = MAX_UNWRAP_STEP):
        self.where, self.max_step = where, max_step
        self.frames = 0
        self._previous_s: np.ndarray | None = None
        self._unwrapped: np.ndarray | None = None
        self.largest_step = 0.0  # largest minimum-image step seen, fraction of a cell

    def unwrap(self, positions: np.ndarray, cell: np.ndarray, pbc) -> np.ndarray:
        s = _fractional(positions, cell)
        if self._previous_s is None:
            self._unwrapped = positions.copy()
        else:
            if len(s) != len(self._previous_s):
                raise UnwrapError(f"{self.where}: the number of atoms changed at frame {self.frames}; cannot unwrap")
            step = s - self._previous_s
            axes = np.asarray(pbc, bool)
            step[:, axes] -= np.round(step[:, axes])
            largest = float(np.abs(step[:, axes]).max()) if axes.any() and len(step) else 0.0
            if largest > self.max_step:
                raise UnwrapError(
                    f"{self.where}: an atom moved {largest:.2f} of the cell between frames {self.frames - 1} and "
                    f"{self.frames}; frames this far apart in time cannot be unwrapped reliably (limit "
                    f"{self.max_step} of a cell): save frames more often, or give unwrapped positions")
            self.largest_step = max(self.largest_step, largest)
            self._unwrapped = self._unwrapped + step @ cell
        self._previous_s = s
        self.frames += 1
        return self._unwrapped.copy()
