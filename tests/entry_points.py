"""The table of public entry points for the bad-input test (tests/test_entry_points.py).

Each row names a public function or estimator of a pillar and gives one *valid* call; the test
derives the bad inputs from the constraints the entry point declares
(``__attnlens_constraints__`` of :func:`attnlens._validation.validate_params`, or an
estimator's / module's ``_parameter_constraints``) and feeds them in one at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Entry:
    """A public entry point and one valid call of it.

    ``call(**kwargs)`` runs the entry point (for an estimator: construct, then ``fit``);
    ``valid()`` returns fresh valid keyword arguments; ``constraints`` are the declared ones.
    ``fit_arrays`` lists the parameters that go to ``fit`` instead of the constructor.
    """

    name: str
    target: Any
    valid: Callable[[], dict[str, Any]]
    fit_arrays: tuple[str, ...] = ()
    skip: frozenset[str] = field(default_factory=frozenset)

    @property
    def constraints(self) -> dict[str, list[Any]]:
        declared = getattr(self.target, "__attnlens_constraints__", None)
        if declared is None:
            declared = getattr(self.target, "_parameter_constraints", {})
        return {k: v for k, v in declared.items() if k not in self.skip}

    def call(self, **kwargs: Any) -> Any:
        if not self.fit_arrays:
            return self.target(**kwargs)
        fit = {k: kwargs.pop(k) for k in self.fit_arrays if k in kwargs}
        return self.target(**kwargs).fit(**fit)


def _rng() -> np.random.Generator:
    return np.random.default_rng(20261205)


def _t(*shape: int) -> torch.Tensor:
    return torch.as_tensor(_rng().standard_normal(shape))


def kernel_entries() -> list[Entry]:
    from attnlens import kernel as K

    def terms() -> K.KSVDTerms:
        layer = K.PrimalAttention(8, 2, 3, rank_multi=2).double()
        return layer(_t(2, 5, 8), return_terms=True)[1]

    return [
        Entry("kernel.asymmetric_kernel", K.asymmetric_kernel,
              lambda: {"phi_q": _t(6, 4), "phi_k": _t(6, 4)}),
        Entry("kernel.kernel_svd", K.kernel_svd,
              lambda: {"phi_q": _t(6, 4), "phi_k": _t(6, 4), "rank": 2}),
        Entry("kernel.cosine_kernel_matrix", K.cosine_kernel_matrix,
              lambda: {"q": _t(6, 4), "k": _t(6, 4)}),
        Entry("kernel.attention_spectrum", K.attention_spectrum,
              lambda: {"maps": np.abs(_rng().standard_normal((2, 1, 2, 5, 5))),
                       "mask": np.ones((1, 5), dtype=bool), "level": 0.9}),
        Entry("kernel.primal_attention", K.primal_attention,
              lambda: {"q": _t(2, 5, 2, 4), "k": _t(2, 5, 2, 4), "we": _t(2, 4, 3),
                       "wr": _t(2, 4, 3), "w_concat": _t(4, 6), "b_concat": _t(4)}),
        Entry("kernel.primal_scores", K.primal_scores,
              lambda: {"q": _t(2, 5, 2, 4), "k": _t(2, 5, 2, 4), "we": _t(2, 4, 3),
                       "wr": _t(2, 4, 3)}),
        Entry("kernel.ksvd_objective", K.ksvd_objective, lambda: {"terms": terms(),
                                                                   "form": "sum"}),
        Entry("kernel.ksvd_loss", K.ksvd_loss,
              lambda: {"terms": [terms()], "form": "mean", "aggregate": "batch_mean"}),
        Entry("kernel.primal_layers", K.primal_layers,
              lambda: {"model": K.PrimalFormer(3, 2, 6, dim=8, heads=2)}),
        Entry("kernel.PrimalAttention", K.PrimalAttention,
              lambda: {"dim": 8, "heads": 2, "rank": 3, "weight_source": "input"}),
        Entry("kernel.PrimalFormer", K.PrimalFormer,
              lambda: {"in_channels": 3, "n_classes": 2, "max_len": 6, "dim": 8, "heads": 2},
              skip=frozenset({"primal_layers"})),  # fixed to "all" by PrimalFormer
        Entry("kernel.BochnerTimeEncoder", K.BochnerTimeEncoder,
              lambda: {"dim": 4, "method": "gaussian"}),
        Entry("kernel.MercerTimeEncoder", K.MercerTimeEncoder,
              lambda: {"periods": (1.0, 10.0), "harmonics": 2}),
    ]


def _att(layers: int = 2, heads: int = 2, n: int = 4) -> np.ndarray:
    a = np.abs(_rng().standard_normal((layers, heads, n, n))) + 0.1
    return a / a.sum(axis=-1, keepdims=True)


def lenses_entries() -> list[Entry]:
    from attnlens import lenses as LN

    return [
        Entry("lenses.attention_rollout", LN.attention_rollout, lambda: {"att": _att()}),
        Entry("lenses.attention_flow", LN.attention_flow, lambda: {"att": _att()}),
        Entry("lenses.raw_attention_flow", LN.raw_attention_flow, lambda: {"att": _att()}),
        Entry("lenses.attention_entropy", LN.attention_entropy, lambda: {"att": _att()}),
        Entry("lenses.mean_attention_distance", LN.mean_attention_distance,
              lambda: {"att": _att(), "positions": np.arange(8.0).reshape(4, 2)}),
        Entry("lenses.map_spectrum", LN.map_spectrum, lambda: {"att": _att()}),
    ]


def convex_entries() -> list[Entry]:
    from attnlens import convex as C

    def tokens() -> np.ndarray:
        return _rng().standard_normal((6, 4, 3))

    def onehot() -> np.ndarray:
        return np.eye(2)[np.arange(6) % 2]

    def program() -> C.Program:
        return C.build_program(tokens(), "self_attention", "linear", 2)

    def fit_data() -> dict:
        return {"X": tokens(), "y": np.arange(6) % 2}

    def relu_program():
        return C.build_program(tokens(), "self_attention", "relu", 2,
                               gates=_rng().standard_normal((2, 3, 3)))

    def relu_result():
        return C.solve(relu_program(), onehot(), 0.1, "squared", tol=1e-3, max_iter=20,
                       warn=False)

    return [
        Entry("convex.solve", C.solve,
              lambda: {"program": program(), "Y": onehot(), "beta": 0.1, "loss": "squared",
                       "solver": "fista", "tol": 1e-4, "max_iter": 20, "progress": False,
                       "warn": False}),
        Entry("convex.certify", C.certify,
              lambda: {"program": program(), "Zs": [np.zeros((9, 6))], "Y": onehot(),
                       "beta": 0.1, "loss": "squared"}),
        Entry("convex.build_program", C.build_program,
              lambda: {"X": tokens(), "head": "self_attention", "activation": "gated_relu",
                       "n_outputs": 2, "gates": _rng().standard_normal((2, 3, 3)),
                       "groups": 1}),
        Entry("convex.sample_gates", C.sample_gates,
              lambda: {"head": "mixer", "n_gates": 2, "s": 4, "d": 3, "rng": _rng(),
                       "groups": 1}),
        Entry("convex.head_outputs", C.head_outputs,
              lambda: {"X": _t(2, 4, 3), "W1": _t(2, 3, 3), "W2": _t(2, 3, 2),
                       "head": "self_attention", "activation": "gated_relu",
                       "gates": _t(2, 3, 3)}),
        Entry("convex.ConvexHead", C.ConvexHead,
              lambda: {"head": "mlp", "activation": "gated_relu", "n_heads": 2, "n_tokens": 4,
                       "n_features": 3, "n_outputs": 2, "gates": _t(2, 3),
                       "group_mask": torch.ones(2, 3, dtype=torch.float64),
                       "init_scale": 0.1}),
        Entry("convex.network_to_blocks", C.network_to_blocks,
              lambda: {"net": C.ConvexHead("mlp", "gated_relu", 2, 4, 3, 2),
                       "gate_index": np.array([0, 1]), "group_index": np.array([0, 0]),
                       "n_gates": 2, "groups": 1}),
        Entry("convex.recover_network", C.recover_network,
              lambda: {"Zs": [np.ones((3, 2)), np.zeros((3, 2))], "head": "mlp",
                       "activation": "gated_relu", "n_tokens": 4, "n_features": 3,
                       "n_outputs": 2, "gates": _rng().standard_normal((2, 3)), "groups": 1,
                       "rtol": 1e-9}),
        Entry("convex.ConvexAttentionClassifier", C.ConvexAttentionClassifier,
              lambda: {**fit_data(), "head": "mixer", "activation": "gated_relu",
                       "beta": 0.1, "loss": "squared", "n_gates": 2, "solver": "fista",
                       "tol": 1e-4, "max_iter": 20, "random_state": 0, "verbose": False,
                       "bracket_tol": None, "bracket_rounds": 10},
              fit_arrays=("X", "y")),
        Entry("convex.solve_relu_bracket", C.solve_relu_bracket,
              lambda: {"program": relu_program(), "Y": onehot(), "beta": 0.1,
                       "loss": "squared", "bracket_tol": 0.5, "max_rounds": 1,
                       "solver": "fista", "tol": 1e-3, "max_iter": 20, "rng": _rng()}),
        Entry("convex.refine_bracket", C.refine_bracket,
              lambda: {"program": relu_program(), "Y": onehot(), "beta": 0.1,
                       "loss": "squared", "result": relu_result(), "bracket_tol": 0.5,
                       "max_rounds": 1, "max_new": 1, "solver": "fista", "tol": 1e-3,
                       "max_iter": 20, "rng": _rng()}),
        Entry("convex.NonConvexAttentionClassifier", C.NonConvexAttentionClassifier,
              lambda: {**fit_data(), "head": "mixer", "activation": "gated_relu",
                       "n_heads": 2, "beta": 0.1, "loss": "squared", "optimizer": "adam",
                       "lr": 1e-2, "max_epochs": 2, "batch_size": 3, "random_state": 0,
                       "init_scale": 0.1, "verbose": False},
              fit_arrays=("X", "y")),
    ]


def causal_entries() -> list[Entry]:
    from attnlens.lenses import causal as C

    def att() -> np.ndarray:
        a = np.abs(_rng().standard_normal((6, 6))) + 0.1
        return a / a.sum(1, keepdims=True)

    def corr() -> np.ndarray:
        return C.attention_covariance(att()).correlation

    return [
        Entry("lenses.causal.attention_covariance", C.attention_covariance,
              lambda: {"attention": att()}),
        Entry("lenses.causal.samples_with_correlation", C.samples_with_correlation,
              lambda: {"corr": corr(), "n_samples": 20, "seed": 0}),
        Entry("lenses.causal.partial_correlations", C.partial_correlations,
              lambda: {"corr": corr()}),
        Entry("lenses.causal.fisher_z_test", C.fisher_z_test,
              lambda: {"corr": corr(), "x": 0, "y": 1, "cond": (2,), "n_samples": 50,
                       "alpha": 0.05}),
        Entry("lenses.causal.pc_search", C.pc_search,
              lambda: {"corr": corr(), "n_samples": 50, "alpha": 0.05}),
        Entry("lenses.causal.pc_skeleton", C.pc_skeleton,
              lambda: {"corr": corr(), "n_samples": 50, "alpha": 0.05}),
        Entry("lenses.causal.icd_search", C.icd_search,
              lambda: {"corr": corr(), "n_samples": 50, "alpha": 0.05}),
        Entry("lenses.causal.causal_explanation", C.causal_explanation,
              lambda: {"attention": att(), "target": 0, "n_samples": 50, "alpha": 0.05}),
    ]


def svm_entries() -> list[Entry]:
    from attnlens import svm as S

    def problem() -> S.TokenSelectionProblem:
        return S.random_problem(3, 4, 5, seed=0)

    def arrays() -> dict[str, Any]:
        p = problem()
        return {"X": p.X, "Z": p.queries, "selection": p.optimal_tokens}

    def batch() -> S.ProblemBatch:
        return S.ProblemBatch.random([0], 3, 4, 5)

    def trajectory() -> dict[str, Any]:
        b = batch()
        return {"batch": b, "trajectory": S.train_attention(b, steps=2)}

    sets = [[0, 1], [2], [3]]
    return [
        Entry("svm.att_svm", S.att_svm, lambda: {**arrays(), "norm": "fro"}),
        Entry("svm.att_svm_problem", S.att_svm_problem,
              lambda: {"problem": problem(), "selection": problem().optimal_tokens}),
        Entry("svm.random_problem", S.random_problem, lambda: {"n": 3, "T": 4, "d": 5, "seed": 0}),
        Entry("svm.planted_problem", S.planted_problem,
              lambda: {"n": 3, "T": 4, "d": 5, "seed": 0}),
        Entry("svm.support_sets", S.support_sets,
              lambda: {"problem": problem(), "selection": problem().optimal_tokens}),
        Entry("svm.check_optimality", S.check_optimality,
              lambda: {"problem": problem(), "selection": problem().optimal_tokens}),
        Entry("svm.is_locally_optimal", S.is_locally_optimal,
              lambda: {"problem": problem(), "selection": problem().optimal_tokens}),
        Entry("svm.is_globally_optimal", S.is_globally_optimal,
              lambda: {"problem": problem(), "selection": problem().optimal_tokens}),
        Entry("svm.locally_optimal_selections", S.locally_optimal_selections,
              lambda: {"problem": problem(), "max_candidates": 2}),
        Entry("svm.gen_svm", S.gen_svm,
              lambda: {"X": problem().X, "Z": problem().queries, "sets": sets}),
        Entry("svm.finite_part", S.finite_part,
              lambda: {"X": problem().X, "Z": problem().queries, "sets": sets,
                       "Y": problem().Y, "v": problem().v}),
        Entry("svm.fin_projection", S.fin_projection,
              lambda: {"W": np.eye(5), "X": problem().X, "Z": problem().queries, "sets": sets}),
        Entry("svm.project_out_fin", S.project_out_fin,
              lambda: {"W": np.eye(5), "X": problem().X, "Z": problem().queries, "sets": sets}),
        Entry("svm.train_attention", S.train_attention,
              lambda: {"problem": batch(), "steps": 2, "W0": np.zeros((5, 5))}),
        Entry("svm.loss_and_grad", S.loss_and_grad,
              lambda: {"batch": batch(), "W": np.zeros((1, 5, 5))}),
        Entry("svm.regularization_path", S.regularization_path,
              lambda: {"problem": batch(), "radii": np.array([1.0, 2.0]), "inner_steps": 2}),
        Entry("svm.correlation", S.correlation, lambda: {"A": np.eye(3), "B": np.ones((3, 3))}),
        Entry("svm.svm_solution", S.svm_solution, lambda: {**arrays(), "norm": "fro"}),
        Entry("svm.svm_references", S.svm_references,
              lambda: {"batch": batch(), "selection": batch().token_scores.argmax(-1)}),
        Entry("svm.track_svm", S.track_svm, trajectory),
        Entry("svm.gen_svm_direction", S.gen_svm_direction,
              lambda: {"X": problem().X, "Z": problem().queries, "sets": sets}),
        Entry("svm.log_ratio_fin", S.log_ratio_fin,
              lambda: {"X": problem().X, "Z": problem().queries, "sets": sets,
                       "probs": np.full((3, 4), 0.25)}),
        Entry("svm.svm_eq", S.svm_eq,
              lambda: {"W": np.eye(5), "X": problem().X, "Z": problem().queries,
                       "probs": np.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0],
                                          [0.0, 0.0, 0.0, 1.0]])}),
        Entry("svm.official_problem", S.official_problem,
              lambda: {"seed": 0, "n": 3, "T": 4, "d": 5}),
        Entry("svm.reference_train", S.reference_train,
              lambda: {"problem": batch(), "steps": 2, "W0": np.zeros((5, 5))}),
        Entry("svm.reference_train (K, Q)", S.reference_train,
              lambda: {"problem": batch(), "param": "KQ", "steps": 2, "K0": np.eye(5),
                       "Q0": np.eye(5)}),
        Entry("svm.convergence_check", S.convergence_check,
              lambda: {"seed": 0, "n": 3, "T": 4, "d": 5, "steps": 2}),
    ]


def retrieval_entries() -> list[Entry]:
    from attnlens import retrieval as R

    def feats(n: int, d: int = 4, seed: int = 0) -> np.ndarray:
        return np.random.default_rng(seed).standard_normal((n, d))

    def qgr() -> dict[str, Any]:
        return {"Q": feats(3), "G": feats(12, seed=1),
                "ranking": np.tile(np.arange(8), (3, 1))}

    def loss_args() -> dict[str, Any]:
        rel = torch.ones(2, 5, dtype=torch.float64)
        return {"refined": _t(2, 5, 4), "projected": _t(2, 5, 3), "affinity": _t(2, 5, 3),
                "relevant": rel}

    maps = np.full((1, 1, 1, 4, 4), 0.25)
    return [
        Entry("retrieval.first_stage_ranking", R.first_stage_ranking,
              lambda: {"Q": feats(3), "G": feats(12, seed=1), "k": 5}),
        Entry("retrieval.find_query_duplicates", R.find_query_duplicates,
              lambda: {"Q": feats(3), "G": feats(12, seed=1), "tol": 1e-6}),
        Entry("retrieval.complete_ranking", R.complete_ranking,
              lambda: {"shortlist": np.tile(np.arange(3), (2, 1)),
                       "full": np.tile(np.arange(6), (2, 1))}),
        Entry("retrieval.evaluate_ranking", R.evaluate_ranking,
              lambda: {"ranking": np.tile(np.arange(5), (3, 1)),
                       "query_labels": np.array([0, 1, 0]),
                       "gallery_labels": np.array([0, 1, 0, 1, 1, 0]),
                       "interpolation": "step"}),
        Entry("retrieval.average_query_expansion", R.average_query_expansion,
              lambda: {**qgr(), "n": 2}),
        Entry("retrieval.alpha_query_expansion", R.alpha_query_expansion,
              lambda: {**qgr(), "n": 2, "alpha": 3.0}),
        Entry("retrieval.k_reciprocal_distance", R.k_reciprocal_distance,
              lambda: {"Q": feats(3), "G": feats(12, seed=1), "k1": 4, "k2": 2,
                       "lambda_value": 0.3}),
        Entry("retrieval.k_reciprocal_rerank", R.k_reciprocal_rerank,
              lambda: {**qgr(), "k1": 4, "k2": 2, "lambda_value": 0.3}),
        Entry("retrieval.diffusion_scores", R.diffusion_scores,
              lambda: {"Q": feats(3), "G": feats(12, seed=1), "k": 4, "alpha": 0.9,
                       "gamma": 3.0}),
        Entry("retrieval.diffusion_rerank", R.diffusion_rerank,
              lambda: {**qgr(), "k": 4, "alpha": 0.9, "gamma": 3.0}),
        Entry("retrieval.affinity_features", R.affinity_features,
              lambda: {**qgr(), "n_anchors": 3}),
        Entry("retrieval.csa_loss", R.csa_loss,
              lambda: {**loss_args(), "temperature": 2.0, "alpha": 0.2}),
        Entry("retrieval.CSATransformer", R.CSATransformer,
              lambda: {"n_anchors": 3, "dim": 8, "depth": 1, "heads": 2, "mlp_ratio": 2.0,
                       "dropout": 0.1}),
        Entry("retrieval.CSAReranker", R.CSAReranker,
              lambda: {"X": feats(12), "y": np.arange(12) % 2, "k": 4, "l": 3, "dim": 8,
                       "heads": 2, "depth": 1, "epochs": 1, "optimizer": "sgd",
                       "n_threads": 1},
              fit_arrays=("X", "y")),
        Entry("retrieval.inter_modality_flow", R.inter_modality_flow,
              lambda: {"attentions": maps.copy(), "modality": np.array([0, 0, 1, 1]),
                       "mask": np.ones((1, 4), bool)}),
        Entry("retrieval.FusionTransformer", R.FusionTransformer,
              lambda: {"visual_dim": 4, "text_dim": 4, "dim": 8, "depth": 1, "heads": 2,
                       "visual_encoder": "parsing"}),
    ]


def theory_lens_entries() -> list[Entry]:
    """Depth threshold (Levine et al. 2020) and distributional projection (Mehta 2025)."""
    from attnlens import lenses as LN

    def counts() -> np.ndarray:
        return _rng().integers(1, 9, size=(5, 5)).astype(float)

    def ints(*shape: int, high: int = 5) -> np.ndarray:
        return _rng().integers(0, high, size=shape)

    return [
        Entry("lenses.depth_threshold", LN.depth_threshold, lambda: {"width": 27}),
        Entry("lenses.depth_regime", LN.depth_regime, lambda: {"depth": 2, "width": 27}),
        Entry("lenses.transformer_params", LN.transformer_params,
              lambda: {"depth": 2, "width": 12, "vocab": 10, "context": 4}),
        Entry("lenses.width_for_params", LN.width_for_params,
              lambda: {"depth": 2, "params": 5000, "multiple": 3}),
        Entry("lenses.threshold_table", LN.threshold_table,
              lambda: {"models": list(LN.COMMON_MODELS[:2])}),
        Entry("lenses.compare_depths", LN.compare_depths,
              lambda: {"depths": np.array([1, 1, 2, 2]),
                       "params": np.array([100.0, 1000.0, 100.0, 1000.0]),
                       "losses": np.array([3.0, 2.0, 3.1, 1.9]), "grid": 8}),
        Entry("lenses.cooccurrence_counts", LN.cooccurrence_counts,
              lambda: {"tokens": ints(40), "vocab_size": 5, "window": 3,
                       "lengths": np.array([20, 20]), "weighting": "uniform"}),
        Entry("lenses.pmi_matrix", LN.pmi_matrix,
              lambda: {"counts": counts(), "positive": True, "alpha": 0.75}),
        Entry("lenses.double_center", LN.double_center, lambda: {"m": counts()}),
        Entry("lenses.svd_embeddings", LN.svd_embeddings, lambda: {"m": counts(), "dim": 2}),
        Entry("lenses.glove_embeddings", LN.glove_embeddings,
              lambda: {"counts": counts(), "dim": 2, "x_max": 5.0, "alpha": 0.75, "steps": 3,
                       "lr": 1.0, "seed": 0}),
        Entry("lenses.distributional_projection", LN.distributional_projection,
              lambda: {"ids": ints(4), "s": counts()}),
        Entry("lenses.split_bilinear", LN.split_bilinear, lambda: {"w": counts()}),
        Entry("lenses.fit_bilinear", LN.fit_bilinear,
              lambda: {"x": _rng().standard_normal((5, 2)), "scores": counts(), "ridge": 0.1}),
        Entry("lenses.directional_asymmetry", LN.directional_asymmetry,
              lambda: {"d": counts(), "smoothing": 1.0}),
        Entry("lenses.pair_correlation", LN.pair_correlation,
              lambda: {"a": counts(), "b": np.ascontiguousarray(counts().T), "mask": np.ones((5, 5), dtype=bool),
                       "offdiagonal": True}),
    ]


def all_entries() -> list[Entry]:
    return (kernel_entries() + lenses_entries() + convex_entries() + causal_entries()
            + svm_entries() + retrieval_entries() + theory_lens_entries())
