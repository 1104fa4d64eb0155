"""Gradient dynamics of one-layer attention, batched over seeds, in float64.

The model is cross-attention with a prediction head ``h``::

    f(X, z) = h(X^T softmax(X W z)),        score_t = x_t^T W z,  W = K Q^T when factorized,

with a linear head ``h(r) = v^T r`` (``v`` fixed or trained jointly) or a fixed two-layer
MLP head ``h(r) = v2^T phi(V1 r)``. Self-attention uses ``z_i = x_{i, query_index}``.
The loss is ``(1/n) sum_i l(Y_i f(X_i, z_i))`` with ``l(u) = log(1 + e^{-u})`` (logistic)
or ``l(u) = -u`` (linear), plus an optional ridge ``lambda (||K||_F^2 + ||Q||_F^2)`` for
the ``(K, Q)`` parameterization.

Tarzanagh, Li, Zhang, Oymak, "Max-Margin Token Selection in Attention Mechanism",
NeurIPS 2023 (arXiv 2306.13596); Tarzanagh, Li, Thrampoulidis, Oymak, "Transformers as
Support Vector Machines" (arXiv 2308.16898): (normalized) gradient descent on ``W``
converges in direction to the Frobenius Att-SVM solution ``W^mm`` of the selection it
converges to, and on ``(K, Q)`` to the nuclear-norm solution ``W^mm_*``.

Every array carries a leading *seed* axis ``S``: many independent problems of the same
shape are trained together in one vectorized loop (see :class:`ProblemBatch`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.special import expit

from attnlens._validation import (
    Array,
    InstanceOf,
    Integral,
    Interval,
    Options,
    RandomState,
    Real,
    check_array,
    check_int,
    check_random_state,
    check_scalar,
    raise_invalid,
    validate_params,
    warn_ignored,
)
from attnlens.svm._heads import ACTIVATIONS, MLPHead, head_output
from attnlens.svm._numerics import ITERATE_RANK_RTOL, numerical_rank
from attnlens.svm.official_data import official_problem
from attnlens.svm.problems import TokenSelectionProblem, random_problem

logger = logging.getLogger(__name__)

PARAMS = ("W", "KQ")
LOSSES = ("logistic", "linear")
HEADS = ("linear", "mlp")


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProblemBatch:
    """``S`` token-selection problems of one shape, stacked along a leading seed axis.

    X: (S, n, T, d) tokens; Y: (S, n) labels +-1; v: (S, d) linear head;
    Z: (S, n, d) queries (score ``x_t^T W z``); seeds: the seed of each problem, if known.
    Frozen: derive a changed batch with :func:`dataclasses.replace`.
    """

    X: np.ndarray
    Y: np.ndarray
    v: np.ndarray
    Z: np.ndarray
    seeds: list[int] | None = None

    def __post_init__(self) -> None:
        X = check_array(self.X, "X", ndim=4)
        S, n, T, d = X.shape
        Y = check_array(self.Y, "Y", shape=(S, n))
        if not np.all(np.isin(Y, (-1.0, 1.0))):
            raise_invalid("Y", "labels -1 or +1", f"got values {np.unique(Y)}",
                          "Map the classes to -1/+1.", "ProblemBatch")
        checked = {"X": X, "Y": Y, "v": check_array(self.v, "v", shape=(S, d)),
                   "Z": check_array(self.Z, "Z", shape=(S, n, d)),
                   "seeds": None if self.seeds is None else [int(s) for s in self.seeds]}
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.X.shape)  # type: ignore[return-value]

    def __len__(self) -> int:
        return self.X.shape[0]

    @property
    def token_scores(self) -> np.ndarray:
        """gamma_it = Y_i v^T x_it, shape (S, n, T)."""
        return self.Y[..., None] * np.einsum("sntd,sd->snt", self.X, self.v)

    def problem(self, s: int) -> Any:
        """The ``s``-th problem as an :class:`attnlens.svm.problems.TokenSelectionProblem`."""
        return TokenSelectionProblem(self.X[s], self.Y[s], self.v[s], Z=self.Z[s])

    @classmethod
    def from_problems(cls, problems: Any) -> ProblemBatch:
        """Stack one problem or a sequence of problems (objects with ``X, Y, v`` and
        ``queries``/``Z``) of one shape."""
        if isinstance(problems, ProblemBatch):
            return problems
        if not isinstance(problems, Sequence):
            problems = [problems]
        if len(problems) == 0:
            raise_invalid("problems", "at least one problem", "got an empty sequence")
        Xs, Ys, vs, Zs = [], [], [], []
        for k, p in enumerate(problems):
            for attr in ("X", "Y", "v"):
                if not hasattr(p, attr):
                    raise_invalid(f"problems[{k}]", f"a problem with attribute {attr!r}",
                                  type(p).__name__,
                                  "Pass TokenSelectionProblem objects or a ProblemBatch.")
            Z = getattr(p, "queries", None)
            if Z is None:
                Z = getattr(p, "Z", None)
            Xs.append(np.asarray(p.X, dtype=np.float64))
            Ys.append(np.asarray(p.Y, dtype=np.float64))
            vs.append(np.asarray(p.v, dtype=np.float64))
            Zs.append(np.asarray(Z, dtype=np.float64))
        shapes = {x.shape for x in Xs}
        if len(shapes) != 1:
            raise_invalid("problems", "of one (n, T, d) shape", f"got {sorted(shapes)}",
                          "Batch problems of one shape together.")
        return cls(np.stack(Xs), np.stack(Ys), np.stack(vs), np.stack(Zs))

    @classmethod
    def random(
        cls, seeds: Sequence[int], n: int, T: int, d: int, self_attention: bool = False
    ) -> ProblemBatch:
        """Problems from :func:`attnlens.svm.problems.random_problem`, one per seed."""
        seeds = [check_int(s, "seed") for s in seeds]
        if not seeds:
            raise_invalid("seeds", "at least one seed", "got none")
        probs = [random_problem(n, T, d, seed=s) for s in seeds]
        batch = cls.from_problems(probs)
        Z = batch.X[:, :, 0, :].copy() if self_attention else batch.Z
        return replace(batch, Z=Z, seeds=list(seeds))

    @classmethod
    def official(cls, seeds: Sequence[int], n: int = 6, T: int = 8, d: int = 10) -> ProblemBatch:
        """The official TF-as-SVM notebooks' data, one problem per seed (run ``r`` = seed
        ``r``), bit for bit: :func:`attnlens.svm.official_data.official_problem`."""
        seeds = [check_int(s, "seed", low=0) for s in seeds]
        if not seeds:
            raise_invalid("seeds", "at least one seed", "got none")
        batch = cls.from_problems([official_problem(s, n, T, d) for s in seeds])
        return replace(batch, seeds=list(seeds))


def softmax(s: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax."""
    e = np.exp(s - s.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# --------------------------------------------------------------------------------------
# loss and its analytic gradient
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LossGrad:
    """Loss (S,), gradient w.r.t. W (S, d, d) and v (S, d), softmax probabilities (S, n, T)."""

    loss: np.ndarray
    grad_W: np.ndarray
    grad_v: np.ndarray
    probs: np.ndarray
    outputs: np.ndarray


@validate_params({
    "batch": [InstanceOf(ProblemBatch)],
    "W": [Array(ndim=3)],
    "v": [None, Array(ndim=2)],
    "loss": [Options(*LOSSES)],
    "mlp": [None, InstanceOf(MLPHead)],
})
def loss_and_grad(
    batch: ProblemBatch,
    W: np.ndarray,
    *,
    v: np.ndarray | None = None,
    loss: str = "logistic",
    mlp: MLPHead | None = None,
) -> LossGrad:
    r"""Empirical loss of one-layer attention and its analytic gradient.

    .. math:: L(W) = \frac1n \sum_i l\big(Y_i\, h(X_i^\top \mathrm{softmax}(X_i W z_i))\big),
              \qquad \mathrm{score}_t = x_t^\top W z.

    With ``c_it = l'(Y_i f_i) Y_i p_it (x_it - r_i)^T u_i / n`` (``u_i = dh/dr``) the gradient is
    ``sum_it c_it x_it z_i^T``. It is evaluated relative to each sequence's most-attended
    token (``sum_t c_it = 0``), which keeps it accurate when the softmax saturates.
    """
    return _loss_and_grad(batch, np.asarray(W, dtype=np.float64), v=v, loss=loss, mlp=mlp)


def _loss_and_grad(
    batch: ProblemBatch,
    W: np.ndarray,
    *,
    v: np.ndarray | None = None,
    loss: str = "logistic",
    mlp: MLPHead | None = None,
) -> LossGrad:
    """:func:`loss_and_grad` without the input checks (the training loops call it)."""
    X, Y, Z = batch.X, batch.Y, batch.Z
    v = batch.v if v is None else v
    n = X.shape[1]
    q = Z @ W.transpose(0, 2, 1)  # (S, n, d) rows W z_i
    s = (X @ q[..., None])[..., 0]  # (S, n, T) scores x_t^T W z_i
    p = softmax(s)  # (S, n, T)
    r = (p[..., None, :] @ X)[..., 0, :]  # (S, n, d) attended token
    f, u = head_output(r, v, mlp)  # (S, n), (S, n, d)
    margin = Y * f  # (S, n)
    if loss == "logistic":
        value = np.logaddexp(0.0, -margin).mean(axis=1)  # (S,)
        dl = -expit(-margin)  # (S, n)
    else:
        value = -margin.mean(axis=1)
        dl = -np.ones_like(margin)
    ref = p.argmax(axis=-1)  # (S, n)
    X_ref = np.take_along_axis(X, ref[..., None, None], axis=2)  # (S, n, 1, d)
    dX = X - X_ref  # (S, n, T, d)
    dh = (dX @ u[..., None])[..., 0]  # (S, n, T) (x_t - x_ref)^T u
    centered = dh - np.sum(p * dh, axis=-1, keepdims=True)  # (x_t - r)^T u
    c = (dl * Y / n)[..., None] * p * centered  # (S, n, T)
    a = (c[..., None, :] @ dX)[..., 0, :]  # (S, n, d) sum_t c_it (x_it - x_ref)
    grad_W = a.transpose(0, 2, 1) @ Z  # (S, d, d) sum_i a_i z_i^T
    grad_v = ((dl * Y / n)[:, None, :] @ r)[:, 0, :]  # (S, d) (linear head)
    return LossGrad(value, grad_W, grad_v, p, f)


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trajectory:
    """What a (batched) training run went through. Leading axis S = seeds, L = logged steps.

    steps (L,); W (S, L, d, d) at the logged steps; W_final (S, d, d) always;
    loss, prob_selected (mean softmax probability of each sequence's converged token),
    norm (||W||_F), grad_norm, rank (effective rank of W: singular values above
    ``ITERATE_RANK_RTOL`` = 1e-3 times the largest) all (S, L);
    selection (S, n) the most attended token at the end; probs_final (S, n, T);
    K_final, Q_final (S, d, m) for ``param="KQ"``; v_final (S, d).
    """

    steps: np.ndarray
    W: np.ndarray
    W_final: np.ndarray
    loss: np.ndarray
    prob_selected: np.ndarray
    norm: np.ndarray
    grad_norm: np.ndarray
    rank: np.ndarray
    selection: np.ndarray
    probs_final: np.ndarray
    v_final: np.ndarray
    K_final: np.ndarray | None = None
    Q_final: np.ndarray | None = None
    config: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def __len__(self) -> int:
        return self.W_final.shape[0]

    def selected_sets(self, threshold: float = 0.1) -> list[list[list[int]]]:
        """Per seed, per sequence: tokens whose final probability exceeds ``threshold``."""
        check_scalar(threshold, "threshold", low=0.0, high=1.0, low_inclusive=False)
        return [
            [sorted(np.flatnonzero(pi > threshold).tolist()) for pi in ps]
            for ps in self.probs_final
        ]


def _normalize(g: np.ndarray, norm: np.ndarray) -> np.ndarray:
    shape = (-1,) + (1,) * (g.ndim - 1)
    safe = np.where(norm > 0, norm, 1.0).reshape(shape)
    return np.where(norm.reshape(shape) > 0, g / safe, 0.0)


@validate_params({
    "problem": [InstanceOf(TokenSelectionProblem, ProblemBatch, list, tuple,
                           name="a TokenSelectionProblem, a list of them or a ProblemBatch")],
    "param": [Options(*PARAMS)],
    "steps": [Interval(Integral, 1, None)],
    "lr": [Interval(Real, 0, None, closed="neither")],
    "normalized": ["boolean"],
    "ridge": [None, Interval(Real, 0, None)],
    "loss": [Options(*LOSSES)],
    "head": [Options(*HEADS)],
    "train_v": ["boolean"],
    "mlp": [None, InstanceOf(MLPHead)],
    "hidden": [Interval(Integral, 1, None)],
    "activation": [Options(*ACTIVATIONS)],
    "rank": [None, Interval(Integral, 1, None)],
    "init_scale": [Interval(Real, 0, None)],
    "W0": [None, Array(ndim=(2, 3))],
    "log_every": [Interval(Integral, 1, None)],
    "random_state": [RandomState()],
    "progress": ["boolean"],
})
def train_attention(
    problem: Any,
    param: str = "W",
    *,
    steps: int = 2000,
    lr: float = 0.1,
    normalized: bool = True,
    ridge: float | None = None,
    loss: str = "logistic",
    head: str = "linear",
    train_v: bool = False,
    mlp: MLPHead | None = None,
    hidden: int = 16,
    activation: str = "relu",
    rank: int | None = None,
    init_scale: float = 0.1,
    W0: np.ndarray | None = None,
    log_every: int = 10,
    random_state: int | None = 0,
    progress: bool = False,
) -> Trajectory:
    r"""Train the attention weights by (normalized) gradient descent, many seeds at once.

    Parameters
    ----------
    problem : a ``TokenSelectionProblem``, a sequence of them (one shape) or a
        :class:`ProblemBatch`; every problem is trained independently, vectorized.
    param : ``"W"`` (score ``x^T W z``) or ``"KQ"`` (``W = K Q^T``, ``K, Q in R^{d x m}``).
    steps, lr : iterations and step size. ``normalized=True`` steps along ``g / ||g||_F``
        (per seed; ``(K, Q)`` normalized jointly; ``v`` separately when trained).
    ridge : ``lambda`` of ``lambda (||K||_F^2 + ||Q||_F^2)`` (``param="KQ"`` only); a
        vanishing value (~1e-16) keeps the direction from drifting once the softmax saturates.
    loss : ``"logistic"`` or ``"linear"``. head : ``"linear"`` (``v``; trained when
        ``train_v``) or ``"mlp"`` (a fixed random two-layer head, or ``mlp``).
    rank : m for ``(K, Q)`` (default d). init_scale : std of the Gaussian initialization
        (``W0`` overrides it for ``param="W"``). log_every : log W every this many steps.
    random_state : seed of the initialization.

    Returns
    -------
    :class:`Trajectory` (the selection a run converged to is its most attended token).
    """
    batch = ProblemBatch.from_problems(problem)
    steps, log_every = int(steps), int(log_every)
    if ridge is not None and param != "KQ":
        raise_invalid("ridge", "None for param='W'", ridge,
                      "ridge applies to param='KQ' only; drop ridge or use param='KQ'.",
                      "train_attention")
    if train_v and head != "linear":
        raise_invalid("train_v", "False for head='mlp'", train_v,
                      "The MLP head is fixed; use head='linear' to train v.", "train_attention")
    if W0 is not None and param == "KQ":
        warn_ignored("W0", W0, "param='KQ' initializes K and Q (init_scale, random_state)")
    if rank is not None and param == "W":
        warn_ignored("rank", rank, "rank is the inner dimension of (K, Q); param='W' is full")
    if mlp is not None and head == "linear":
        warn_ignored("mlp", mlp, "head='linear' uses v; pass head='mlp' to use mlp")
    S, n, T, d = batch.shape
    m = d if rank is None else int(rank)
    rng = check_random_state(random_state, "random_state")
    if head == "mlp" and mlp is None:
        mlp = MLPHead.random(S, d, int(hidden), rng, activation)
    if head == "linear":
        mlp = None

    K = Q = None
    if param == "W":
        if W0 is not None:
            W = np.array(check_array(W0, "W0", ndim=(2, 3)), dtype=np.float64)
            if W.shape not in ((d, d), (S, d, d)):
                raise_invalid("W0", f"of shape ({d}, {d}) or ({S}, {d}, {d})",
                              f"got shape {W.shape}", "One W per seed, or one for all.",
                              "train_attention")
            W = np.broadcast_to(W, (S, d, d)).copy()
        else:
            W = init_scale * rng.standard_normal((S, d, d))
    else:
        K = init_scale * rng.standard_normal((S, d, m))
        Q = init_scale * rng.standard_normal((S, d, m))
        W = K @ Q.transpose(0, 2, 1)
    v = batch.v.copy()
    lam = 0.0 if ridge is None else float(ridge)

    log_steps = sorted(set(range(0, steps + 1, log_every)) | {steps})
    L = len(log_steps)
    W_log = np.empty((S, L, d, d))
    loss_log = np.empty((S, L))
    gnorm_log = np.empty((S, L))
    prob_log = np.empty((S, L, n, T))
    li = 0
    iterator: Any = range(steps + 1)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=f"train {param}", leave=False)
    start = time.perf_counter()
    for k in iterator:
        lg = _loss_and_grad(batch, W, v=v, loss=loss, mlp=mlp)
        gW = lg.grad_W
        if param == "KQ":
            gK = gW @ Q + 2 * lam * K  # (S, d, m)
            gQ = gW.transpose(0, 2, 1) @ K + 2 * lam * Q  # (S, d, m)
            gn = np.sqrt(np.sum(gK**2, axis=(1, 2)) + np.sum(gQ**2, axis=(1, 2)))
        else:
            gn = np.sqrt(np.sum(gW**2, axis=(1, 2)))
        if li < L and k == log_steps[li]:
            W_log[:, li] = W
            loss_log[:, li] = lg.loss + (
                lam * (np.sum(K**2, axis=(1, 2)) + np.sum(Q**2, axis=(1, 2))) if K is not None else 0
            )
            gnorm_log[:, li] = gn
            prob_log[:, li] = lg.probs
            li += 1
        if k == steps:
            break
        if param == "KQ":
            if normalized:
                gK, gQ = _normalize(gK, gn), _normalize(gQ, gn)
            K = K - lr * gK
            Q = Q - lr * gQ
            W = K @ Q.transpose(0, 2, 1)
        else:
            W = W - lr * (_normalize(gW, gn) if normalized else gW)
        if train_v:
            gv = lg.grad_v
            if normalized:
                gv = _normalize(gv, np.linalg.norm(gv, axis=1))
            v = v - lr * gv
    seconds = time.perf_counter() - start
    probs_final = prob_log[:, -1]
    selection = probs_final.argmax(axis=-1)  # (S, n)
    prob_sel = np.take_along_axis(prob_log, selection[:, None, :, None], axis=3)[..., 0].mean(-1)
    config = dict(
        param=param, steps=steps, lr=lr, normalized=normalized, ridge=ridge, loss=loss,
        head=head, train_v=train_v, rank=m, init_scale=init_scale, random_state=random_state,
    )
    logger.info("trained %d seeds x %d steps (%s) in %.2fs", S, steps, param, seconds)
    return Trajectory(
        steps=np.asarray(log_steps),
        W=W_log,
        W_final=W.copy(),
        loss=loss_log,
        prob_selected=prob_sel,
        norm=np.sqrt(np.sum(W_log**2, axis=(2, 3))),
        grad_norm=gnorm_log,
        rank=numerical_rank(W_log, ITERATE_RANK_RTOL),
        selection=selection,
        probs_final=probs_final,
        v_final=v,
        K_final=K,
        Q_final=Q,
        config=config,
        seconds=seconds,
    )
