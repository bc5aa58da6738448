"""PLUMED files (HILLS, fes.dat grids, COLVAR) against direct computations: the hills sum
against a plain Gaussian sum over periodic images, the well-tempered convention against a
bias deposited hill by hill, grids against analytic separable surfaces, COLVAR histograms
against numpy's histogram2d."""

import math

import numpy as np
import pytest

from lmpbench.analysis import fes_files, plumed
from lmpbench.analysis.fes import KBT_KJ_MOL, FreeEnergySurface

HILLS_HEADER = ("#! FIELDS time phi psi sigma_phi sigma_psi height biasf\n#! SET multivariate false\n"
                "#! SET kerneltype gaussian\n#! SET min_phi -pi\n#! SET max_phi pi\n#! SET min_psi -pi\n#! SET max_psi pi\n")


def write_hills(path, centres, sigmas, heights, biasf=6.0, header=HILLS_HEADER):
    rows = [f"{98.2 * (k + 1):20.10f} {c[0]:20.15f} {c[1]:20.15f} {s[0]:.15f} {s[1]:.15f} {h:20.15f} {biasf:g}"
            for k, (c, s, h) in enumerate(zip(centres, sigmas, heights))]
    path.write_text(header + "\n".join(rows) + "\n")


def write_fes_dat(path, phi_rad, psi_rad, free):
    """PLUMED's sum_hills layout: header, phi fastest, a blank line after each psi row."""
    lines = ["#! FIELDS phi psi file.free der_phi der_psi", "#! SET min_phi -pi", "#! SET max_phi pi",
             f"#! SET nbins_phi  {len(phi_rad)}", "#! SET periodic_phi true", "#! SET min_psi -pi",
             "#! SET max_psi pi", f"#! SET nbins_psi  {len(psi_rad)}", "#! SET periodic_psi true"]
    for j, y in enumerate(psi_rad):
        lines += [f"{x:15.9f} {y:15.9f} {free[i, j]:15.9f} {0.0:15.9f} {0.0:15.9f}" for i, x in enumerate(phi_rad)]
        lines.append("")
    path.write_text("\n".join(lines) + "\n")


def direct_sum(phi, psi, centres, sigmas, heights):
    """sum_k w_k exp(-d_phi^2 / 2 s^2 - d_psi^2 / 2 s^2), d summed over three periodic images."""
    total = np.zeros((len(phi), len(psi)))
    for (c1, c2), (s1, s2), w in zip(centres, sigmas, heights):
        g1 = sum(np.exp(-((phi - c1 + 2 * math.pi * n) ** 2) / (2 * s1 ** 2)) for n in (-1, 0, 1))
        g2 = sum(np.exp(-((psi - c2 + 2 * math.pi * n) ** 2) / (2 * s2 ** 2)) for n in (-1, 0, 1))
        total += w * np.outer(g1, g2)
    return total


@pytest.fixture
def random_hills(tmp_path):
    rng = np.random.default_rng(7)
    centres = rng.uniform(-math.pi, math.pi, (150, 2))
    centres[:5] = [[-3.1, 3.1], [3.12, -3.05], [0.0, 3.14], [-3.14, 0.2], [1.0, -1.0]]  # hills across the seam
    sigmas = np.column_stack([np.full(150, 0.35), rng.uniform(0.2, 0.5, 150)])
    heights = rng.uniform(0.1, 1.44, 150)
    write_hills(tmp_path / "HILLS", centres, sigmas, heights)
    return tmp_path / "HILLS", centres, sigmas, heights


def test_hills_sum_equals_a_direct_gaussian_sum(random_hills):
    path, centres, sigmas, heights = random_hills
    hills = plumed.read_hills(path)
    assert hills.bias_factor == 6.0 and hills.names == ("phi", "psi")
    grid = plumed.plumed_grid_points()
    np.testing.assert_allclose(grid[[0, 1, -1]], [-math.pi, -math.pi + math.pi / 30, math.pi - math.pi / 30])
    expected = direct_sum(grid, grid, centres, sigmas, heights)
    # lmpbench takes the nearest image only; the others add below exp(-pi^2 / (2 0.5^2)) = 3e-9 of a hill
    np.testing.assert_allclose(hills.evaluate(grid, grid), expected, rtol=0, atol=2e-8)
    surface = hills.surface("free_energy")  # sum_hills --mintozero: F = -sum, minimum shifted to zero
    np.testing.assert_allclose(surface.free_energy_kJ_mol, expected.max() - expected, atol=5e-8)
    np.testing.assert_allclose(surface.phi_deg, np.degrees(grid))
    bias = hills.surface("negative_bias")  # -V: the heights as written carry gamma/(gamma-1)
    np.testing.assert_allclose(bias.free_energy_kJ_mol, (expected.max() - expected) * 5.0 / 6.0, atol=5e-8)
    assert surface.convention == "free_energy" and bias.convention == "negative_bias"


