"""Fuzzing (hypothesis) of what users feed lmpbench: dumps, data files, structures, systems
TOML, run.json and deployed-model metadata. Whatever the bytes, a reader returns or raises
its own one-line error; no other exception, no hang."""

import json
import signal
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmpbench.analysis.atom_types import TypeMapError, from_data_file
from lmpbench.analysis.trajectory import TrajectoryError, TrajectoryReader
from lmpbench.manifest import ManifestError, read_run_manifest
from lmpbench.systems import SystemError, load_user_systems

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

DUMP = """ITEM: TIMESTEP
0
ITEM: NUMBER OF ATOMS
3
ITEM: BOX BOUNDS xy xz yz pp pp pp
0.0 10.0 0.5
0.0 10.0 0.0
0.0 10.0 0.0
ITEM: ATOMS id type xs ys zs ix iy iz
1 1 0.1 0.2 0.3 0 0 0
2 2 0.5 0.5 0.5 1 0 -1
3 1 0.9 0.8 0.7 0 0 0
ITEM: TIMESTEP
100
ITEM: NUMBER OF ATOMS
3
ITEM: BOX BOUNDS pp pp pp
0.0 10.0
0.0 10.0
0.0 10.0
ITEM: ATOMS id type element x y z
1 1 O 1.0 2.0 3.0
2 2 H 5.0 5.0 5.0
3 1 O 9.0 8.0 7.0
"""

DATA = """LAMMPS data file

3 atoms
2 atom types

0 10 xlo xhi
0 10 ylo yhi
0 10 zlo zhi

Masses

1 15.9994 # O
2 1.008

Atoms # atomic

1 1 1.0 2.0 3.0
2 2 5.0 5.0 5.0
3 1 9.0 8.0 7.0
"""

TOML = """[protocol.p]
ensemble = "nvt"
timestep_fs = 0.5
temperature_K = 300.0
length_ps = 1.0
dump_every = 10

[system.s]
category = "molecule"
elements = ["C", "H", "O"]
cutoff_A = 6.0
protocol = "p"
structure = "x.xyz"
"""

RUN_JSON = json.dumps({"manifest_format": 1, "system": {"name": "water", "category": "periodic"},
                       "protocol": {"timestep_fs": 0.5, "dump_every": 20, "ensemble": "nvt"},
                       "model": {"kind": "classical"}, "type_elements": ["O", "H"], "natoms": 192,
                       "status": "finished"})


class Hang(Exception):
    pass


@contextmanager
def no_hang(seconds: int = 20):
    def alarm(*_):
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def mutated(base: str):
    """The base text with bytes replaced, inserted, deleted, or cut: near-valid files."""
    raw = base.encode()
    edit = st.tuples(st.integers(0, len(raw)), st.integers(0, 12), st.binary(max_size=12))
    return st.one_of(
        st.lists(edit, min_size=1, max_size=6).map(lambda edits: _apply(raw, edits)),
        st.integers(0, len(raw)).map(lambda cut: raw[:cut]),
        st.binary(max_size=400),
        st.text(max_size=300).map(str.encode),
    )


def _apply(raw: bytes, edits) -> bytes:
    for at, drop, insert in edits:
        at = min(at, len(raw))
        raw = raw[:at] + insert + raw[at + drop:]
    return raw


def _file(data: bytes, name: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="lmpbench-fuzz-"))
    path = folder / name
    path.write_bytes(data)
    return path


@FUZZ
@given(mutated(DUMP), st.booleans())
def test_dump_reader(data, finished):
    path = _file(data, "traj.dump")
    with no_hang():
        try:
            reader = TrajectoryReader(path, finished=finished)
            for frame in reader:
                assert frame.positions.shape == (len(frame.ids), 3)
        except TrajectoryError as err:
            assert str(err) and "\n" not in str(err)


@FUZZ
@given(mutated(DATA))
def test_data_file_reader(data):
    path = _file(data, "start.data")
    with no_hang():
        try:
            types = from_data_file(path)
            assert len(types.elements) == len(types.masses)
        except TypeMapError as err:
            assert str(err) and "\n" not in str(err)


