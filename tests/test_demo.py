"""`lmpbench demo` on a reduced matrix: a shipped ethanol model x two seeds, 1 ps, the
TorchScript target (compiles in seconds; `make demo` itself takes AOTInductor).

Checked against sources the demo does not compute: each model's force MAE in the report is
the one nequip's calculator wrote into the shipped train.json; the noise-floor row is the
reference's second seed, cut to the run length, analysed as a trajectory file by `lmpbench
analyze` against the first seed; every run folder is a finished LAMMPS run of the asked
length; a second call reuses everything."""

import json

import pytest
from click.testing import CliRunner

from lmpbench.cli.main import cli
from lmpbench.demo import DemoSystem, run_demo, shipped_model

# 1 ps: h(r) needs one whole 1 ps window
ETHANOL = DemoSystem("md17_ethanol", "md17_ethanol-reference-short", ("ethanol-nequip-40",),
                     length_ps=1.0, dump_every=10, chunk_steps=500)
SEEDS = (1, 2)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    summary = run_demo(out, progress=False, echo=lambda *a: None, systems=(ETHANOL,), seeds=SEEDS,
                       target="torchscript-ghost")
    return out, summary


def test_every_run_finished_at_the_asked_length(demo):
    out, summary = demo
    assert len(summary["runs"]) == len(ETHANOL.models) * len(SEEDS)
    for run in summary["runs"]:
        manifest = json.loads((out / run["folder"] / "run.json").read_text())
        assert manifest["status"] == "finished" and manifest["steps_done"] == 2000  # 1 ps of 0.5 fs
        assert (out / run["folder"] / "metrics.json").is_file()


def test_report_takes_force_error_from_train_json_and_the_cut_noise_floor(demo, tmp_path):
    out, summary = demo
    report = json.loads((out / "report" / "report.json").read_text())
    table = report["systems"]["md17_ethanol"]
    for name in ETHANOL.models:
        trained = json.loads((shipped_model(name) / "train.json").read_text())["test"]["forces_mae_meV_A"]
        row = next(r for r in table["models"] if name in r["name"])
        assert row["cells"]["forces_mae"]["mean"] == pytest.approx(trained, rel=1e-12)
        assert row["cells"]["forces_mae"]["n"] == len(SEEDS)
    # the noise floor at the run length, recomputed through the CLI on the cut second seed
    from lmpbench.analysis.trajectory import write_first_frames
    from lmpbench.datasets.store import find_dataset, read_dataset

    first = find_dataset(ETHANOL.reference)
    second = read_dataset(first.folder.parent / "seed2")
    cut = write_first_frames(second.reference_trajectory, 201, tmp_path / "cut.extxyz")  # 1 ps of 5 fs frames
    result = CliRunner().invoke(cli, ["analyze", str(cut), "--system", "md17_ethanol", "--timestep-fs", "0.5",
                                      "--every", "10", "--reference", str(first.reference_trajectory),
                                      "--out", str(tmp_path / "floor")])
    assert result.exit_code == 0, result.output
    expected = json.loads((tmp_path / "floor" / "metrics.json").read_text())["metrics"]["h_mae"]["value"]
    assert expected is not None and table["noise_floor"]["h_mae"] == pytest.approx(expected, rel=1e-9)


def test_a_second_call_reuses_models_and_runs(demo):
    out, first = demo
    again = run_demo(out, progress=False, echo=lambda *a: None, systems=(ETHANOL,), seeds=SEEDS,
                     target="torchscript-ghost")
    assert all(d["seconds"] == 0.0 for d in again["deployed"])
    assert [r["status"] for r in again["runs"]] == [r["status"] for r in first["runs"]]
