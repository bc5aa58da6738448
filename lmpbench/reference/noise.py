"""The noise floor of the benchmark's metrics: the reference scored against itself.

Each seed after the first is analysed exactly as a model's run of the system would be, with
the first seed as its reference (``analyze_trajectory`` with the system's metric set). A
model's error below these values cannot be told apart from the reference's own sampling noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _values(metrics: dict, prefix: str = "") -> dict:
    """Every numeric ``value`` in a metrics tree, by dotted name."""
    found = {}
    for name, item in metrics.items():
        if not isinstance(item, dict):
            continue
        key = f"{prefix}{name}"
        value = item.get("value")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            found[key] = float(value)
        found.update(_values({k: v for k, v in item.items() if isinstance(v, dict)}, f"{key}."))
    return found


def noise_floor(system: str, datasets: list, length_ps: float | None = None) -> dict:
    """Metrics of seeds 2.. against seed 1 (``datasets`` in seed order); per metric the values
    and their mean. ``length_ps``: each later seed cut to its first ``length_ps`` first, the
    floor of runs that long (sampling noise grows as runs get shorter; seed 1 stays whole, as
    it does as the reference of a model's run)."""
    import tempfile

    from lmpbench.analysis.run_metrics import analyze_trajectory
    from lmpbench.analysis.trajectory import write_first_frames
    from lmpbench.systems import get_system

    first = datasets[0]
    elements = list(get_system(system).elements)
    per_seed = {}
    for dataset in datasets[1:]:
        dt_ps = dataset.manifest["notes"]["reference_frame_dt_ps"]
        with tempfile.TemporaryDirectory() as scratch:  # the values go into reference.json
            trajectory = dataset.reference_trajectory
            if length_ps is not None:
                trajectory = write_first_frames(trajectory, round(length_ps / dt_ps) + 1,
                                                Path(scratch) / ("cut" + "".join(trajectory.suffixes)))
            result = analyze_trajectory(trajectory, elements=elements, system=system,
                                        timestep_fs=dt_ps * 1000.0, every=1, reference=first.reference_trajectory,
                                        out=scratch, ensemble="unbiased")
        per_seed[dataset.folder.name] = _values(result["metrics"])
    names = sorted({name for values in per_seed.values() for name in values})
    return {"against": first.folder.name, "seeds": per_seed, "length_ps": length_ps,
            "mean": {name: float(np.mean([v[name] for v in per_seed.values() if name in v])) for name in names},
            "definition": "each later seed's reference trajectory analysed as a run of the system, "
                          "with the first seed's as its reference"}
