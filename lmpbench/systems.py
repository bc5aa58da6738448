"""Benchmark systems and simulation protocols, as data (``docs/benchmark.md``).

``PROTOCOLS`` and ``SYSTEMS`` are registries: one declarative entry per protocol or system,
duplicate names rejected. Users add systems from a TOML file (``load_user_systems``) with
the same fields. Every protocol value can be overridden per run (``Protocol.replace``).
Every protocol value is checked against ``PROTOCOL_RULES`` whenever a ``Protocol`` is made
(built-in, from a systems file, or by an override), so a bad value is refused before a run
folder exists.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path


class SystemError(ValueError):  # noqa: A001  (a user-facing "bad system" error, not the builtin)
    """Unknown system or protocol, or a bad user definition."""


@dataclass(frozen=True)
class Protocol:
    """How a system is simulated. Times in fs and ps, temperature in K, pressure in bar.

    ``ensemble`` picks the deck template (``ENSEMBLE_TEMPLATES``). Thermostat damping is
    ``thermostat_damp_steps`` timesteps (the paper's Nose-Hoover coupling time 20 dt).
    """

    name: str
    ensemble: str
    timestep_fs: float
    temperature_K: float
    length_ps: float
    dump_every: int  # steps between saved frames
    thermostat_damp_steps: float = 20.0
    pressure_bar: float = 1.0  # npt
    barostat_damp_steps: float = 1000.0  # npt
    friction_per_fs: float = 0.05  # langevin
    metad_pace: int = 500  # steps between hills
    metad_height_kJ_mol: float = 1.2
    metad_sigma_rad: float = 0.35
    metad_bias_factor: float = 6.0

    def __post_init__(self):
        validate_protocol(self)

    @property
    def steps(self) -> int:
        return round(self.length_ps * 1000.0 / self.timestep_fs)

    @property
    def template(self) -> str:
        return ENSEMBLE_TEMPLATES[self.ensemble]

    def replace(self, **changes) -> "Protocol":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise SystemError(f"unknown protocol field(s) {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


ENSEMBLE_TEMPLATES = {
    "nvt": "nvt_nose_hoover.in",
    "nve": "nve.in",
    "npt": "npt_nose_hoover.in",
    "langevin_metad": "langevin_metad.in",
}


@dataclass(frozen=True)
class Rule:
    """What a protocol value must be: ``demand`` words it for the error message."""

    demand: str
    holds: Callable[[object], bool]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


POSITIVE = Rule("a positive finite number", lambda v: _is_number(v) and v > 0)
FINITE = Rule("a finite number", _is_number)
POSITIVE_INT = Rule("a positive integer", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0)
ABOVE_ONE = Rule("a finite number greater than 1", lambda v: _is_number(v) and v > 1)
ENSEMBLE = Rule(f"one of {', '.join(ENSEMBLE_TEMPLATES)}", lambda v: isinstance(v, str) and v in ENSEMBLE_TEMPLATES)

# every Protocol field but its name, with the rule its value must meet (checked in this order)
PROTOCOL_RULES: dict[str, Rule] = {
    "ensemble": ENSEMBLE,
    "timestep_fs": POSITIVE,
    "temperature_K": POSITIVE,
    "length_ps": POSITIVE,
    "dump_every": POSITIVE_INT,
    "thermostat_damp_steps": POSITIVE,
    "pressure_bar": FINITE,  # a negative pressure (tension) is a valid target
    "barostat_damp_steps": POSITIVE,
    "friction_per_fs": POSITIVE,
    "metad_pace": POSITIVE_INT,
    "metad_height_kJ_mol": POSITIVE,
    "metad_sigma_rad": POSITIVE,
    "metad_bias_factor": ABOVE_ONE,  # well-tempered: bias temperature (factor - 1) T must be positive
}


def validate_protocol(protocol: Protocol) -> None:
    """Refuse a protocol value its rule rejects, or a length of zero steps: one line naming
    the protocol, the field and the value."""
    for name, rule in PROTOCOL_RULES.items():
        value = getattr(protocol, name)
        if not rule.holds(value):
            raise SystemError(f"protocol {protocol.name}: {name} must be {rule.demand}, got {value!r}")
    steps = protocol.length_ps * 1000.0 / protocol.timestep_fs
    if not math.isfinite(steps):
        raise SystemError(f"protocol {protocol.name}: length_ps {protocol.length_ps!r} at timestep_fs "
                          f"{protocol.timestep_fs!r} gives too many steps")
    if protocol.steps < 1:
        raise SystemError(f"protocol {protocol.name}: length_ps {protocol.length_ps!r} is shorter than one timestep "
                          f"(timestep_fs {protocol.timestep_fs!r}): zero steps")


@dataclass(frozen=True)
class System:
    """A benchmark system: its elements, graph cutoff, protocol and starting structure.

    ``structure`` names a file in ``lmpbench/data/structures`` (``None``: the user must give
    ``--structure``; ``structure_note`` says why). ``dihedrals`` holds 1-based atom indices of
    named dihedrals of the shipped structure, for metadynamics. ``fixed_bonds`` False tells
    lmpbench's structural collapse check that bonds break and form in normal dynamics (it then
    checks close contacts only).
    """

    name: str
    category: str  # "molecule" (vacuum, bond stability) or "periodic"
    elements: tuple[str, ...]
    cutoff_A: float
    protocol: str
    structure: str | None = None
    provenance: str = ""
    structure_note: str = ""
    dihedrals: dict = field(default_factory=dict)
    fixed_bonds: bool = True  # False: neighbours change all the time (metals, ion conductors)

    def structure_path(self) -> Path | None:
        if self.structure is None:
            return None
        return Path(str(resources.files("lmpbench.data"))) / "structures" / self.structure


def _registry(items, kind):
    table = {}
    for item in items:
        if item.name in table:
            raise SystemError(f"duplicate {kind} name {item.name!r}")
        table[item.name] = item
    return table


PROTOCOLS = _registry([
    Protocol("md17", "nvt", timestep_fs=0.5, temperature_K=500.0, length_ps=300.0, dump_every=100),
    Protocol("water", "nvt", timestep_fs=1.0, temperature_K=300.0, length_ps=500.0, dump_every=100),
    Protocol("lips", "nvt", timestep_fs=0.25, temperature_K=520.0, length_ps=50.0, dump_every=50),
    Protocol("alanine_dipeptide", "langevin_metad", timestep_fs=2.0, temperature_K=300.0, length_ps=5000.0,
             dump_every=500),
    # the stand-in for LiPS (an ion conductor, not reachable offline): a liquid alloy that
    # diffuses, scored with LiPS's metrics (all-atom RDF windows, diffusivity of one species)
    Protocol("cuzr_liquid", "nvt", timestep_fs=1.0, temperature_K=1500.0, length_ps=50.0, dump_every=20),
], "protocol")

_RDKIT = "built from connectivity with RDKit ETKDG and relaxed with MMFF94 (data/structures/make_molecules.py)"
SYSTEMS = _registry([
    System("md17_ethanol", "molecule", ("C", "H", "O"), 6.0, "md17", structure="ethanol.xyz",
           provenance="ASE g2 collection 'CH3CH2OH' (MP2/6-31G* geometry)"),
    System("md17_aspirin", "molecule", ("C", "H", "O"), 6.0, "md17", structure="aspirin.xyz", provenance=_RDKIT),
    System("md17_naphthalene", "molecule", ("C", "H"), 6.0, "md17", structure="naphthalene.xyz", provenance=_RDKIT),
    System("md17_salicylic_acid", "molecule", ("C", "H", "O"), 6.0, "md17", structure="salicylic_acid.xyz",
           provenance=_RDKIT),
    System("water", "periodic", ("O", "H"), 4.0, "water", structure="water64.data",
           provenance="64 flexible SPC/Fw waters, PPPM, 10 ps NVT at 300 K in LAMMPS "
                      "(lammps_inputs/make_water64.in)"),
    # phi/psi atom numbers are those of the shipped ACE-ALA-NME file (heavy atoms in SMILES
    # order); a structure with another atom order needs its own (a systems file)
    System("alanine_dipeptide", "molecule", ("C", "H", "N", "O"), 6.0, "alanine_dipeptide",
           structure="alanine_dipeptide.xyz", provenance=_RDKIT + " (L-alanine, vacuum)",
           dihedrals={"phi": (2, 4, 5, 7), "psi": (4, 5, 7, 9)}),
    System("cuzr_liquid", "periodic", ("Cu", "Zr"), 5.0, "cuzr_liquid", structure="cuzr250.data",
           fixed_bonds=False, provenance="liquid Cu50Zr50, 250 atoms, Mendelev EAM (CuZr_mm.eam.fs), melted at 2500 K, "
                      "20 ps at 1500 K in LAMMPS (lammps_inputs/make_cuzr250.in); the offline stand-in for LiPS"),
    System("lips", "periodic", ("Li", "P", "S"), 4.0, "lips", fixed_bonds=False,
           structure_note="no offline structure: LiPS needs the real dataset; give --structure (a frame of lips.xyz)"),
], "system")


def parse_assignments(protocol: Protocol, assignments) -> dict:
    """``["field=value", ...]`` into typed protocol overrides (the field's own type)."""
    types = {f.name: type(getattr(protocol, f.name)) for f in dataclasses.fields(protocol)}
    changes = {}
    for text in assignments:
        name, sep, value = text.partition("=")
        if not sep or name not in types or name == "name":
            raise SystemError(f"--set {text!r}: use FIELD=VALUE with FIELD one of "
                              f"{', '.join(n for n in types if n != 'name')}")
        try:
            changes[name] = types[name](value)
        except ValueError:
            raise SystemError(f"--set {text!r}: {name} takes a {types[name].__name__}") from None
    return changes


def get_system(name: str, user_systems: dict | None = None) -> System:
    table = {**SYSTEMS, **(user_systems or {})}
    if name not in table:
        raise SystemError(f"unknown system {name!r}; known: {', '.join(sorted(table))}")
    return table[name]


def get_protocol(name: str, user_protocols: dict | None = None) -> Protocol:
    table = {**PROTOCOLS, **(user_protocols or {})}
    if name not in table:
        raise SystemError(f"unknown protocol {name!r}; known: {', '.join(sorted(table))}")
    return table[name]


def load_user_systems(path: str | Path) -> tuple[dict[str, System], dict[str, Protocol]]:
    """Systems and protocols from a TOML file with ``[system.NAME]`` / ``[protocol.NAME]``
    tables holding the fields of ``System`` / ``Protocol``; a ``structure`` path is taken
    relative to the file. Names may not shadow the built-in ones."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise SystemError(f"cannot read systems file {path}: {err}") from None
    unknown = set(data) - {"system", "protocol"}
    if unknown:
        raise SystemError(f"{path}: unknown table(s) {', '.join(sorted(unknown))}; use [system.NAME] and [protocol.NAME]")
    protocols, systems = {}, {}
    for name, fields in data.get("protocol", {}).items():
        protocols[name] = _build(Protocol, name, fields, path, PROTOCOLS)
    for name, fields in data.get("system", {}).items():
        fields = dict(fields)
        if "structure" in fields:
            fields["structure"] = str((path.parent / fields["structure"]).resolve())
        if "elements" in fields:
            fields["elements"] = tuple(fields["elements"])
        system = _build(System, name, fields, path, SYSTEMS)
        get_protocol(system.protocol, protocols)
        systems[name] = system
    return systems, protocols


def _build(cls, name, fields, path, builtin):
    if name in builtin:
        raise SystemError(f"{path}: {cls.__name__.lower()} {name!r} would shadow the built-in one; rename it")
    allowed = {f.name for f in dataclasses.fields(cls)} - {"name"}
    unknown = set(fields) - allowed
    if unknown:
        raise SystemError(f"{path}: {cls.__name__.lower()} {name!r} has unknown field(s) {', '.join(sorted(unknown))}")
    try:
        return cls(name=name, **fields)
    except TypeError as err:
        raise SystemError(f"{path}: {cls.__name__.lower()} {name!r}: {err}") from None
    except SystemError as err:  # a value its rule rejects (PROTOCOL_RULES)
        raise SystemError(f"{path}: {err}") from None
