"""The transfer benchmark's official test split (issue 16.4): Fashion-MNIST's t10k part."""

import gzip

import numpy as np
import pytest

from attnlens.datasets.vision import load_images
from attnlens.transfer.features import extract_features

N_TRAIN, N_TEST = 90, 30


def _write_idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + arr.astype(np.uint8).tobytes())


@pytest.fixture
def fashion_layout(tmp_path, monkeypatch):
    """Real MNIST images written in the Debian Fashion-MNIST layout (train, then t10k)."""
    mnist = load_images("mnist").subset(np.arange(0, 5000, 40))  # 125 images, every digit
    parts = {"train": mnist.subset(np.arange(N_TRAIN)),
             "t10k": mnist.subset(np.arange(N_TRAIN, N_TRAIN + N_TEST))}
    for prefix, part in parts.items():
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", part.images)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", part.labels)
    monkeypatch.setenv("ATTNLENS_FASHION_MNIST", str(tmp_path))
    return parts


def test_official_test_items_are_the_t10k_images(fashion_layout, tmp_path):
    kw = {"image_size": 56, "token_grid": 2, "cache_dir": tmp_path / "cache", "progress": False}
    feats = extract_features("vit", "fashion_mnist", test_split="official", **kw)
    np.testing.assert_array_equal(feats.test_idx, np.arange(N_TRAIN, N_TRAIN + N_TEST))
    np.testing.assert_array_equal(feats.labels[feats.test_idx], fashion_layout["t10k"].labels)
    assert (feats.meta["test_split"], feats.meta["n_test"]) == ("official", N_TEST)
    assert feats.meta["test_fraction"] is None
    # the split is not part of the cached features: the stratified run reads the same entry
    strat = extract_features("vit", "fashion_mnist", test_fraction=0.25, **kw)
    np.testing.assert_array_equal(strat.tokens, feats.tokens)
    assert len(strat.test_idx) == 30 and np.any(strat.test_idx < N_TRAIN)
    # a subset keeps the official membership of the items it draws
    sub = extract_features("vit", "fashion_mnist", test_split="official", n_items=60, **kw)
    full_labels = np.concatenate([fashion_layout["train"].labels, fashion_layout["t10k"].labels])
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(np.arange(N_TRAIN + N_TEST), train_size=60,
                               stratify=full_labels, random_state=0)
    keep = np.sort(keep)
    np.testing.assert_array_equal(sub.test_idx, np.flatnonzero(keep >= N_TRAIN))


def test_official_split_errors_name_the_parameter(tmp_path):
    with pytest.raises(ValueError, match="test_split='official'.*'rotten_tomatoes' has none"):
        extract_features("minilm", "rotten_tomatoes", test_split="official", n_items=40,
                         cache_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="test_split"):
        extract_features("minilm", "rotten_tomatoes", test_split="official_test",
                         cache_dir=tmp_path, progress=False)
