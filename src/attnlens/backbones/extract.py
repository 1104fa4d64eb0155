"""Token features of a whole dataset, extracted in chunks through the feature cache.

``extract_tokens(backbone, items, dataset="rotten_tomatoes")`` encodes the items (texts or
images), optionally average-pools the feature axis into groups (the convex-duality paper's
reduction of d), and caches the result content-addressed by the backbone's name and weight
version, the layer, the dataset name, a hash of the items, the preprocessing and library
versions. An interrupted extraction resumes from its finished chunks.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np

from attnlens._validation import check_int, check_option
from attnlens.backbones.base import Backbone, TokenFeatures
from attnlens.cache import FeatureCache, hash_texts

logger = logging.getLogger(__name__)


def group_average(tokens: np.ndarray, groups: int) -> np.ndarray:
    """Average-pool the last axis (d) into ``groups`` contiguous groups of equal size.

    ``(..., d) -> (..., groups)``; ``d`` must be divisible by ``groups`` (384 -> 16, 32, 64,
    96, 128, ...).
    """
    d = tokens.shape[-1]
    groups = check_int(groups, "feature_groups", low=1, high=d)
    if d % groups:
        divisors = [g for g in range(1, d + 1) if d % g == 0]
        raise ValueError(
            f"feature_groups must divide the feature dimension {d}, got {groups}; "
            f"try one of {divisors}."
        )
    return tokens.reshape(*tokens.shape[:-1], groups, d // groups).mean(axis=-1)


def items_hash(items: Any) -> str:
    """Short content hash of a list of texts or an image array."""
    if isinstance(items, np.ndarray):
        arr = np.ascontiguousarray(items)
        digest = hashlib.sha256(f"{arr.dtype.str}|{arr.shape}|".encode())
        digest.update(arr.tobytes())
        return digest.hexdigest()[:16]
    return hash_texts([str(t) for t in items])


def extract_tokens(
    backbone: Backbone,
    items: Any,
    dataset: str,
    layer: int = -1,
    cache: FeatureCache | None = None,
    feature_groups: int | None = None,
    dtype: str = "float32",
    chunk_size: int = 256,
    batch_size: int = 32,
    progress: bool = True,
    **encode_kw: Any,
) -> TokenFeatures:
    """Token features of ``items`` through ``backbone``, cached.

    Parameters
    ----------
    items : list of texts (MiniLM) or images (ViT), in the order wanted.
    dataset : a name for the key (the items' content hash is added, so two subsets of one
        dataset never collide).
    cache : a :class:`FeatureCache`; None uses the default root (``$ATTNLENS_CACHE``).
    feature_groups : average-pool the feature axis into this many groups before caching.
    dtype : "float32" or "float16" storage for the tokens (float16 halves the disk use).
    encode_kw : passed to ``backbone.encode`` (``max_length=128``, ``image_size=...``) and
        part of the key.

    Returns a :class:`TokenFeatures` (tokens (B, N, d'), mask (B, N), no attentions).
    """
    check_option(dtype, "dtype", ("float32", "float16"))
    layer = backbone._layer_index(layer)
    n = len(items)
    if n == 0:
        raise ValueError("items is empty; pass at least one text or image.")
    cache = FeatureCache() if cache is None else cache
    key = {
        "kind": "tokens",
        "backbone": backbone.name,
        "backbone_version": backbone.version,
        "layer": layer,
        "dataset": str(dataset),
        "items": items_hash(items),
        "feature_groups": feature_groups,
        "dtype": dtype,
        "encode": {k: encode_kw[k] for k in sorted(encode_kw)},
    }

    def compute(lo: int, hi: int) -> dict[str, np.ndarray]:
        feats = backbone.encode(items[lo:hi], layer=layer, batch_size=batch_size,
                                progress=False, **encode_kw)
        tokens = feats.tokens
        if feature_groups is not None:
            tokens = group_average(tokens, feature_groups) * feats.mask[:, :, None]
        return {"tokens": tokens.astype(dtype), "mask": feats.mask}

    out = cache.get_or_compute(key, n, compute, chunk_size=chunk_size, progress=progress)
    return TokenFeatures(tokens=out["tokens"], mask=out["mask"].astype(bool), layer=layer)
