"""``run.json``, the manifest of a run folder: its format version and the fields readers need.

``lmpbench run`` writes it (``runner``); ``analyze`` and, later, the report read it through
``read_run_manifest``, which refuses a file that is not JSON, comes from another format
version, or lacks a field, with one line naming the file and what is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

MANIFEST_FORMAT = 1  # raise when a field readers rely on changes meaning or goes away

# field -> type, and for nested tables their own fields; what readers of a run folder rely on
REQUIRED_FIELDS = {
    "system": {"name": str, "category": str},
    "protocol": {"timestep_fs": (int, float), "dump_every": int, "ensemble": str},
    "model": {"kind": str},
    "type_elements": list,
    "natoms": int,
    "status": str,
}


class ManifestError(ValueError):
    """A run.json that cannot be read; the message names the file and the problem."""


def read_run_manifest(path: str | Path) -> dict:
    """The manifest at ``path``, checked: JSON object, this format version, every required field."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except OSError as err:
        raise ManifestError(f"{path}: cannot read: {err.strerror or err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path}: not a JSON run manifest ({err})") from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path}: not a run manifest (a JSON {type(manifest).__name__}, not an object)")
    version = manifest.get("manifest_format", MANIFEST_FORMAT)  # files from before the field are format 1
    if version != MANIFEST_FORMAT:
        raise ManifestError(f"{path}: written by lmpbench {manifest.get('lmpbench_version', '?')} in run.json format "
                            f"{version!r}; this lmpbench reads format {MANIFEST_FORMAT}")
    problems = _check(manifest, REQUIRED_FIELDS, "")
    if problems:
        raise ManifestError(f"{path}: run.json {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    if not all(isinstance(e, str) for e in manifest["type_elements"]):
        raise ManifestError(f"{path}: run.json field type_elements must be a list of element symbols")
    return manifest


def _check(table: dict, fields: dict, prefix: str) -> list[str]:
    problems = []
    for name, kind in fields.items():
        where = prefix + name
        if name not in table:
            problems.append(f"lacks field {where}")
        elif isinstance(kind, dict):
            if not isinstance(table[name], dict):
                problems.append(f"field {where} is not a table")
            else:
                problems += _check(table[name], kind, where + ".")
        elif not isinstance(table[name], kind) or isinstance(table[name], bool):
            problems.append(f"field {where} has {table[name]!r}, not a {_type_name(kind)}")
    return problems


def _type_name(kind) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__
