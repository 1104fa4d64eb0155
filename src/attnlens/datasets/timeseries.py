"""UEA/UCR time-series classification sets bundled with ``aeon`` (no download), padded + masked.

``aeon`` ships, among others, the multivariate UEA sets JapaneseVowels (270 train / 370 test,
12 channels, variable length 7-29) and BasicMotions (40 / 40, 6 channels, length 100), and the
univariate UCR sets ArrowHead, GunPoint, ItalyPowerDemand, OSULeaf, ACSF1 and
PickupGestureWiimoteZ (variable length). Every series becomes a (T_max, C) float32 array padded
with zeros after its end, with a (T_max,) bool mask that is True at real time steps.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from attnlens._validation import check_int, check_option
from attnlens.errors import DatasetNotAvailableError

logger = logging.getLogger(__name__)

MULTIVARIATE = ("JapaneseVowels", "BasicMotions")
UNIVARIATE = ("ArrowHead", "GunPoint", "ItalyPowerDemand", "OSULeaf", "ACSF1",
              "PickupGestureWiimoteZ")


@dataclass
class TimeSeriesSplit:
    """One split of a classification set.

    X : (n, T_max, C) float32, zero after each series' end; mask : (n, T_max) bool;
    y : (n,) int64 class codes; classes : the label strings, ``classes[y[i]]``;
    lengths : (n,) int64 real lengths.
    """

    name: str
    split: str
    X: np.ndarray
    mask: np.ndarray
    y: np.ndarray
    classes: list[str]
    lengths: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def subset(self, indices, split: str | None = None) -> TimeSeriesSplit:
        """The sequences at ``indices`` (same classes), named ``split`` (default: unchanged)."""
        idx = np.asarray(indices, dtype=np.int64)
        return TimeSeriesSplit(self.name, split or self.split, self.X[idx], self.mask[idx],
                               self.y[idx], list(self.classes), self.lengths[idx])

    def split_validation(self, fraction: float, seed: int) -> tuple[TimeSeriesSplit,
                                                                    TimeSeriesSplit]:
        """A stratified, seeded (train, validation) split of this split's sequences."""
        from sklearn.model_selection import train_test_split

        tr, va = train_test_split(np.arange(len(self)), test_size=fraction, stratify=self.y,
                                  random_state=seed)
        return self.subset(np.sort(tr), "train"), self.subset(np.sort(va), "val")

    @property
    def n_channels(self) -> int:
        return int(self.X.shape[2])

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def bundled_names(kind: Literal["multivariate", "univariate", "all"] = "multivariate"
                  ) -> list[str]:
    """Classification sets that ship inside the installed ``aeon`` (checked on disk)."""
    check_option(kind, "kind", ("multivariate", "univariate", "all"))
    names = {"multivariate": MULTIVARIATE, "univariate": UNIVARIATE,
             "all": MULTIVARIATE + UNIVARIATE}[kind]
    folder = _data_dir()
    return [n for n in names if folder is None or os.path.isdir(os.path.join(folder, n))]


def _data_dir() -> str | None:
    try:
        import aeon.datasets as ds
    except ImportError:
        return None
    return os.path.join(os.path.dirname(ds.__file__), "data")


def _raw(name: str, split: str) -> tuple[list[np.ndarray], np.ndarray]:
    try:
        from aeon.datasets import load_classification
    except ImportError as exc:
        raise DatasetNotAvailableError(
            "the UEA/UCR loaders need the `aeon` package: pip install 'aeon>=1.0,<2'."
        ) from exc
    folder = _data_dir()
    if folder is None or not os.path.isdir(os.path.join(folder, name)):
        raise DatasetNotAvailableError(
            f"time-series set {name!r} is not bundled with the installed aeon; bundled "
            f"classification sets: {', '.join(bundled_names('all'))}."
        )
    X, y = load_classification(name, split=split, extract_path=folder)
    series = [np.asarray(x, dtype=np.float64) for x in X]  # each (C, T_i)
    return series, np.asarray(y).astype(str)


def load_uea(
    name: str = "JapaneseVowels",
    *,
    max_len: int | None = None,
    standardize: bool = True,
) -> tuple[TimeSeriesSplit, TimeSeriesSplit]:
    """Train and test splits of a bundled UEA/UCR set, padded to a common length with masks.

    Parameters
    ----------
    name : a set from :func:`bundled_names` (default JapaneseVowels).
    max_len : truncate longer series to this many steps (default: the longest series).
    standardize : scale each channel by the train split's mean/std over real time steps.

    Class codes are shared by both splits (sorted train labels); a test label unseen in
    training raises ``ValueError``.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a dataset name (str), got {name!r}.")
    if max_len is not None:
        max_len = check_int(max_len, "max_len", low=1)
    tr_x, tr_y = _raw(name, "train")
    te_x, te_y = _raw(name, "test")
    classes = sorted(set(tr_y.tolist()), key=lambda c: (len(c), c) if c.isdigit() else (0, c))
    unseen = sorted(set(te_y.tolist()) - set(classes))
    if unseen:
        raise ValueError(f"{name}: test labels {unseen} do not occur in training.")
    code = {c: i for i, c in enumerate(classes)}
    longest = max(x.shape[1] for x in tr_x + te_x)
    t_max = min(longest, max_len) if max_len else longest
    channels = {x.shape[0] for x in tr_x + te_x}
    if len(channels) != 1:
        raise ValueError(f"{name}: series have different channel counts {sorted(channels)}.")

    def pad(series: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n, c = len(series), series[0].shape[0]
        X = np.zeros((n, t_max, c), dtype=np.float64)
        mask = np.zeros((n, t_max), dtype=bool)
        lengths = np.zeros(n, dtype=np.int64)
        for i, s in enumerate(series):
            s = s[:, :t_max]
            valid = np.isfinite(s).all(axis=0)  # aeon pads unequal series with NaN at times
            s = s[:, valid]
            X[i, : s.shape[1]] = s.T
            mask[i, : s.shape[1]] = True
            lengths[i] = s.shape[1]
        if (lengths == 0).any():
            raise ValueError(f"{name}: {int((lengths == 0).sum())} empty series after cleaning.")
        return X, mask, lengths

    Xtr, mtr, ltr = pad(tr_x)
    Xte, mte, lte = pad(te_x)
    if standardize:
        vals = Xtr[mtr]  # (total real steps, C)
        mu, sd = vals.mean(axis=0), vals.std(axis=0)
        sd = np.where(sd > 1e-12, sd, 1.0)
        Xtr = np.where(mtr[..., None], (Xtr - mu) / sd, 0.0)
        Xte = np.where(mte[..., None], (Xte - mu) / sd, 0.0)
    ytr = np.array([code[c] for c in tr_y], dtype=np.int64)
    yte = np.array([code[c] for c in te_y], dtype=np.int64)
    logger.info("%s: train %s, test %s, %d classes", name, Xtr.shape, Xte.shape, len(classes))
    return (
        TimeSeriesSplit(name, "train", Xtr.astype(np.float32), mtr, ytr, classes, ltr),
        TimeSeriesSplit(name, "test", Xte.astype(np.float32), mte, yte, classes, lte),
    )


__all__ = ["MULTIVARIATE", "UNIVARIATE", "TimeSeriesSplit", "bundled_names", "load_uea"]
