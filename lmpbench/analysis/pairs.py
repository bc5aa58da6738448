"""Counts of atom pairs by distance bin and type pair, with a cell list (compiled by numba).

``pair_counts(frame, r_max, bins)[a, b, k]`` is the number of ordered pairs (i, j), i != j,
type(i) = a, type(j) = b (LAMMPS type numbers, index 0 unused), whose distance falls in bin
k = floor(r / (r_max / bins)) of (0, r_max]: the minimum-image distance along periodic
directions, the plain distance along the others.

Why it is exact in any triclinic cell: cells are at least r_max wide along each direction
(face to face), so two atoms closer than r_max sit in the same or neighbouring cells, the
neighbour taken across the boundary with the lattice vector crossed. With r_max at most half
the cell's smallest width (``smallest_width``), two images of one pair differ by at least
2 r_max, so at most one image is closer than r_max: the 27 (cell, image) neighbours of a
cell find every pair exactly once, also with only two cells along a direction, where the
neighbours on both sides are the same cell seen through different images.

One pass over the frame gives every type pair, so the partial RDFs of a frame share it
(cached on the frame).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from lmpbench.analysis.trajectory import Frame


def _face_widths(inverse: np.ndarray) -> np.ndarray:
    """Distances between opposite faces of the cell (Å) from the inverse of its rows:
    1 / |reciprocal vector|, per direction."""
    return 1.0 / np.sqrt((inverse**2).sum(axis=0))


def smallest_width(cell: np.ndarray) -> float:
    """The smallest distance between opposite faces of the cell (Å)."""
    return float(_face_widths(np.linalg.inv(cell)).min())


@njit(cache=True)
def _neighbour(c, offset, n, periodic):
    """Cell c + offset along one direction: (cell, lattice vectors crossed, exists)."""
    k = c + offset
    if 0 <= k < n:
        return k, 0, True
    if not periodic:
        return k, 0, False
    shift = -1 if k < 0 else 1
    return k - shift * n, shift, True


@njit(cache=True)
def _count_pairs(cart, grid, types, cell, pbc, ncells, r_max, bins, ntypes, counts):
    """cart: positions, wrapped into the cell along periodic directions; grid: the same in
    [0, 1] per direction, for the cell of each atom. Adds each unordered pair once to
    counts[(type_a * ntypes + type_b) * bins + bin]."""
    n = cart.shape[0]
    nx, ny, nz = ncells[0], ncells[1], ncells[2]
    # counting sort of the atoms into cells
    owner = np.empty(n, np.int64)
    for i in range(n):
        cx = min(max(int(grid[i, 0] * nx), 0), nx - 1)
        cy = min(max(int(grid[i, 1] * ny), 0), ny - 1)
        cz = min(max(int(grid[i, 2] * nz), 0), nz - 1)
        owner[i] = (cx * ny + cy) * nz + cz
    start = np.zeros(nx * ny * nz + 1, np.int64)
    for i in range(n):
        start[owner[i] + 1] += 1
    for k in range(nx * ny * nz):
        start[k + 1] += start[k]
    fill = start[:-1].copy()
    x = np.empty((n, 3))
    t = np.empty(n, np.int64)
    for i in range(n):
        k = fill[owner[i]]
        x[k] = cart[i]
        t[k] = types[i]
        fill[owner[i]] += 1
    r2max = r_max * r_max
    inv_width = bins / r_max
    home_c = np.empty(3, np.int64)
    for home in range(nx * ny * nz):
        home_c[0], home_c[1], home_c[2] = home // (ny * nz), (home // nz) % ny, home % nz
        for ox in range(-1, 2):
            kx, sx, inside_x = _neighbour(home_c[0], ox, nx, pbc[0])
            for oy in range(-1, 2):
                ky, sy, inside_y = _neighbour(home_c[1], oy, ny, pbc[1])
                for oz in range(-1, 2):
                    kz, sz, inside_z = _neighbour(home_c[2], oz, nz, pbc[2])
                    if not (inside_x and inside_y and inside_z):
                        continue
                    other = (kx * ny + ky) * nz + kz
                    if other < home:
                        continue  # visited from the other cell; each (cell pair, image) once
                    # the other cell's image: shifted by the lattice vector crossed
                    shx = sx * cell[0, 0] + sy * cell[1, 0] + sz * cell[2, 0]
                    shy = sx * cell[0, 1] + sy * cell[1, 1] + sz * cell[2, 1]
                    shz = sx * cell[0, 2] + sy * cell[1, 2] + sz * cell[2, 2]
                    for a in range(start[home], start[home + 1]):
                        xa, ya, za = x[a, 0] - shx, x[a, 1] - shy, x[a, 2] - shz
                        row = t[a] * ntypes
                        b0 = a + 1 if other == home else start[other]
                        for b in range(b0, start[other + 1]):
                            dx, dy, dz = x[b, 0] - xa, x[b, 1] - ya, x[b, 2] - za
                            r2 = dx * dx + dy * dy + dz * dz
                            if r2 < r2max:
                                k = int(np.sqrt(r2) * inv_width)
                                if k < bins:
                                    counts[(row + t[b]) * bins + k] += 1


def pair_counts(frame: Frame, r_max: float, bins: int, types: frozenset[int] | None = None) -> np.ndarray:
    """[T+1, T+1, bins] ordered-pair counts of ``frame`` (see the module) among the atoms of
    ``types`` (None: all atoms; other rows are zero). Cached on the frame: a later call for a
    subset of the types is served from an earlier, larger count."""
    cached = frame.cache.setdefault("pair_counts", {})
    for (cached_r_max, cached_bins, cached_types), counts in cached.items():
        if (cached_r_max, cached_bins) == (r_max, bins) and (
                cached_types is None or (types is not None and types <= cached_types)):
            return counts
    cell = np.ascontiguousarray(frame.cell, dtype=np.float64)
    inverse = np.linalg.inv(cell)
    widths = _face_widths(inverse)
    if any(frame.pbc) and r_max > widths.min() / 2 + 1e-9:
        raise ValueError(f"r_max {r_max} Å exceeds half the cell's smallest width "
                         f"({widths.min() / 2:.3f} Å) at step {frame.step}")
    positions, atom_types = frame.positions, frame.types
    if types is not None:
        chosen = np.zeros(len(atom_types), bool)
        for t in types:
            chosen |= atom_types == t
        positions, atom_types = positions[chosen], atom_types[chosen]
    ntypes = int(frame.types.max()) + 1
    half = np.zeros(ntypes * ntypes * bins, dtype=np.int64)
    if len(positions) > 1:
        _count_frame(cell, inverse, widths, frame, positions, atom_types, r_max, bins, ntypes, half)
    half = half.reshape(ntypes, ntypes, bins)
    counts = half + half.transpose(1, 0, 2)  # both orders of every pair
    cached[(r_max, bins, types)] = counts
    return counts


def _count_frame(cell, inverse, widths, frame, positions, atom_types, r_max, bins, ntypes, half) -> None:
    frac = (positions - frame.origin) @ inverse
    pbc = np.array(frame.pbc, dtype=np.bool_)
    if pbc.all():
        grid = wrapped = frac - np.floor(frac)
    else:  # along open directions atoms may sit outside the box: span them instead
        wrapped = np.where(pbc, frac - np.floor(frac), frac)
        lo, hi = frac.min(axis=0), frac.max(axis=0)
        grid = np.where(pbc, wrapped, (frac - lo) / np.maximum(hi - lo, 1e-300))
        widths = np.where(pbc, widths, (hi - lo) * widths)
    ncells = np.maximum(1, np.floor(widths / r_max)).astype(np.int64)
    _count_pairs(wrapped @ cell, grid, atom_types.astype(np.int64, copy=False), cell, pbc, ncells,
                 float(r_max), int(bins), ntypes, half)
