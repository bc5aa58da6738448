"""Analysis: readers and metrics against LAMMPS's own computes, freud, ASE and analytic results."""

import gzip
import shutil

import numpy as np
import pytest

from lmpbench.analysis.geometry import BondStability, dihedral_deg
from lmpbench.analysis.msd import MSD
from lmpbench.analysis.rdf import RDF, DistanceHistogram
from lmpbench.analysis.trajectory import Frame, TrajectoryError, TrajectoryReader
from lammps_helpers import run_in_folder

from lmpbench.engine import open_lammps

LJ_DECK = """
units lj
atom_modify map array
lattice fcc 0.8
region box prism 0 6 0 6 0 6 {xy} 0 0
create_box 2 box
create_atoms 1 box
set type 1 type/fraction 2 0.3 12345
mass * 1.0
pair_style lj/cut 2.5
pair_coeff * * 1.0 1.0
velocity all create 2.0 87287 loop geom
fix nvt all nvt temp 2.0 2.0 0.5
timestep 0.005
compute rdf_all all rdf 100 cutoff 2.5
compute rdf_12 all rdf 100 1 2 cutoff 2.5
compute msd1 all msd com yes
thermo_style custom step temp c_msd1[4]
dump traj all custom 50 traj.dump id type x y z ix iy iz xu yu zu
dump_modify traj sort id format float %.12g
fix rdfs all ave/time 50 1 50 c_rdf_all[*] c_rdf_12[*] mode vector ave one file rdf.dat format " %.15g"
fix msdout all ave/time 50 1 50 c_msd1[4] file msd.dat format " %.15g"
run 1000
"""


@pytest.fixture(scope="module", params=[0.0, 1.5], ids=["orthorhombic", "triclinic"])
def lj_run(request, tmp_path_factory):
    """A hot two-type LJ fluid run by LAMMPS with its own rdf and msd written beside the dump."""
    return run_in_folder(tmp_path_factory.mktemp("lj"), LJ_DECK.format(xy=request.param))


def _lammps_rdf(path):
    """fix ave/time mode vector blocks: {step: rows [bin, r, g_all, coord_all, r, g_12, coord_12]}."""
    blocks, lines = {}, [ln for ln in open(path) if not ln.startswith("#")]
    k = 0
    while k < len(lines):
        step, nrows = map(int, lines[k].split()[:2])
        blocks[step] = np.array([ln.split() for ln in lines[k + 1:k + 1 + nrows]], dtype=float)
        k += 1 + nrows
    return blocks


def test_reader_unwraps_like_lammps(lj_run):
    frames = list(TrajectoryReader(lj_run / "traj.dump"))
    assert len(frames) == 21 and frames[-1].step == 1000
    for frame in frames:
        lammps_unwrapped = np.stack([frame.extra["xu"], frame.extra["yu"], frame.extra["zu"]], axis=1)
        np.testing.assert_allclose(frame.positions, lammps_unwrapped, atol=1e-8)


