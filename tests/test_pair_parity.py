"""Pair style mlff with TorchScript LJ / Morse models against LAMMPS's own lj/cut and morse."""

import numpy as np
import pytest
from conftest import assert_states_close, lj_lines, mlff_lines, morse_lines, run_inprocess
from lammps_helpers import nve_lines, system_deck

REFERENCE_LINES = {"lj": lj_lines, "morse": morse_lines}


@pytest.mark.parametrize("steps", [0, 100])
@pytest.mark.parametrize("triclinic", [False, True], ids=["orthorhombic", "triclinic"])
@pytest.mark.parametrize("potential", ["lj", "morse"])
def test_matches_native_pair_style(model_files, potential, triclinic, steps):
    run = nve_lines(steps) if steps else ""
    native = run_inprocess(system_deck(REFERENCE_LINES[potential](), triclinic=triclinic) + "\n" + run)
    mlff = run_inprocess(system_deck(mlff_lines(model_files[potential]), triclinic=triclinic) + "\n" + run)
    assert abs(native["pe"]) > 1.0 and np.abs(native["pressure"][3:]).max() > 1.0  # not a trivial state
    assert_states_close(mlff, native, rtol=1e-10)
    np.testing.assert_allclose(mlff["positions"], native["positions"], rtol=0, atol=1e-10)


def test_non_periodic_cluster(model_files):
    """A cluster in vacuum (shrink-wrapped boundaries), as molecules are run."""
    deck = lambda lines: system_deck(lines, boundary="s s s", cells=3) + "\n" + nve_lines(50)  # noqa: E731
    native, mlff = run_inprocess(deck(lj_lines())), run_inprocess(deck(mlff_lines(model_files["lj"])))
    assert_states_close(mlff, native, rtol=1e-10)


def test_float32_model(model_files):
    native = run_inprocess(system_deck(lj_lines()))
    mlff = run_inprocess(system_deck(mlff_lines(model_files["lj32"])))
    assert_states_close(mlff, native, rtol=1e-5)
    assert np.abs(mlff["forces"] - native["forces"]).max() > 0  # it really ran in float32


def test_thread_count_does_not_change_results(model_files):
    one = run_inprocess(system_deck(mlff_lines(model_files["mp2"], style_args="threads 1")))
    two = run_inprocess(system_deck(mlff_lines(model_files["mp2"], style_args="threads 2")))
    assert_states_close(two, one, rtol=1e-12)


def test_per_atom_energy_sums_to_total(model_files):
    mlff = run_inprocess(system_deck(mlff_lines(model_files["mp2"]), triclinic=True))
    assert mlff["pe_atom"].sum() == pytest.approx(mlff["pe"], rel=1e-12)
    assert np.ptp(mlff["pe_atom"]) > 0
