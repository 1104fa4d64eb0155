"""Reproduced experiments: run folders, resuming an interrupted sweep, the CLI, the check."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from attnlens.cli import app
from attnlens.errors import RunFolderMismatchError
from attnlens.experiments import get, load
from attnlens.experiments import svm_local_convergence as lc
from attnlens.svm import convergence_check

SMALL = dict(seeds=4, steps=300, chunk=2, n=3, T=4, d=4, progress=False)


def test_all_issue_experiments_are_registered():
    names = load("svm")
    assert set(names) >= {
        "local-convergence", "nuclear-bias", "rank", "multi-token", "trajectories",
        "regularization-path", "global-vs-local", "joint-training",
    }


def test_local_convergence_resumes_an_interrupted_sweep(tmp_path, monkeypatch):
    out = tmp_path / "lc"
    real = lc.convergence_unit
    calls = []

    def flaky(seeds, **kw):
        calls.append(seeds)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated interruption")
        return real(seeds, **kw)

    monkeypatch.setattr(lc, "convergence_unit", flaky)
    with pytest.raises(KeyboardInterrupt):
        get("svm", "local-convergence")(out, **SMALL)
    units = sorted((out / "units").glob("*.json"))
    assert [u.name for u in units] == ["seeds-0-1.json"]
    stamp = units[0].stat().st_mtime_ns
    assert not (out / "metrics.json").exists()

    calls.clear()
    metrics = get("svm", "local-convergence")(out, **SMALL)
    assert calls == [[2, 3]]  # only the unfinished chunk ran
    assert units[0].stat().st_mtime_ns == stamp
    assert metrics["corr_W_Wmm"]["count"] == 4
    assert metrics["corr_W_Wmm"]["mean"] > 0.9
    for name in ("config.json", "metrics.json", "correlation.png"):
        assert (out / name).exists()
    assert json.loads((out / "metrics.json").read_text())["corr_W_Wmm"]["count"] == 4

    # a finished run resumes to the same numbers without training again
    calls.clear()
    again = get("svm", "local-convergence")(out, **SMALL)
    assert calls == []
    assert again["corr_W_Wmm"] == metrics["corr_W_Wmm"]
    # another config in the same folder is refused unless overwritten
    with pytest.raises(RunFolderMismatchError):
        get("svm", "local-convergence")(out, **{**SMALL, "steps": 301})


def test_cli_reproduce(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["svm", "reproduce", "nuclear-bias", "--seeds", "2", "--steps",
                              "100", "--out", str(tmp_path / "nb")])
    assert res.exit_code == 0, res.output
    assert "W_fro.mean" in res.output
    assert (tmp_path / "nb" / "nuclear_bias.png").exists()
    bad = runner.invoke(app, ["svm", "reproduce", "no-such-thing", "--out", str(tmp_path)])
    assert bad.exit_code == 2
    assert "known" in bad.output


def test_convergence_check():
    out = convergence_check(0, steps=1500)
    assert out.correlation > 0.97
    assert out.prob_selected > 0.99
    assert len(out.selection) == 6 and out.seconds > 0
    with pytest.raises(ValueError, match="seed"):
        convergence_check(-1)
    assert np.isfinite(out.norm)
    assert json.loads(json.dumps(out.to_dict()))["correlation"] == out.correlation


def _run(name, tmp_path, **kw):
    load("svm")
    return get("svm", name)(tmp_path / name, progress=False, **kw)


def test_trajectories_and_regularization_path(tmp_path):
    m = _run("trajectories", tmp_path, seeds=2, steps=400)
    assert m["T=3"]["corr_W_W^mm"]["count"] == 2
    assert m["T=3"]["corr_W_W^mm"]["mean"] > 0.9
    assert (tmp_path / "trajectories" / "trajectories.png").exists()
    m = _run("regularization-path", tmp_path, seeds=2, steps=60, n=3, T=4, d=4,
             radii=(1.0, 8.0, 32.0))
    assert m["fro_path"]["corr_Wmm_at_Rmax"]["mean"] > 0.95
    by_r = m["fro_path"]["mean_corr_Wmm_by_R"]
    assert by_r[-1] > by_r[0]


def test_global_vs_local_and_joint_training(tmp_path):
    m = _run("global-vs-local", tmp_path, seeds=4, steps=300, ns=(2,), ds=(8,))
    row = m["grid"][0]
    parts = ("frac_global", "frac_local_not_global", "frac_converged_not_local",
             "frac_not_converged")
    assert sum(row[k] for k in parts) == pytest.approx(1.0)
    m = _run("joint-training", tmp_path, seeds=2, steps=300, n=3, T=4, d=6)
    assert m["corr_v_vmm"]["count"] == 2 and m["corr_v_vmm"]["mean"] > 0.9
