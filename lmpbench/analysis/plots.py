"""PNG plots of the curves ``analyze`` writes to curves.npz (matplotlib, no display needed).

One figure per kind of curve, each with the reference's curve overlaid when there is one:
partial RDFs g(r), the distance histogram h(r), MSDs against lag, and the 1-D PMFs of phi and
psi. Reads only the curves file, so it works on any analysis already written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_curves(curves_file: str | Path, out: str | Path | None = None) -> list[Path]:
    """Write ``rdf.png``, ``h_r.png``, ``msd.png``, ``pmf.png`` (those the curves allow) to
    ``out`` (default: beside the curves file); returns the files written."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on clusters and CI
    import matplotlib.pyplot as plt

    curves_file = Path(curves_file)
    out = Path(out) if out is not None else curves_file.parent
    with np.load(curves_file) as data:
        curves = {k: data[k] for k in data.files}
    written = []

    def save(fig, name):
        path = out / name
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)

    pairs = sorted(k[2:] for k in curves if k.startswith("g_") and not k.startswith("g_ref_"))
    if pairs and "r" in curves:
        fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 3.4), squeeze=False)
        for ax, pair in zip(axes[0], pairs):
            ax.plot(curves["r"], curves[f"g_{pair}"], label="trajectory")
            if f"g_ref_{pair}" in curves:
                ax.plot(curves["r"], curves[f"g_ref_{pair}"], "--", label="reference")
            ax.set(xlabel="r (Å)", ylabel="g(r)", title=pair)
            ax.legend()
        save(fig, "rdf.png")
    if "h" in curves:
        fig, ax = plt.subplots(figsize=(4.8, 3.4))
        ax.plot(curves["r_h"], curves["h"], label="trajectory")
        if "h_ref" in curves:
            ax.plot(curves["r_h"], curves["h_ref"], "--", label="reference")
        ax.set(xlabel="r (Å)", ylabel="h(r) (1/Å)", title="interatomic distances")
        ax.legend()
        save(fig, "h_r.png")
    msds = sorted(k for k in curves if k.startswith("msd_") and k != "msd_lag_ps")
    if msds and "msd_lag_ps" in curves:
        fig, ax = plt.subplots(figsize=(4.8, 3.4))
        for key in msds:
            ax.plot(curves["msd_lag_ps"], curves[key], label=key[4:])
        ax.set(xlabel="lag (ps)", ylabel="MSD (Å²)", title="mean-squared displacement")
        ax.legend()
        save(fig, "msd.png")
    if "pmf_phi" in curves:
        fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4))
        for ax, axis in zip(axes, ("phi", "psi")):
            grid = curves[f"{axis}_deg"]
            ax.plot(grid, curves[f"pmf_{axis}"], label="trajectory")
            if f"pmf_ref_{axis}" in curves:
                ax.plot(grid, curves[f"pmf_ref_{axis}"], "--", label="reference")
            ax.set(xlabel=f"{axis} (degrees)", ylabel="PMF (kJ/mol)", title=axis)
            ax.legend()
        save(fig, "pmf.png")
    return written
