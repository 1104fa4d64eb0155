"""The heads of the transfer benchmark, by name, each with the grid selected on validation.

Baselines (scikit-learn): ``linear_full`` (logistic regression on the full-dimension pooled
features, the practitioner's baseline), ``linear`` (logistic regression on the pooled
reduced tokens) and ``mlp`` (a one-hidden-layer ReLU MLP on the pooled reduced tokens).

Attention-style heads (Sahiner et al., "Unraveling Attention via Convex Duality", ICML 2022)
take the reduced tokens ``X in R^{s x d}``; each exists as the non-convex network with m=5
heads trained by a first-order method and as its convex program solved to a certified
optimum (:mod:`attnlens.convex.estimators`). Self-attention scores follow
``score_t = x_t^T W z`` with ``W = K Q^T`` (here ``W1`` in ``sigma(X W1 X^T) X W2``).
Both forms minimise the same objective ``L + beta * penalty`` with the same ``beta`` grid, so
the convex objective can be set next to the non-convex one at the selected ``beta``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEMO_HEADS", "HEADS", "NONCONVEX_DEFAULTS", "HeadSpec", "count_parameters", "get_head",
           "head_names"]


@dataclass(frozen=True)
class HeadSpec:
    """One head of the benchmark.

    name: registry key. kind: "baseline", "nonconvex" or "convex".
    inputs: "pooled_full" (full-dim pooled features), "pooled" (pooled reduced tokens)
        or "tokens" (reduced tokens, (n, s, d)).
    param: the hyperparameter selected on validation; grid: its candidates.
    counterpart: for a convex head, the non-convex head solving the same problem.
    make: (value, seed, options) -> an unfitted estimator with fit/predict.
    """

    name: str
    label: str
    kind: str
    inputs: str
    param: str
    grid: tuple[float, ...]
    make: Callable[[float, int, Mapping[str, Any]], Any] = field(repr=False)
    counterpart: str | None = None


def _logreg(value: float, seed: int, options: Mapping[str, Any]) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(), LogisticRegression(C=value, max_iter=2000, random_state=seed)
    )


def _mlp(value: float, seed: int, options: Mapping[str, Any]) -> Any:
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    hidden = int(options.get("mlp_hidden", 128))
    return make_pipeline(
        StandardScaler(),
        MLPClassifier(
            hidden_layer_sizes=(hidden,), alpha=value, max_iter=int(options.get("mlp_epochs", 200)),
            early_stopping=False, random_state=seed,
        ),
    )


#: channel groups of the B-FNO heads unless ``options["n_groups"]`` says otherwise
BFNO_GROUPS = 4


def _convex(head: str, activation: str) -> Callable[[float, int, Mapping[str, Any]], Any]:
    def make(value: float, seed: int, options: Mapping[str, Any]) -> Any:
        from attnlens.convex.estimators import ConvexAttentionClassifier

        kwargs: dict[str, Any] = {
            "head": head, "activation": activation, "beta": value, "random_state": seed,
        }
        for key in ("loss", "n_gates", "solver", "tol", "max_iter", "backend"):
            if options.get(f"convex_{key}") is not None:
                kwargs[key] = options[f"convex_{key}"]
        if kwargs.get("backend") == "torch" and options.get("device") is not None:
            kwargs["device"] = options["device"]  # convex_backend="torch": FISTA on the device
        if activation != "linear" and options.get("n_heads") is not None:
            kwargs.setdefault("n_gates", options["n_heads"])
        if head == "bfno":
            kwargs["n_groups"] = int(options.get("n_groups", BFNO_GROUPS))
        if options.get("checkpoint_dir") is not None:  # a fit stopped midway resumes
            kwargs["checkpoint"] = str(Path(options["checkpoint_dir"]) / f"beta{value:g}.pkl")
        return ConvexAttentionClassifier(**kwargs)

    return make


#: training of the non-convex heads unless ``options`` say otherwise: Adam on minibatches of
#: 256 for 20 epochs (on Rotten Tomatoes, d=16, 3,000 sentences, this ends within ~2% of the
#: convex optimum's objective; full-batch Adam for 200 epochs costs ~10x more and ends higher)
NONCONVEX_DEFAULTS = {"optimizer": "adam", "lr": 1e-2, "max_epochs": 20, "batch_size": 256}


def _nonconvex(head: str, activation: str) -> Callable[[float, int, Mapping[str, Any]], Any]:
    def make(value: float, seed: int, options: Mapping[str, Any]) -> Any:
        from attnlens.convex.estimators import NonConvexAttentionClassifier

        kwargs: dict[str, Any] = {
            "head": head, "activation": activation, "beta": value, "random_state": seed,
            "n_heads": int(options.get("n_heads", 5)), **NONCONVEX_DEFAULTS,
        }
        for key in ("loss", "optimizer", "lr", "max_epochs", "batch_size"):
            if options.get(f"nonconvex_{key}") is not None:
                kwargs[key] = options[f"nonconvex_{key}"]
        if options.get("device") is not None:  # set by the transfer runner (GPU when visible)
            kwargs["device"] = options["device"]
        if head == "bfno":
            kwargs["n_groups"] = int(options.get("n_groups", BFNO_GROUPS))
        return NonConvexAttentionClassifier(**kwargs)

    return make


# logistic regression's C and the MLP's alpha (standardized inputs): on MiniLM / Rotten
# Tomatoes with 3,000 training sentences the full-dimension LR picks C=1e-3 (validation 0.75;
# C=10: 0.73) and the MLP alpha=10 (train 0.64, validation 0.65; alpha=1e-4: train 0.96,
# validation 0.61), so both grids reach a decade beyond those values
_C_GRID = (1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0)
_ALPHA_GRID = (1e-4, 1e-2, 1.0, 3.0, 10.0, 30.0)
# Weight decay grids of the token heads. The squared loss is (1/2n) sum ||yhat - Y||^2 on
# tokens centred and scaled to unit RMS norm with training statistics, so one grid serves every
# backbone. Validation accuracy of the convex heads on MiniLM / Rotten Tomatoes (d=32, 3,000
# training sentences, beta from 1e-4 to 0.1; recorded in docs/transfer.md) set the ranges:
# self-attention overfits below 1e-2 (train 0.97-1.0, validation 0.59-0.62, and FISTA needs
# 700-1,800 iterations) and is zero at 0.1; the MLP-Mixer peaks at 3e-3..1e-2; (B-)FNO is flat
# from 1e-4 to 3e-2; the gated-ReLU MLP on the mean token (a smaller input) peaks at 1e-3..3e-3
# and is zero from 3e-2. A convex head and its non-convex twin share the grid, so their
# objectives can be compared at the selected beta.
_ATTENTION_GRID = (1e-2, 3e-2)
_MIXER_GRID = (3e-3, 1e-2)
_FNO_GRID = (1e-3, 1e-2)
_CONVEX_MLP_GRID = (3e-4, 1e-3, 3e-3, 1e-2)


def _pair(family: str, head: str, activation: str, label: str,
          grid: tuple[float, ...]) -> list[HeadSpec]:
    nonconvex = f"{family}"
    return [
        HeadSpec(nonconvex, f"{label} (non-convex, m=5)", "nonconvex", "tokens", "beta",
                 grid, _nonconvex(head, activation)),
        HeadSpec(f"convex_{family}", f"{label} (convex)", "convex", "tokens", "beta",
                 grid, _convex(head, activation), counterpart=nonconvex),
    ]


HEADS: dict[str, HeadSpec] = {
    spec.name: spec
    for spec in [
        HeadSpec("linear_full", "linear, full dim (pooled)", "baseline", "pooled_full", "C",
                 _C_GRID, _logreg),
        HeadSpec("linear", "linear (pooled)", "baseline", "pooled", "C", _C_GRID, _logreg),
        HeadSpec("mlp", "MLP (pooled)", "baseline", "pooled", "alpha", _ALPHA_GRID, _mlp),
        HeadSpec("convex_mlp", "gated-ReLU MLP (convex)", "convex", "tokens", "beta",
                 _CONVEX_MLP_GRID, _convex("mlp", "gated_relu")),
        *_pair("attention_linear", "self_attention", "linear", "self-attention, linear",
               _ATTENTION_GRID),
        *_pair("attention_gated_relu", "self_attention", "gated_relu",
               "self-attention, gated ReLU", _ATTENTION_GRID),
        *_pair("mixer", "mixer", "linear", "MLP-Mixer", _MIXER_GRID),
        *_pair("fno", "fno", "linear", "FNO", _FNO_GRID),
        *_pair("bfno", "bfno", "linear", "B-FNO (4 groups)", _FNO_GRID),
    ]
}

#: the heads of ``attnlens demo``
DEMO_HEADS = ("linear_full", "linear", "mlp", "attention_linear", "convex_attention_linear")


def head_names() -> list[str]:
    return list(HEADS)


def get_head(name: str) -> HeadSpec:
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; known heads: {', '.join(HEADS)}.")
    return HEADS[name]


def count_parameters(estimator: Any) -> int | None:
    """Trainable parameters of a fitted head (None when the estimator does not expose them).

    scikit-learn pipelines count ``coef_``/``intercept_`` (logistic regression) or
    ``coefs_``/``intercepts_`` (MLP); attnlens estimators report ``n_params_`` or their
    network's parameters (the convex program's recovered network, via ``to_network``).
    """
    model = estimator
    if hasattr(model, "steps"):  # sklearn Pipeline: the last step is the model
        model = model.steps[-1][1]
    if hasattr(model, "coefs_"):
        return int(sum(w.size for w in model.coefs_) + sum(b.size for b in model.intercepts_))
    if hasattr(model, "coef_") and hasattr(model, "intercept_") and not hasattr(model, "Z_"):
        return int(np.size(model.coef_) + np.size(model.intercept_))
    n = getattr(model, "n_params_", None)
    if n is not None:
        return int(n)
    for attr in ("network_", "module_", "model_"):
        net = getattr(model, attr, None)
        if net is not None and hasattr(net, "parameters"):
            return int(sum(p.numel() for p in net.parameters()))
    if hasattr(model, "to_network"):
        try:
            net = model.to_network()
        except Exception:  # noqa: BLE001 - a head without a network form has no count
            return None
        if hasattr(net, "parameters"):
            return int(sum(p.numel() for p in net.parameters()))
    return None
