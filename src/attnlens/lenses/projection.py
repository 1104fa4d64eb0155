r"""Self-attention as distributional projection (Mehta 2025, arXiv 2511.13780), made measurable.

The paper starts from a symmetric corpus-level co-occurrence operator :math:`S \in R^{V\times V}`
(the matrix under GloVe) and a sequence given as one-hot rows :math:`Q \in \{0,1\}^{n \times V}`.
Projecting the corpus statistics into the sequence context gives

.. math:: M = Q S Q^\top \in R^{n\times n}, \qquad E = M (Q S) \in R^{n \times V},

``M`` the token-to-token interaction of this sequence, ``E`` the contextual prediction over the
vocabulary. With a factorization :math:`S \approx W W^\top` (GloVe/SVD embeddings, ``H = Q W``)
:math:`M = H H^\top`, and the query-key form :math:`H W_Q W_K^\top H^\top` is the asymmetric
extension for directional relations. Read-outs here: split a learned bilinear score
:math:`B = X W_Q W_K^\top X^\top` (rows = query tokens, columns = key tokens) into its symmetric
and antisymmetric parts and correlate them with corpus PMI and directional co-occurrence.

Convention: ``D[a, b]`` counts key token ``b`` occurring within ``window`` tokens *before* query
token ``a`` (what a causal attention row ``a`` can see); the symmetric co-occurrence is
``D + D^T``. GloVe: Pennington, Socher, Manning (EMNLP 2014); PMI/SVD: Levy & Goldberg
(NeurIPS 2014).
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from attnlens._validation import (
    Array,
    Interval,
    Options,
    raise_invalid,
    validate_params,
)
from attnlens.errors import CorpusTooSmallError

__all__ = [
    "Correlation",
    "GloveEmbeddings",
    "Projection",
    "cooccurrence_counts",
    "directional_asymmetry",
    "distributional_projection",
    "double_center",
    "fit_bilinear",
    "glove_embeddings",
    "pair_correlation",
    "pmi_matrix",
    "split_bilinear",
    "svd_embeddings",
]

#: GloVe's defaults (Pennington et al. 2014): weighting cap and exponent.
GLOVE_X_MAX = 100.0
GLOVE_ALPHA = 0.75
DEFAULT_SEED = 0


@validate_params({
    "tokens": [Array(ndim=1, dtype=None)],
    "vocab_size": [Interval(Integral, 1, None)],
    "window": [Interval(Integral, 1, None)],
    "lengths": [None, Array(ndim=1, dtype=None)],
    "weighting": [Options("harmonic", "uniform")],
})
def cooccurrence_counts(tokens, vocab_size: int, window: int, *, lengths=None,
                        weighting: str = "harmonic") -> np.ndarray:
    """Directed co-occurrence counts ``D[a, b]``: key ``b`` within ``window`` tokens before ``a``.

    Parameters
    ----------
    tokens : (N,) int token ids of the concatenated corpus; ids < 0 (out of vocabulary) keep
        their position but are not counted.
    vocab_size : V, ids must be < V.
    window : the context window (pairs at distance 1..window).
    lengths : (docs,) document lengths summing to N; pairs never cross documents.
        ``None``: one document.
    weighting : ``"harmonic"`` (1/distance, GloVe's) or ``"uniform"``.

    Returns
    -------
    (V, V) float64 ``D``; ``D + D.T`` is the symmetric GloVe co-occurrence matrix.
    """
    tokens = int_array(tokens, "tokens", "cooccurrence_counts")
    n = tokens.shape[0]
    if tokens.max() >= vocab_size:
        raise_invalid("tokens", f"ids < vocab_size={vocab_size}", f"got max id {tokens.max()}",
                      "Map rare words to -1 (out of vocabulary).", "cooccurrence_counts")
    doc = np.zeros(n, dtype=np.int64)
    if lengths is not None:
        lengths = int_array(lengths, "lengths", "cooccurrence_counts")
        if np.any(lengths < 0) or lengths.sum() != n:
            raise_invalid("lengths", f"non-negative document lengths summing to {n}",
                          f"got sum {lengths.sum()}", "Pass one length per document.",
                          "cooccurrence_counts")
        doc = np.repeat(np.arange(len(lengths)), lengths)
    if n <= window:
        raise CorpusTooSmallError(
            f"cooccurrence_counts: the corpus has {n} tokens, not more than window={window}; "
            "use a smaller window or a larger corpus.")
    total = np.zeros(vocab_size * vocab_size, dtype=np.float64)
    for k in range(1, window + 1):
        a, b = tokens[k:], tokens[:-k]  # query a at position i, key b at position i - k
        ok = (a >= 0) & (b >= 0) & (doc[k:] == doc[:-k])
        w = 1.0 / k if weighting == "harmonic" else 1.0
        total += np.bincount(a[ok] * vocab_size + b[ok], minlength=vocab_size * vocab_size) * w
    return total.reshape(vocab_size, vocab_size)


def int_array(value, name: str, caller: str) -> np.ndarray:
    """An int64 copy of a (checked, finite) array whose values are all integers."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "iub" and not np.all(np.mod(arr, 1) == 0):
        raise_invalid(name, "an array of integers", arr, "Pass integer ids or counts.", caller)
    return arr.astype(np.int64)


def _check_square(m, name: str, caller: str) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if m.shape[0] != m.shape[1]:
        raise_invalid(name, "a square matrix", m, "Pass a (V, V) matrix.", caller)
    return m


@validate_params({"counts": [Array(ndim=2)], "positive": ["boolean"],
                  "alpha": [Interval(Real, 0.0, 1.0, closed="right")]})
def pmi_matrix(counts, *, positive: bool = False, alpha: float = 1.0) -> np.ndarray:
    r"""Pointwise mutual information :math:`\log \frac{C_{ab} \sum C}{C_{a\cdot} C^\alpha_{\cdot b}
    / \sum_c C^\alpha_{\cdot c} \cdot \sum C}` of a count matrix.

    ``alpha < 1`` smooths the context distribution (Levy, Goldberg, Dagan 2015; 0.75 there).
    Entries with zero count are 0 (the PPMI convention; mask them with ``counts > 0`` when
    reading plain PMI); ``positive=True`` clips at 0 (PPMI). Raises
    :class:`~attnlens.errors.CorpusTooSmallError` when a row or column has no count.
    """
    c = _check_square(counts, "counts", "pmi_matrix")
    if np.any(c < 0):
        raise_invalid("counts", "non-negative counts", c, "Pass co-occurrence counts.",
                      "pmi_matrix")
    rows, cols = c.sum(1), c.sum(0)
    if np.any(rows == 0) or np.any(cols == 0):
        empty = np.flatnonzero((rows == 0) | (cols == 0))
        raise CorpusTooSmallError(
            f"pmi_matrix: {len(empty)} vocabulary ids never co-occur (first: {empty[:5].tolist()});"
            " lower the vocabulary size, widen the window or use a larger corpus.")
    total = c.sum()
    pc = cols ** alpha
    pc = pc / pc.sum()
    with np.errstate(divide="ignore"):
        out = np.log(c / total) - np.log(rows / total)[:, None] - np.log(pc)[None, :]
    out[c == 0] = 0.0
    return np.maximum(out, 0.0) if positive else out


@validate_params({"m": [Array(ndim=2)]})
def double_center(m) -> np.ndarray:
    """``J M J`` with ``J = I - 11^T / V``: removes row and column effects (GloVe's biases)."""
    m = np.asarray(m, dtype=np.float64)
    m = m - m.mean(axis=1, keepdims=True)
    return m - m.mean(axis=0, keepdims=True)


@validate_params({"m": [Array(ndim=2)], "dim": [Interval(Integral, 1, None)]})
def svd_embeddings(m, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Word and context vectors ``U_d sqrt(S_d)``, ``V_d sqrt(S_d)`` of the rank-``dim`` SVD.

    The SVD-of-PMI reference (Levy & Goldberg 2014): ``word @ context.T`` is the best rank-
    ``dim`` approximation of ``m`` in Frobenius norm.
    """
    m = np.asarray(m, dtype=np.float64)
    if dim > min(m.shape):
        raise_invalid("dim", f"<= {min(m.shape)} (the matrix rank bound)", dim,
                      "Lower dim.", "svd_embeddings")
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    r = np.sqrt(s[:dim])
    return u[:, :dim] * r, vt[:dim].T * r


@dataclass(frozen=True)
class GloveEmbeddings:
    """GloVe fit: ``word``/``context`` (V, d), biases (V,), the final weighted loss, iterations."""

    word: np.ndarray
    context: np.ndarray
    word_bias: np.ndarray
    context_bias: np.ndarray
    loss: float
    steps: int

    @property
    def vectors(self) -> np.ndarray:
        """``word + context``, the vectors GloVe reports."""
        return self.word + self.context


@validate_params({
    "counts": [Array(ndim=2)], "dim": [Interval(Integral, 1, None)],
    "x_max": [Interval(Real, 0.0, None, closed="neither")],
    "alpha": [Interval(Real, 0.0, None)], "steps": [Interval(Integral, 1, None)],
    "lr": [Interval(Real, 0.0, None, closed="neither")], "seed": [Interval(Integral, 0, None)],
})
def glove_embeddings(counts, dim: int, *, x_max: float = GLOVE_X_MAX, alpha: float = GLOVE_ALPHA,
                     steps: int = 500, lr: float = 1.0, seed: int = DEFAULT_SEED
                     ) -> GloveEmbeddings:
    r"""GloVe (Pennington et al. 2014) on a dense co-occurrence matrix, full-batch L-BFGS.

    .. math:: \min_{w, \tilde w, b, \tilde b} \sum_{ab: X_{ab} > 0} f(X_{ab})
        (w_a^\top \tilde w_b + b_a + \tilde b_b - \log X_{ab})^2,
        \quad f(x) = \min(1, (x / x_{max})^\alpha).

    The reference implementation uses per-entry AdaGrad over shuffled non-zeros; the objective
    is the same, minimized here by full-batch L-BFGS (strong Wolfe line search, at most
    ``steps`` iterations, float64), which reaches the optimum far more accurately at small V. With every count positive and ``x_max <= min X`` (so ``f = 1``) the optimum
    satisfies ``w @ w~.T = `` the rank-``dim`` SVD of the double-centered ``log X`` (the biases
    absorb row and column effects), i.e. of the double-centered PMI: the test oracle.
    """
    import torch

    x = _check_square(counts, "counts", "glove_embeddings")
    if np.any(x < 0):
        raise_invalid("counts", "non-negative counts", x, "Pass co-occurrence counts.",
                      "glove_embeddings")
    if not np.any(x > 0):
        raise CorpusTooSmallError("glove_embeddings: the co-occurrence matrix is all zeros; "
                                  "use a larger corpus or window.")
    v = x.shape[0]
    gen = torch.Generator().manual_seed(seed)
    X = torch.as_tensor(x, dtype=torch.float64)
    nz = X > 0
    target = torch.where(nz, torch.log(torch.where(nz, X, torch.ones_like(X))), X)  # log X
    weight = torch.where(nz, torch.clamp((X / x_max) ** alpha, max=1.0), torch.zeros_like(X))
    scale = 1.0 / np.sqrt(dim)
    w = (scale * torch.randn(v, dim, generator=gen, dtype=torch.float64)).requires_grad_()
    c = (scale * torch.randn(v, dim, generator=gen, dtype=torch.float64)).requires_grad_()
    bw = torch.zeros(v, dtype=torch.float64, requires_grad=True)
    bc = torch.zeros(v, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, c, bw, bc], lr=lr, max_iter=steps, tolerance_grad=1e-12,
                            tolerance_change=1e-15, history_size=20,
                            line_search_fn="strong_wolfe")
    norm = float(weight.sum())

    def closure() -> torch.Tensor:
        opt.zero_grad()
        resid = w @ c.T + bw[:, None] + bc[None, :] - target  # (V, V)
        loss = (weight * resid * resid).sum() / norm
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        resid = w @ c.T + bw[:, None] + bc[None, :] - target
        loss = (weight * resid * resid).sum() / norm
    n_iter = int(opt.state[opt._params[0]].get("n_iter", steps))
    return GloveEmbeddings(w.detach().numpy(), c.detach().numpy(), bw.detach().numpy(),
                           bc.detach().numpy(), float(loss), n_iter)


@dataclass(frozen=True)
class Projection:
    """``M = Q S Q^T`` (n, n) and ``E = M Q S`` (n, V) for one sequence (Mehta 2025, Sec. 3)."""

    interaction: np.ndarray
    prediction: np.ndarray


@validate_params({"ids": [Array(ndim=1, dtype=None)], "s": [Array(ndim=2)]})
def distributional_projection(ids, s) -> Projection:
    """Project the corpus operator ``S`` (V, V) into the sequence ``ids`` (n,).

    ``Q`` is the (n, V) one-hot matrix of ``ids``; ``M = Q S Q^T`` reads ``S[ids][:, ids]``
    and ``E = M (Q S)``, computed without forming ``Q``.
    """
    ids = int_array(ids, "ids", "distributional_projection")
    s = _check_square(s, "s", "distributional_projection")
    if ids.min() < 0 or ids.max() >= s.shape[0]:
        raise_invalid("ids", f"ids in [0, {s.shape[0]})", ids, "Map out-of-vocabulary tokens "
                      "out of the sequence first.", "distributional_projection")
    qs = s[ids]  # (n, V) = Q S
    m = qs[:, ids]  # (n, n) = Q S Q^T
    return Projection(m, m @ qs)


@validate_params({"w": [Array(ndim=2)]})
def split_bilinear(w) -> tuple[np.ndarray, np.ndarray]:
    """``(W + W^T) / 2`` and ``(W - W^T) / 2``: the symmetric and antisymmetric parts."""
    w = _check_square(w, "w", "split_bilinear")
    return (w + w.T) / 2, (w - w.T) / 2


@validate_params({"x": [Array(ndim=2)], "scores": [Array(ndim=2)],
                  "ridge": [Interval(Real, 0.0, None)]})
def fit_bilinear(x, scores, ridge: float = 0.0) -> np.ndarray:
    r"""Least-squares ``W`` (d, d) with ``x W x^T \approx scores``: ``W = x^+ scores x^{+T}``.

    ``x`` (V, d) token vectors, ``scores`` (V, V) observed pair scores (rows = queries).
    ``ridge > 0`` uses ``(x^T x + ridge I)^{-1} x^T`` instead of the pseudo-inverse.
    """
    x = np.asarray(x, dtype=np.float64)
    g = _check_square(scores, "scores", "fit_bilinear")
    if g.shape[0] != x.shape[0]:
        raise_invalid("scores", f"({x.shape[0]}, {x.shape[0]}) to match x", g,
                      "Pass one row and column per token of x.", "fit_bilinear")
    if ridge > 0:
        pinv = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T)
    else:
        pinv = np.linalg.pinv(x)
    return pinv @ g @ pinv.T


@validate_params({"d": [Array(ndim=2)], "smoothing": [Interval(Real, 0.0, None,
                                                                 closed="neither")]})
def directional_asymmetry(d, smoothing: float = 1.0) -> np.ndarray:
    """``log((D + s) / (D^T + s))``: > 0 where key ``b`` precedes query ``a`` more than follows.

    Antisymmetric by construction; ``D`` from :func:`cooccurrence_counts`.
    """
    d = _check_square(d, "d", "directional_asymmetry")
    return np.log(d + smoothing) - np.log(d.T + smoothing)


@dataclass(frozen=True)
class Correlation:
    """Pearson and Spearman correlation over ``n_pairs`` matrix entries."""

    pearson: float
    spearman: float
    n_pairs: int


@validate_params({"a": [Array(ndim=2)], "b": [Array(ndim=2)],
                  "mask": [None, Array(ndim=2, dtype=bool)], "offdiagonal": ["boolean"]})
def pair_correlation(a, b, mask=None, *, offdiagonal: bool = True) -> Correlation:
    """Correlate two (V, V) matrices over the entries in ``mask`` (off-diagonal by default)."""
    from scipy.stats import spearmanr

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise_invalid("b", f"the shape of a {a.shape}", b, "Pass matrices over the same pairs.",
                      "pair_correlation")
    sel = np.ones(a.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if sel.shape != a.shape:
        raise_invalid("mask", f"the shape of a {a.shape}", sel, "Pass one flag per entry.",
                      "pair_correlation")
    if offdiagonal and a.shape[0] == a.shape[1]:
        sel = sel & ~np.eye(a.shape[0], dtype=bool)
    x, y = a[sel], b[sel]
    if x.size < 3 or np.std(x) == 0 or np.std(y) == 0:
        raise_invalid("mask", "at least 3 selected pairs with varying values", int(x.size),
                      "Select more pairs.", "pair_correlation")
    return Correlation(float(np.corrcoef(x, y)[0, 1]), float(spearmanr(x, y).statistic),
                       int(x.size))
