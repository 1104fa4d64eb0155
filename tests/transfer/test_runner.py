"""Seeds, validation selection (never on test), aggregation and resume of the transfer runner."""

import pickle
import sys

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from attnlens.execution import Execution, use_execution
from attnlens.report import RunFolder
from attnlens.transfer import runner
from attnlens.transfer.heads import HEADS, count_parameters, get_head
from attnlens.transfer.reduce import group_average
from attnlens.transfer.runner import prepare_inputs, run_head, run_transfer, split_train_val


def test_splits_are_disjoint_stratified_and_seeded(rt_features):
    y, test = rt_features.labels, rt_features.test_idx
    tr0, va0 = split_train_val(y, test, 0.2, seed=0)
    tr1, va1 = split_train_val(y, test, 0.2, seed=1)
    for tr, va in ((tr0, va0), (tr1, va1)):
        assert not set(tr) & set(va) and not set(tr) & set(test) and not set(va) & set(test)
        assert len(tr) + len(va) + len(test) == len(y)
        assert abs(y[tr].mean() - y.mean()) < 0.1  # stratified
    assert not np.array_equal(tr0, tr1)
    np.testing.assert_array_equal(split_train_val(y, test, 0.2, seed=0)[0], tr0)
    capped, _ = split_train_val(y, test, 0.2, seed=0, max_train=20)
    assert len(capped) == 20 and set(capped) <= set(tr0)


def test_inputs_use_training_statistics_only(rt_features):
    data = prepare_inputs(rt_features, 16, seed=0)
    mask = rt_features.mask
    rows = data.tokens[data.train][mask[data.train]]
    np.testing.assert_allclose(rows.mean(axis=0), 0.0, atol=1e-10)
    assert np.sqrt(np.mean(np.sum(rows**2, axis=1))) == pytest.approx(1.0)
    assert np.all(data.tokens[~mask] == 0)
    # changing the test items' features changes nothing the heads are fitted or selected on
    other = type(rt_features)(**{**rt_features.__dict__})
    other.tokens = rt_features.tokens.copy()
    other.tokens[rt_features.test_idx] *= 7.0
    data2 = prepare_inputs(other, 16, seed=0)
    fit_items = np.concatenate([data.train, data.val])
    np.testing.assert_array_equal(data.tokens[fit_items], data2.tokens[fit_items])


def test_selection_on_validation_matches_independent_refits(rt_features):
    data = prepare_inputs(rt_features, 16, seed=1)
    unit = run_head(get_head("linear"), data, seed=1)
    X = group_average(rt_features.tokens, 16)
    w = rt_features.mask[..., None]
    pooled = (X * w).sum(1) / w.sum(1)
    y = rt_features.labels
    best = None
    for C in HEADS["linear"].grid:
        sc = StandardScaler().fit(pooled[data.train])
        clf = LogisticRegression(C=C, max_iter=2000, random_state=1)
        clf.fit(sc.transform(pooled[data.train]), y[data.train])
        val = np.mean(clf.predict(sc.transform(pooled[data.val])) == y[data.val])
        if best is None or val > best[0]:
            best = (val, C, np.mean(clf.predict(sc.transform(pooled[data.test])) == y[data.test]))
    assert unit["selected"] == best[1]
    assert unit["val_acc"] == pytest.approx(best[0])
    assert unit["test_acc"] == pytest.approx(best[2])
    assert unit["n_params"] == 16 + 1
    assert unit["n_test"] == len(rt_features.test_idx)


