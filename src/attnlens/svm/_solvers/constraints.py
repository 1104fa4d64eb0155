"""The margin constraints of every Att-SVM variant, in one (n, K, T) layout.

Score convention: ``score_t = x_t^T W z``. Each sequence ``i`` has ``K`` output positions with
queries ``q_ik`` and selected tokens ``a_ik``; the constraints are
``(x_{i,a_ik} - x_it)^T W q_ik >= 1`` for every competing token ``t`` (``mask[i, k, t]``).
Cross- and self-attention have ``K = 1``; sequence-to-sequence has one position per output
token; causal keeps only ``t <= k``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnlens._validation import check_array, check_int, check_option, raise_invalid

VARIANTS = ("cross", "self", "seq2seq", "causal")


@dataclass(frozen=True)
class ConstraintSet:
    """Tokens ``X`` (n, T, d), queries ``Q`` (n, K, d), selection (n, K), mask (n, K, T)."""

    X: np.ndarray
    Q: np.ndarray
    selection: np.ndarray
    mask: np.ndarray
    variant: str

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def d(self) -> int:
        return int(self.X.shape[2])

    @property
    def count(self) -> int:
        """Number of margin constraints."""
        return int(self.mask.sum())

    def scores(self, W: np.ndarray) -> np.ndarray:
        """``x_it^T W q_ik``, shape (n, K, T)."""
        WQ = self.Q @ W.T  # (n, K, d): W q_ik
        return np.einsum("itd,ikd->ikt", self.X, WQ, optimize=True)

    def margins(self, W: np.ndarray) -> np.ndarray:
        """``(x_{i,a_ik} - x_it)^T W q_ik``, shape (n, K, T); ``+inf`` where ``t`` does not compete."""
        S = self.scores(W)
        sel = np.take_along_axis(S, self.selection[:, :, None], axis=2)
        M = sel - S
        M[~self.mask] = np.inf
        return M

    def index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(i, k, t)`` of every constraint, in C order of the mask."""
        return np.nonzero(self.mask)

    def vectors(self, i: np.ndarray, k: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Deltas ``x_{i,a_ik} - x_it`` (m, d) and queries ``q_ik`` (m, d) of constraints."""
        D = self.X[i, self.selection[i, k]] - self.X[i, t]
        return D, self.Q[i, k]

    def combine(self, alpha: np.ndarray, i: np.ndarray, k: np.ndarray, t: np.ndarray) -> np.ndarray:
        """``sum_c alpha_c (x_{i,a} - x_it) q_ik^T``, shape (d, d)."""
        D, Qc = self.vectors(i, k, t)
        return (D * alpha[:, None]).T @ Qc


def _check_selection(selection, shape: tuple[int, ...], T: int, caller: str = "") -> np.ndarray:
    """Integer token indices of ``shape`` in ``[0, T)`` (integral floats accepted)."""
    if selection is None:
        raise_invalid("selection", f"an integer array of shape {shape}", None,
                      "Pass e.g. problem.optimal_tokens.", caller)
    sel = np.asarray(selection)
    if sel.dtype.kind == "f" and sel.size and np.all(np.isfinite(sel)) and np.all(sel == np.round(sel)):
        sel = sel.astype(np.int64)
    if sel.dtype.kind not in "iu":
        raise_invalid("selection", "integer token indices", f"got dtype {sel.dtype}",
                      "Pass e.g. problem.optimal_tokens.", caller)
    if sel.shape != shape:
        raise_invalid("selection", f"an array of shape {shape}", f"got shape {sel.shape}",
                      "One selected token per sequence (and output position).", caller)
    if sel.size and (sel.min() < 0 or sel.max() >= T):
        bad = sel[(sel < 0) | (sel >= T)][:5].tolist()
        raise_invalid("selection", f"token indices in [0, {T - 1}]", f"got {bad}",
                      "Index the tokens of each sequence.", caller)
    return sel.astype(np.int64)


def build_constraints(
    X,
    Z,
    selection,
    variant: str = "cross",
    query_index: int | None = None,
) -> ConstraintSet:
    """Validate the inputs of an Att-SVM and lay out its constraints.

    - ``cross``: ``Z`` (n, d), ``selection`` (n,).
    - ``self``: ``Z`` is None, the query is ``x_{i, query_index}`` (default 0); ``selection`` (n,).
    - ``seq2seq``: every token is a query (``Z`` None) or ``Z`` (n, K, d); ``selection`` (n, K).
    - ``causal``: as seq2seq with ``K = T`` and only ``t <= k`` competing; ``selection[i, k] <= k``.
    """
    check_option(variant, "variant", VARIANTS)
    X = check_array(X, "X", ndim=3)
    n, T, d = X.shape
    if T < 2:
        raise_invalid("X", "at least 2 tokens per sequence", f"got T={T}",
                      "There is no selection to make among one token.", "att_svm")
    if variant == "cross":
        if Z is None:
            raise_invalid("Z", "(n, d) queries for variant='cross'", None,
                          "Pass Z, or variant='self' with query_index.", "att_svm")
        Q = check_array(Z, "Z", shape=(n, d))[:, None, :]
        sel = _check_selection(selection, (n,), T)[:, None]
    elif variant == "self":
        if Z is not None:
            raise_invalid("Z", "None for variant='self' (the query is x_{i, query_index})",
                          Z, "Pass Z=None, or variant='cross' for explicit queries.", "att_svm")
        qi = 0 if query_index is None else check_int(query_index, "query_index", low=0, high=T - 1)
        Q = X[:, qi : qi + 1, :]
        sel = _check_selection(selection, (n,), T)[:, None]
    else:
        if Z is None:
            Q = X
        else:
            Q = check_array(Z, "Z", ndim=3, shape=(n, None, d))
        K = Q.shape[1]
        if variant == "causal" and K != T:
            raise_invalid("Z", f"one query per token for variant='causal' (K = T = {T})",
                          f"got K={K}", "Pass Z=None (every token a query).", "att_svm")
        sel = _check_selection(selection, (n, K), T)
    K = Q.shape[1]
    mask = np.ones((n, K, T), dtype=bool)
    if variant == "causal":
        bad = sel > np.arange(K)[None, :]
        if bad.any():
            i, k = np.argwhere(bad)[0]
            raise_invalid("selection", "a token t <= k at every causal position k",
                          f"got selection[{i}, {k}] = {sel[i, k]}",
                          "A causal query attends to the tokens up to itself.", "att_svm")
        mask &= np.arange(T)[None, None, :] <= np.arange(K)[None, :, None]
    np.put_along_axis(mask, sel[:, :, None], False, axis=2)
    return ConstraintSet(X=X, Q=np.ascontiguousarray(Q), selection=sel, mask=mask, variant=variant)