def test_rdf_equals_lammps_compute_rdf(lj_run):
    """LAMMPS's compute rdf excludes self pairs from the density (the N(N-1) variant)."""
    lammps = _lammps_rdf(lj_run / "rdf.dat")
    for frame in TrajectoryReader(lj_run / "traj.dump", start=1):
        ours_all = RDF(r_max=2.5, bins=100, normalization="n_n_minus_1").accumulate(frame)
        ours_12 = RDF(r_max=2.5, bins=100, a=1, b=2, normalization="n_n_minus_1").accumulate(frame)
        rows = lammps[frame.step]
        np.testing.assert_allclose(ours_all.r, rows[:, 1], atol=1e-12)
        np.testing.assert_allclose(ours_all.g, rows[:, 2], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(ours_12.g, rows[:, 5], rtol=1e-6, atol=1e-9)


def test_rdf_equals_freud(lj_run):
    """Paper parity: freud's normalisation (N_A N_B / V), over all frames, partial and total.
    freud computes distances in float32, so pairs within ~1e-6 Å of a bin edge may fall in
    the neighbouring bin: agreement is to float32 precision, not 1e-6."""
    import freud

    ours = {pair: RDF(r_max=2.5, bins=100, a=pair[0], b=pair[1]) for pair in [(None, None), (1, 2), (2, 2)]}
    theirs = {pair: freud.density.RDF(bins=100, r_max=2.5) for pair in ours}
    for frame in TrajectoryReader(lj_run / "traj.dump"):
        box = freud.box.Box.from_matrix(frame.cell.T)
        wrapped = box.wrap(frame.positions - frame.origin - box.L / 2 * 0)
        for (a, b), rdf in ours.items():
            rdf.accumulate(frame)
            sel_a = np.ones(len(frame.types), bool) if a is None else frame.types == a
            sel_b = np.ones(len(frame.types), bool) if b is None else frame.types == b
            query = wrapped[sel_a]
            points = wrapped[sel_b]
            theirs[(a, b)].compute(system=(box, points), query_points=query, reset=False,
                                   neighbors={"exclude_ii": a == b and a is not None or a is None, "r_max": 2.5})
    for pair in ours:
        np.testing.assert_allclose(ours[pair].g, theirs[pair].rdf, rtol=2e-3, atol=2e-3)


def test_rdf_pair_counts_equal_ase_neighbour_list(lj_run):
    """The histogram behind g(r), exactly, against ASE's own neighbour list (double precision)."""
    from ase.neighborlist import primitive_neighbor_list

    for frame in TrajectoryReader(lj_run / "traj.dump", step=5):
        rdf = RDF(r_max=2.5, bins=100, a=1, b=2).accumulate(frame)
        i, j, d = primitive_neighbor_list("ijd", frame.pbc, frame.cell, frame.positions - frame.origin, 2.5)
        keep = (frame.types[i] == 1) & (frame.types[j] == 2)
        np.testing.assert_array_equal(rdf._counts, np.histogram(d[keep], bins=rdf.edges)[0])


@pytest.mark.parametrize("cell, pbc", [
    (np.diag([8.0, 9.0, 10.0]), (True, True, True)),
    ([[7.0, 0, 0], [3.2, 6.5, 0], [-2.9, 2.4, 7.5]], (True, True, True)),  # strongly skewed, two cells a side
    ([[7.0, 0, 0], [3.2, 6.5, 0], [-2.9, 2.4, 7.5]], (True, False, True)),  # atoms outside the open direction
    (np.diag([12.0, 12.0, 12.0]), (False, False, False)),
], ids=["orthorhombic", "skewed", "skewed-open-y", "open"])
def test_pair_counts_equal_ase_at_half_the_smallest_width(cell, pbc):
    """r_max at half the smallest width (the largest allowed), where a cell list has two cells a
    side and every image matters: every type pair's histogram equals ASE's neighbour list."""
    from ase.neighborlist import primitive_neighbor_list

    from lmpbench.analysis.pairs import pair_counts, smallest_width

    rng = np.random.default_rng(7)
    cell = np.array(cell, float)
    n = 150
    positions = rng.uniform(-0.3, 1.3, size=(n, 3)) @ cell
    types = rng.integers(1, 4, size=n)
    r_max = smallest_width(cell) / 2 if any(pbc) else 5.0
    frame = Frame(0, cell, np.zeros(3), np.arange(1, n + 1), types, positions, False, pbc, {})
    counts = pair_counts(frame, r_max, 50)
    i, j, d = primitive_neighbor_list("ijd", pbc, cell, positions, r_max, self_interaction=False)
    assert counts.sum() == len(d) > 0
    for a in (1, 2, 3):
        for b in (1, 2, 3):
            keep = (types[i] == a) & (types[j] == b)
            np.testing.assert_array_equal(counts[a, b], np.bincount((d[keep] * (50 / r_max)).astype(int), minlength=50)[:50])


def test_msd_from_origin_equals_lammps_compute_msd(lj_run):
    """On frames 0..k the lag k has one time origin, the first: LAMMPS's compute msd com yes."""
    lammps = np.loadtxt(lj_run / "msd.dat", comments="#")
    steps = dict(zip(lammps[:, 0].astype(int), lammps[:, 1]))
    for k in range(1, 21):
        msd = MSD(remove_com=True, max_lag=None if k % 2 else k, masses={1: 1.0, 2: 1.0})
        for frame in TrajectoryReader(lj_run / "traj.dump", stop=k + 1):
            msd.accumulate(frame)
        assert msd.msd_A2()[k] == pytest.approx(steps[msd.last_step], rel=1e-7)


@pytest.mark.parametrize("frames, max_lag", [(40, None), (40, 5), (700, 300), (700, 10), (3, 2), (512, 256), (513, 256),
                                             (1000, 999)])
def test_msd_all_origins_equals_a_plain_loop(frames, max_lag):
    """Streaming in blocks (max_lag) or whole: every lag against the definition, per atom."""
    rng = np.random.default_rng(frames)
    msd = MSD(remove_com=False, max_lag=max_lag)
    walk = np.cumsum(rng.normal(size=(frames, 7, 3)), axis=0)
    for k, x in enumerate(walk):
        msd.accumulate(_frame(k, x))
    lags = frames if max_lag is None else max_lag + 1
    plain = np.array([((walk[lag:] - walk[:frames - lag]) ** 2).sum(2).mean(0) for lag in range(lags)])
    np.testing.assert_allclose(msd.per_atom_msd(), plain, rtol=1e-10, atol=1e-10 * plain.max())


def test_msd_memory_does_not_grow_with_the_trajectory():
    """With max_lag, the arrays the object holds are the same after 1,000 and 3,000 frames."""
    msd = MSD(remove_com=False, max_lag=10)
    rng = np.random.default_rng(0)
    x = np.zeros((5, 3))
    held = {}

    def held_bytes():
        arrays = [msd._block, msd._previous, msd._s2, *msd._d_head, *msd._d_tail]
        return sum(a.nbytes for a in arrays if a is not None)

    for k in range(1, 3001):
        x = x + rng.normal(size=(5, 3))
        msd.accumulate(_frame(k, x))
        if k in (1000, 3000):
            held[k] = held_bytes()
    assert held[1000] == held[3000] and msd.frames == 3000


def test_random_walk_diffusivity_is_recovered():
    """Brownian steps of variance 2 D dt per direction: D is known."""
    rng = np.random.default_rng(11)
    D, dt, n_atoms, n_frames = 0.35, 0.1, 400, 200
    steps = rng.normal(0.0, np.sqrt(2 * D * dt), size=(n_frames, n_atoms, 3))
    msd = MSD(remove_com=False)
    for k, x in enumerate(np.cumsum(steps, axis=0)):
        msd.accumulate(_frame(k, x))
    fitted, error = msd.fitted_diffusivity(1, 50, dt)
    assert abs(fitted - D) < 3 * error and error < 0.05 * D
    assert msd.diffusivity_at(20, dt) == pytest.approx(D, rel=0.1)


def test_dihedrals_equal_ase():
    from ase.build import molecule

    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.2, seed=1)
    quads = np.array([[3, 2, 0, 1], [4, 1, 0, 2], [5, 0, 1, 6], [8, 1, 0, 2]])
    ours = dihedral_deg(atoms.positions, quads)
    ase = np.array([atoms.get_dihedral(*q) for q in quads])
    np.testing.assert_allclose(np.mod(ours, 360.0), ase, atol=1e-9)


