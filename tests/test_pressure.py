"""The pressure tensor from fdotr equals a finite-difference strain derivative of the energy."""

import numpy as np
from conftest import mlff_lines
from lammps_helpers import NKTV2P_METAL, PRESSURE_KEYS, system_deck

from lmpbench.engine import open_lammps

# x_a += eps * x_b on a LAMMPS (lower-triangular) cell: which box parameters scale and by what.
# Box vectors a = (lx,0,0), b = (xy,ly,0), c = (xz,yz,lz); component a of each vector gains eps * component b.
STRAINS = {
    "pxx": lambda b, e: {"lx": b["lx"] * e, "xy": b["xy"] * e, "xz": b["xz"] * e},
    "pyy": lambda b, e: {"ly": b["ly"] * e, "yz": b["yz"] * e},
    "pzz": lambda b, e: {"lz": b["lz"] * e},
    "pxy": lambda b, e: {"xy": b["ly"] * e, "xz": b["yz"] * e},
    "pxz": lambda b, e: {"xz": b["lz"] * e},
    "pyz": lambda b, e: {"yz": b["lz"] * e},
}


def _box(lmp):
    lo, hi, xy, yz, xz, _, _ = lmp.extract_box()
    return {"lo": lo, "lx": hi[0] - lo[0], "ly": hi[1] - lo[1], "lz": hi[2] - lo[2], "xy": xy, "xz": xz, "yz": yz}


def _energy_strained(lmp, key, eps):
    b = _box(lmp)
    new = dict(b)
    for name, delta in STRAINS[key](b, eps).items():
        new[name] = b[name] + delta
    lo = b["lo"]
    lmp.command(
        f"change_box all x final {lo[0]} {lo[0] + new['lx']} y final {lo[1]} {lo[1] + new['ly']} "
        f"z final {lo[2]} {lo[2] + new['lz']} xy final {new['xy']} xz final {new['xz']} yz final {new['yz']} "
        "remap units box"
    )
    lmp.command("run 0 post no")
    energy = lmp.get_thermo("pe")
    lmp.command(
        f"change_box all x final {lo[0]} {lo[0] + b['lx']} y final {lo[1]} {lo[1] + b['ly']} "
        f"z final {lo[2]} {lo[2] + b['lz']} xy final {b['xy']} xz final {b['xz']} yz final {b['yz']} "
        "remap units box"
    )
    return energy


def test_pressure_is_strain_derivative(model_files):
    lmp = open_lammps()
    lmp.commands_string(system_deck(mlff_lines(model_files["mp2"]), triclinic=True))
    lmp.command("run 0 post no")
    pressure = np.array([lmp.get_thermo(k) for k in PRESSURE_KEYS])  # no velocities: virial only
    volume = lmp.get_thermo("vol")
    eps = 1e-5
    finite_difference = np.array([
        -(_energy_strained(lmp, k, eps) - _energy_strained(lmp, k, -eps)) / (2 * eps) / volume * NKTV2P_METAL
        for k in PRESSURE_KEYS
    ])
    lmp.close()
    assert np.abs(pressure).min() > 10.0  # every component is far from zero
    np.testing.assert_allclose(pressure, finite_difference, rtol=0, atol=1e-6 * np.abs(pressure).max())
