"""A FISTA fit stopped midway and resumed from its checkpoint equals the uninterrupted fit."""

import numpy as np
import pytest

from attnlens.checkpoint import Checkpoint
from attnlens.convex import solve
from attnlens.convex.estimators import ConvexAttentionClassifier
from attnlens.convex.nuclear import fista_path
from attnlens.errors import IgnoredParameterWarning, InvalidParameterError


class _Killed(Exception):
    """Stands in for the process being stopped."""


class _StopAfter(Checkpoint):
    """A checkpoint that 'kills the process' right after its ``k``-th write."""

    def __init__(self, path, key, k):
        super().__init__(path, key, every_s=0.0)
        self.k = k

    def save(self, state, force=False):
        wrote = super().save(state, force)
        if wrote and self.saves == self.k:
            raise _Killed
        return wrote


#: the sizes of the gated self-attention problem (three classes, continuation stages at 2e-3)
SIZES = dict(n=80, s=5, d=3, m=2, c=3)


@pytest.mark.parametrize(("k", "mid_stage"), [(1, False), (5, True), (150, True)])
def test_fista_path_resumed_after_a_stop_equals_the_uninterrupted_run(tmp_path, k, mid_stage,
                                                                       gated_problem):
    """Continuation in beta (several stages); stopped after the k-th save -- at a stage's end,
    inside an early stage, inside the final one -- then a fresh call with the same key
    continues to the same iterates, bit for bit."""
    program, Y = gated_problem(**SIZES)
    beta = 2e-3  # below beta_max / 30: continuation stages

    def run(checkpoint=None):  # a fresh rng per call: it seeds the Lipschitz power iteration
        return fista_path(program, Y, beta, "squared", tol=1e-4, max_iter=3000,
                          rng=np.random.default_rng(0), checkpoint=checkpoint)

    ref = run()
    assert ref.method == "fista-path" and ref.status == "optimal"
    path = tmp_path / "fit.pkl"
    with pytest.raises(_Killed):
        run(_StopAfter(path, "p", k))
    saved = Checkpoint(path, "p").load()
    assert (saved.inner is not None) == mid_stage
    resumed = run(Checkpoint(path, "p", 0.0))
    assert resumed.seconds > saved.seconds > 0  # the stopped call's time is counted too
    assert resumed.iterations == ref.iterations
    assert resumed.objective == ref.objective
    for a, b in zip(resumed.Z, ref.Z, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_checkpoint_of_another_problem_is_not_resumed(tmp_path, gated_problem):
    program, Y = gated_problem(**SIZES)
    path = tmp_path / "fit.pkl"
    with pytest.raises(_Killed):
        fista_path(program, Y, 2e-3, "squared", tol=1e-4,
                   checkpoint=_StopAfter(path, "beta=2e-3", 2))
    ref = fista_path(program, Y, 5e-3, "squared", tol=1e-4)
    other = fista_path(program, Y, 5e-3, "squared", tol=1e-4,
                       checkpoint=Checkpoint(path, "beta=5e-3", 0.0))
    assert other.iterations == ref.iterations
    assert abs(other.objective - ref.objective) <= 1e-12 * ref.objective


def test_checkpoint_saves_at_most_every_every_s_and_reads_back(tmp_path):
    ck = Checkpoint(tmp_path / "a.pkl", "k", every_s=3600.0)
    calls = []
    assert not ck.save(lambda: calls.append(1) or {"x": 1})  # too soon: state() not called
    assert calls == [] and ck.load() is None
    assert ck.save(lambda: {"x": 2}, force=True)
    assert ck.load() == {"x": 2}
    assert Checkpoint(tmp_path / "a.pkl", "other").load() is None
    (tmp_path / "a.pkl").write_bytes(b"not a pickle")
    assert ck.load() is None
    ck.clear()
    assert not (tmp_path / "a.pkl").exists()
    with pytest.raises(InvalidParameterError, match="key"):
        Checkpoint(tmp_path / "b.pkl", "")
    with pytest.raises(InvalidParameterError, match="every_s"):
        Checkpoint(tmp_path / "b.pkl", "k", every_s=-1.0)


def test_solve_warns_that_a_checkpoint_is_ignored_by_non_fista_solvers(tmp_path, gated_problem):
    program, Y = gated_problem(**{**SIZES, "n": 30})
    with pytest.warns(IgnoredParameterWarning, match="checkpoint"):
        solve(program, Y, 0.05, solver="bm", tol=1e-4, warn=False,
              checkpoint=Checkpoint(tmp_path / "c.pkl", "k"))


def test_estimator_checkpoint_gives_the_same_fit_and_keeps_it_for_a_rerun(tmp_path,
                                                                         monkeypatch):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((60, 4, 3))
    y = rng.integers(0, 2, 60)
    kw = dict(head="self_attention", activation="gated_relu", beta=0.01, n_gates=2, tol=1e-5,
              random_state=0)
    ref = ConvexAttentionClassifier(**kw).fit(X, y)
    path = tmp_path / "fits" / "beta0.01.pkl"
    got = ConvexAttentionClassifier(**kw, checkpoint=str(path)).fit(X, y)
    assert got.objective_ == ref.objective_ and got.n_iter_ == ref.n_iter_
    assert path.exists()  # the finished fit stays for a re-run

    def no_solve(*args, **kwargs):
        raise AssertionError("a finished fit was solved again")

    monkeypatch.setattr("attnlens.convex.estimators.solve", no_solve)
    again = ConvexAttentionClassifier(**kw, checkpoint=str(path)).fit(X, y)
    assert again.objective_ == ref.objective_ and again.certificate_ == ref.certificate_
    np.testing.assert_array_equal(again.predict(X), ref.predict(X))
    for a, b in zip(again.Z_, ref.Z_, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(AssertionError, match="solved again"):  # another beta: another problem
        ConvexAttentionClassifier(**{**kw, "beta": 0.02}, checkpoint=str(path)).fit(X, y)
    monkeypatch.undo()
    with pytest.raises(InvalidParameterError, match="checkpoint"):
        ConvexAttentionClassifier(**kw, checkpoint=3).fit(X, y)


def test_fista_path_starts_over_on_a_finished_fit_in_its_checkpoint(tmp_path, gated_problem):
    program, Y = gated_problem(**{**SIZES, "n": 30})
    ref = fista_path(program, Y, 5e-3, "squared", tol=1e-5, rng=np.random.default_rng(0))
    checkpoint = Checkpoint(tmp_path / "c.pkl", "k", 0.0)
    checkpoint.save(lambda: ref, force=True)
    got = fista_path(program, Y, 5e-3, "squared", tol=1e-5, rng=np.random.default_rng(0),
                     checkpoint=checkpoint)
    assert got.iterations == ref.iterations and got.objective == ref.objective