def test_bond_criterion_fires_at_the_stretched_frame():
    """The C-C bond (natural_cutoffs with multiplier 1 bonds C-C here, not the 1.09 Å C-H:
    that is the benchmark's definition) stretched by 0.49 Å at frame 6, by 0.51 Å at frame 7."""
    from ase.build import molecule

    atoms = molecule("CH3CH2OH")
    stability = BondStability(atoms.get_chemical_symbols())
    axis = atoms.positions[1] - atoms.positions[0]
    axis /= np.linalg.norm(axis)
    for k in range(10):
        x = atoms.positions.copy()
        x[1] += axis * {6: 0.49, 7: 0.51}.get(k, 0.6 if k > 7 else 0.0)
        stability.accumulate(_frame(100 * k, x, pbc=False))
    assert stability.pairs.tolist() == [[0], [1]]
    assert stability.first_unstable_step == 700


def test_distance_histogram_is_normalised():
    rng = np.random.default_rng(0)
    h = DistanceHistogram(r_max=10.0, bins=200)
    for k in range(5):
        h.accumulate(_frame(k, rng.uniform(0, 4, size=(20, 3)), pbc=False))
    assert np.sum(h.h * np.diff(h.edges)) == pytest.approx(1.0)


def test_truncated_gzip_and_corrupt_dumps(lj_run, tmp_path):
    text = (lj_run / "traj.dump").read_text()
    whole = list(TrajectoryReader(lj_run / "traj.dump"))
    with gzip.open(tmp_path / "traj.dump.gz", "wt") as f:
        f.write(text)
    assert [f.step for f in TrajectoryReader(tmp_path / "traj.dump.gz")] == [f.step for f in whole]
    # cut while written: inside the last frame's atom lines, inside its last line (columns
    # missing), before its final newline (still being written); and a gzip stream that ends early
    last_line = text[text.rstrip("\n").rfind("\n") + 1:]
    for name, cut, finished in [("lines.dump", text[:-200], (False, True)), ("number.dump", text[:-len(last_line) + 12], (False, True)),
                                ("newline.dump", text[:-1], (False,))]:
        (tmp_path / name).write_text(cut)
        for done in finished:
            reader = TrajectoryReader(tmp_path / name, finished=done)
            frames = list(reader)
            assert [f.step for f in frames] == [f.step for f in whole[:-1]], name
            assert "step 1000 is truncated" in reader.truncated, name
            np.testing.assert_array_equal(frames[-1].positions, whole[-2].positions)
    compressed = gzip.compress(text.encode())
    (tmp_path / "cut.dump.gz").write_bytes(compressed[: len(compressed) - 50])
    reader = TrajectoryReader(tmp_path / "cut.dump.gz")
    assert len(list(reader)) == 20 and "step 1000 is truncated" in reader.truncated
    lines = text.splitlines(keepends=True)
    natoms = int(lines[3])
    for frame_index, bad_line in ((0, "this is not a number at all\n"), (2, "1 2 0.5 0.5\n"), (3, "1 2 0.5 0.5 0.5 0 0 0 9 9 9 9\n")):
        bad = list(lines)
        bad[frame_index * (natoms + 9) + 15] = bad_line
        (tmp_path / "bad.dump").write_text("".join(bad))
        with pytest.raises(TrajectoryError, match=rf"bad\.dump: frame at step {50 * frame_index} has malformed atom lines \(atom line 7\)"):
            list(TrajectoryReader(tmp_path / "bad.dump"))
    (tmp_path / "junk.dump").write_text("hello\n")
    with pytest.raises(TrajectoryError, match="does not start with 'ITEM: TIMESTEP'"):
        list(TrajectoryReader(tmp_path / "junk.dump"))
    shutil.rmtree(tmp_path)