def test_free_energy_convention_is_the_well_tempered_estimate_of_the_applied_bias(tmp_path):
    """Deposit hills as PLUMED's well-tempered METAD does (height h0 exp(-V(s)/dT) at the
    current point, written times gamma/(gamma-1)) and check that the free_energy surface is
    -(gamma/(gamma-1)) V of the bias applied, and negative_bias is -V."""
    gamma, h0, sigma, kbt = 6.0, 1.2, 0.35, KBT_KJ_MOL
    delta_t = (gamma - 1.0) * kbt
    rng = np.random.default_rng(3)
    grid = plumed.plumed_grid_points()
    applied = np.zeros((60, 60))
    centres, written = [], []
    point = np.array([-2.0, 2.5])
    for _ in range(200):
        point = (point + rng.normal(0, 0.4, 2) + math.pi) % (2 * math.pi) - math.pi
        v_here = direct_sum(point[:1], point[1:], centres, [[sigma, sigma]] * len(centres), np.array(written)
                            * (gamma - 1) / gamma)[0, 0] if centres else 0.0
        height = h0 * math.exp(-v_here / delta_t)
        applied += direct_sum(grid, grid, [point], [[sigma, sigma]], [height])
        centres.append(point.copy())
        written.append(height * gamma / (gamma - 1))
    assert written[0] == pytest.approx(1.44)  # as the first hill of MDsim's HILLS (HEIGHT=1.2, BIASFACTOR=6)
    write_hills(tmp_path / "HILLS", centres, [[sigma, sigma]] * len(centres), written, biasf=gamma)
    hills = plumed.read_hills(tmp_path / "HILLS")
    estimate = -(gamma / (gamma - 1)) * applied
    np.testing.assert_allclose(hills.surface("free_energy").free_energy_kJ_mol, estimate - estimate.min(), atol=1e-9)
    np.testing.assert_allclose(hills.surface("negative_bias").free_energy_kJ_mol, applied.max() - applied, atol=1e-9)


def test_fes_dat_grid_is_read_in_phi_psi_order(tmp_path):
    grid = plumed.plumed_grid_points()
    a = 10 * np.cos(grid) + 3 * np.sin(2 * grid)  # along phi
    b = 4 * np.sin(grid + 0.3)  # along psi: a different shape, so a transposed read shows
    free = a[:, None] + b[None, :] + 7.0
    write_fes_dat(tmp_path / "fes.dat", grid, grid, free)
    fes = plumed.read_grid(tmp_path / "fes.dat")
    np.testing.assert_allclose(fes.phi_deg, -180.0 + 6.0 * np.arange(60))
    np.testing.assert_allclose(fes.free_energy_kJ_mol, free - free.min(), atol=1e-8)
    # separable surface: the marginal PMF is the factor itself (kBT cancels)
    np.testing.assert_allclose(fes.pmf("phi"), a - a.min(), atol=1e-7)
    np.testing.assert_allclose(fes.pmf("psi"), b - b.min(), atol=1e-7)
    # the reference's get_pmf (MDsim's notebook): loadtxt, reshape (60, 60), sum exp over axis 0 for phi
    values = np.loadtxt(tmp_path / "fes.dat", skiprows=9)[:, 2].reshape(60, 60)
    p = np.exp(-values / KBT_KJ_MOL)
    pmf_x = -KBT_KJ_MOL * np.log((p / p.sum()).sum(axis=0))
    np.testing.assert_allclose(fes.pmf("phi"), pmf_x - pmf_x.min(), atol=1e-7)


def test_hills_against_their_own_fes_dat_give_zero_error_and_conventions_do_not_mix(random_hills, tmp_path):
    path, centres, sigmas, heights = random_hills
    grid = plumed.plumed_grid_points()
    total = direct_sum(grid, grid, centres, sigmas, heights)
    write_fes_dat(tmp_path / "fes.dat", grid, grid, total.max() - total)
    run = fes_files.surface_from_file(path)
    ref = fes_files.surface_from_file(tmp_path / "fes.dat")
    errors, _ = fes_files.pmf_errors(run, ref)
    assert errors["phi"]["value"] == pytest.approx(0.0, abs=1e-6) and errors["psi"]["grid"] == "same grid"
    with pytest.raises(fes_files.FESFileError, match="different conventions"):
        fes_files.pmf_errors(fes_files.surface_from_file(path, "negative_bias"), ref)
    with pytest.raises(fes_files.FESFileError, match="needs the HILLS"):
        fes_files.surface_from_file(tmp_path / "fes.dat", "negative_bias")


def test_interpolation_onto_bin_centres(tmp_path):
    grid = plumed.plumed_grid_points()
    free = 5 * (1 + np.cos(grid))[:, None] + 3 * (1 + np.sin(grid))[None, :]
    fes = FreeEnergySurface(np.degrees(grid), np.degrees(grid), free)
    centres = -177.0 + 6.0 * np.arange(60)
    moved = fes.on_grid(centres, centres)
    c = np.radians(centres)
    exact = 5 * (1 + np.cos(c))[:, None] + 3 * (1 + np.sin(c))[None, :]
    # bilinear interpolation halfway between points: error at most h^2/8 |f''| = (pi/30)^2 / 8 x 8
    assert np.abs(moved.free_energy_kJ_mol - exact).max() < (math.pi / 30) ** 2
    back = moved.on_grid(np.degrees(grid), np.degrees(grid))
    assert np.abs(back.free_energy_kJ_mol - free).max() < 2 * (math.pi / 30) ** 2


