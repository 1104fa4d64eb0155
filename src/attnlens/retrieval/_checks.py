"""Input checks shared by every re-ranker: features, first-stage rankings, their agreement.

A re-ranker takes query features ``Q`` (n_q, d), gallery features ``G`` (n_g, d) and a
first-stage ``ranking`` (n_q, K) of gallery indices, best first. Checked here, once:
the feature dimensions agree, ``K <= n_g``, every index is a gallery index and no row repeats
an index (a shortlist lists each gallery item at most once).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnlens._validation import check_array, raise_invalid


def l2_normalize(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit Euclidean norm (zero rows stay zero)."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)  # (n, 1)
    return X / np.where(norms > 0, norms, 1.0)


def check_features(Q: Any, G: Any, caller: str) -> tuple[np.ndarray, np.ndarray]:
    """Two finite 2-D feature arrays with the same number of columns (float64)."""
    Q = check_array(Q, "Q", ndim=2, caller=caller)
    G = check_array(G, "G", ndim=2, caller=caller)
    if Q.shape[1] != G.shape[1]:
        raise_invalid("G", f"an array with {Q.shape[1]} columns (the dimension of Q)",
                      f"got shape {G.shape}",
                      "Embed queries and gallery with the same model and layer.", caller)
    return Q, G


def check_ranking(ranking: Any, n_queries: int, n_gallery: int, caller: str,
                  name: str = "ranking") -> np.ndarray:
    """An int array (n_q, K) of distinct gallery indices per row, ``K <= n_gallery``."""
    arr = check_array(ranking, name, ndim=2, dtype=None, caller=caller)
    if arr.dtype.kind not in "iu":
        raise_invalid(name, "an integer array of gallery indices", arr,
                      "Pass the argsort of the first-stage scores (np.int64).", caller)
    if arr.shape[0] != n_queries:
        raise_invalid(name, f"an array with one row per query ({n_queries})",
                      f"got shape {arr.shape}", "Pass one ranking row per query.", caller)
    if arr.shape[1] > n_gallery:
        raise_invalid(name, f"at most {n_gallery} columns (the gallery size)",
                      f"got shape {arr.shape}", "Lower K: a shortlist cannot be longer than "
                      "the gallery.", caller)
    if arr.min() < 0 or arr.max() >= n_gallery:
        raise_invalid(name, f"gallery indices in [0, {n_gallery})",
                      f"got values in [{arr.min()}, {arr.max()}]",
                      "Rankings index rows of G.", caller)
    srt = np.sort(arr, axis=1)
    if arr.shape[1] > 1 and np.any(srt[:, 1:] == srt[:, :-1]):
        bad = int(np.flatnonzero(np.any(srt[:, 1:] == srt[:, :-1], axis=1))[0])
        raise_invalid(name, "rows without repeated gallery indices",
                      f"got a repeat in row {bad}", "Each shortlist lists an item once.", caller)
    return arr.astype(np.int64, copy=False)


def check_rerank_inputs(Q: Any, G: Any, ranking: Any, caller: str
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features and ranking checked together (see the module docstring)."""
    Q, G = check_features(Q, G, caller)
    return Q, G, check_ranking(ranking, len(Q), len(G), caller)


def reorder(ranking: np.ndarray, scores: np.ndarray, descending: bool = True) -> np.ndarray:
    """Re-order each shortlist by ``scores`` (n_q, K) of its items; stable on ties."""
    key = -scores if descending else scores
    order = np.argsort(key, axis=1, kind="stable")  # (n_q, K)
    return np.take_along_axis(ranking, order, axis=1)
