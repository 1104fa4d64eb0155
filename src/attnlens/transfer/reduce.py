"""Feature-dimension reduction of frozen token features, as in the convex-duality paper.

Sahiner et al., "Unraveling Attention via Convex Duality" (ICML 2022), average the 256
gMLP-S channels in groups down to d=100 before fitting the heads. Here the same
*average pooling over feature groups* takes a backbone's D channels to d (d divides D):

.. math::  \\tilde x_{t,k} = \\frac{1}{g} \\sum_{j=0}^{g-1} x_{t, kg + j}, \\qquad g = D / d.

Group averaging nests: pooling 384 -> 64 and then 64 -> 32 equals pooling 384 -> 32
directly, so a cache can store the largest d and smaller ones are derived exactly.
PCA is the option: :class:`TokenPCA` is fitted on the valid tokens of training items only
(never on test), and its first d components are again nested.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnlens._validation import check_array, check_int
from attnlens.backbones.extract import group_average  # the one shared implementation

__all__ = ["TokenPCA", "group_average", "masked_mean", "pool_tokens", "reduce_tokens"]


def masked_mean(tokens: np.ndarray, mask: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Mean over the valid tokens, in float64: tokens (B, N, d), mask (B, N) -> (B, d).

    Items are processed ``chunk`` at a time, so float32 inputs are never copied whole.
    """
    tokens = np.asarray(tokens)
    w = np.asarray(mask, dtype=np.float64)  # (B, N)
    count = np.maximum(w.sum(axis=1, keepdims=True), 1.0)  # (B, 1)
    out = np.empty((tokens.shape[0], tokens.shape[-1]))
    for lo in range(0, tokens.shape[0], chunk):
        part = np.asarray(tokens[lo:lo + chunk], dtype=np.float64)
        out[lo:lo + chunk] = np.einsum("bn,bnd->bd", w[lo:lo + chunk], part)
    return out / count  # (B, d)


def pool_tokens(tokens: np.ndarray, mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Average consecutive groups of ``k`` tokens over their valid members.

    tokens (B, N, D), mask (B, N) -> tokens (B, ceil(N / k), D), mask (B, ceil(N / k)); a
    group is valid when it holds at least one valid token, and its row is the mean of those
    tokens (zeros otherwise). ``k = 1`` returns the inputs unchanged. Used to let token heads
    see a whole long sequence (IMDB, 128 tokens) at a quarter of the attention cost.
    """
    k = check_int(k, "token_pool", low=1)
    tokens = np.asarray(tokens)
    mask = np.asarray(mask, dtype=bool)
    if k == 1:
        return tokens, mask
    B, N, D = tokens.shape
    G = -(-N // k)  # groups, the last one possibly partial
    pad = G * k - N
    t = np.concatenate([tokens, np.zeros((B, pad, D), tokens.dtype)], axis=1) if pad else tokens
    m = np.concatenate([mask, np.zeros((B, pad), bool)], axis=1) if pad else mask
    w = m.reshape(B, G, k).astype(tokens.dtype)  # (B, G, k)
    count = w.sum(axis=2)  # (B, G)
    summed = np.einsum("bgk,bgkd->bgd", w, t.reshape(B, G, k, D))  # (B, G, D)
    out = summed / np.maximum(count, 1)[..., None]
    return out.astype(tokens.dtype, copy=False), count > 0


@dataclass
class TokenPCA:
    """Principal directions of token features, fitted on valid tokens of training items.

    Attributes after :meth:`fit`: ``mean_`` (D,), ``components_`` (k, D) (rows orthonormal,
    sorted by explained variance), ``explained_variance_`` (k,).
    """

    n_components: int = 64

    def fit(self, tokens: np.ndarray, mask: np.ndarray) -> TokenPCA:
        tokens = check_array(tokens, "tokens", ndim=3)
        mask = check_array(mask, "mask", shape=tokens.shape[:2], dtype=bool)
        k = check_int(self.n_components, "n_components", low=1, high=tokens.shape[-1])
        rows = tokens[mask]  # (n_valid, D)
        if rows.shape[0] < k:
            raise ValueError(
                f"TokenPCA needs at least n_components={k} valid tokens, got {rows.shape[0]}; "
                "fit on more items or ask for fewer components."
            )
        self.mean_ = rows.mean(axis=0)  # (D,)
        _, s, vt = np.linalg.svd(rows - self.mean_, full_matrices=False)
        self.components_ = vt[:k]  # (k, D)
        self.explained_variance_ = s[:k] ** 2 / max(rows.shape[0] - 1, 1)
        return self

    def transform(self, tokens: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Project (..., D) tokens on the components; padded tokens (mask False) become 0."""
        if not hasattr(self, "components_"):
            from attnlens.errors import NotFittedError

            raise NotFittedError("TokenPCA is not fitted; call fit(tokens, mask) first.")
        out = (np.asarray(tokens, dtype=np.float64) - self.mean_) @ self.components_.T
        if mask is not None:
            out = out * np.asarray(mask, dtype=bool)[..., None]
        return out


def reduce_tokens(tokens: np.ndarray, mask: np.ndarray, d: int, method: str = "avgpool") -> np.ndarray:
    """Reduce stored tokens (B, N, d_store) to (B, N, d) and zero the padded positions.

    ``method="avgpool"`` averages channel groups (exact when ``d`` divides ``d_store``, since
    group averages nest); ``method="pca"`` keeps the first ``d`` (already PCA-sorted) channels.
    """
    if method == "avgpool":
        out = group_average(tokens, d)
    elif method == "pca":
        if d > tokens.shape[-1]:
            raise ValueError(
                f"d={d} exceeds the {tokens.shape[-1]} PCA components stored; "
                "extract with a larger store dimension."
            )
        out = np.asarray(tokens)[..., :d]
    else:
        raise ValueError(f"method must be 'avgpool' or 'pca'; got {method!r}.")
    return out * np.asarray(mask, dtype=bool)[..., None]  # (B, N, d)
