"""Features for the retrieval experiments: frozen ViT-S/14 on a labelled image set and MiniLM
on Rotten Tomatoes, through the feature cache; the per-seed splits of the re-ranking protocol.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

IMAGE_SIZE = 112  # 8 x 8 patches + CLS (65 tokens): ~4x cheaper than 224 px on CPU
TEXT_MAX_LENGTH = 64


@dataclass(frozen=True)
class Features:
    """Retrieval features of a dataset: X (n, d) float32, labels (n,), what produced them."""

    X: np.ndarray
    labels: np.ndarray
    dataset: str
    backbone: str


def load_images_named(dataset: str):
    from attnlens.datasets.vision import load_images

    return load_images(dataset)


def image_tokens(images: np.ndarray, dataset: str, layer: int = -1, progress: bool = True):
    """ViT-S/14 token states (n, 65, 384) of ``layer`` at 112 px, cached."""
    from attnlens.backbones import extract_tokens, load_backbone

    vit = load_backbone("vit", image_size=IMAGE_SIZE)
    return extract_tokens(vit, images, dataset=dataset, layer=layer, dtype="float16",
                          progress=progress).tokens


def image_features(dataset: str = "auto", progress: bool = True) -> Features:
    """Frozen ViT-S/14 retrieval features: the final layer's CLS token (n, 384)."""
    data = load_images_named(dataset)
    tokens = image_tokens(data.images, data.name, -1, progress)
    return Features(tokens[:, 0].astype(np.float32), data.labels, data.name, "vit")


def text_features(dataset: str = "rotten_tomatoes", n_items: int | None = 4000, seed: int = 0,
                  progress: bool = True) -> Features:
    """MiniLM sentence embeddings (masked mean of the last layer) of a stratified subset."""
    from attnlens.backbones import extract_tokens, load_backbone
    from attnlens.datasets.text import load_text

    data = load_text(dataset)
    if n_items is not None and n_items < len(data):
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(len(data), n_items, replace=False))
        data = data.subset(idx)
    feats = extract_tokens(load_backbone("minilm"), data.texts, dataset=data.name, layer=-1,
                           progress=progress, max_length=TEXT_MAX_LENGTH)
    return Features(feats.pooled(), data.labels, data.name, "minilm")


def pixel_features(dataset: str = "digits") -> Features:
    """Raw pixels as features (no model): a fast path for smoke runs and tests."""
    data = load_images_named(dataset)
    return Features(data.images.reshape(len(data.images), -1).astype(np.float32),
                    data.labels, data.name, "pixels")


@dataclass(frozen=True)
class Split:
    """Indices of one seed's protocol: re-ranker training items, queries, gallery."""

    train: np.ndarray
    queries: np.ndarray
    gallery: np.ndarray
    held_out_classes: bool


def make_split(labels: np.ndarray, seed: int, gallery_per_class: int, n_queries: int,
               train_per_class: int) -> Split:
    """The re-ranking protocol of one seed (docs/retrieval.md).

    With more than two classes, half of the classes (drawn per seed) train the re-ranker and
    the other half are the test classes (as CSA trains on SfM-120k landmarks and tests on
    Oxford/Paris ones). With two classes (sentiment) the items are split instead. The gallery
    holds ``gallery_per_class`` items of each test class, so a K = 100 shortlist holds
    negatives (as in ROxford, where a query has far fewer positives than K); queries are
    other items of the test classes.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    held_out = len(classes) > 2
    if held_out:
        perm = rng.permutation(classes)
        train_cls, test_cls = perm[: len(classes) // 2], perm[len(classes) // 2:]
        pool_train = np.flatnonzero(np.isin(labels, train_cls))
        pool_test = np.flatnonzero(np.isin(labels, test_cls))
    else:
        perm = rng.permutation(len(labels))
        pool_train, pool_test = perm[: len(perm) // 2], perm[len(perm) // 2:]
        test_cls = train_cls = classes

    def per_class(pool: np.ndarray, cls: np.ndarray, n: int) -> np.ndarray:
        return np.concatenate([rng.choice(pool[labels[pool] == c], min(n, int(np.sum(
            labels[pool] == c))), replace=False) for c in cls])

    train = per_class(pool_train, train_cls, train_per_class)
    gallery = per_class(pool_test, test_cls, gallery_per_class)
    rest = np.setdiff1d(pool_test, gallery)
    queries = rng.choice(rest, min(n_queries, len(rest)), replace=False)
    return Split(np.sort(train), queries, np.sort(gallery), held_out)
