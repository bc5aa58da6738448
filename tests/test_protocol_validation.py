"""Protocol values out of range are refused (one line, field and value) before a run folder exists.

No LAMMPS runs here: every failure comes before the run starts.
"""

import dataclasses
import re

import pytest
from click.testing import CliRunner

from lmpbench import systems
from lmpbench.cli.main import cli
from lmpbench.systems import PROTOCOL_RULES, PROTOCOLS, SYSTEMS, Protocol, SystemError, validate_protocol

WATER = ["--system", "water", "--model", "classical:spcfw"]
POSITIVE = "must be a positive finite number"


def run(tmp_path, *args):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--out", str(out), "--no-progress", *map(str, args)])
    return result, out


def assert_refused(result, out, message):
    assert result.exit_code == 2, result.output  # click.UsageError
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    error = result.output.rstrip("\n").splitlines()[-1]  # the one line after click's usage lines
    assert error.startswith("Error: ") and re.search(message, error), result.output
    assert not out.exists()


# one bad value for every rule of every field, through --set
BAD_SET = [
    ("ensemble", "nvtx", "'nvtx'", "must be one of nvt, nve, npt, langevin_metad"),
    ("timestep_fs", "0", "0.0", POSITIVE),
    ("timestep_fs", "-0.5", "-0.5", POSITIVE),
    ("timestep_fs", "nan", "nan", POSITIVE),
    ("temperature_K", "-5", "-5.0", POSITIVE),
    ("temperature_K", "0", "0.0", POSITIVE),
    ("temperature_K", "inf", "inf", POSITIVE),
    ("temperature_K", "-inf", "-inf", POSITIVE),
    ("length_ps", "0", "0.0", POSITIVE),
    ("length_ps", "nan", "nan", POSITIVE),
    ("dump_every", "0", "0", "must be a positive integer"),
    ("dump_every", "-10", "-10", "must be a positive integer"),
    ("thermostat_damp_steps", "0", "0.0", POSITIVE),
    ("thermostat_damp_steps", "nan", "nan", POSITIVE),
    ("pressure_bar", "nan", "nan", "must be a finite number"),
    ("pressure_bar", "inf", "inf", "must be a finite number"),
    ("barostat_damp_steps", "-1000", "-1000.0", POSITIVE),
    ("friction_per_fs", "0", "0.0", POSITIVE),
    ("friction_per_fs", "inf", "inf", POSITIVE),
    ("metad_pace", "0", "0", "must be a positive integer"),
    ("metad_height_kJ_mol", "-1.2", "-1.2", POSITIVE),
    ("metad_sigma_rad", "0", "0.0", POSITIVE),
    ("metad_bias_factor", "1", "1.0", "must be a finite number greater than 1"),
    ("metad_bias_factor", "0.5", "0.5", "must be a finite number greater than 1"),
    ("metad_bias_factor", "nan", "nan", "must be a finite number greater than 1"),
]


@pytest.mark.parametrize("field, text, shown, demand", BAD_SET, ids=[f"{f}={t}" for f, t, _, _ in BAD_SET])
def test_bad_set_value_refused(field, text, shown, demand, tmp_path):
    result, out = run(tmp_path, *WATER, "--set", f"{field}={text}")
    assert_refused(result, out, re.escape(f"protocol water: {field} {demand}, got {shown}"))


def test_every_rule_has_a_bad_case():
    assert set(PROTOCOL_RULES) == {f.name for f in dataclasses.fields(Protocol)} - {"name"}
    assert {f for f, *_ in BAD_SET} == set(PROTOCOL_RULES)


BAD_OPTIONS = [
    (["--temperature", "-5"], "temperature_K", "-5.0"),
    (["--temperature", "0"], "temperature_K", "0.0"),
    (["--temperature", "nan"], "temperature_K", "nan"),
    (["--temperature", "inf"], "temperature_K", "inf"),
    (["--timestep-fs", "0"], "timestep_fs", "0.0"),
    (["--timestep-fs", "-1"], "timestep_fs", "-1.0"),
    (["--timestep-fs", "nan"], "timestep_fs", "nan"),
    (["--length-ps", "0"], "length_ps", "0.0"),
    (["--length-ps", "-3"], "length_ps", "-3.0"),
    (["--length-ps", "inf"], "length_ps", "inf"),
]


@pytest.mark.parametrize("args, field, shown", BAD_OPTIONS, ids=[" ".join(a) for a, _, _ in BAD_OPTIONS])
def test_bad_option_value_refused(args, field, shown, tmp_path):
    result, out = run(tmp_path, *WATER, *args)
    assert_refused(result, out, re.escape(f"protocol water: {field} {POSITIVE}, got {shown}"))


def test_dump_every_option_zero_refused_by_click(tmp_path):
    result, out = run(tmp_path, *WATER, "--dump-every", "0")
    assert_refused(result, out, r"--dump-every.*\b0\b")