def test_colvar_histogram_equals_numpy(tmp_path):
    rng = np.random.default_rng(11)
    phi = (rng.normal(-1.4, 0.5, 5000) + math.pi) % (2 * math.pi) - math.pi
    psi = (rng.normal(2.6, 0.6, 5000) + math.pi) % (2 * math.pi) - math.pi
    rows = "\n".join(f"{0.02 * k:.3f} {x:.10f} {y:.10f}" for k, (x, y) in enumerate(zip(phi, psi)))
    (tmp_path / "COLVAR").write_text("#! FIELDS time phi psi\n#! SET min_phi -pi\n#! SET max_phi pi\n" + rows + "\n")
    fes = fes_files.surface_from_file(tmp_path / "COLVAR")
    edges = np.linspace(-180, 180, 61)
    counts = np.histogram2d(np.degrees(phi), np.degrees(psi), bins=[edges, edges])[0]
    expected = -KBT_KJ_MOL * np.log(np.maximum(counts, 1) / 5000)
    np.testing.assert_allclose(fes.free_energy_kJ_mol, expected - expected.min(), atol=1e-9)
    (tmp_path / "BIASED").write_text("#! FIELDS time phi psi metad.bias\n0 0.1 0.2 1.0\n")
    with pytest.raises(fes_files.FESFileError, match="biased"):
        fes_files.surface_from_file(tmp_path / "BIASED")


@pytest.mark.parametrize("text, message", [
    ("0 1 2 3\n", "not a free-energy file"),
    ("#! FIELDS time phi psi sigma_phi sigma_psi height\n1 0.1 0.2 0.35 0.35\n", "5 values for 6 columns"),
    ("#! FIELDS time phi psi sigma_phi sigma_psi height\n1 0.1 0.2 0.35 x 1\n", "not a number"),
    ("#! FIELDS time phi psi sigma_phi sigma_psi height\n1 0.1 0.2 0.35 0 1\n", "width of zero"),
    ("#! FIELDS phi psi file.free\n0 0 1\n1 0 1\n0 1 1\n", "not a full 2 x 2 grid"),
    ("#! FIELDS time a b c sigma_a sigma_b sigma_c height\n1 0 0 0 1 1 1 1\n", "3 collective variables"),
])
def test_bad_plumed_files_are_one_line_errors(tmp_path, text, message):
    (tmp_path / "bad").write_text(text)
    with pytest.raises(fes_files.FESFileError, match=message) as err:
        fes_files.surface_from_file(tmp_path / "bad")
    assert "\n" not in str(err.value)


def test_a_hills_file_cut_mid_line_loses_its_last_hill_only(random_hills, tmp_path):
    path, centres, sigmas, heights = random_hills
    text = path.read_text()
    (tmp_path / "CUT").write_text(text + "   14832.1   -1.2   2.")  # a run stopped while PLUMED wrote a hill
    hills = plumed.read_hills(tmp_path / "CUT")
    np.testing.assert_array_equal(hills.heights, plumed.read_hills(path).heights)
    assert "unfinished line" in hills.surface().source
    (tmp_path / "MIDDLE").write_text(text.replace("\n", "\n1 2\n", 12).replace("1 2\n", "", 11))
    with pytest.raises(plumed.PlumedError, match="2 values for 7 columns"):
        plumed.read_hills(tmp_path / "MIDDLE")


def test_colvars_pmf_in_either_convention(tmp_path):
    from lmpbench.analysis.fes import EV_TO_KJ_MOL

    centres = -177.0 + 6.0 * np.arange(60)
    values = 0.1 * np.cos(np.radians(centres))[:, None] + 0.05 * np.sin(np.radians(centres))[None, :]
    values -= values.min()  # COLVARS shifts its PMF to a zero minimum
    rows = "\n".join(f"{x} {y} {values[i, j]}" for i, x in enumerate(centres) for j, y in enumerate(centres))
    (tmp_path / "metad.pmf").write_text("# 2\n# -180.0 6.0 60 1\n# -180.0 6.0 60 1\n\n" + rows + "\n")
    free = fes_files.surface_from_file(tmp_path / "metad.pmf")  # COLVARS writes -(gamma/(gamma-1)) V already
    np.testing.assert_allclose(free.free_energy_kJ_mol, values * EV_TO_KJ_MOL, atol=1e-9)
    bias = fes_files.surface_from_file(tmp_path / "metad.pmf", "negative_bias", bias_factor=6.0)
    np.testing.assert_allclose(bias.free_energy_kJ_mol, values * EV_TO_KJ_MOL * 5.0 / 6.0, atol=1e-9)
    assert bias.convention == "negative_bias"
    with pytest.raises(fes_files.FESFileError, match="bias factor"):
        fes_files.surface_from_file(tmp_path / "metad.pmf", "negative_bias")
