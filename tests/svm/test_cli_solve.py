"""`attnlens svm solve`: generated problems, .npz input, --out files, errors and exit codes."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from attnlens.cli import app
from attnlens.svm import att_svm, planted_problem, random_problem

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, ["svm", "solve", *map(str, args)])


def _min_margin(X, Z, sel, W):
    s = np.einsum("itd,id->it", X, Z @ W.T)
    m = s[np.arange(len(sel)), sel][:, None] - s
    m[np.arange(len(sel)), sel] = np.inf
    return m.min()


def test_help_lists_the_options_and_input_keys():
    res = _run("--help")
    assert res.exit_code == 0
    for word in ("--n", "--T", "--norm", "--planted", "--input", "--out", "query_index"):
        assert word in res.output


def test_generated_problem_with_out_writes_json_and_npz(tmp_path):
    res = _run("--n", 12, "--T", 6, "--d", 8, "--seed", 3, "--norm", "both",
               "--out", tmp_path / "run")
    assert res.exit_code == 0, res.output
    assert "objective" in res.output and "certificate" in res.output
    out = json.loads((tmp_path / "run" / "result.json").read_text())
    arrays = np.load(tmp_path / "run" / "result.npz")
    assert out["problem"]["generated"] == "planted" and out["problem"]["shape"] == [12, 6, 8]
    # the same instance through the library: planted_problem with the seed's generator
    p, sel = planted_problem(12, 6, 8, seed=np.random.default_rng(3))
    np.testing.assert_array_equal(arrays["selection"], sel)
    for nm in ("fro", "nuc"):
        r = out["results"][nm]
        assert r["status"] == "optimal"
        ref = att_svm(p.X, p.Z, sel, norm=nm, method="cvxpy")
        assert r["objective"] == pytest.approx(ref.objective, rel=1e-5)
        W = arrays[f"W_{nm}"]
        assert _min_margin(p.X, p.Z, sel, W) == pytest.approx(1.0, abs=1e-9)
        norm = np.linalg.norm(W) if nm == "fro" else np.linalg.norm(W, "nuc")
        assert norm == pytest.approx(r["objective"], rel=1e-12)
        assert r["rank"] == np.linalg.matrix_rank(W, tol=1e-6 * np.linalg.norm(W, 2))


def test_npz_input_cross_self_and_optimal_tokens(tmp_path):
    p, sel = planted_problem(10, 5, 6, seed=1)
    f = tmp_path / "cross.npz"
    np.savez(f, X=p.X, Z=p.Z, selection=sel)
    res = _run("--input", f, "--out", tmp_path / "a")
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "a" / "result.json").read_text())
    assert got["problem"]["variant"] == "cross"
    assert got["results"]["fro"]["objective"] == pytest.approx(
        att_svm(p.X, p.Z, sel, method="cvxpy").objective, rel=1e-6)
    # self-attention: query_index; selection from Y and v (optimal tokens)
    q = random_problem(4, 5, 8, seed=2, self_attention=True, query_index=2)
    g = tmp_path / "self.npz"
    np.savez(g, X=q.X, query_index=2, Y=q.Y, v=q.v)
    res = _run("--input", g, "--out", tmp_path / "b")
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "b" / "result.json").read_text())
    assert got["problem"]["variant"] == "self"
    ref = att_svm(q.X, None, q.optimal_tokens, variant="self", query_index=2, method="cvxpy")
    assert got["results"]["fro"]["objective"] == pytest.approx(ref.objective, rel=1e-6)
    np.testing.assert_array_equal(np.load(tmp_path / "b" / "result.npz")["selection"],
                                  q.optimal_tokens)


def test_generated_variants_run():
    for variant in ("self", "seq2seq", "causal"):
        res = _run("--n", 4, "--T", 4, "--d", 6, "--variant", variant)
        assert res.exit_code == 0, (variant, res.output)
        assert "optimal" in res.output


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [
        ({"Z": np.ones((3, 2)), "selection": np.zeros(3, int)}, "'X'"),
        ({"X": np.ones((3, 4)), "Z": np.ones((3, 2)), "selection": np.zeros(3, int)}, "X must"),
        ({"X": np.ones((3, 4, 2)), "Z": np.ones((3, 2))}, "selection"),
        ({"X": np.ones((3, 4, 2)), "Z": np.ones((3, 5)), "selection": np.zeros(3, int)}, "Z"),
        ({"X": np.ones((3, 4, 2)), "Z": np.ones((3, 2)), "selection": np.full(3, 9)},
         "selection"),
        ({"X": np.full((3, 4, 2), np.nan), "Z": np.ones((3, 2)), "selection": np.zeros(3, int)},
         "NaN"),
        ({"X": np.ones((3, 4, 2)), "Z": np.ones((3, 2)), "query_index": 1,
          "selection": np.zeros(3, int)}, "both Z and query_index"),
    ],
)
def test_bad_npz_input_exits_2_with_a_clear_message(tmp_path, arrays, needle):
    f = tmp_path / "bad.npz"
    np.savez(f, **arrays)
    res = _run("--input", f)
    assert res.exit_code == 2
    assert needle in res.output


def test_other_errors(tmp_path):
    res = _run("--input", tmp_path / "missing.npz")
    assert res.exit_code == 2 and "does not exist" in res.output
    (tmp_path / "junk.npz").write_text("not a zip")
    res = _run("--input", tmp_path / "junk.npz")
    assert res.exit_code == 2 and "not a readable .npz" in res.output
    for opt, val in (("--norm", "l1"), ("--method", "magic"), ("--variant", "diag")):
        res = _run("--n", 3, "--T", 3, "--d", 2, opt, val)
        assert res.exit_code == 2 and opt in res.output
    res = _run("--n", 3, "--T", 3, "--d", 2, "--norm", "both", "--method", "active_set")
    assert res.exit_code == 2 and "--norm both" in res.output


def test_infeasible_problem_exits_1_and_records_it(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 5, 1))
    sel = np.argsort(X[:, :, 0], axis=1)[:, 2]  # a middle token: not separable in d=1
    f = tmp_path / "infeasible.npz"
    np.savez(f, X=X, Z=np.ones((6, 1)), selection=sel)
    res = _run("--input", f, "--out", tmp_path / "o")
    assert res.exit_code == 1
    assert "infeasible" in res.output
    got = json.loads((tmp_path / "o" / "result.json").read_text())
    assert got["results"]["fro"]["status"] == "infeasible"
    assert got["results"]["fro"]["sequences"]
