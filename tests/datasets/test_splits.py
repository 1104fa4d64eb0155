"""Seeded, stratified train/val/test splits."""

import numpy as np
import pytest

from attnlens.datasets.splits import train_val_test_split


def test_partition_and_sizes():
    tr, va, te = train_val_test_split(1000, val=0.1, test=0.25, seed=3)
    assert (len(tr), len(va), len(te)) == (650, 100, 250)
    allidx = np.concatenate([tr, va, te])
    np.testing.assert_array_equal(np.sort(allidx), np.arange(1000))
    for part in (tr, va, te):
        assert np.all(np.diff(part) > 0)


def test_seeded_and_stratified():
    labels = np.repeat([0, 1, 2], [500, 300, 200])
    a = train_val_test_split(1000, val=100, test=200, seed=7, stratify=labels)
    b = train_val_test_split(1000, val=100, test=200, seed=7, stratify=labels)
    c = train_val_test_split(1000, val=100, test=200, seed=8, stratify=labels)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[2], c[2])
    np.testing.assert_array_equal(np.bincount(labels[a[1]]), [50, 30, 20])
    np.testing.assert_array_equal(np.bincount(labels[a[2]]), [100, 60, 40])
    # odd sizes still add up exactly (largest remainder rounding)
    tr, va, te = train_val_test_split(7, val=0.3, test=0.3, seed=0,
                                      stratify=[0, 0, 0, 1, 1, 1, 1])
    assert (len(tr), len(va), len(te)) == (3, 2, 2)


def test_bad_input():
    with pytest.raises(ValueError, match="val \\+ test must leave training items"):
        train_val_test_split(10, val=0.5, test=0.5)
    with pytest.raises(ValueError, match="stratify must have length n=10, got 3"):
        train_val_test_split(10, stratify=[0, 1, 0])
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        train_val_test_split(0)