def test_run_transfer_aggregates_and_resumes(rt_features, tmp_path, monkeypatch):
    run = RunFolder(tmp_path / "run", {"t": 1})
    heads = ["linear", "linear_full"]
    res = run_transfer(rt_features, heads=heads, seeds=[0, 1], d=16, run=run, progress=False)
    for row in res.rows:
        accs = [u["test_acc"] for u in res.units.values() if u["head"] == row["head"]]
        assert row["seeds"] == 2
        assert row["test_acc_mean"] == pytest.approx(np.mean(accs))
        assert row["test_acc_std"] == pytest.approx(np.std(accs, ddof=1))
    assert res.rows[1]["n_params"] == rt_features.pooled_full.shape[1] + 1
    # each unit records the compute threads its times were measured with (one by default)
    assert {u["threads"] for u in res.units.values()} == {1}
    with use_execution(Execution(unit_threads=2)):
        two = run_transfer(rt_features, heads=["linear"], seeds=[0], d=16, progress=False)
    assert two.units["linear-seed0-d16"]["threads"] == 2

    def boom(*a, **k):
        raise AssertionError("a finished unit was recomputed")

    monkeypatch.setattr(runner, "run_head", boom)
    again = run_transfer(rt_features, heads=heads, seeds=[0, 1], d=16, run=run, progress=False)
    assert again.rows == res.rows
    # stored_only summarizes a stopped run: the missing seed is reported, nothing is fitted
    part = run_transfer(rt_features, heads=heads, seeds=[0, 1, 2], d=16, run=run,
                        progress=False, stored_only=True)
    assert [r["seeds"] for r in part.rows] == [2, 2]
    assert part.units["linear-seed2-d16"]["status"].startswith("not run")


def test_missing_estimator_is_reported_unavailable_not_faked(rt_features, monkeypatch):
    monkeypatch.setitem(sys.modules, "attnlens.convex.estimators", None)  # import fails
    res = run_transfer(rt_features, heads=["linear", "convex_attention_linear"], seeds=[0],
                       d=16, progress=False)
    row = {r["head"]: r for r in res.rows}["convex_attention_linear"]
    assert row["status"].startswith("unavailable") and "test_acc_mean" not in row


def test_bad_arguments_name_the_parameter(rt_features):
    with pytest.raises(ValueError, match="heads"):
        run_transfer(rt_features, heads=["transformer"], seeds=[0], progress=False)
    with pytest.raises(ValueError, match="seeds"):
        run_transfer(rt_features, heads=["linear"], seeds=[], progress=False)
    with pytest.raises(ValueError, match="val_fraction"):
        run_transfer(rt_features, heads=["linear"], val_fraction=1.5, progress=False)
    with pytest.raises(ValueError, match="must divide"):
        run_transfer(rt_features, heads=["linear"], seeds=[0], d=24, progress=False)
    with pytest.raises(ValueError, match="unknown head"):
        get_head("nope")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_count_parameters_of_mlp_pipeline(rt_features):
    data = prepare_inputs(rt_features, 16, seed=0)
    model = HEADS["mlp"].make(1e-2, 0, {"mlp_hidden": 8, "mlp_epochs": 20})
    model.fit(data.pooled[data.train], data.labels[data.train])
    assert count_parameters(model) == 16 * 8 + 8 + 8 * 1 + 1


def test_deadline_leaves_units_for_the_next_call(rt_features, tmp_path):
    import time

    run = RunFolder(tmp_path / "run", {"t": 2})
    heads = ["linear", "linear_full"]
    stopped = run_transfer(rt_features, heads=heads, seeds=[0], d=16, run=run, progress=False,
                           deadline=time.monotonic() - 1.0)
    assert stopped.config["complete"] is False
    assert all(u["status"].startswith("not run (time budget") for u in stopped.units.values())
    assert not run.units_dir.exists() or not list(run.units_dir.glob("*.json"))
    done = run_transfer(rt_features, heads=heads, seeds=[0], d=16, run=run, progress=False,
                        deadline=time.monotonic() + 3600)
    assert done.config["complete"] is True and [r["seeds"] for r in done.rows] == [1, 1]


