"""`lmpbench data fetch` / `data list` on small files of the published formats, written here.

Every expectation is computed independently of lmpbench: unit conversion by dividing by
23.06052, the reference code's splits from sklearn's documented procedure with numpy (and
against sklearn itself where it is installed), frames read back with ASE, checksums with
hashlib. Downloads go to an http.server on 127.0.0.1; nothing touches the network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import socket
import threading

import numpy as np
import pytest
from click.testing import CliRunner

KCAL_PER_EV = 23.06052
SEED = 123


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    from lmpbench.datasets import store

    root = tmp_path / "datasets"
    monkeypatch.setenv("LMPBENCH_DATA", str(root))
    # the shipped reference sets are datasets too: hidden, so a listing shows only this test's
    monkeypatch.setattr(store, "shipped_root", lambda: tmp_path / "no_shipped_datasets")
    return root


def tiny(name, monkeypatch=None, **changes):
    """The registry entry of ``name`` with split sizes for a few dozen frames."""
    from lmpbench.datasets.sources import DATASET_SOURCES

    source = dataclasses.replace(DATASET_SOURCES[name], **changes)
    if monkeypatch is not None:
        monkeypatch.setitem(DATASET_SOURCES, name, source)
    return source


def reference_splits(n, test, train, val):
    """sklearn's train_test_split(random_state=123) as MDsim calls it, done with numpy: the
    first call permutes all frames and gives the first `test` to the test split; the second
    permutes the first train+val frames of the rest, the first `val` of them to validation."""
    perm = np.random.RandomState(SEED).permutation(n)
    test_idx, pool = perm[:test], perm[test:]
    chosen = pool[:train + val]
    perm2 = np.random.RandomState(SEED).permutation(train + val)
    return test_idx, chosen[perm2[val:val + train]], chosen[perm2[:val]]


def write_md17(path, n=40, seed=0):
    rng = np.random.default_rng(seed)
    z = np.array([6, 6, 8, 1, 1, 1, 1, 1, 1])
    R = rng.normal(size=(n, 9, 3)) * 1.5
    E = rng.normal(size=(n, 1)) * 10 - 97000.0
    F = rng.normal(size=(n, 9, 3)) * 30
    np.savez(path, R=R, z=z, E=E, F=F)
    return dict(R=R, z=z, E=E, F=F)


def write_water(path, n=40, box=7.0, seed=1):
    rng = np.random.default_rng(seed)
    # a drift carries every atom out of the box, so wrapped and unwrapped positions differ
    drift = np.arange(n)[:, None, None] * 0.5
    unwrapped = np.cumsum(rng.normal(size=(n, 6, 3)) * 0.4, axis=0) + rng.uniform(0, box, size=(1, 6, 3)) + drift
    data = {"unwrapped_coords": unwrapped, "wrapped_coords": np.mod(unwrapped, box),
            "atom_types": np.array([8, 1, 1, 8, 1, 1]), "lengths": np.array([box, box, box]),
            "angles": np.array([90.0, 90.0, 90.0]), "energy": rng.normal(size=n) * 5 - 600.0,
            "forces": rng.normal(size=(n, 6, 3)) * 20}
    np.save(path, data, allow_pickle=True)
    return data


def write_alanine(path, n=45, seed=2):
    rng = np.random.default_rng(seed)
    numbers = np.array([1, 6, 1, 1, 6, 8, 7, 1, 6, 1, 6, 1, 1, 1, 6, 8, 7, 1, 6, 1, 1, 1])
    data = {"pos": rng.normal(size=(n, 22, 3)) * 3, "force": rng.normal(size=(n, 22, 3)) * 20,
            "atomic_number": numbers, "lengths": np.full((n, 3), 30.0), "angles": np.full((n, 3), 90.0)}
    np.save(path, data, allow_pickle=True)
    return data


def write_lips(path, n=30, seed=3):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = Atoms("Li3PS4", positions=rng.uniform(0, 8, size=(8, 3)), cell=[8.1, 8.2, 8.3], pbc=True)
        atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal() - 40), forces=rng.normal(size=(8, 3)))
        frames.append(atoms)
    write(path, frames, format="extxyz")
    return frames


def read_all(path):
    from ase.io import read

    return read(path, index=":")


def sha256_hex(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_md17_units_splits_and_reference(tmp_path, data_root):
    from lmpbench.analysis.trajectory import open_trajectory
    from lmpbench.datasets.fetch import fetch_dataset

    src = write_md17(tmp_path / "ethanol_dft.npz")
    source = tiny("md17_ethanol", test_frames=10, sizes={"10k": (19, 6)})
    result = fetch_dataset("md17_ethanol", from_file=tmp_path / "ethanol_dft.npz", source=source)
    folder = result.dataset.folder
    assert folder == data_root / "md17_ethanol"

    test_idx, train_idx, val_idx = reference_splits(40, 10, 19, 6)
    assert len(set(test_idx) | set(train_idx) | set(val_idx)) == 35  # disjoint
    for file, indices in (("test.extxyz", test_idx), ("train_10k.extxyz", train_idx), ("val_10k.extxyz", val_idx)):
        frames = read_all(folder / file)
        assert len(frames) == len(indices)
        for atoms, k in zip(frames, indices):
            np.testing.assert_allclose(atoms.positions, src["R"][k], atol=1e-7)
            assert atoms.get_potential_energy() == pytest.approx(src["E"][k, 0] / KCAL_PER_EV, rel=1e-12)
            np.testing.assert_allclose(atoms.get_forces(), src["F"][k] / KCAL_PER_EV, rtol=1e-7, atol=1e-7)
            assert atoms.get_chemical_symbols() == ["C", "C", "O"] + ["H"] * 6
            assert not atoms.pbc.any()

    manifest = result.dataset.manifest
    assert manifest["source"]["sha256"] == sha256_hex(tmp_path / "ethanol_dft.npz")
    assert manifest["source"]["sha256_verified"] is False  # nothing to check against at the first fetch
    assert manifest["split"]["seed"] == SEED and manifest["split"]["procedure"] == "mdsim"
    assert result.dataset.verify_files() == []

    # the whole dataset in file order is the reference trajectory, as analyze --reference reads it
    reference = result.dataset.reference_trajectory
    assert reference.name == "reference.extxyz"
    frames = list(open_trajectory(reference, elements=["C", "H", "O"]))
    assert len(frames) == 40
    for k, frame in enumerate(frames):
        np.testing.assert_allclose(frame.positions, src["R"][k], atol=1e-7)


def test_splits_match_sklearn_where_installed():
    """The reference code calls sklearn; where sklearn is installed, compare with it directly."""
    sklearn = pytest.importorskip("sklearn.model_selection")
    from lmpbench.datasets.store import mdsim_splits

    n = 300
    pool, test = sklearn.train_test_split(np.arange(n), train_size=n - 50, test_size=50, random_state=SEED)
    train_val = pool[:40]
    train, val = sklearn.train_test_split(train_val, train_size=30, test_size=10, random_state=SEED)
    ours = mdsim_splits(n, 50, {"s": (30, 10)})
    np.testing.assert_array_equal(ours["test"], test)
    np.testing.assert_array_equal(ours["sizes"]["s"]["train"], train)
    np.testing.assert_array_equal(ours["sizes"]["s"]["val"], val)


def test_water_periodic_wrapped_splits_unwrapped_reference(tmp_path, data_root):
    from lmpbench.analysis.trajectory import open_trajectory
    from lmpbench.datasets.fetch import fetch_dataset

    src = write_water(tmp_path / "water.npy")
    sizes = {"1k": (9, 1), "10k": (18, 2), "90k": (27, 3)}
    result = fetch_dataset("water", from_file=tmp_path / "water.npy", source=tiny("water", test_frames=8, sizes=sizes))
    folder, manifest = result.dataset.folder, result.dataset.manifest
    assert manifest["periodic"] and manifest["has_energy"]
    seen = {}
    for size, (train, val) in sizes.items():
        test_idx, train_idx, val_idx = reference_splits(40, 8, train, val)
        for file, indices in ((f"train_{size}.extxyz", train_idx), (f"val_{size}.extxyz", val_idx),
                              ("test.extxyz", test_idx)):
            frames = read_all(folder / file)
            assert len(frames) == len(indices)
            for atoms, k in zip(frames, indices):
                np.testing.assert_allclose(atoms.positions, src["wrapped_coords"][k], atol=1e-7)
                np.testing.assert_allclose(atoms.cell.array, np.diag([7.0] * 3), atol=1e-12)
                assert atoms.pbc.all()
                assert atoms.get_potential_energy() == pytest.approx(src["energy"][k] / KCAL_PER_EV, rel=1e-12)
                np.testing.assert_allclose(atoms.get_forces(), src["forces"][k] / KCAL_PER_EV, rtol=1e-7, atol=1e-7)
        seen[size] = set(train_idx) | set(val_idx)
        assert not seen[size] & set(test_idx)
    assert seen["1k"] < seen["10k"] < seen["90k"]  # a smaller size is a subset of a larger one

    # the reference trajectory: the source's unwrapped positions in time order, as stored ...
    reference = read_all(result.dataset.reference_trajectory)
    assert len(reference) == 40 and (src["unwrapped_coords"] > 7.0).any()
    for k, atoms in enumerate(reference):
        np.testing.assert_allclose(atoms.positions, src["unwrapped_coords"][k], atol=1e-7)
        assert atoms.pbc.all() and atoms.info.get("unwrapped") is True
    # ... and as analyze --reference reads it
    frames = list(open_trajectory(result.dataset.reference_trajectory, elements=["O", "H"]))
    assert len(frames) == 40
    for k, frame in enumerate(frames):
        np.testing.assert_allclose(frame.positions, src["unwrapped_coords"][k], atol=1e-7)
        np.testing.assert_allclose(frame.cell, np.diag([7.0] * 3), atol=1e-12)
        assert frame.pbc == (True, True, True)


def test_alanine_forces_only_first_frames_split_no_box(tmp_path, data_root):
    from lmpbench.datasets.fetch import fetch_dataset

    src = write_alanine(tmp_path / "alanine_dipeptide.npy", n=45)
    source = tiny("alanine_dipeptide", test_frames=10, sizes={"40k": (24, 6)}, split_frames=40)
    result = fetch_dataset("alanine_dipeptide", from_file=tmp_path / "alanine_dipeptide.npy", source=source)
    manifest = result.dataset.manifest
    assert manifest["frames"] == 40 and not manifest["has_energy"] and not manifest["periodic"]
    test_idx, train_idx, val_idx = reference_splits(40, 10, 24, 6)
    for file, indices in (("test.extxyz", test_idx), ("train_40k.extxyz", train_idx), ("val_40k.extxyz", val_idx)):
        for atoms, k in zip(read_all(result.dataset.folder / file), indices, strict=True):
            np.testing.assert_allclose(atoms.positions, src["pos"][k], atol=1e-7)
            np.testing.assert_allclose(atoms.get_forces(), src["force"][k] / KCAL_PER_EV, rtol=1e-7, atol=1e-7)
            assert "energy" not in atoms.calc.results
            assert not atoms.pbc.any()
    reference = read_all(result.dataset.reference_trajectory)
    assert len(reference) == 45  # every frame of the file, the unsplit tail too
    np.testing.assert_allclose(reference[44].positions, src["pos"][44], atol=1e-7)


def test_lips_extxyz_rest_is_test_and_source_is_reference(tmp_path, data_root):
    from lmpbench.datasets.fetch import fetch_dataset

    src = write_lips(tmp_path / "lips.xyz", n=30)
    result = fetch_dataset("lips", from_file=tmp_path / "lips.xyz", source=tiny("lips", sizes={"20k": (15, 5)}))
    manifest = result.dataset.manifest
    assert manifest["split"]["test"]["frames"] == 10  # the 30 - 20 frames not drawn
    test_idx, train_idx, val_idx = reference_splits(30, 10, 15, 5)
    for file, indices in (("test.extxyz", test_idx), ("train_20k.extxyz", train_idx), ("val_20k.extxyz", val_idx)):
        for atoms, k in zip(read_all(result.dataset.folder / file), indices, strict=True):
            np.testing.assert_allclose(atoms.positions, src[k].positions, atol=1e-7)
            assert atoms.get_potential_energy() == pytest.approx(src[k].get_potential_energy(), rel=1e-12)
            np.testing.assert_allclose(atoms.get_forces(), src[k].get_forces(), atol=1e-7)
    assert result.dataset.reference_trajectory.name == "lips.xyz"
    assert sha256_hex(result.dataset.reference_trajectory) == sha256_hex(tmp_path / "lips.xyz")


def test_checksum_mismatch_refused_given_and_recorded(tmp_path, data_root):
    from lmpbench.datasets.fetch import fetch_dataset
    from lmpbench.datasets.store import DatasetError

    write_md17(tmp_path / "ethanol_dft.npz", seed=0)
    source = tiny("md17_ethanol", test_frames=10, sizes={"10k": (19, 6)})
    folder = data_root / "md17_ethanol"
    with pytest.raises(DatasetError, match="differs from the given sha256 " + "0" * 64 + "; refused"):
        fetch_dataset("md17_ethanol", from_file=tmp_path / "ethanol_dft.npz", sha256="0" * 64, source=source)
    assert not (folder / "dataset.json").exists() and not list(folder.glob("*.npz*"))

    good = sha256_hex(tmp_path / "ethanol_dft.npz")
    result = fetch_dataset("md17_ethanol", from_file=tmp_path / "ethanol_dft.npz", sha256=good.upper(), source=source)
    assert result.dataset.manifest["source"]["sha256_verified"] is True
    assert result.dataset.manifest["source"]["sha256_checked_against"] == "given"

    # a later fetch of another file is checked against the recorded checksum
    (tmp_path / "other").mkdir()
    write_md17(tmp_path / "other" / "ethanol_dft.npz", seed=9)
    with pytest.raises(DatasetError, match=f"differs from the recorded sha256 {good}"):
        fetch_dataset("md17_ethanol", from_file=tmp_path / "other" / "ethanol_dft.npz", source=source)
    # refused before anything in the folder changed: the dataset there is whole and unchanged
    from lmpbench.datasets.store import read_dataset

    assert read_dataset(folder).verify_files() == []
    assert sha256_hex(folder / "ethanol_dft.npz") == good


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``payload``; honours ``Range: bytes=N-``; the first request is cut short."""

    payload = b""
    requests: list = []
    cut_first = True
    honour_range = True

    def do_GET(self):  # noqa: N802  (http.server's name)
        range_header = self.headers.get("Range")
        type(self).requests.append(range_header)
        start = int(range_header.split("=")[1].rstrip("-")) if range_header and self.honour_range else 0
        body = self.payload[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(self.payload) - 1}/{len(self.payload)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if type(self).cut_first and len(type(self).requests) == 1:
            self.wfile.write(body[:len(body) // 3])  # then the connection closes
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_download_resumes_with_range(tmp_path, data_root, http_server):
    from lmpbench.datasets.fetch import fetch_dataset
    from lmpbench.datasets.store import DatasetError

    write_water(tmp_path / "water.npy")
    payload = (tmp_path / "water.npy").read_bytes()
    RangeHandler.payload, RangeHandler.requests, RangeHandler.cut_first = payload, [], True
    url = f"http://127.0.0.1:{http_server.server_address[1]}/files/water.npy?download=1"
    source = tiny("water", url=url, test_frames=8, sizes={"1k": (9, 1)})
    partial = data_root / "water" / "water.npy.partial"
    with pytest.raises(DatasetError, match="stopped at .* bytes; run the same command again to resume"):
        fetch_dataset("water", source=source)
    assert partial.read_bytes() == payload[:len(payload) // 3]
    from lmpbench.cli.main import cli

    listing = CliRunner().invoke(cli, ["data", "list"]).output
    (line,) = [x for x in listing.splitlines() if x.startswith("water ")]
    assert "incomplete" in line

    result = fetch_dataset("water", source=source)
    assert RangeHandler.requests == [None, f"bytes={len(payload) // 3}-"]
    assert not partial.exists()
    assert (data_root / "water" / "water.npy").read_bytes() == payload
    record = result.dataset.manifest["source"]
    assert record["obtained"] == "resumed download" and record["url"] == url
    assert record["bytes"] == len(payload) and record["sha256"] == hashlib.sha256(payload).hexdigest()

    # fetched again: present, nothing downloaded
    assert fetch_dataset("water", source=source).status == "present"
    assert len(RangeHandler.requests) == 2


def test_download_restarts_when_the_server_ignores_range(tmp_path, data_root, http_server, monkeypatch):
    from lmpbench.datasets.fetch import fetch_dataset
    from lmpbench.datasets.store import DatasetError

    write_water(tmp_path / "water.npy")
    payload = (tmp_path / "water.npy").read_bytes()
    RangeHandler.payload, RangeHandler.requests, RangeHandler.cut_first = payload, [], True
    monkeypatch.setattr(RangeHandler, "honour_range", False)
    source = tiny("water", url=f"http://127.0.0.1:{http_server.server_address[1]}/water.npy", test_frames=8,
                  sizes={"1k": (9, 1)})
    with pytest.raises(DatasetError, match="stopped at"):
        fetch_dataset("water", source=source)
    result = fetch_dataset("water", source=source)
    assert RangeHandler.requests == [None, f"bytes={len(payload) // 3}-"]
    assert (data_root / "water" / "water.npy").read_bytes() == payload  # the whole file again, not appended
    assert result.dataset.manifest["source"]["obtained"] == "download"


def test_never_writes_over_a_dataset_made_otherwise(tmp_path, data_root):
    from ase import Atoms

    from lmpbench.datasets.fetch import fetch_dataset
    from lmpbench.datasets.store import DatasetError, labelled, write_dataset

    frames = [labelled(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7 + 0.01 * k]]), -1.0, np.zeros((2, 3)))
              for k in range(10)]
    write_dataset(data_root / "water", frames, name="water", system="water", test=2, sizes={"s": (6, 2)},
                  source={"kind": "engine", "engine": "test"})
    write_water(tmp_path / "water.npy")
    with pytest.raises(DatasetError, match="not downloaded .*move it away"):
        fetch_dataset("water", from_file=tmp_path / "water.npy", source=tiny("water", test_frames=8, sizes={"1k": (9, 1)}))
    assert (data_root / "water" / "dataset.json").is_file()


def test_download_checksum_mismatch_deletes_partial(tmp_path, data_root, http_server):
    from lmpbench.datasets.fetch import fetch_dataset
    from lmpbench.datasets.store import DatasetError

    write_water(tmp_path / "water.npy")
    RangeHandler.payload, RangeHandler.requests, RangeHandler.cut_first = (tmp_path / "water.npy").read_bytes(), [], False
    url = f"http://127.0.0.1:{http_server.server_address[1]}/water.npy"
    source = tiny("water", url=url, test_frames=8, sizes={"1k": (9, 1)}, sha256="ab" * 32)
    with pytest.raises(DatasetError, match="differs from the known sha256"):
        fetch_dataset("water", source=source)
    assert not list((data_root / "water").glob("water.npy*"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_network_names_from_file(data_root, monkeypatch):
    from lmpbench.cli.main import cli

    url = f"http://127.0.0.1:{_free_port()}/water.npy"
    tiny("water", monkeypatch, url=url)
    result = CliRunner().invoke(cli, ["data", "fetch", "water"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: cannot reach {url} (")
    assert "lmpbench data fetch water --from-file water.npy" in lines[0]


def test_cli_fetch_list_and_errors(tmp_path, data_root, monkeypatch):
    from lmpbench.cli.main import cli

    runner = CliRunner()
    write_water(tmp_path / "water.npy")
    # the real registry's sizes need 100,001 frames: a one-line refusal, nothing that looks complete
    result = runner.invoke(cli, ["data", "fetch", "water", "--from-file", str(tmp_path / "water.npy")])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "split '1k' needs 10000 test + 950 train + 50 validation frames, the data has 40" in result.output
    assert not (data_root / "water").exists()  # refused before anything was written

    result = runner.invoke(cli, ["data", "list"])
    assert result.exit_code == 0
    assert "no datasets present" in result.output and "not fetched: md17_ethanol" in result.output

    tiny("water", monkeypatch, test_frames=8, sizes={"1k": (9, 1), "10k": (18, 2)})
    result = runner.invoke(cli, ["data", "fetch", "water", "--from-file", str(tmp_path / "water.npy")])
    assert result.exit_code == 0, result.output
    digest = sha256_hex(tmp_path / "water.npy")
    assert f"sha256 {digest} (recorded)" in result.output
    assert "test 8, train/val 1k 9/1, 10k 18/2" in result.output

    result = runner.invoke(cli, ["data", "list"])
    assert result.exit_code == 0
    (line,) = [x for x in result.output.splitlines() if x.startswith("water ")]
    folder = data_root / "water"
    total = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    assert "40 frames" in line and f"sha256 {digest}" in line and f"{total / 1e6:.1f} MB" in line
    assert "not fetched: md17_ethanol" in result.output

    result = runner.invoke(cli, ["data", "fetch", "water"])
    assert result.exit_code == 0 and "is present" in result.output

    result = runner.invoke(cli, ["data", "fetch", "benzene"])
    assert result.exit_code == 2 and "unknown dataset 'benzene'" in result.output

    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    result = runner.invoke(cli, ["data", "fetch", "water", "--force", "--from-file", str(tmp_path / "broken.npy"),
                                 "--sha256", hashlib.sha256(b"not numpy").hexdigest()])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "not an MD17 .npz or MDsim .npy dataset" in result.output
    assert sha256_hex(folder / "water.npy") == digest  # a bad file never replaces the good one
    from lmpbench.datasets.store import read_dataset

    assert read_dataset(folder).verify_files() == []
