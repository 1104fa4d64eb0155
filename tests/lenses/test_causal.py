"""The causal lens against independent paths: numpy's corrcoef, least-squares residuals,
causal-learn's Fisher-z test and its stable PC, hand-derived PDS-trees; on the deepest-layer
attention of the bundled MiniLM over real Rotten Tomatoes sentences."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
from causallearn.search.ConstraintBased.FCI import fci
from causallearn.search.ConstraintBased.PC import pc
from causallearn.utils.cit import CIT, fisherz

from attnlens.errors import InvalidParameterError
from attnlens.lenses.causal import (
    attention_covariance,
    causal_explanation,
    fisher_z_test,
    icd_search,
    partial_correlations,
    pc_search,
    pc_skeleton,
    samples_with_correlation,
)
from attnlens.lenses.causal.pds import build_pds_tree, legal_subsets

HIDDEN = 384  # all-MiniLM-L6-v2's hidden size: the paper's effective sample size
SEED = 20261205
N_SENTENCES = 3
MAX_TOKENS = 18  # short sentences keep causal-learn's pure-Python search fast


@pytest.fixture(scope="module")
def attentions():
    """Head-averaged and per-head last-layer attention of short real RT sentences."""
    from attnlens.backbones import load_backbone
    from attnlens.datasets.text import load_text

    bb = load_backbone("minilm")
    texts = load_text("rotten_tomatoes").texts
    lengths = [len(ids) for ids in bb.tokenizer(texts[:200])["input_ids"]]
    chosen = [t for t, n in zip(texts[:200], lengths, strict=True) if 8 <= n <= MAX_TOKENS]
    chosen = chosen[:N_SENTENCES]
    feats = bb.encode(chosen, attentions=True, progress=False)
    out = []
    for i in range(len(chosen)):
        m = feats.mask[i]
        out.append(feats.attentions[-1, i][:, m][:, :, m].astype(np.float64))  # (H, n, n)
    return out


def test_covariance_is_the_correlation_of_attention_times_white_values(attentions):
    """Z = A V with V of zero-mean orthonormal rows (Cov V = I exactly): corrcoef(Z) = corr(AA^T)."""
    att = attentions[0][3]
    n = att.shape[0]
    v = np.random.default_rng(SEED).standard_normal((HIDDEN, n))
    v -= v.mean(0)
    q, _ = np.linalg.qr(v)  # (HIDDEN, n) orthonormal, zero-mean columns
    z = att @ q.T  # (n, HIDDEN): token representations, dimensions = samples
    res = attention_covariance(att)
    np.testing.assert_allclose(res.covariance, z @ z.T, atol=1e-12)
    np.testing.assert_allclose(res.correlation, np.corrcoef(z), atol=1e-12)


def test_samples_have_exactly_the_correlation(attentions):
    corr = attention_covariance(attentions[0].mean(0)).correlation
    x = samples_with_correlation(corr, HIDDEN, SEED)
    assert x.shape == (HIDDEN, len(corr))
    np.testing.assert_allclose(np.corrcoef(x, rowvar=False), corr, atol=1e-12)


def test_partial_correlations_equal_residual_correlations(attentions):
    corr = attention_covariance(attentions[1].mean(0)).correlation
    x = samples_with_correlation(corr, HIDDEN, SEED)
    got = partial_correlations(corr)
    n = corr.shape[0]
    for i, j in [(0, 1), (1, n - 1), (2, 5)]:
        rest = [k for k in range(n) if k not in (i, j)]
        design = np.c_[np.ones(HIDDEN), x[:, rest]]
        ri = x[:, i] - design @ np.linalg.lstsq(design, x[:, i], rcond=None)[0]
        rj = x[:, j] - design @ np.linalg.lstsq(design, x[:, j], rcond=None)[0]
        assert got[i, j] == pytest.approx(np.corrcoef(ri, rj)[0, 1], abs=1e-6)


def test_fisher_z_equals_causal_learn(attentions):
    corr = attention_covariance(attentions[2].mean(0)).correlation
    x = samples_with_correlation(corr, HIDDEN, SEED + 1)
    cit = CIT(x, "fisherz")
    sample_corr = np.corrcoef(x, rowvar=False)
    for a, b, cond in [(0, 1, ()), (1, 3, (2,)), (0, 4, (1, 2, 5)), (2, 6, (0, 1, 3, 4))]:
        res = fisher_z_test(sample_corr, a, b, cond, n_samples=HIDDEN, alpha=0.01)
        assert res.p_value == pytest.approx(cit(a, b, list(cond)), rel=1e-9, abs=1e-15)
        assert res.independent == (cit(a, b, list(cond)) > 0.01)


@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_pc_skeleton_equals_causal_learn_on_real_attention(attentions, alpha):
    """The correlation of each real sentence's attention (head-averaged and one head), given
    to causal-learn as data with exactly that correlation; and data drawn from it."""
    rng = np.random.default_rng(SEED)
    cases = 0
    for k, att in enumerate(attentions):
        corr = attention_covariance(att.mean(0)).correlation
        head = attention_covariance(att[k % att.shape[0]]).correlation
        drawn = rng.multivariate_normal(np.zeros(len(corr)), corr, size=HIDDEN)
        for x in (samples_with_correlation(corr, HIDDEN, SEED + k),
                  samples_with_correlation(head, HIDDEN, SEED + k), drawn):
            ref = pc(x, alpha, fisherz, stable=True, show_progress=False).G.graph != 0
            ours = pc_skeleton(np.corrcoef(x, rowvar=False), x.shape[0], alpha)
            np.testing.assert_array_equal(ours, ref)
            cases += 1
    assert cases == 3 * len(attentions)


def test_pc_depth_limit_equals_causal_learn_max_k(attentions):
    corr = attention_covariance(attentions[0].mean(0)).correlation
    x = samples_with_correlation(corr, 60, SEED)  # few samples: a denser graph, deeper search
    for k in (0, 1):
        ref = pc(x, 0.05, fisherz, stable=True, show_progress=False, max_k=k).G.graph != 0
        ours = pc_search(np.corrcoef(x, rowvar=False), 60, 0.05, max_depth=k)
        np.testing.assert_array_equal(ours.adjacency, ref)
        assert ours.depth == k


def _latent_sem(seed: int, n_obs: int = 8, n_latent: int = 2, p_edge: float = 0.35):
    """A random linear-Gaussian DAG with latent confounders: the observed population
    correlation and the DAG (latents are nodes n_obs..)."""
    rng = np.random.default_rng(seed)
    n = n_obs + n_latent
    b = np.zeros((n, n))
    order = rng.permutation(n_obs)
    for i, j in itertools.combinations(range(n_obs), 2):
        if rng.random() < p_edge:
            b[order[j], order[i]] = rng.choice([-1, 1]) * rng.uniform(0.5, 1.5)
    for lat in range(n_latent):
        for child in rng.choice(n_obs, 2, replace=False):
            b[child, n_obs + lat] = rng.choice([-1, 1]) * rng.uniform(0.5, 1.5)
    m = np.linalg.inv(np.eye(n) - b)
    cov = (m @ m.T)[:n_obs, :n_obs]
    d = np.sqrt(np.diag(cov))
    dag = nx.DiGraph()
    dag.add_nodes_from(range(n))
    dag.add_edges_from((int(a), int(c)) for c, a in zip(*np.nonzero(b), strict=True))
    return cov / d[:, None] / d[None, :], dag


def _mag_adjacency(dag: nx.DiGraph, n_obs: int) -> np.ndarray:
    """x, y adjacent in the MAG iff no set of observed nodes d-separates them (brute force)."""
    adj = np.zeros((n_obs, n_obs), dtype=bool)
    for x, y in itertools.combinations(range(n_obs), 2):
        rest = [v for v in range(n_obs) if v not in (x, y)]
        adj[x, y] = adj[y, x] = not any(
            nx.is_d_separator(dag, {x}, {y}, set(s))
            for k in range(len(rest) + 1) for s in itertools.combinations(rest, k))
    return adj


@pytest.mark.parametrize("seed", range(6))
def test_icd_recovers_the_pag_of_a_latent_sem(seed):
    """Population correlations (a huge n makes Fisher-z an oracle): ICD's skeleton is the MAG's
    (brute-force d-separation) and its arrowheads are those of causal-learn's FCI with a
    d-separation oracle (R0-R4 are arrowhead complete)."""
    corr, dag = _latent_sem(seed)
    n_obs = corr.shape[0]
    res = icd_search(corr, 1e10, 0.01)
    np.testing.assert_array_equal(res.adjacency, _mag_adjacency(dag, n_obs))
    graph, _ = fci(np.zeros((10, n_obs)), "d_separation", 0.01, true_dag=dag,
                   show_progress=False, verbose=False)
    ref = graph.graph  # ref[j, i] == 1: an arrowhead at i on the edge j - i
    np.testing.assert_array_equal(res.adjacency, ref != 0)
    np.testing.assert_array_equal(res.arrowheads, (ref.T == 1) & (ref != 0))


def test_pds_tree_on_hand_graphs():
    # chain 0 - 1 - 2 - 3, no colliders: only the neighbour is possibly d-separating
    adj = np.zeros((4, 4), dtype=bool)
    for a, b in [(0, 1), (1, 2), (2, 3)]:
        adj[a, b] = adj[b, a] = True
    none = np.zeros_like(adj)
    tree = build_pds_tree(adj, none, 0)
    assert tree.members == (1,)
    # collider 0 *-> 1 <-* 2, then 2 - 3: PDS(0) = {1, 2}, 3 blocked at the non-collider 2
    heads = none.copy()
    heads[0, 1] = heads[2, 1] = True
    tree = build_pds_tree(adj, heads, 0)
    assert set(tree.members) == {1, 2} and tree.distance[1] == 1 and tree.distance[2] == 2
    assert legal_subsets(tree, 1) == [(1,)]  # 2 alone is not reachable without 1
    assert legal_subsets(tree, 2) == [(1, 2)]
    assert build_pds_tree(adj, heads, 0, max_depth=1).members == (1,)
    # triangle 0 - 1 - 2 - 0 plus 2 - 3: every triple in the triangle passes
    tri = adj.copy()
    tri[0, 2] = tri[2, 0] = True
    tree = build_pds_tree(tri, none, 0)
    assert set(tree.members) == {1, 2}
    assert legal_subsets(tree, 1) == [(1,), (2,)]


def test_causal_explanation_finds_the_smallest_confirmed_set(attentions):
    att = attentions[2][0]
    n = att.shape[0]
    base = causal_explanation(att, 0, HIDDEN, nodes=range(n - 1), search="pc")
    assert base.found and set(base.tokens) == set(base.pds_set)
    assert 0 not in base.pds_set and n - 1 not in base.pds_set
    pds = sorted(base.pds_set, key=lambda v: base.distance[v])
    goal = set(pds[:2])  # a predicate that flips iff the nearest two PDS tokens are removed
    calls = []

    def flips(cands):
        calls.append(len(cands))
        return [goal <= set(c) for c in cands]

    res = causal_explanation(att, 0, HIDDEN, nodes=range(n - 1), is_explanation=flips,
                             max_size=3, batch_size=7, search="pc")
    assert res.found and goal <= set(res.tokens) and len(res.tokens) == 2
    assert res.candidates_tested == sum(calls) and max(calls) <= 7
    never = causal_explanation(att, 0, HIDDEN, nodes=range(n - 1), search="pc",
                               is_explanation=lambda c: [False] * len(c), max_size=1)
    assert not never.found and never.tokens == () and never.candidates_tested >= 1
    icd = causal_explanation(att, 0, HIDDEN, nodes=range(n - 1), max_depth=2)  # the paper's ICD
    assert set(icd.pds_set) <= set(range(1, n - 1))
    assert all(icd.graph.adjacency[0, v] for v in icd.pds_set if icd.distance[v] == 1)


NOT_PSD = np.array([[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]])  # eigenvalue -0.8


@pytest.mark.parametrize(("call", "name"), [
    (lambda a, c: attention_covariance(np.where(np.eye(len(a)) > 0, np.nan, a)), "attention"),
    (lambda a, c: attention_covariance(a[:, :-1]), "attention"),
    (lambda a, c: pc_skeleton(c, HIDDEN, 1.0), "alpha"),
    (lambda a, c: pc_skeleton(c, HIDDEN, 0.0), "alpha"),
    (lambda a, c: pc_skeleton(2 * c, HIDDEN, 0.05), "corr"),  # diagonal 2
    (lambda a, c: pc_skeleton(NOT_PSD, HIDDEN, 0.05), "corr"),
    (lambda a, c: pc_skeleton(c[None], HIDDEN, 0.05), "corr"),
    (lambda a, c: fisher_z_test(c, 0, 1, (2,), n_samples=4.0), "n_samples"),  # 4 - 1 - 3 = 0,
    (lambda a, c: fisher_z_test(c, 0, 0), "cond"),
    (lambda a, c: causal_explanation(a, len(a), HIDDEN), "target"),
])
def test_bad_input_is_refused(attentions, call, name):
    att = attentions[0].mean(0)
    corr = attention_covariance(att).correlation
    with pytest.raises(InvalidParameterError, match=name):
        call(att, corr)


def test_pc_depth1_in_small_blocks_equals_causal_learn(attentions, monkeypatch):
    """Depth 1 runs in blocks of pairs (bounded memory); tiny blocks give the same graph and
    sepsets as one block, and causal-learn's skeleton."""
    from attnlens.lenses.causal import pc as pc_module

    corr = attention_covariance(attentions[0].mean(0)).correlation
    x = samples_with_correlation(corr, 60, SEED)
    whole = pc_search(np.corrcoef(x, rowvar=False), 60, 0.05, max_depth=1)
    monkeypatch.setattr(pc_module, "DEPTH1_CHUNK", 3 * len(corr))  # 3 pairs per block
    blocks = pc_search(np.corrcoef(x, rowvar=False), 60, 0.05, max_depth=1)
    ref = pc(x, 0.05, fisherz, stable=True, show_progress=False, max_k=1).G.graph != 0
    np.testing.assert_array_equal(blocks.adjacency, ref)
    np.testing.assert_array_equal(blocks.adjacency, whole.adjacency)
    assert blocks.sepsets == whole.sepsets
    assert blocks.n_tests == whole.n_tests
    assert any(len(s) == 1 for s in whole.sepsets.values())  # depth 1 removed edges
