"""Pictures of single frames: a system's first frame and a run's collapse frame.

Rendered with ovito's Tachyon renderer (software ray tracing; ovito 3.17 needs a Vulkan loader
for it: Debian's libvulkan1 and mesa-vulkan-drivers). When ovito cannot render, the frame is
drawn as a matplotlib 3-D scatter instead, and the returned method says so, for the page to
tell the reader. Frames are read with lmpbench's trajectory readers (LAMMPS dumps, ASE files).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# CPK-like colours for the elements of the benchmark systems; others grey
COLORS = {"H": (0.9, 0.9, 0.9), "C": (0.35, 0.35, 0.35), "N": (0.2, 0.3, 0.9), "O": (0.9, 0.1, 0.1),
          "S": (0.9, 0.8, 0.2), "P": (1.0, 0.5, 0.0), "Li": (0.6, 0.3, 0.9), "Cu": (0.8, 0.5, 0.2),
          "Zr": (0.5, 0.8, 0.8), "Si": (0.6, 0.6, 0.4), "Ni": (0.3, 0.8, 0.3)}
RADII = {"H": 0.35}  # Å; others 0.6


@dataclass
class Snapshot:
    file: Path
    step: int
    method: str  # "ovito Tachyon" or "matplotlib 3-D scatter (ovito failed: ...)"


def frame_at(trajectory: Path, elements: list, step: int | None = None):
    """The first frame, or the last frame at or before ``step`` (the collapse's), of a trajectory."""
    from lmpbench.analysis.trajectory import open_trajectory

    chosen = None
    for frame in open_trajectory(trajectory, elements or None):
        if chosen is None or step is None or frame.step <= step:
            chosen = frame
        if step is None or frame.step >= step:
            break
    return chosen


def render(frame, elements: list, path: Path, size=(420, 320)) -> Snapshot:
    """``frame`` as a PNG at ``path``: ovito, else matplotlib (the method says which and why)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _render_ovito(frame, elements, path, size)
        return Snapshot(path, frame.step, "ovito Tachyon")
    except Exception as err:  # ovito raises RuntimeError and others (no Vulkan, no renderer): any means fall back
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        _render_matplotlib(frame, elements, path, size)
        return Snapshot(path, frame.step, f"matplotlib 3-D scatter (ovito could not render: {reason[:160]})")


def _positions(frame) -> np.ndarray:
    """Positions wrapped into the cell along its periodic directions (dumps hold them unwrapped)."""
    xyz = np.asarray(frame.positions, dtype=float)
    periodic = np.array(frame.pbc, dtype=bool)
    if not periodic.any():
        return xyz
    fractional = (xyz - frame.origin) @ np.linalg.inv(np.asarray(frame.cell))
    fractional[:, periodic] %= 1.0
    return fractional @ np.asarray(frame.cell) + frame.origin


def _fills_cell(positions: np.ndarray, cell) -> bool:
    extent = positions.max(axis=0) - positions.min(axis=0)
    return bool(np.any(extent > 0.5 * np.linalg.norm(np.asarray(cell), axis=1)))


def _symbols(frame, elements: list) -> list:
    return [elements[t - 1] if 0 < t <= len(elements) else "X" for t in frame.types]


def _render_ovito(frame, elements, path, size) -> None:
    from ovito.data import DataCollection
    from ovito.pipeline import Pipeline, StaticSource
    from ovito.vis import TachyonRenderer, Viewport

    data = DataCollection()
    cell = np.zeros((3, 4))
    cell[:, :3] = np.asarray(frame.cell).T  # ovito: columns are the cell vectors, then the origin
    cell[:, 3] = frame.origin
    positions = _positions(frame)
    if _fills_cell(positions, frame.cell):  # a molecule in a large empty box is shown without it, zoomed on the atoms
        data.create_cell(cell, pbc=tuple(frame.pbc))
    particles = data.create_particles(count=len(frame.positions))
    particles.create_property("Position", data=positions)
    symbols = _symbols(frame, elements)
    names = sorted(set(symbols))
    types = particles.create_property("Particle Type", data=[names.index(s) + 1 for s in symbols])
    for i, name in enumerate(names, start=1):
        from ovito.data import ParticleType

        types.types.append(ParticleType(id=i, name=name, color=COLORS.get(name, (0.6, 0.6, 0.6)),
                                        radius=RADII.get(name, 0.6)))
    pipeline = Pipeline(source=StaticSource(data=data))
    pipeline.add_to_scene()
    try:
        viewport = Viewport(type=Viewport.Type.Perspective, camera_dir=(2, 1, -1))
        viewport.zoom_all(size=size)
        viewport.render_image(size=size, filename=str(path), renderer=TachyonRenderer(ambient_occlusion=False))
    finally:
        pipeline.remove_from_scene()


def _render_matplotlib(frame, elements, path, size) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    symbols = _symbols(frame, elements)
    xyz = _positions(frame)
    fig = plt.figure(figsize=(size[0] / 100, size[1] / 100))
    ax = fig.add_subplot(projection="3d")
    for name in sorted(set(symbols)):
        mask = np.array([s == name for s in symbols])
        ax.scatter(*xyz[mask].T, s=40 if name != "H" else 15, color=COLORS.get(name, (0.6, 0.6, 0.6)), label=name,
                   edgecolors="k", linewidths=0.3)
    ax.legend(fontsize=6)
    ax.set_axis_off()
    fig.savefig(path, dpi=100)
    plt.close(fig)
