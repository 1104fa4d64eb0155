"""The faithfulness experiment's plumbing: the removal classifier against the backbone's own
encode, and the rates against hand-counted records."""

from __future__ import annotations

import numpy as np
import pytest

from attnlens.experiments.causal_faithfulness import _Classifier, _Sentence, summarize

TEXTS = ["a gorgeous , witty , seductive movie .", "effective but too-tepid biopic",
         "the rock is destined to be the 21st century's new conan ."]


class _SignHead:
    """A fixed linear read-out of the [CLS] state (sign of its first coordinate)."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (x[:, 0] > 0).astype(int)


@pytest.fixture(scope="module")
def minilm():
    from attnlens.backbones import load_backbone

    return load_backbone("minilm")


def test_cls_states_equal_the_backbone_encode_with_padding(minilm):
    clf = _Classifier(minilm, _SignHead())
    ids = minilm.tokenizer(TEXTS)["input_ids"]
    ours = clf.cls_states(ids)  # one padded batch of three lengths
    ref = minilm.encode(TEXTS, layer=-1, progress=False).tokens[:, 0]
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_removal_equals_encoding_the_shortened_text(minilm):
    clf = _Classifier(minilm, _SignHead())
    ids = minilm.tokenizer(TEXTS[1:2])["input_ids"][0]
    sent = _Sentence(clf, ids)
    words = minilm.tokenizer.convert_ids_to_tokens(ids)
    assert words[1] == "effective"
    shortened = minilm.encode(["but too-tepid biopic"], layer=-1, progress=False).tokens[:, 0]
    assert sent.flips([(1,)]) == [bool((shortened[0, 0] > 0) != sent.base)]
    assert (1,) in sent.cache and clf.calls == 2  # base + one removal; cached afterwards
    sent.flips([(1,)])
    assert clf.calls == 2


def test_summarize_counts_by_hand():
    def rec(found, size, k, flips, curve, exh):
        return {"found": found, "cleann_size": size, "k": k, "cleann_queries": 10,
                "flips": {"cleann": found, **flips}, "curve": curve, "exhaustive": 2,
                "exhaustive_min_size": exh}

    no = dict(causal_rank=False, raw_attention=False, rollout=False, random=False)
    records = [
        rec(True, 1, 1, {**no, "raw_attention": True},
            {n: [n == "raw_attention"] * 3 for n in no}, 1),
        rec(True, 3, 3, no, {n: [False, False, n == "rollout"] for n in no}, None),
        rec(False, None, 3, no, {n: [False] * 3 for n in no}, 2),
        rec(True, 2, 2, {**no, "random": True}, {n: [False] * 3 for n in no}, 1),
    ]
    out = summarize(records, 3)
    assert out["cleann"] == 0.75 and out["raw_attention"] == 0.25 and out["random"] == 0.25
    assert out["rollout"] == 0.0 and out["mean_k"] == 2.25
    assert out["curve"]["cleann"] == [0.25, 0.5, 0.75]
    assert out["curve"]["rollout"] == [0.0, 0.0, 0.25]
    assert out["curve"]["exhaustive"] == [0.5, 0.75]
    # minimal: record 1 yes (1 == 1), record 2 yes (3 > reach, none <= 2), record 4 no (2 vs 1)
    assert out["cleann_is_minimal"] == pytest.approx(2 / 3)
