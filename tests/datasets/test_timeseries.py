"""UEA loaders from aeon: padding, masks, shared label codes, standardization, errors."""

import numpy as np
import pytest

from attnlens.datasets.timeseries import bundled_names, load_uea
from attnlens.errors import DatasetNotAvailableError


@pytest.fixture(scope="module")
def vowels():
    return load_uea("JapaneseVowels")


def test_japanese_vowels_shapes(vowels):
    train, test = vowels
    assert (len(train), len(test)) == (270, 370)
    assert train.X.shape[1:] == (29, 12) and test.X.shape[1:] == (29, 12)
    assert train.X.dtype == np.float32 and train.mask.dtype == bool
    assert train.classes == [str(i) for i in range(1, 10)] == test.classes
    assert set(np.unique(test.y)) == set(range(9))


def test_padding_and_mask_match_raw_series(vowels):
    from aeon.datasets import load_classification

    train, _ = vowels
    raw, labels = load_classification("JapaneseVowels", split="train")
    lengths = np.array([r.shape[1] for r in raw])
    np.testing.assert_array_equal(train.lengths, lengths)
    np.testing.assert_array_equal(train.mask.sum(1), lengths)
    assert np.all(train.X[~train.mask] == 0)
    # standardization is an affine map per channel: recover it from two series and compare
    unstd, _ = load_uea("JapaneseVowels", standardize=False)
    np.testing.assert_allclose(unstd.X[5, : lengths[5]], raw[5].T, rtol=1e-6)
    vals = unstd.X[unstd.mask].astype(np.float64)
    mu, sd = vals.mean(0), vals.std(0)
    np.testing.assert_allclose(train.X[5, : lengths[5]], (raw[5].T - mu) / sd, atol=1e-5)
    assert np.array_equal(np.array(train.classes)[train.y], labels)


def test_max_len_truncates():
    train, test = load_uea("JapaneseVowels", max_len=10)
    assert train.X.shape[1] == 10 and train.mask.sum(1).max() == 10


def test_bundled_and_errors():
    assert "JapaneseVowels" in bundled_names() and "BasicMotions" in bundled_names()
    with pytest.raises(DatasetNotAvailableError, match="bundled"):
        load_uea("NoSuchSet")
    with pytest.raises(ValueError, match="max_len"):
        load_uea("JapaneseVowels", max_len=0)
    with pytest.raises(TypeError, match="name"):
        load_uea(3)
