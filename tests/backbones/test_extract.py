"""extract_tokens: backbone features through the cache, on real sentences and images."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from attnlens.backbones import extract_tokens, group_average, load_backbone
from attnlens.cache import FeatureCache

SENTENCES = [
    "a visually flashy but narratively opaque and emotionally vapid exercise .",
    "the film is strictly routine .",
    "an utterly compelling ' who wrote it ' in which the reputation of the most famous author"
    " who ever lived comes into question .",
    "it's a lovely film with lovely performances by buy and accorsi .",
    "dull",
]


class Counting:
    """Wraps a backbone and counts the items it encodes."""

    def __init__(self, inner):
        self.inner, self.items = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, batch, **kw):
        self.items += len(batch)
        return self.inner.encode(batch, **kw)


def test_group_average():
    x = np.arange(2 * 3 * 8, dtype=np.float32).reshape(2, 3, 8)
    out = group_average(x, 4)
    np.testing.assert_allclose(out[1, 2], [x[1, 2, 2 * g:2 * g + 2].mean() for g in range(4)])
    with pytest.raises(ValueError, match="feature_groups must divide the feature dimension 8"):
        group_average(x, 3)


def test_extract_minilm_is_cached_and_keyed(tmp_path):
    minilm = Counting(load_backbone("minilm"))
    cache = FeatureCache(tmp_path)
    direct = minilm.inner.encode(SENTENCES, layer=-1, progress=False)
    feats = extract_tokens(minilm, SENTENCES, "rt-sample", cache=cache, feature_groups=32,
                           chunk_size=2, progress=False)
    assert minilm.items == 5
    assert feats.tokens.shape == (5, direct.tokens.shape[1], 32) and feats.layer == 6
    np.testing.assert_array_equal(feats.mask, direct.mask)
    np.testing.assert_allclose(feats.tokens, group_average(direct.tokens, 32), atol=1e-5)
    again = extract_tokens(minilm, SENTENCES, "rt-sample", cache=cache, feature_groups=32,
                           chunk_size=2, progress=False)
    assert minilm.items == 5  # served from the cache
    np.testing.assert_array_equal(again.tokens, feats.tokens)
    # another layer, other texts or other preprocessing are other entries
    extract_tokens(minilm, SENTENCES, "rt-sample", cache=cache, layer=2, feature_groups=32,
                   chunk_size=5, progress=False)
    extract_tokens(minilm, SENTENCES[:4], "rt-sample", cache=cache, feature_groups=32,
                   chunk_size=5, progress=False)
    half = extract_tokens(minilm, SENTENCES, "rt-sample", cache=cache, feature_groups=32,
                          dtype="float16", max_length=8, chunk_size=5, progress=False)
    assert minilm.items == 5 + 5 + 4 + 5
    assert half.tokens.dtype == np.float16 and half.tokens.shape[1] == 8


def test_extract_vit_images(tmp_path):
    vit = load_backbone("vit", image_size=56, num_threads=1, cache_root=tmp_path)
    images = np.rint(load_digits().images[:3] * 255 / 16).astype(np.uint8)
    feats = extract_tokens(vit, images, "digits-sample", cache=FeatureCache(tmp_path),
                           layer=6, chunk_size=2, progress=False)
    direct = vit.encode(images, layer=6, progress=False)
    assert feats.tokens.shape == (3, 17, 384) and feats.mask.all()
    np.testing.assert_allclose(feats.tokens, direct.tokens, atol=1e-4, rtol=1e-4)
