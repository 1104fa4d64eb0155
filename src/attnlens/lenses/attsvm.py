r"""Att-SVM of real heads: do pretrained heads select tokens as the max-margin SVM would?

Tarzanagh, Li, Zhang, Oymak, "Max-Margin Token Selection in Attention Mechanism", NeurIPS 2023
(arXiv 2306.13596); Tarzanagh, Li, Thrampoulidis, Oymak, "Transformers as Support Vector
Machines" (arXiv 2308.16898). This lens uses the svm pillar's public solvers (``att_svm``,
``gen_svm``, ``check_optimality``): it is the theory that the lens measures real heads against.

Score convention (attnlens.svm): ``score_t = x_t^T W z`` with ``W = K Q^T / sqrt(d_h)`` for one
head, ``x_t`` the key token and ``z`` the query token, both the block's attention input. For
each sequence ``s`` and query position ``k`` (one *row*), the head's real attention
probabilities ``P_s[k, :]`` give the selected token ``a = argmax_t P_s[k, t]`` and the selected
set ``O = {t : P_s[k, t] >= rho max_t P_s[k, t]}``. Over all rows, with ``z = x_{s,k}``,

.. math:: W^{mm} = \arg\min_W \|W\|_F \ \text{s.t.}\ (x_{s,a} - x_{s,t})^\top W z \ge 1
          \quad \forall t \ne a ,

(Att-SVM*, the nuclear norm, on request) and the Gen-SVM of the sets ``O`` where some set has
more than one token. Reported: :math:`\cos(W, W^{mm})` (Frobenius inner product), the same for
Gen-SVM and Att-SVM*, numerical ranks, and, given a linear read-out ``v`` and labels ``Y``
(token scores :math:`\gamma_t = Y v^\top x_t`), the share of rows whose selection is locally
optimal (no support token scores higher) and globally optimal (``a = argmax_t gamma_t``).

Rows of different lengths share one program: a row is padded to the longest one with copies
of its least-attended token, which only repeats a constraint already present (same feasible
set, same optimum). An infeasible program is reported with the number of rows in the
infeasibility certificate (the dual ray's support), never dropped.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np

from attnlens._validation import (
    Array,
    Interval,
    Real,
    check_array,
    raise_invalid,
    validate_params,
)
from attnlens.errors import InfeasibleError

__all__ = ["HeadSVM", "head_attsvm", "selection_rows"]

#: singular values above this fraction of the largest count toward a numerical rank
RANK_TOL = 1e-6


@dataclass(frozen=True)
class HeadSVM:
    """One head's Att-SVM lens (see the module docstring).

    status: the Att-SVM (Frobenius) outcome: optimal, optimal_inaccurate, max_iter, infeasible.
    n_rows: queries analysed; n_multi: rows whose selected set has more than one token;
    n_infeasible: rows in the infeasibility certificate (0 when feasible, -1 when the solver
    could not name them); cos_mm / cos_gen / cos_nuc: cosine of W with W^mm, the Gen-SVM
    solution and W^mm_* (None when not computed or infeasible); rank_w, rank_mm, rank_nuc:
    numerical ranks; share_local / share_global: share of rows whose selection is locally /
    globally optimal (None without a read-out v); selected_mass: mean probability of the
    selected token; certificate: the Att-SVM relative duality gap; seconds.
    """

    status: str
    n_rows: int
    n_multi: int
    n_infeasible: int
    cos_mm: float | None
    cos_gen: float | None
    cos_nuc: float | None
    rank_w: int
    rank_mm: int | None
    rank_nuc: int | None
    share_local: float | None
    share_global: float | None
    selected_mass: float
    certificate: float | None
    seconds: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300))


def _rank(w: np.ndarray) -> int:
    s = np.linalg.svd(w, compute_uv=False)
    return int((s > RANK_TOL * max(s[0], 1e-300)).sum())


def selection_rows(tokens, attention, set_ratio: float = 0.5, max_queries: int | None = None):
    """Rows of the lens: padded tokens (R, T, d), queries (R, d), selection (R,), sets (R, T)
    bool, the row's sequence index (R,) and the selected token's probability (R,).

    tokens: per sequence (n_s, d); attention: per sequence (n_s, n_s) of one head (rows =
    queries). ``max_queries`` keeps that many evenly spaced queries per sequence.
    """
    X = [np.asarray(x, dtype=np.float64) for x in tokens]
    P = [np.asarray(p, dtype=np.float64) for p in attention]
    T = max(len(x) for x in X)
    rows_x, rows_z, sel, sets, seq, mass = [], [], [], [], [], []
    for s, (x, p) in enumerate(zip(X, P, strict=True)):
        n = len(x)
        queries = np.arange(n)
        if max_queries is not None and n > max_queries:
            queries = np.unique(np.linspace(0, n - 1, max_queries).round().astype(int))
        for k in queries:
            row = p[k]
            a = int(np.argmax(row))
            chosen = row >= set_ratio * row[a]
            pad = int(np.argmin(row))  # least attended: outside the set unless all are in it
            padded = np.concatenate([x, np.repeat(x[pad][None], T - n, axis=0)])
            in_set = np.concatenate([chosen, np.repeat(chosen[pad], T - n)])
            rows_x.append(padded)
            rows_z.append(x[k])
            sel.append(a)
            sets.append(in_set)
            seq.append(s)
            mass.append(row[a])
    return (np.stack(rows_x), np.stack(rows_z), np.array(sel), np.stack(sets), np.array(seq),
            np.array(mass))


def _solve(fn, *args, **kw):
    """Run a solver with one BLAS thread (these small dense factorizations run slower with
    several threads, 28x on a loaded 2-core machine); status warnings become the status."""
    from threadpoolctl import threadpool_limits

    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


@validate_params({
    "W": [Array(ndim=2)],
    "set_ratio": [Interval(Real, 0, 1, closed="right")],
    "max_queries": [None, Interval(int, 1, None)],
    "v": [None, Array(ndim=1)],
    "nuclear": ["boolean"],
    "gen": ["boolean"],
})
def head_attsvm(tokens, attention, W, *, v=None, labels=None, set_ratio: float = 0.5,
                max_queries: int | None = None, nuclear: bool = False,
                gen: bool = True) -> HeadSVM:
    """The Att-SVM lens of one head over a batch of sequences.

    Parameters
    ----------
    tokens : list of (n_s, d) attention inputs of the head's block, one per sequence.
    attention : list of (n_s, n_s) probabilities of the head (rows = queries).
    W : (d, d) the head's score matrix ``K Q^T / sqrt(d_h)`` (``score_t = x_t^T W z``).
    v, labels : optional read-out (d,) and per-sequence labels (+-1) for the token scores.
    set_ratio : tokens within this factor of the row's largest probability form its set.
    max_queries : evenly spaced queries per sequence (None: all).
    nuclear : also solve Att-SVM* (nuclear norm; slow at d = 384). gen : solve Gen-SVM.
    """
    from attnlens.svm import TokenSelectionProblem, att_svm, check_optimality, gen_svm

    start = time.perf_counter()
    W = check_array(W, "W", ndim=2, caller="head_attsvm")
    d = W.shape[0]
    if len(tokens) == 0 or len(tokens) != len(attention):
        raise_invalid("tokens", "a non-empty list as long as attention",
                      f"got {len(tokens)} and {len(attention)} entries", "", "head_attsvm")
    for s, (x, p) in enumerate(zip(tokens, attention, strict=True)):
        x = check_array(x, f"tokens[{s}]", ndim=2, caller="head_attsvm")
        n = x.shape[0]
        check_array(p, f"attention[{s}]", shape=(n, n), caller="head_attsvm")
        if x.shape[1] != d or n < 2:
            raise_invalid(f"tokens[{s}]", f"an (n >= 2, {d}) array", f"got shape {x.shape}",
                          "Pass the block's attention input of each sequence.", "head_attsvm")
    X, Z, sel, sets, seq, mass = selection_rows(tokens, attention, set_ratio, max_queries)
    n_multi = int((sets.sum(axis=1) > 1).sum())
    status, n_inf, res = "optimal", 0, None
    try:
        res = _solve(att_svm, X, Z, sel, norm="fro")
        status = str(res.status)
    except InfeasibleError as exc:
        status = "infeasible"
        n_inf = len(exc.evidence.get("sequences", [])) or -1
    cos_gen = cos_nuc = rank_nuc = None
    share_local = share_global = None
    if res is not None:
        if gen and n_multi:
            keep = ~sets.all(axis=1)  # a row selecting every token has no margin constraint
            try:
                g = _solve(gen_svm, X[keep], Z[keep], sets[keep])
                cos_gen = _cos(W, g.W)
            except InfeasibleError:
                cos_gen = None
        if nuclear:
            try:
                nres = _solve(att_svm, X, Z, sel, norm="nuc")
                cos_nuc, rank_nuc = _cos(W, nres.W), nres.rank
            except InfeasibleError:
                pass
        if v is not None:
            if labels is None:
                raise_invalid("labels", "one +-1 label per sequence when v is given", None,
                              "Pass the labels (or the classifier's predictions).",
                              "head_attsvm")
            y = np.asarray(labels, dtype=np.float64)[seq]
            problem = TokenSelectionProblem(X, y, np.asarray(v, dtype=np.float64), Z=Z)
            report = check_optimality(problem, sel, result=res)
            share_local = float(np.mean(report.per_sequence))
            gamma = problem.token_scores
            share_global = float(np.mean(gamma[np.arange(len(sel)), sel]
                                         >= gamma.max(axis=1)))
    return HeadSVM(
        status=status, n_rows=len(sel), n_multi=n_multi, n_infeasible=n_inf,
        cos_mm=None if res is None else _cos(W, res.W), cos_gen=cos_gen, cos_nuc=cos_nuc,
        rank_w=_rank(W), rank_mm=None if res is None else res.rank, rank_nuc=rank_nuc,
        share_local=share_local, share_global=share_global, selected_mass=float(mass.mean()),
        certificate=None if res is None else float(res.certificate),
        seconds=time.perf_counter() - start)