def test_binary_dump_equals_text_dump(tmp_path):
    """LAMMPS writes the same trajectory as text (positions to full precision) and binary; both read alike."""
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        lmp = open_lammps()
        lmp.commands_string(LJ_DECK.format(xy=1.5).replace("run 1000", """
            dump text all custom 100 t.dump id type x y z ix iy iz
            dump_modify text format float %.17g
            dump binary all custom 100 t.bin id type x y z ix iy iz
            dump named all custom 100 named.dump id type element x y z ix iy iz
            dump_modify named element Cu Au format float %.17g
            run 300"""))
        lmp.close()
    finally:
        os.chdir(cwd)
    text, binary = list(TrajectoryReader(tmp_path / "t.dump")), list(TrajectoryReader(tmp_path / "t.bin"))
    assert [f.step for f in text] == [f.step for f in binary] == [0, 100, 200, 300]
    for a, b in zip(text, binary):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-12)  # box bounds are printed to 16 digits
        np.testing.assert_array_equal(a.types, b.types)
        np.testing.assert_allclose(a.cell, b.cell, rtol=1e-15)
        assert a.unwrapped and b.unwrapped
    # a column of words (element names) is read too, beside the same numbers
    named = list(TrajectoryReader(tmp_path / "named.dump"))
    for a, c in zip(text, named):
        np.testing.assert_array_equal(a.positions, c.positions)
        np.testing.assert_array_equal(c.extra["element"], np.where(c.types == 1, "Cu", "Au"))


def _frame(step, positions, pbc=False):
    n = len(positions)
    return Frame(step, np.eye(3) * 1000.0, np.zeros(3), np.arange(1, n + 1), np.ones(n, int), np.asarray(positions, float),
                 True, (pbc,) * 3, {})


