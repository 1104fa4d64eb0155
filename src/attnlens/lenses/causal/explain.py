r"""CLEANN: the minimal set of input tokens that explains an output position.

Rohekar, Gurwicz & Nisimov, "Causal Interpretation of Self-Attention in Pre-Trained
Transformers", NeurIPS 2023 (arXiv 2310.20307), Sec. 5 (CLEANN); official code
``causal_reasoning/cleann_explainer.py`` of IntelLabs/causality-lab.

Steps, for one head's attention :math:`A` of the deepest layer and a target position :math:`t`:

1. :math:`R = \operatorname{corr}(A A^\top)` (the paper's covariance of the output embeddings).
2. A causal graph over the tokens from Fisher-z tests on :math:`R` with the effective sample size
   (hidden size ``d``): ICD's PAG (:mod:`.icd`, the paper's default, ``search="icd"``) or stable
   PC with its v-structures (:mod:`.pc`, an option of the official code, ``search="pc"``;
   about 100x faster here).
3. The PDS-tree rooted at :math:`t` (:mod:`.pds`); its nodes are the possible explanation.
4. An explanation is a set :math:`E` whose removal changes the model's output at :math:`t`
   (a predicate supplied by the caller, ``is_explanation``). Candidates of size
   :math:`k = 1, 2, \dots` are the legal PDS subsets ordered by
   :math:`\sum_{v \in E} \operatorname{dist}(t, v)`; the first size with a confirmed candidate is
   minimal, and the first confirmed candidate of that size is returned:

   .. math:: E^\star = \operatorname*{arg\,min}_{E \in \mathcal{L}_k,\ \mathrm{flip}(E)}
             \sum_{v \in E} \operatorname{dist}(t, v), \qquad
             k = \min\{k : \exists E \in \mathcal L_k,\ \mathrm{flip}(E)\}.

Without a predicate the whole PDS set is the explanation (as the official code).
``ranking`` orders the candidate tokens without querying the model (PDS distance, then
:math:`|R_{tv}|` descending): a classifier-free causal ranking for comparisons at a fixed size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np

from attnlens._validation import Array, Interval, Options, raise_invalid, validate_params
from attnlens.lenses.causal.covariance import attention_covariance
from attnlens.lenses.causal.icd import ICDResult, icd_search
from attnlens.lenses.causal.pc import PCResult, pc_search
from attnlens.lenses.causal.pds import build_pds_tree, legal_subsets

__all__ = ["CausalExplanation", "causal_explanation"]

#: default significance level of the tests (the official notebook's p_val_th)
DEFAULT_ALPHA = 0.01
#: candidates handed to the predicate per call
DEFAULT_BATCH = 256


@dataclass(frozen=True)
class CausalExplanation:
    """CLEANN's explanation of one output position.

    target : the explained position. tokens : the explanation (sorted positions; empty when
    none was confirmed up to ``max_size``). found : whether the predicate confirmed it (always
    True without a predicate, when the PDS set is not empty). candidates_tested : predicate
    evaluations. pds_set : the possible explanation (PDS-tree nodes). distance : (n,) PDS
    distance from the target (inf outside the tree). ranking : classifier-free order of the
    candidate tokens. graph : the search result (PC or ICD: skeleton, sepsets, arrowheads).
    """

    target: int
    tokens: tuple[int, ...]
    found: bool
    candidates_tested: int
    pds_set: tuple[int, ...]
    distance: np.ndarray = field(repr=False)
    ranking: tuple[int, ...]
    graph: PCResult | ICDResult = field(repr=False)


def _check_nodes(nodes, n: int, target: int) -> list[int]:
    if nodes is None:
        return list(range(n))
    arr = np.atleast_1d(np.asarray(nodes))
    if arr.dtype.kind not in "iu" or arr.ndim != 1 or len(set(arr.tolist())) != arr.size or (
            arr.size and (arr.min() < 0 or arr.max() >= n)):
        raise_invalid("nodes", f"distinct int positions in [0, {n})", nodes,
                      "Pass the token positions to build the graph over.", "causal_explanation")
    out = sorted(set(arr.tolist()) | {target})
    if len(out) < 2:
        raise_invalid("nodes", "at least one position besides the target", nodes,
                      "A graph needs two nodes.", "causal_explanation")
    return out


@validate_params({
    "attention": [Array(ndim=2)],
    "target": [Interval(Integral, 0, None)],
    "n_samples": [Interval(Real, 3, None, closed="neither")],
    "alpha": [Interval(Real, 0, 1, closed="neither")],
    "is_explanation": [None, "callable"],
    "max_size": [None, Interval(Integral, 1, None)],
    "max_range": [None, Interval(Integral, 1, None)],
    "max_depth": [None, Interval(Integral, 0, None)],
    "batch_size": [Interval(Integral, 1, None)],
    "search": [Options("icd", "pc")],
})
def causal_explanation(
    attention,
    target: int,
    n_samples: float,
    alpha: float = DEFAULT_ALPHA,
    *,
    nodes: Sequence[int] | None = None,
    is_explanation: Callable[[list[tuple[int, ...]]], Sequence[bool]] | None = None,
    max_size: int | None = None,
    max_range: int | None = None,
    max_depth: int | None = None,
    batch_size: int = DEFAULT_BATCH,
    search: str = "icd",
) -> CausalExplanation:
    """The minimal set of input tokens explaining output position ``target`` (CLEANN).

    Parameters
    ----------
    attention : (n, n) one head's attention of the deepest layer, rows = queries.
    target : the output position to explain.
    n_samples : effective sample size of the tests (the paper: the hidden size ``d``).
    alpha : significance level of the Fisher-z tests.
    nodes : positions the graph is built over (the target is added); default all. The
        correlation is computed from the whole matrix first, as in the official code.
    is_explanation : ``f(candidates) -> flags``; ``candidates`` is a list of position tuples of
        one size, in CLEANN's order, and ``flags[i]`` says whether removing ``candidates[i]``
        changes the output at ``target`` (batched so a model can run them together).
        ``None``: the whole PDS set is returned.
    max_size : largest explanation tried (default: the PDS set's size).
    max_range : depth limit of the PDS-tree (the official ``max_range``).
    max_depth : largest conditioning set of the search (PC's depth, ICD's last ``r``;
        ``None``: no limit).
    batch_size : candidates per ``is_explanation`` call (in order; the search stops at the
        first confirmed one, so later batches of that size are never evaluated).
    search : "icd" (the paper's default) or "pc".
    """
    att = np.asarray(attention, dtype=np.float64)
    n = att.shape[0]
    if att.shape != (n, n):
        raise_invalid("attention", "a square (n, n) matrix", f"got shape {att.shape}",
                      "Pass one head's attention of one sequence.", "causal_explanation")
    if target >= n:
        raise_invalid("target", f"a position < {n}", target, "Index a row of attention.",
                      "causal_explanation")
    keep = _check_nodes(nodes, n, int(target))
    corr = attention_covariance(att).correlation[np.ix_(keep, keep)]
    graph = (icd_search(corr, n_samples, alpha, max_depth) if search == "icd"
             else pc_search(corr, n_samples, alpha, max_depth))
    root = keep.index(int(target))
    tree = build_pds_tree(graph.adjacency, graph.arrowheads, root, max_range)
    to_pos = np.asarray(keep)
    distance = np.full(n, np.inf)
    distance[to_pos] = tree.distance
    pds = tuple(int(to_pos[v]) for v in tree.members)
    strength = np.abs(corr[root])
    ranking = tuple(int(to_pos[v]) for v in sorted(
        (v for v in range(len(keep)) if v != root), key=lambda v: (tree.distance[v], -strength[v])))
    if is_explanation is None:
        return CausalExplanation(int(target), tuple(sorted(pds)), bool(pds), 0, pds, distance,
                                 ranking, graph)
    limit = len(pds) if max_size is None else min(max_size, len(pds))
    tested = 0
    for size in range(1, limit + 1):
        subsets = [tuple(int(to_pos[v]) for v in s) for s in legal_subsets(tree, size)]
        if not subsets:
            continue
        for lo in range(0, len(subsets), batch_size):
            chunk = subsets[lo:lo + batch_size]
            flags = list(is_explanation(chunk))
            if len(flags) != len(chunk):
                raise_invalid("is_explanation", "a callable returning one flag per candidate",
                              f"got {len(flags)} flags for {len(chunk)} candidates",
                              "Return a sequence of bools as long as its argument.",
                              "causal_explanation")
            tested += len(chunk)
            for s, ok in zip(chunk, flags, strict=True):
                if ok:
                    return CausalExplanation(int(target), tuple(sorted(s)), True, tested, pds,
                                             distance, ranking, graph)
    return CausalExplanation(int(target), (), False, tested, pds, distance, ranking, graph)
