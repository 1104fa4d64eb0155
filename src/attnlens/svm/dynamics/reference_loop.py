"""The official-style reference loop: normalized GD on attention, one seed at a time, with
torch autograd, as the official Att-SVM notebook trains.

A port of the training loop of ``local_converge.ipynb`` (umich-sota/TF-as-SVM, the code of
Tarzanagh, Li, Thrampoulidis, Oymak, "Transformers as Support Vector Machines",
arXiv 2308.16898), kept as the like-for-like baseline of :func:`train_attention`:

.. math::
    L = \\frac1n \\sum_i \\log\\big(1 + e^{-Y_i f_i}\\big)
        \\;[+\\, \\lambda(\\|K\\|_F^2 + \\|Q\\|_F^2)],\\qquad
    f_i = v^\\top X_i^\\top \\mathrm{softmax}(X_i W z_i),

    P \\leftarrow P - \\eta\\, \\frac{\\nabla_P L}{\\|\\nabla_P L\\|_F + \\epsilon}
    \\quad\\text{for each parameter } P \\in \\{W\\} \\text{ or } P \\in \\{K, Q\\}
    \\text{ separately},

with ``eta = 0.1``, ``epsilon = lambda = 2.22e-16`` (float64 machine epsilon), SGD without
momentum, the loss written as ``log(1 + exp(-u))`` and differentiated by autograd. What differs
from attnlens's batched :func:`~attnlens.svm.dynamics.train_attention`:

* ``(K, Q)``: the notebook divides K's and Q's gradients *each by its own norm*;
  ``train_attention`` divides both by their *joint* norm;
* the gradient: autograd of the softmax in the chosen dtype, versus an analytic float64 gradient
  formed relative to the most-attended token (accurate when the softmax saturates);
* the read-out: the notebook's selection is the argmax of the softmax at the last forward pass
  (before the last update); ``train_attention``'s is taken after it.

Model initialization: the notebook uses ``nn.Linear``'s default (uniform on
``[-1/sqrt(d), 1/sqrt(d)]``) and does not seed it; here it is drawn from ``random_state``, or
given as ``W0`` / ``(K0, Q0)``. Score convention ``score_t = x_t^T W z`` with ``W = K Q^T``
(the notebook's ``W.weight.T``, resp. ``key.weight.T @ query.weight``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attnlens._validation import (
    Array,
    InstanceOf,
    Integral,
    Interval,
    Options,
    RandomState,
    Real,
    check_array,
    check_random_state,
    raise_invalid,
    validate_params,
    warn_ignored,
)
from attnlens.svm.dynamics.training import PARAMS, ProblemBatch
from attnlens.svm.problems import TokenSelectionProblem

__all__ = ["OFFICIAL_EPS", "ReferenceRun", "reference_train"]

logger = logging.getLogger(__name__)

#: ``torch.finfo(torch.double).eps``: the notebook's gradient-norm guard and (K, Q) ridge.
OFFICIAL_EPS = float(np.finfo(np.float64).eps)
#: Seed of the model initialization when none is given (the notebook leaves it unseeded).
DEFAULT_INIT_SEED = 0
DTYPES = ("float64", "float32")


@dataclass(frozen=True)
class ReferenceRun:
    """What the reference loop went through. S = seeds, L = logged steps.

    steps (L,): number of updates done; W (S, L, d, d) after that many updates; W_final
    (S, d, d); prob_max (S, steps): mean over sequences of the largest softmax probability at
    the forward pass of each iteration (the notebook's ``sfx_probs``); selection (S, n): the
    argmax of the softmax at the last forward pass (the notebook's ``ids``); K_final, Q_final
    (S, d, m) for ``param="KQ"``; seconds: wall time of the loop.
    """

    steps: np.ndarray
    W: np.ndarray
    W_final: np.ndarray
    prob_max: np.ndarray
    selection: np.ndarray
    K_final: np.ndarray | None = None
    Q_final: np.ndarray | None = None
    config: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def __len__(self) -> int:
        return self.W_final.shape[0]


def _per_seed(a: np.ndarray | None, name: str, S: int, shape: tuple[int, int]) -> np.ndarray | None:
    if a is None:
        return None
    a = np.asarray(check_array(a, name, ndim=(2, 3)), dtype=np.float64)
    if a.shape not in (shape, (S, *shape)):
        raise_invalid(name, f"of shape {shape} or {(S, *shape)}", f"got shape {a.shape}",
                      "One matrix per seed, or one for all.", "reference_train")
    return np.broadcast_to(a, (S, *shape)).copy()


def _one_seed(
    torch: Any, X: Any, Y: Any, v: Any, Z: Any, params: list[Any], param: str, steps: int,
    lr: float, ridge: float, log_at: set[int],
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """The notebook's loop for one problem. ``params`` are the notebook's weights: [W.weight]
    or [query.weight, key.weight]; returns (W after each logged step, prob_max, ids)."""
    n, _, d = X.shape
    z = Z.reshape(n, 1, d)

    def current_W() -> np.ndarray:  # attnlens convention: score x^T W z
        with torch.no_grad():
            if param == "W":
                W = params[0].T
            else:
                W = params[0].T.mm(params[1]).T  # (query.weight^T key.weight)^T
        return W.detach().double().numpy().copy()

    logged = [current_W()] if 0 in log_at else []
    prob_max = np.empty(steps)
    ids = None
    for it in range(steps):
        if param == "W":
            scores = z @ (X @ params[0].T).transpose(-2, -1)  # (n, 1, T)
        else:
            q = z @ params[0].T  # query(z), (n, 1, m)
            k = X @ params[1].T  # key(X), (n, T, m)
            scores = q @ k.transpose(-2, -1)
        sfx = torch.softmax(scores, dim=-1)  # (n, 1, T)
        out = ((sfx @ X) @ v).view(-1)  # (n,)
        loss = torch.log(1 + torch.exp(-Y * out)).mean()
        if param == "KQ":
            loss = loss + ridge * (params[1].norm() ** 2 + params[0].norm() ** 2)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.add_(g / (g.norm() + OFFICIAL_EPS), alpha=-lr)  # SGD on the normalized grad
            top = sfx.detach().max(dim=-1)
            prob_max[it] = float(top[0].mean())
            ids = top[1]
        if it + 1 in log_at:
            logged.append(current_W())
    return logged, prob_max, ids.reshape(-1).numpy().astype(np.int64)


@validate_params({
    "problem": [InstanceOf(TokenSelectionProblem, ProblemBatch, list, tuple,
                           name="a TokenSelectionProblem, a list of them or a ProblemBatch")],
    "param": [Options(*PARAMS)],
    "steps": [Interval(Integral, 1, None)],
    "lr": [Interval(Real, 0, None, closed="neither")],
    "ridge": [Interval(Real, 0, None)],
    "W0": [None, Array(ndim=(2, 3))],
    "K0": [None, Array(ndim=(2, 3))],
    "Q0": [None, Array(ndim=(2, 3))],
    "dtype": [Options(*DTYPES)],
    "log_every": [Interval(Integral, 1, None)],
    "random_state": [RandomState()],
    "progress": ["boolean"],
})
def reference_train(
    problem: Any,
    param: str = "W",
    *,
    steps: int = 2000,
    lr: float = 0.1,
    ridge: float = OFFICIAL_EPS,
    W0: np.ndarray | None = None,
    K0: np.ndarray | None = None,
    Q0: np.ndarray | None = None,
    dtype: str = "float64",
    log_every: int = 10,
    random_state: int | None = DEFAULT_INIT_SEED,
    progress: bool = False,
) -> ReferenceRun:
    r"""Train W or (K, Q) with the official notebook's loop, one seed after the other.

    Parameters
    ----------
    problem : a ``TokenSelectionProblem``, a sequence of them (one shape) or a ``ProblemBatch``
        (cross- or self-attention through its queries).
    param : ``"W"`` or ``"KQ"`` (``W = K Q^T``, ``K, Q in R^{d x d}``; the notebook's hidden
        size is d).
    steps, lr : updates and step size (notebook: 2000, 0.1).
    ridge : ``lambda`` of ``lambda (||K||_F^2 + ||Q||_F^2)`` for ``"KQ"`` (notebook: float64
        eps, 2.22e-16).
    W0 : initial W (d, d) or (S, d, d) in the ``x^T W z`` convention (``param="W"``).
    K0, Q0 : initial K and Q (d, d) or (S, d, d), ``W = K Q^T`` (``param="KQ"``; both or none).
        Without them the initialization is ``nn.Linear``'s default, uniform on
        ``[-1/sqrt(d), 1/sqrt(d)]``, drawn from ``random_state``.
    dtype : ``"float64"`` (the notebook's ``.double()``) or ``"float32"``.
    log_every : record W every this many updates (and after the last).

    Returns
    -------
    :class:`ReferenceRun`.
    """
    import torch

    batch = ProblemBatch.from_problems(problem)
    S, n, T, d = batch.shape
    steps, log_every = int(steps), int(log_every)
    if param == "W":
        if K0 is not None or Q0 is not None:
            warn_ignored("K0" if K0 is not None else "Q0", K0 if K0 is not None else Q0,
                         "param='W' starts from W0 (or the default initialization)")
        W0 = _per_seed(W0, "W0", S, (d, d))
    else:
        if W0 is not None:
            warn_ignored("W0", W0, "param='KQ' starts from K0, Q0 (or the default "
                         "initialization)")
        if (K0 is None) != (Q0 is None):
            raise_invalid("Q0" if Q0 is None else "K0", "given together with the other one",
                          None, "Pass both K0 and Q0, or neither.", "reference_train")
        K0, Q0 = _per_seed(K0, "K0", S, (d, d)), _per_seed(Q0, "Q0", S, (d, d))
    rng = check_random_state(random_state, "random_state")
    bound = 1.0 / np.sqrt(d)
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    log_steps = sorted(set(range(0, steps + 1, log_every)) | {steps})
    log_at = set(log_steps)
    W_log = np.empty((S, len(log_steps), d, d))
    prob_max = np.empty((S, steps))
    selection = np.empty((S, n), dtype=np.int64)
    K_fin = Q_fin = None
    if param == "KQ":
        K_fin, Q_fin = np.empty((S, d, d)), np.empty((S, d, d))
    seeds: Any = range(S)
    if progress:
        from tqdm.auto import tqdm

        seeds = tqdm(seeds, desc=f"reference loop {param}", leave=False)
    start = time.perf_counter()
    for s in seeds:
        X, Y, v, Z = (torch.tensor(a, dtype=tdtype)
                      for a in (batch.X[s], batch.Y[s], batch.v[s], batch.Z[s]))
        if param == "W":
            W_init = W0[s] if W0 is not None else rng.uniform(-bound, bound, (d, d))
            weights = [W_init.T]  # nn.Linear weight: score z^T weight x = x^T weight^T z
        else:
            if K0 is not None:
                K_init, Q_init = K0[s], Q0[s]
            else:  # query.weight, then key.weight, in the notebook's layout (out, in)
                Q_init, K_init = (rng.uniform(-bound, bound, (d, d)).T for _ in range(2))
            weights = [Q_init.T, K_init.T]  # [query.weight, key.weight]
        params = [torch.tensor(np.ascontiguousarray(w), dtype=tdtype, requires_grad=True)
                  for w in weights]
        logged, prob_max[s], selection[s] = _one_seed(
            torch, X, Y, v, Z, params, param, steps, float(lr), float(ridge), log_at)
        W_log[s] = np.stack(logged)
        if param == "KQ":
            Q_fin[s] = params[0].detach().double().numpy().T
            K_fin[s] = params[1].detach().double().numpy().T
    seconds = time.perf_counter() - start
    logger.info("reference loop: %d seeds x %d steps (%s, %s) in %.2fs", S, steps, param, dtype,
                seconds)
    config = dict(param=param, steps=steps, lr=lr, ridge=ridge, dtype=dtype,
                  normalization="each parameter by its own gradient norm + eps",
                  init="given" if (W0 is not None or K0 is not None) else
                  f"uniform(+-1/sqrt(d)), random_state={random_state}")
    return ReferenceRun(
        steps=np.asarray(log_steps), W=W_log, W_final=W_log[:, -1].copy(), prob_max=prob_max,
        selection=selection, K_final=K_fin, Q_final=Q_fin, config=config, seconds=seconds,
    )