def test_token_pool_feeds_the_token_heads_only(rt_features):
    plain = prepare_inputs(rt_features, 16, seed=0)
    pooled = prepare_inputs(rt_features, 16, seed=0, token_pool=4)
    s = rt_features.tokens.shape[1]
    assert pooled.tokens.shape == (len(rt_features), -(-s // 4), 16)
    np.testing.assert_allclose(pooled.pooled, plain.pooled)  # linear/MLP view unchanged
    rows = pooled.tokens[pooled.train][pooled.tokens[pooled.train].any(-1)]
    assert np.sqrt(np.mean(np.sum(rows**2, axis=1))) == pytest.approx(1.0, rel=0.05)


def test_a_bug_in_a_head_fails_loudly_and_the_unit_stays_pending(rt_features, tmp_path,
                                                                 monkeypatch):
    """Only declared 'not available here' errors become a status; a bug propagates, unstored."""
    run = RunFolder(tmp_path / "run", {"t": "bug"})

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the head")

    monkeypatch.setattr(runner, "run_head", broken)
    with pytest.raises(RuntimeError, match="a bug in the head"):
        run_transfer(rt_features, heads=["linear"], seeds=[0], d=16, run=run, progress=False)
    assert not run.has_unit("linear-seed0-d16")  # pending: the next call fits it
    monkeypatch.undo()
    res = run_transfer(rt_features, heads=["linear"], seeds=[0], d=16, run=run, progress=False)
    assert res.config["complete"] and "test_acc" in res.units["linear-seed0-d16"]


def test_a_head_over_the_memory_budget_is_stored_unavailable(rt_features, tmp_path,
                                                             monkeypatch):
    run = RunFolder(tmp_path / "run", {"t": "mem"})

    def too_large(*args, **kwargs):
        raise MemoryError("needs 4e9 entries (> budget)")

    monkeypatch.setattr(runner, "run_head", too_large)
    res = run_transfer(rt_features, heads=["linear"], seeds=[0], d=16, run=run, progress=False)
    unit = res.units["linear-seed0-d16"]
    assert unit["status"].startswith("unavailable: MemoryError") and "test_acc" not in unit
    assert run.has_unit("linear-seed0-d16") and res.config["complete"]


def test_convex_heads_use_the_torch_backend_on_the_runner_device_when_asked():
    from attnlens.transfer.heads import _convex

    make = _convex("self_attention", "linear")
    default = make(0.1, 0, {"device": "cpu"})
    torch_head = make(0.1, 0, {"device": "cpu", "convex_backend": "torch"})
    assert (default.backend, default.device) == ("numpy", None)  # numpy unless asked
    assert (torch_head.backend, torch_head.device) == ("torch", "cpu")


def test_a_convex_unit_stopped_midway_resumes_its_fit(rt_features, tmp_path, monkeypatch,
                                                       caplog):
    """A convex head's fits save their solver state under the run folder; a unit stopped
    in its second grid value reuses the finished first fit and resumes the second on the next
    call (same result as an uninterrupted run), and the stored unit leaves no checkpoint."""
    from attnlens.checkpoint import Checkpoint
    from attnlens.convex.results import ConvexResult

    head = "convex_attention_gated_relu"
    kw = dict(heads=[head], seeds=[0], d=4, progress=False, grids={head: [0.03, 0.1]},
              options={"convex_tol": 1e-4})
    ref = run_transfer(rt_features, run=RunFolder(tmp_path / "ref", {"t": "ck"}), **kw)
    run = RunFolder(tmp_path / "run", {"t": "ck"})
    real_save = Checkpoint.save

    class Stopped(Exception):
        pass

    def save_then_stop(self, state, force=False):
        real_save(self, state, force=True)
        if self.path.name == "beta0.1.pkl":
            raise Stopped

    monkeypatch.setattr(Checkpoint, "save", save_then_stop)
    with pytest.raises(Stopped):
        run_transfer(rt_features, run=run, **kw)
    folder = run.path / "checkpoints" / f"{head}-seed0-d4"
    assert (folder / "beta0.1.pkl").exists() and not run.has_unit(f"{head}-seed0-d4")
    finished = Checkpoint(folder / "beta0.03.pkl", "unused")
    assert isinstance(pickle.loads(finished.path.read_bytes())[1], ConvexResult)
    monkeypatch.undo()
    with caplog.at_level("INFO", logger="attnlens"):
        res = run_transfer(rt_features, run=run, **kw)
    assert "fista path: resuming" in caplog.text and "reused" in caplog.text
    assert not folder.exists()
    got, want = res.units[f"{head}-seed0-d4"], ref.units[f"{head}-seed0-d4"]
    assert got["objective"] == want["objective"] and got["test_acc"] == want["test_acc"]
    assert [f["n_iter"] for f in got["fits"]] == [f["n_iter"] for f in want["fits"]]
    # the reused fit's time is its solver's, from the first call, not this call's reload
    assert got["grid_seconds"] >= sum(f["solver_seconds"] for f in got["fits"])
