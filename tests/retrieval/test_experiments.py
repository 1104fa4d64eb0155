"""The application layer of the retrieval pillar: protocol splits, captions, the `rerank`
CLI end to end (raw pixels of scikit-learn digits: no model download), one IMF training."""

from __future__ import annotations

import json

import numpy as np
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from attnlens.cli import app
from attnlens.datasets.captions import caption_bank, masked_templates, matching_pairs
from attnlens.experiments.retrieval_common import make_split

SEED = 2


def test_split_holds_out_classes_and_keeps_queries_out_of_the_gallery():
    labels = load_digits().target
    s = make_split(labels, SEED, gallery_per_class=20, n_queries=50, train_per_class=30)
    assert s.held_out_classes
    assert not set(labels[s.train]) & set(labels[s.gallery])
    assert not set(s.queries) & set(s.gallery)
    assert np.all(np.bincount(labels[s.gallery])[np.unique(labels[s.gallery])] == 20)
    two = make_split(labels % 2, SEED, 20, 50, 30)  # two classes: items are split instead
    assert not two.held_out_classes
    assert not set(two.train) & (set(two.gallery) | set(two.queries))


def test_matching_pairs_match_exactly_when_flagged():
    texts, cap_labels = caption_bank("mnist")
    assert len(texts) == 60 and "seven" in texts[cap_labels.tolist().index(7)]
    labels = np.random.default_rng(SEED).integers(0, 10, 300)
    caps, match = matching_pairs(labels, cap_labels, np.random.default_rng(SEED))
    np.testing.assert_array_equal(cap_labels[caps] == labels, match.astype(bool))
    assert 0.4 < match.mean() < 0.6


def test_rerank_cli_writes_a_report(tmp_path):
    out = tmp_path / "rr"
    result = CliRunner().invoke(app, [
        "rerank", "--backbone", "pixels", "--dataset", "digits", "--seeds", "1",
        "--method", "csa,kreciprocal,qe", "--k", "20", "--l", "8", "--epochs", "1",
        "--queries", "40", "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    names = [row["method"] for row in metrics["table"]]
    assert names[0] == "no re-ranking" and len(names) == 4
    assert all(0 < row["mAP"] <= 1 for row in metrics["table"])
    assert (out / "rerank.png").stat().st_size > 0 and (out / "report.md").exists()
    bad = CliRunner().invoke(app, ["rerank", "--backbone", "pixels", "--method", "nope",
                                   "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown methods" in bad.output


def test_imf_training_on_real_captions():
    """One ITM training: MiniLM caption tokens, digits cut into 2 x 2 pixel patches."""
    from attnlens.backbones import load_backbone
    from attnlens.experiments.retrieval_imf import train_and_probe

    digits = load_digits()
    patches = digits.images.reshape(-1, 4, 2, 4, 2).transpose(0, 1, 3, 2, 4).reshape(-1, 16, 4)
    texts, cap_labels = caption_bank("digits")
    caps = load_backbone("minilm").encode(texts, layer=-1, progress=False)
    inputs = {"labels": digits.target, "parsing": patches / 16.0, "local": patches / 16.0,
              "cap_tokens": caps.tokens, "cap_mask": caps.mask, "cap_labels": cap_labels}
    minilm = load_backbone("minilm")
    masked = masked_templates("digits", minilm.tokenizer.mask_token)
    enc = minilm.encode(masked, layer=-1, progress=False)
    ids = minilm.tokenizer(masked)["input_ids"]
    inputs.update(mlm_tokens=enc.tokens, mlm_mask=enc.mask, mlm_positions=np.array(
        [row.index(minilm.tokenizer.mask_token_id) for row in ids]))
    cfg = {"dim": 16, "depth": 2, "heads": 2, "epochs": 2, "batch_size": 32, "lr": 1e-3,
           "n_threads": 1, "pool": 2, "mlm": True, "target_acc": 1.01}
    res = train_and_probe(inputs, "local", np.arange(200), np.arange(200, 300), SEED, cfg,
                          val=np.arange(300, 340))
    assert len(res["imf"]) == 2 and all(0 < v < 1 for v in res["imf"])
    assert res["epochs_run"] == 2 and len(res["val_accuracy_history"]) == 2
    assert 0 <= res["mlm_accuracy"] <= 1
    np.testing.assert_allclose(np.add(res["vision_to_language"], res["language_to_vision"]),
                               res["imf"], atol=1e-12)


def test_masked_templates_hide_the_class_word():
    texts, _ = caption_bank("mnist")
    masked = masked_templates("mnist", "[MASK]")
    assert len(masked) == len(texts) // 10 and all(t.count("[MASK]") == 1 for t in masked)
    names = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    assert not any(name in t.split() for t in masked for name in names)