def test_ase_reader_streams_labelled_frames(tmp_path):
    from ase.io import write

    from lmpbench.analysis.trajectory import ASETrajectoryReader
    from lmpbench.models.toy_nequip import emt_frames

    frames = emt_frames(3, seed=5)
    write(tmp_path / "data.xyz", frames, format="extxyz")
    read_back = list(ASETrajectoryReader(tmp_path / "data.xyz", elements=["Cu", "Au"]))
    assert len(read_back) == 3
    for original, frame in zip(frames, read_back):
        np.testing.assert_allclose(frame.positions, original.positions, atol=1e-7)
        np.testing.assert_array_equal(frame.types, [1 if s == "Cu" else 2 for s in original.get_chemical_symbols()])
        assert frame.extra["energy"] == pytest.approx(original.get_potential_energy())
        np.testing.assert_allclose(frame.extra["forces"], original.get_forces(), atol=1e-7)
    with pytest.raises(TrajectoryError, match="has element Au, not in"):
        list(ASETrajectoryReader(tmp_path / "data.xyz", elements=["Cu"]))
    (tmp_path / "broken.xyz").write_text("3\nnot extxyz\nCu 0 0\n")
    with pytest.raises(TrajectoryError, match="cannot read as an ASE trajectory"):
        list(ASETrajectoryReader(tmp_path / "broken.xyz"))


def test_md17_and_mdsim_readers(tmp_path):
    """The paper's array datasets: positions as stored, kcal/mol labels in eV, symbols by number."""
    from lmpbench.analysis.trajectory import KCAL_MOL_TO_EV, ArrayDatasetReader, open_trajectory

    rng = np.random.default_rng(4)
    R, E, F = rng.normal(size=(5, 9, 3)), rng.normal(size=(5, 1)), rng.normal(size=(5, 9, 3))
    z = np.array([6, 6, 8, 1, 1, 1, 1, 1, 1])
    np.savez(tmp_path / "ethanol_dft.npz", R=R, z=z, E=E, F=F)
    frames = list(open_trajectory(tmp_path / "ethanol_dft.npz", elements=["C", "H", "O"], step=2))
    assert [f.step for f in frames] == [0, 2, 4]
    for f in frames:
        np.testing.assert_array_equal(f.positions, R[f.step])
        np.testing.assert_array_equal(f.types, [1, 1, 3, 2, 2, 2, 2, 2, 2])
        assert f.extra["energy"] == pytest.approx(E[f.step, 0] / 23.06052, rel=1e-12)
        np.testing.assert_allclose(f.extra["forces"], F[f.step] * KCAL_MOL_TO_EV, rtol=1e-12)
        assert f.pbc == (False, False, False)
    with pytest.raises(TrajectoryError, match="has element\\(s\\) O, not in"):
        list(ArrayDatasetReader(tmp_path / "ethanol_dft.npz", elements=["C", "H"]))
    np.save(tmp_path / "alanine.npy", {"force": F}, allow_pickle=True)
    with pytest.raises(TrajectoryError, match="has no positions or numbers"):
        list(ArrayDatasetReader(tmp_path / "alanine.npy"))
    np.save(tmp_path / "plain.npy", R)
    with pytest.raises(TrajectoryError, match="not an MDsim dataset"):
        list(ArrayDatasetReader(tmp_path / "plain.npy"))
    (tmp_path / "broken.npz").write_text("not a zip")
    with pytest.raises(TrajectoryError, match="not an MD17 .npz or MDsim .npy dataset"):
        list(ArrayDatasetReader(tmp_path / "broken.npz"))


