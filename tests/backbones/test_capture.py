"""Capture: SDPA + recomputed probabilities against the eager model, weights, bad input."""

import numpy as np
import pytest
import torch

from attnlens.backbones import load_backbone
from attnlens.backbones.capture import capture_text, load_encoder
from attnlens.errors import InvalidParameterError

TEXTS = ["the rock is destined to be the 21st century's new conan .", "bad"]


def _eager(text, dtype):
    enc_model = load_encoder(attn_implementation="eager", dtype=dtype)
    enc = enc_model.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        out = enc_model.model(**enc, output_attentions=True, output_hidden_states=True)
    return out


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-6), ("float32", 5e-6)])
def test_recomputed_probabilities_equal_eager_output_attentions(dtype, tol):
    cap = capture_text(TEXTS, dtype=dtype)
    assert cap.attn_implementation == "sdpa"
    for i, text in enumerate(TEXTS):
        out = _eager(text, dtype)
        ref = torch.stack(out.attentions)[:, 0].double().numpy()  # (L, H, n, n)
        assert cap.attentions[i].shape == ref.shape
        # float64: both paths exact to ~1e-15; float32: both carry float32 rounding (~1e-6)
        np.testing.assert_allclose(cap.attentions[i], ref, atol=tol, rtol=0)
        # BERT is post-LayerNorm: the attention input of block l is hidden state l
        states = np.stack([h[0].double().numpy() for h in out.hidden_states[:-1]])
        np.testing.assert_allclose(cap.hidden[i], states, atol=10 * tol, rtol=0)


def test_weights_and_score_matrix_reproduce_the_attention():
    cap = capture_text(TEXTS[:1], dtype="float64")
    backbone = load_backbone("minilm")
    for layer in (0, 5):
        wq, wk, _, bq, bk, _ = backbone.qkv_weights(layer)
        np.testing.assert_allclose(cap.wq[layer], wq, atol=1e-7)
        np.testing.assert_allclose(cap.bk[layer], bk, atol=1e-7)
        np.testing.assert_allclose(cap.score_matrix(layer, 3), backbone.score_matrix(layer, 3),
                                   atol=1e-6)
        # logits = x_t^T W z + bias terms, rebuilt from the stored states and weights
        x = cap.hidden[0][layer].astype(np.float64)  # (n, d)
        cols = slice(3 * cap.head_dim, 4 * cap.head_dim)
        W = cap.score_matrix(layer, 3)
        q_b = bq[cols].astype(np.float64)
        k_b = bk[cols].astype(np.float64)
        q = x @ cap.wq[layer][:, cols].astype(np.float64)
        k = x @ cap.wk[layer][:, cols].astype(np.float64)
        logits = (x @ W @ x.T).T + ((q @ k_b)[:, None] + (q_b @ k.T)[None, :]
                                    + q_b @ k_b) / np.sqrt(cap.head_dim)  # (query, key)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(probs, cap.attentions[0][layer, 3], atol=1e-5)


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidParameterError, match="non-empty"):
        capture_text(["  "])
    with pytest.raises(InvalidParameterError, match="non-empty"):
        capture_text([])
    long_text = "good " * 600
    with pytest.raises(InvalidParameterError, match="at most 512 tokens"):
        capture_text([long_text], truncate=False)
    with pytest.warns(UserWarning, match="512 positions"):
        cap = capture_text([long_text])
    assert cap.truncated == [True] and len(cap.tokens[0]) == 512
    with pytest.raises(InvalidParameterError, match="local transformers encoder folder"):
        load_encoder("no-such-model")
    with pytest.raises(InvalidParameterError, match="local transformers encoder folder"):
        load_encoder(tmp_path)


def test_any_local_encoder_folder_works(tmp_path):
    enc = load_encoder()
    enc.model.save_pretrained(tmp_path)
    enc.tokenizer.save_pretrained(tmp_path)
    cap = capture_text(TEXTS[:1], model=str(tmp_path))
    ref = capture_text(TEXTS[:1])
    np.testing.assert_allclose(cap.attentions[0], ref.attentions[0], atol=1e-7)
