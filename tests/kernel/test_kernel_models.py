"""Classifiers, training loop, experiments (tiny settings) and the CLI."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from attnlens.datasets.timeseries import TimeSeriesSplit
from attnlens.experiments.kernel_training import train_classifier
from attnlens.kernel import PrimalAttention, ksvd_loss
from attnlens.kernel.models import (
    PrimalFormer,
    PrimalPlusTransformer,
    SoftmaxAttention,
    Transformer,
)


def test_layer_layout():
    kw = dict(dim=8, heads=2, depth=3, ff_dim=8, rank=2, rank_multi=2)
    kinds = {
        PrimalFormer: [PrimalAttention] * 3,
        PrimalPlusTransformer: [SoftmaxAttention, SoftmaxAttention, PrimalAttention],
        Transformer: [SoftmaxAttention] * 3,
    }
    for cls, want in kinds.items():
        model = cls(3, 4, 10, **kw)
        assert [type(b.attn) for b in model.blocks] == want
        assert model(torch.randn(2, 10, 3)).shape == (2, 4)


def test_padding_invariance_of_logits():
    torch.manual_seed(0)
    model = PrimalPlusTransformer(3, 4, 12, dim=8, heads=2, depth=2, ff_dim=8, rank=2,
                                  rank_multi=2).eval()
    x = torch.randn(1, 7, 3)
    ref = model(x)
    pad = torch.cat([x, 50 * torch.randn(1, 5, 3)], dim=1)
    mask = torch.tensor([[True] * 7 + [False] * 5])
    torch.testing.assert_close(model(pad, mask), ref, atol=1e-5, rtol=1e-5)


def _toy_split(seed, n=48):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.standard_normal((n, 8, 2)).astype(np.float32)
    X[:, :, 0] += np.where(y[:, None] == 1, 1.5, -1.5)
    mask = np.ones((n, 8), dtype=bool)
    mask[::3, 6:] = False
    X[~mask] = 0
    return TimeSeriesSplit("toy", "train", X, mask, y.astype(np.int64), ["a", "b"],
                           mask.sum(1))


def test_training_learns_and_is_deterministic():
    train, test = _toy_split(0, 96), _toy_split(1)

    def fit():
        torch.manual_seed(0)
        model = PrimalFormer(2, 2, 8, dim=8, heads=2, depth=1, ff_dim=8, rank=2, rank_multi=2,
                             dropout=0.0)
        return model, train_classifier(model, train, test, epochs=8, batch_size=8, lr=1e-2,
                                       seed=0)

    model, res = fit()
    _, res2 = fit()
    assert res["final_test_acc"] >= 0.9  # chance is 0.5
    assert res["history"]["loss"] == res2["history"]["loss"]
    assert res["best_test_acc"] >= res["final_test_acc"]
    assert res["history"]["ksvd"][0] > 0
    X = torch.as_tensor(train.X[:8], dtype=torch.float32)
    M = torch.as_tensor(train.mask[:8])
    logits, terms = model(X, M, return_terms=True)
    assert len(terms) == 1 and torch.equal(logits, model(X, M))
    assert float(ksvd_loss(terms, form="mean").detach()) >= 0


def test_bad_model_args():
    with pytest.raises(ValueError, match="primal_layers"):
        from attnlens.kernel.models import SequenceClassifier

        SequenceClassifier(2, 2, 5, depth=2, primal_layers=(3,))
    with pytest.raises(ValueError, match="tokens <= 5"):
        Transformer(2, 2, 5, dim=8, heads=2)(torch.randn(1, 6, 2))
    with pytest.raises(ValueError, match="n_classes"):
        Transformer(2, 1, 5)


def test_experiments_tiny_and_resume(tmp_path):
    from attnlens.experiments import get, load

    assert {"uea", "spectrum", "time-kernels"} <= set(load("kernel"))
    out = tmp_path / "uea"
    kw = dict(seeds=1, epochs=1, dim=8, heads=2, depth=1, ff_dim=8, rank=2, rank_multi=2,
              progress=False, model_hparams={"primalformer": {"rank": 3, "eta": 0.1}})
    m = get("kernel", "uea")(out, **kw)
    assert set(m["datasets"]) == {"JapaneseVowels", "BasicMotions"}
    row = m["datasets"]["JapaneseVowels"]["primalformer"]
    assert 0 <= row["final_epoch_test_acc_mean"] <= row["best_over_epochs_test_acc_mean"] <= 100
    assert m["datasets"]["BasicMotions"]["transformer"]["paper_best_over_epochs"] is None
    # per-model rank override reached the model; the other model keeps the shared rank
    pf = torch.load(out / "models" / "JapaneseVowels.primalformer.pt", weights_only=True)
    pt = torch.load(out / "models" / "JapaneseVowels.primalplustrans.pt", weights_only=True)
    assert pf["blocks.0.attn.lam"].shape == (2, 3) and pt["blocks.0.attn.lam"].shape == (2, 2)
    unit = out / "units" / "JapaneseVowels.primalformer.seed=0.json"
    stamp = unit.stat().st_mtime_ns
    get("kernel", "uea")(out, **kw)  # resumes: nothing retrained
    assert unit.stat().st_mtime_ns == stamp
    assert (out / "test_accuracy.png").exists() and (out / "models").is_dir()

    tk = get("kernel", "time-kernels")(tmp_path / "tk", seeds=1, steps=3, progress=False)
    assert set(tk["encoders"]) == {"bochner-free", "bochner-gaussian", "bochner-inverse_cdf",
                                   "mercer"}
    sp = get("kernel", "spectrum")(tmp_path / "sp", uea_run=str(out), n_sequences=4,
                                   backbones=(), progress=False)
    assert set(sp["mean_rank"]) == {"primal+trans (JapaneseVowels)",
                                    "transformer (JapaneseVowels)"}


def test_cli(tmp_path):
    from attnlens.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["kernel", "reproduce", "nope"])
    assert res.exit_code == 2 and "unknown experiment" in res.output
    out = tmp_path / "tk"
    res = runner.invoke(app, ["kernel", "reproduce", "time-kernels", "--seeds", "1",
                              "--epochs", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "metrics.json").read_text())["encoders"]["mercer"]["seeds"] == 1


def test_validation_split_and_selection():
    train, test = _toy_split(0, 96), _toy_split(1)
    tr, va = train.split_validation(0.25, seed=0)
    assert len(tr) + len(va) == len(train) and len(va) == 24
    rows = {tuple(r) for r in train.X.reshape(len(train), -1).round(6)}
    assert {tuple(r) for r in tr.X.reshape(len(tr), -1).round(6)} | {
        tuple(r) for r in va.X.reshape(len(va), -1).round(6)} == rows
    assert abs(va.y.mean() - train.y.mean()) < 0.1  # stratified
    torch.manual_seed(0)
    model = PrimalFormer(2, 2, 8, dim=8, heads=2, depth=1, ff_dim=8, rank=2, rank_multi=2,
                         dropout=0.0)
    # selecting the epoch on the test set itself gives the paper's best-over-epochs figure
    res = train_classifier(model, tr, test, val=test, epochs=6, batch_size=8, lr=1e-2, seed=0)
    assert res["val_selected_test_acc"] == res["best_test_acc"]
    assert res["history"]["val_acc"] == res["history"]["test_acc"]
    torch.manual_seed(0)
    model = PrimalFormer(2, 2, 8, dim=8, heads=2, depth=1, ff_dim=8, rank=2, rank_multi=2,
                         dropout=0.0)
    res = train_classifier(model, tr, test, val=va, epochs=6, batch_size=8, lr=1e-2, seed=0)
    va_hist = res["history"]["val_acc"]
    assert res["val_acc"] == max(va_hist) and 1 <= res["val_best_epoch"] <= 6
    assert res["val_selected_test_acc"] == res["history"]["test_acc"][res["val_best_epoch"] - 1]