@pytest.mark.parametrize("fmt", ["%g", "%.6g", "%.10g", "%.15g", "%.17g", "%-1.16e", "%.8f", "%d"])
def test_number_parser_is_exact_or_says_so(fmt):
    """Every number parsed on the fast path equals Python's float bit for bit; outside it the
    block is reported (INEXACT) and the reader falls back to float."""
    from lmpbench.analysis.text_numbers import INEXACT, OK, parse_rows

    rng = np.random.default_rng(5)
    values = np.concatenate([rng.normal(size=4000) * 10.0 ** rng.integers(-9, 9, 4000), [0.0, -0.0, 7.0, -3.0]])
    tokens = [fmt % v for v in values]
    text = "\n".join(" ".join(tokens[i:i + 4]) for i in range(0, len(tokens), 4)) + "\n"
    out = np.empty((len(tokens) // 4, 4))
    end, status = parse_rows(np.frombuffer(text.encode(), np.uint8), 0, len(tokens) // 4, 4, out)
    assert status in (OK, INEXACT) and end == len(text)
    if status == OK:
        expected = np.array([float(t) for t in tokens]).reshape(-1, 4)
        np.testing.assert_array_equal(out.view(np.int64), expected.view(np.int64))
    if fmt in ("%g", "%.6g", "%d"):  # LAMMPS's default output stays on the fast path
        assert status == OK
    if fmt in ("%.17g", "%-1.16e"):  # 17 significant digits never do
        assert status == INEXACT


MIXTURE_DECK = """
units lj
atom_modify map array
lattice fcc 0.8
region box prism -1 3 -2 2 0.5 4.5 {tilt} units lattice
create_box 2 box
create_atoms 1 box
set type 1 type/fraction 2 0.4 12345
mass 1 1.0
mass 2 3.5
pair_style lj/cut 2.5
pair_coeff * * 1.0 1.0
velocity all create 3.0 87287 loop geom
fix nvt all nvt temp 3.0 3.0 0.5
timestep 0.005
group heavy type 2
compute msd_all all msd com yes
compute msd_heavy heavy msd com yes
fix msdout all ave/time 50 1 50 c_msd_all[4] c_msd_heavy[4] file msd.dat format " %.15g"
dump atom all atom 50 atom.dump
dump_modify atom format line "%d %d %.17g %.17g %.17g"
dump atomi all atom 50 atom_image.dump
dump_modify atomi image yes format line "%d %d %.17g %.17g %.17g %d %d %d"
dump su all custom 50 su.dump id type xsu ysu zsu
dump_modify su format float %.17g
dump cart all custom 50 cartesian.dump id type x y z xu yu zu
dump_modify cart format float %.17g sort id
run 1000
"""


@pytest.fixture(scope="module", params=["0 0 0", "1.5 0.7 -0.4"], ids=["orthorhombic", "triclinic"])
def mixture_run(request, tmp_path_factory):
    """A hot LJ mixture of a light and a heavy species in a box whose corner is off the origin,
    with LAMMPS's scaled dumps (dump atom, with and without image flags; xsu), its Cartesian
    columns and its own compute msd com yes (all atoms, the heavy species) beside them."""
    return run_in_folder(tmp_path_factory.mktemp("mixture"), MIXTURE_DECK.format(tilt=request.param))


def _lammps_columns(path, names):
    """{step: [N, len(names)]} of a custom dump, parsed here directly (sorted by id)."""
    lines, frames, k = open(path).read().splitlines(), {}, 0
    while k < len(lines):
        step, natoms = int(lines[k + 1]), int(lines[k + 3])
        columns = lines[k + 8].split()[2:]
        rows = np.array([ln.split() for ln in lines[k + 9:k + 9 + natoms]], dtype=float)
        rows = rows[np.argsort(rows[:, columns.index("id")])]
        frames[step] = rows[:, [columns.index(n) for n in names]]
        k += 9 + natoms
    return frames


def test_scaled_coordinates_equal_lammps_cartesian_columns(mixture_run):
    """dump atom (xs ys zs, the default style), with image flags, and xsu ysu zsu: positions
    equal the x y z / xu yu zu columns LAMMPS writes for the same steps."""
    wrapped = _lammps_columns(mixture_run / "cartesian.dump", ["x", "y", "z"])
    unwrapped = _lammps_columns(mixture_run / "cartesian.dump", ["xu", "yu", "zu"])
    for name, is_unwrapped in (("atom.dump", False), ("atom_image.dump", True), ("su.dump", True)):
        frames = list(TrajectoryReader(mixture_run / name))
        assert [f.step for f in frames] == sorted(wrapped) and len(frames) == 21, name
        for frame in frames:
            assert frame.unwrapped == is_unwrapped, name
            expected = (unwrapped if is_unwrapped else wrapped)[frame.step]
            np.testing.assert_allclose(frame.positions, expected, atol=1e-11, err_msg=name)
        assert np.abs(frames[-1].positions - wrapped[frames[-1].step]).max() > (1.0 if is_unwrapped else -1), name


def test_scaled_dump_equals_ase_and_ovito_readers(mixture_run):
    """The same scaled files through ASE's and ovito's LAMMPS dump readers."""
    from ase.io import read
    from ovito.io import import_file

    ours = list(TrajectoryReader(mixture_run / "atom.dump"))
    theirs = read(mixture_run / "atom.dump", index=":", format="lammps-dump-text")
    pipeline = import_file(str(mixture_run / "atom_image.dump"))
    assert len(theirs) == len(ours) == pipeline.source.num_frames
    for k, (frame, atoms) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(frame.cell, atoms.cell.array, atol=1e-12)
        np.testing.assert_allclose(frame.positions, atoms.positions + atoms.get_celldisp().reshape(3), atol=1e-11)
        data = pipeline.compute(k)
        order = np.argsort(np.asarray(data.particles.identifiers))
        images = np.asarray(data.particles["Periodic Image"])[order]
        ovito_unwrapped = np.asarray(data.particles.positions)[order] + images @ frame.cell
        with_images = next(iter(TrajectoryReader(mixture_run / "atom_image.dump", start=k, stop=k + 1)))
        np.testing.assert_allclose(with_images.positions, ovito_unwrapped, atol=1e-11)


def test_finished_dump_without_final_newline_is_read_whole(mixture_run, tmp_path):
    """A finished file whose last line has all its columns but no newline is whole (as ASE and
    ovito read it); while the file still grows, that line may be cut: its frame is dropped."""
    import os
    import threading
    import time

    from ase.io import read
    from ovito.io import import_file

    text = (mixture_run / "atom.dump").read_text()
    whole = list(TrajectoryReader(mixture_run / "atom.dump"))
    path = tmp_path / "no_newline.dump"
    path.write_text(text.rstrip("\n"))
    past = time.time() - 60
    os.utime(path, (past, past))  # written a minute ago: finished
    reader = TrajectoryReader(path)
    frames = list(reader)
    assert reader.truncated is None and [f.step for f in frames] == [f.step for f in whole]
    np.testing.assert_array_equal(frames[-1].positions, whole[-1].positions)
    ase_frames = read(path, index=":", format="lammps-dump-text")
    assert len(ase_frames) == len(whole)
    np.testing.assert_allclose(frames[-1].positions, ase_frames[-1].positions + ase_frames[-1].get_celldisp().reshape(3),
                               atol=1e-11)
    pipeline = import_file(str(path))
    assert pipeline.source.num_frames == len(whole)
    data = pipeline.compute(len(whole) - 1)
    order = np.argsort(np.asarray(data.particles.identifiers))
    np.testing.assert_allclose(frames[-1].positions, np.asarray(data.particles.positions)[order], atol=1e-11)

    # a writer still appends: the same bytes, but the file changes while the reader waits
    growing = tmp_path / "growing.dump"
    growing.write_text(text.rstrip("\n"))
    appender = threading.Timer(0.5, lambda: open(growing, "a").write("\n"))
    appender.start()
    reader = TrajectoryReader(growing)
    frames = list(reader)
    appender.join()
    assert [f.step for f in frames] == [f.step for f in whole[:-1]]
    assert "truncated" in reader.truncated
    # told it is finished, a line with columns missing is still a cut frame, never misread
    body = text.rstrip("\n")
    last_line_start = body.rfind("\n") + 1
    (tmp_path / "cut.dump").write_text(body[:last_line_start] + " ".join(body[last_line_start:].split()[:3]))
    reader = TrajectoryReader(tmp_path / "cut.dump", finished=True)
    assert len(list(reader)) == len(whole) - 1 and "lacks columns" in reader.truncated


@pytest.mark.parametrize("group, types, masses", [("all", None, {1: 1.0, 2: 3.5}), ("heavy", 2, None)],
                         ids=["two-species", "one-species"])
def test_msd_mass_weighted_com_equals_lammps(mixture_run, group, types, masses):
    """On frames 0..k the lag k has one origin, the first: LAMMPS's compute msd com yes, whose
    centre of mass is mass-weighted (a light and a heavy species here)."""
    lammps = np.loadtxt(mixture_run / "msd.dat", comments="#")
    column = {"all": 1, "heavy": 2}[group]
    expected = dict(zip(lammps[:, 0].astype(int), lammps[:, column]))
    for k in (1, 4, 9, 20):
        msd = MSD(atom_type=types, max_lag=k, masses=masses)
        for frame in TrajectoryReader(mixture_run / "su.dump", stop=k + 1):
            msd.accumulate(frame)
        assert msd.msd_A2()[k] == pytest.approx(expected[msd.last_step], rel=1e-12, abs=1e-13)
    if types is None:  # equal weights would miss: the check can fail
        plain = MSD(max_lag=20, masses={1: 1.0, 2: 1.0})
        for frame in TrajectoryReader(mixture_run / "su.dump"):
            plain.accumulate(frame)
        assert plain.msd_A2()[20] != pytest.approx(expected[1000], rel=1e-6)
        with pytest.raises(ValueError, match="needs the masses of the selected types"):
            MSD().accumulate(next(iter(TrajectoryReader(mixture_run / "su.dump"))))