def test_length_shorter_than_one_timestep(tmp_path):
    result, out = run(tmp_path, *WATER, "--length-ps", "0.0004")  # 0.4 fs at 1 fs: zero steps
    assert_refused(result, out, re.escape("protocol water: length_ps 0.0004 is shorter than one timestep "
                                          "(timestep_fs 1.0): zero steps"))


def test_timestep_so_small_the_steps_overflow(tmp_path):
    result, out = run(tmp_path, *WATER, "--timestep-fs", "1e-320")
    assert_refused(result, out, re.escape("protocol water: length_ps 500.0 at timestep_fs 1e-320 gives too many steps"))


def test_overrides_are_checked_together(tmp_path):
    """--length-ps 0.0005 is zero steps at water's 1 fs but 2 steps at the --set timestep: the
    protocol passes, and the run fails later (here: on the model) for another reason."""
    result, out = run(tmp_path, "--system", "water", "--model", "classical:nope", "--length-ps", "0.0005",
                      "--set", "timestep_fs=0.25")
    assert_refused(result, out, "unknown classical force field 'nope'")
    assert "protocol water" not in result.output


def test_set_wins_over_option(tmp_path):
    result, out = run(tmp_path, *WATER, "--temperature", "300", "--set", "temperature_K=-1")
    assert_refused(result, out, re.escape(f"protocol water: temperature_K {POSITIVE}, got -1.0"))


# the TOML route: user protocols in a systems file

GOOD_PROTOCOL = {"ensemble": '"nvt"', "timestep_fs": "0.5", "temperature_K": "300.0", "length_ps": "0.1",
                 "dump_every": "20"}
BAD_TOML = [
    ("temperature_K", "-5.0", "temperature_K must be a positive finite number, got -5.0"),
    ("temperature_K", "nan", "temperature_K must be a positive finite number, got nan"),
    ("temperature_K", '"300"', "temperature_K must be a positive finite number, got '300'"),
    ("ensemble", '"nvtt"', "ensemble must be one of nvt, nve, npt, langevin_metad, got 'nvtt'"),
    ("dump_every", "20.5", "dump_every must be a positive integer, got 20.5"),
    ("dump_every", "true", "dump_every must be a positive integer, got True"),
    ("metad_bias_factor", "1.0", "metad_bias_factor must be a finite number greater than 1, got 1.0"),
    ("friction_per_fs", "-inf", "friction_per_fs must be a positive finite number, got -inf"),
    ("length_ps", "0.0001", "length_ps 0.0001 is shorter than one timestep (timestep_fs 0.5): zero steps"),
]


def systems_file(tmp_path, **changes):
    fields = {**GOOD_PROTOCOL, **changes}
    path = tmp_path / "systems.toml"
    path.write_text("[protocol.mine]\n" + "".join(f"{k} = {v}\n" for k, v in fields.items()) + """
[system.my_water]
category = "periodic"
elements = ["O", "H"]
cutoff_A = 4.0
protocol = "mine"
""")
    return path


@pytest.mark.parametrize("field, value, message", BAD_TOML, ids=[f"{f}={v}" for f, v, _ in BAD_TOML])
def test_bad_toml_protocol_refused(field, value, message, tmp_path):
    path = systems_file(tmp_path, **{field: value})
    with pytest.raises(SystemError, match=re.escape(f"{path}: protocol mine: {message}")):
        systems.load_user_systems(path)
    result, out = run(tmp_path, "--system", "my_water", "--model", "classical:lj", "--systems-file", path)
    assert_refused(result, out, re.escape(f"{path}: protocol mine: {message}"))


def test_good_toml_protocol_loads(tmp_path):
    found, protocols = systems.load_user_systems(systems_file(tmp_path, pressure_bar="-500.0"))
    assert protocols["mine"].steps == 200 and protocols["mine"].template == "nvt_nose_hoover.in"
    assert found["my_water"].protocol == "mine"


def test_toml_protocol_checked_after_cli_overrides(tmp_path):
    path = systems_file(tmp_path)
    result, out = run(tmp_path, "--system", "my_water", "--model", "classical:lj", "--systems-file", path,
                      "--set", "metad_pace=0")
    assert_refused(result, out, re.escape("protocol mine: metad_pace must be a positive integer, got 0"))


# what passes


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_builtin_protocols_validate(name):
    protocol = PROTOCOLS[name]
    validate_protocol(protocol)
    assert protocol.steps >= 1 and protocol.template


def test_every_builtin_system_has_a_valid_protocol():
    for system in SYSTEMS.values():
        validate_protocol(systems.get_protocol(system.protocol))


def test_replace_validates():
    water = PROTOCOLS["water"]
    assert water.replace(pressure_bar=-100.0, metad_bias_factor=1.5).pressure_bar == -100.0
    assert water.replace(temperature_K=None) == water  # None: keep the value
    with pytest.raises(SystemError, match=re.escape("protocol water: friction_per_fs must be a positive finite "
                                                    "number, got 0.0")):
        water.replace(friction_per_fs=0.0)