@FUZZ
@given(mutated(TOML))
def test_systems_toml(data):
    path = _file(data, "systems.toml")
    with no_hang():
        try:
            load_user_systems(path)
        except SystemError as err:
            assert str(err)


@FUZZ
@given(mutated(RUN_JSON))
def test_run_json(data):
    path = _file(data, "run.json")
    with no_hang():
        try:
            read_run_manifest(path)
        except ManifestError as err:
            assert str(err) and "\n" not in str(err)


@FUZZ
@given(mutated("3\nethanol\nC 0.0 0.0 0.0\nC 1.5 0.0 0.0\nO 2.0 1.2 0.0\n"), st.sampled_from(["xyz", "data", "extxyz"]))
def test_structure_reader(data, suffix):
    from lmpbench import runner
    from lmpbench.systems import get_protocol, get_system

    path = _file(data, f"start.{suffix}")
    config = runner.RunConfig(system=get_system("md17_ethanol"), protocol=get_protocol("md17"), model="classical:lj",
                              seed=1, out=path.parent / "run", structure=path)
    with no_hang():
        try:
            atoms = runner.read_structure(config)
            assert set(atoms.get_chemical_symbols()) <= {"C", "H", "O"}
        except runner.RunError as err:
            assert str(err)


@pytest.fixture(scope="module")
def contract_model(tmp_path_factory):
    from lmpbench.contract import ModelMetadata, save_model
    from lmpbench.models import LennardJones

    return save_model(LennardJones(0.01, 3.0, r_max=6.0), tmp_path_factory.mktemp("fuzz") / "lj.pt",
                      ModelMetadata(r_max=6.0, type_names=["Ar"]))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.one_of(st.text(max_size=200), mutated('{"r_max": 6.0, "type_names": ["Ar"], "num_layers": 1, '
                                                '"model_dtype": "float64", "contract_version": 1}').map(
    lambda b: b.decode(errors="replace"))))
def test_deployed_metadata(contract_model, text):
    """A deployed TorchScript file whose metadata member holds anything at all."""
    from lmpbench.contract import METADATA_FILE, ContractError, read_metadata
    from lmpbench.deploy import DeployError, read_deployed_metadata

    path = _file(b"", "model.pt")
    with zipfile.ZipFile(contract_model) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith(f"extra/{METADATA_FILE}"):
                data = text.encode()
            dst.writestr(item, data)
    with no_hang():
        try:
            read_deployed_metadata(path)
        except DeployError as err:
            assert str(err)
        try:
            read_metadata(path)
        except ContractError as err:
            assert str(err)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 10_000), st.binary(min_size=1, max_size=8)), min_size=1, max_size=4))
def test_deployed_file_bytes(contract_model, flips):
    """A deployed file damaged anywhere (a bad copy, a disk error)."""
    from lmpbench.deploy import DeployError, read_deployed_metadata

    raw = bytearray(contract_model.read_bytes())
    for at, data in flips:
        at = at % len(raw)
        raw[at:at + len(data)] = data
    path = _file(bytes(raw), "model.pt")
    with no_hang():
        try:
            read_deployed_metadata(path)
        except DeployError as err:
            assert str(err)



@FUZZ
@given(st.one_of(mutated(RUN_JSON), st.dictionaries(st.sampled_from(["restart", "status", "config_sha256", "model"]),
                                                    st.one_of(st.none(), st.integers(), st.text(max_size=20),
                                                              st.dictionaries(st.sampled_from(["file", "step", "sha256"]),
                                                                              st.one_of(st.integers(), st.text(max_size=20))))
                                                    ).map(lambda d: json.dumps(d).encode())))
def test_run_json_as_the_runner_reads_it(data):
    """The runner's own reading of a previous run.json (before it resumes): RunError or a record."""
    from lmpbench import runner

    path = _file(data, "run.json")
    with no_hang():
        try:
            previous = runner._previous_manifest(path)
            runner._restart_record(previous, path)
        except runner.RunError as err:
            assert str(err)
