r"""scikit-learn style classifiers: the convex head (global optimum) and its non-convex twin.

Sahiner, Ergen, Ozturkler, Pauly, Mardani, Pilanci, "Unraveling Attention via Convex Duality",
ICML 2022 (arXiv 2205.08078). Objective convention, shared by both classifiers:

* squared (one-hot targets): :math:`\frac{1}{2n}\sum_i\|\hat y_i - Y_i\|^2 + \beta\,\Omega`
* cross-entropy: :math:`\frac1n\sum_i \mathrm{CE}(\hat y_i, y_i) + \beta\,\Omega`

with :math:`\Omega = \sum_j \|Z_j\|_*` (convex) or
:math:`\frac12\sum_k (\|W_{1k}\|_F^2 + \|W_{2k}\|_F^2)` (network), :math:`\hat y_i` the
token-mean-pooled head output. Self-attention scores: ``score_t = x_t^T W1 z`` (``W1 = K Q^T``).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import time

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import LabelEncoder

from attnlens._results import warn_on_status
from attnlens._validation import (
    InstanceOf,
    Integral,
    Interval,
    Options,
    ParamsValidatedMixin,
    Real,
    check_array,
    check_consistent_length,
    check_random_state,
    raise_invalid,
    resolve_device,
    warn_ignored,
)
from attnlens.cache import arrays_checksum
from attnlens.checkpoint import Checkpoint
from attnlens.convex._linalg import progress_bar
from attnlens.convex.heads import ACTIVATIONS, HEADS, ConvexHead
from attnlens.convex.losses import LOSSES, get_loss
from attnlens.convex.nuclear import BACKENDS
from attnlens.convex.programs import build_program, sample_gates
from attnlens.convex.recover import recover_network, recover_relu_network
from attnlens.convex.relu import check_relu_solver
from attnlens.convex.relu_bracket import refine_bracket
from attnlens.convex.results import ConvexResult
from attnlens.convex.solvers import SOLVERS, solve
from attnlens.errors import NotFittedError

logger = logging.getLogger(__name__)

_POSITIVE = Interval(Real, 0, None, closed="neither")
_COUNT = Interval(Integral, 1, None)

#: the constraints both classifiers share (the same head, the same objective, the same data)
_SHARED_CONSTRAINTS: dict[str, list] = {
    "head": [Options(*HEADS)],
    "activation": [Options(*ACTIVATIONS)],
    "beta": [_POSITIVE],
    "loss": [Options(*LOSSES)],
    "random_state": ["random_state"],
    "n_groups": [_COUNT],
    "verbose": ["boolean"],
}


def _check_X(X, name: str = "X", d: int | None = None, s: int | None = None,
             caller: str = "") -> np.ndarray:
    X = check_array(X, name, ndim=3, caller=caller)
    if d is not None and X.shape[2] != d:
        raise_invalid(name, f"tokens of d={d} features (the width the model was fitted with)",
                      f"got {X.shape[2]} features per token",
                      "Pass tokens of the same width.", caller)
    if s is not None and X.shape[1] != s:
        raise_invalid(name, f"sequences of s={s} tokens (mixer/FNO heads depend on the "
                      "sequence length)", f"got {X.shape[1]} tokens",
                      "Pass sequences of the length the head was fitted with.", caller)
    return X


def _check_y(y, X: np.ndarray, caller: str = "") -> tuple[LabelEncoder, np.ndarray]:
    y = np.asarray(y)  # labels of any kind (numbers, strings, objects)
    if y.ndim != 1:
        raise_invalid("y", "1-D class labels", f"got shape {y.shape}",
                      "Pass one label per sample.", caller)
    if y.dtype.kind in "fc" and not np.all(np.isfinite(y)):
        raise_invalid("y", "finite class labels", "got NaN or inf",
                      "Drop the unlabelled samples.", caller)
    check_consistent_length("X", X, "y", y, caller)
    enc = LabelEncoder().fit(y)
    if len(enc.classes_) < 2:
        raise_invalid("y", "labels of at least two classes",
                      f"got a single class ({enc.classes_[0]!r})",
                      "A classifier needs at least two classes.", caller)
    return enc, enc.transform(y)


class _HeadEstimator(ParamsValidatedMixin, ClassifierMixin, BaseEstimator):
    """What both classifiers check the same way: parameters, data, bfno groups, ignored params."""

    def _check_fit_input(self, X, y) -> tuple[np.ndarray, LabelEncoder, np.ndarray]:
        self._check_params()
        caller = type(self).__name__
        X = _check_X(X, caller=caller)
        enc, yi = _check_y(y, X, caller)
        d = X.shape[2]
        if self.head == "bfno" and d % self.n_groups:
            divisors = [g for g in range(1, d + 1) if d % g == 0]
            raise_invalid("n_groups", f"a divisor of the feature dimension d={d}",
                          self.n_groups, f"Pick one of {divisors}.", caller)
        if self.head != "bfno":
            self._warn_if_set("n_groups", f"only head='bfno' has channel groups, not "
                                          f"{self.head!r}", depth=2)
        return X, enc, yi

    def _warn_if_set(self, name: str, reason: str, depth: int = 1) -> None:
        """Warn (``warn_ignored``) when ``name`` differs from its default but has no effect.

        ``depth``: calls between ``fit`` and here (the warning points at the caller of fit).
        """
        default = inspect.signature(type(self).__init__).parameters[name].default
        value = getattr(self, name)
        if value != default:
            warn_ignored(name, value, reason, stacklevel=3 + depth)

    def _check_predict_input(self, X) -> np.ndarray:
        return _check_X(X, d=self.n_features_in_,
                        s=None if self.head in ("self_attention", "mlp") else self.n_tokens_,
                        caller=type(self).__name__)

    def predict_proba(self, X) -> np.ndarray:
        """Softmax of the outputs (cross-entropy) or clipped, normalized outputs (squared)."""
        return get_loss(self.loss).proba(self.decision_function(X))

    def predict(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        return self.classes_[np.argmax(scores, axis=1)]


def _finished_fit(saver: Checkpoint | None) -> ConvexResult | None:
    """The result a previous fit of the same problem left in ``saver``, if it finished."""
    state = saver.load() if saver is not None else None
    return state if isinstance(state, ConvexResult) else None


class ConvexAttentionClassifier(_HeadEstimator):
    """Attention-style head trained by its convex program, to a certified global optimum.

    Parameters
    ----------
    head : "self_attention" | "mixer" | "fno" | "bfno" | "mlp"
    activation : "linear" | "gated_relu" | "relu". "relu" solves the cone-constrained ReLU
        program restricted to a dictionary of output directions (exact for one-column blocks,
        an attained upper bound otherwise; ``lower_bound_`` is the gated-relaxation bound --
        see :mod:`attnlens.convex.relu` and docs/convex.md); predictions use the ReLU network.
    beta : weight-decay strength (> 0).
    loss : "squared" (one-hot targets) or "cross_entropy".
    n_gates : number of random gates for gated activations (ignored, with a warning, for
        "linear").
    solver : "auto" (FISTA with continuation in beta), "fista", "bm" (Burer-Monteiro; refused
        for "relu"), "ssnal" (FISTA warm start, then a semismooth Newton augmented Lagrangian;
        squared loss, linear and gated heads) or "cvxpy" (reference).
    tol : tolerance on the certificate (relative duality gap).
    max_iter : iteration budget of the solver.
    random_state : seed for the gates and the solver's randomness.
    n_groups : channel groups B of the block FNO head (must divide d; ignored, with a warning,
        by the other heads).
    verbose : show a progress bar.
    backend : "numpy" (default) or "torch": the FISTA iterations (solver "auto" or "fista") in
        float64 torch on ``device``; the certificate is still float64 numpy (see
        :mod:`attnlens.convex.torch_fista`). Linear and gated-ReLU heads.
    device : the torch device of ``backend="torch"`` ("cpu", "cuda"; None: the GPU when one
        is visible; ignored, with a warning, by the numpy backend).
    bracket_tol : ``activation="relu"`` only (ignored, with a warning, otherwise). ``None``
        (default): solve once. A number in (0, 1): tighten the bracket ``[lower_bound_,
        objective_]`` of the ReLU program on the sampled patterns by column generation and a
        cone-aware dual bound (:func:`attnlens.convex.relu_bracket.refine_bracket`) until its
        relative width is at most ``bracket_tol`` or ``bracket_rounds`` re-solves are spent.
    bracket_rounds : round budget of that refinement (>= 0).
    checkpoint : a file path, or None. The FISTA solvers ("auto", "fista"; numpy backend,
        linear and gated-ReLU heads) save their state there (atomically, about once a minute),
        and a fit of the same data with the same settings and gates resumes from it -- a fit
        of hours survives its process being stopped. A finished fit leaves its result in
        the file, and a fit that finds a finished result for the same problem returns it
        without solving (a sweep re-run after an interruption refits nothing it finished).

    Fitted attributes: ``classes_``, ``Z_`` (list of blocks), ``objective_``, ``certificate_``,
    ``duality_gap_``, ``n_iter_``, ``gates_``, ``result_``; for ``activation="relu"`` also
    ``lower_bound_`` (certified lower bound on the exact cone-constrained program on the
    same gates), ``network_`` (the ReLU network, used by ``decision_function``) and
    ``bracket_`` (the :class:`~attnlens.convex.results.BracketInfo` of the refinement, or
    ``None`` without ``bracket_tol``).
    """

    def __init__(self, head: str = "self_attention", activation: str = "linear",
                 beta: float = 1e-3, loss: str = "squared", n_gates: int = 5,
                 solver: str = "auto", tol: float = 1e-6, max_iter: int = 5000,
                 random_state=None, n_groups: int = 5, verbose: bool = False,
                 backend: str = "numpy", device: str | None = None,
                 bracket_tol: float | None = None, bracket_rounds: int = 10,
                 checkpoint: str | os.PathLike | None = None):
        self.head = head
        self.activation = activation
        self.beta = beta
        self.loss = loss
        self.n_gates = n_gates
        self.solver = solver
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state
        self.n_groups = n_groups
        self.verbose = verbose
        self.backend = backend
        self.device = device
        self.bracket_tol = bracket_tol
        self.bracket_rounds = bracket_rounds
        self.checkpoint = checkpoint

    _parameter_constraints = {
        **_SHARED_CONSTRAINTS,
        "backend": [Options(*BACKENDS)],
        "device": [None, str],
        "n_gates": [_COUNT],
        "solver": [Options(*SOLVERS)],
        "tol": [_POSITIVE],
        "max_iter": [_COUNT],
        "bracket_tol": [None, Interval(Real, 0, 1, closed="neither")],
        "bracket_rounds": [Interval(Integral, 0, None)],
        "checkpoint": [None, InstanceOf(str, os.PathLike, name="a file path")],
    }

    def _program(self, X: np.ndarray):
        groups = self.n_groups if self.head == "bfno" else 1
        return build_program(X, self.head, self.activation, len(self.classes_),
                             gates=self.gates_, groups=groups)

    def fit(self, X, y) -> ConvexAttentionClassifier:
        """Solve the convex program on tokens ``X`` (n, s, d) and labels ``y`` (n,)."""
        X, enc, yi = self._check_fit_input(X, y)
        if self.activation == "relu":
            check_relu_solver(self.solver, type(self).__name__)
        if self.activation == "linear":
            self._warn_if_set("n_gates", "activation='linear' has no gates")
        if self.activation != "relu":
            for name in ("bracket_tol", "bracket_rounds"):
                self._warn_if_set(name, f"only activation='relu' has a bracket, not "
                                        f"{self.activation!r}")
        n, s, d = X.shape
        rng = check_random_state(self.random_state)
        self.classes_ = enc.classes_
        groups = self.n_groups if self.head == "bfno" else 1
        self.gates_ = (sample_gates(self.head, self.n_gates, s, d, rng, groups)
                       if self.activation != "linear" else None)
        self.n_tokens_, self.n_features_in_ = s, d
        Y = np.eye(len(self.classes_))[yi]
        t0 = time.perf_counter()
        program = self._program(X)
        saver = self._checkpoint(X, yi) if self.checkpoint is not None else None
        res = _finished_fit(saver)
        if res is not None:
            logger.info("fit %s/%s reused from %s (finished earlier)", self.head,
                        self.activation, saver.path)
            warn_on_status(res.status, res.certificate, self.tol, f"reused fit ({res.method!r})")
        else:
            res = solve(program, Y, float(self.beta), self.loss, solver=self.solver,
                        tol=self.tol, max_iter=self.max_iter, rng=rng, progress=self.verbose,
                        backend=self.backend, device=self.device, checkpoint=saver)
            if saver is not None:  # the finished fit stays: a re-run reuses it, not refits
                saver.save(lambda: res, force=True)
        if self.activation == "relu" and self.bracket_tol is not None:
            _, res = refine_bracket(program, Y, float(self.beta), self.loss, res,
                                    bracket_tol=float(self.bracket_tol),
                                    max_rounds=int(self.bracket_rounds), solver=self.solver,
                                    tol=self.tol, max_iter=self.max_iter, rng=rng)
            warn_on_status(res.status, res.certificate, self.tol,
                           f"refined ReLU program ({res.method!r})")
        logger.info("fit %s/%s in %.2fs (%s)", self.head, self.activation,
                    time.perf_counter() - t0, res.method)
        self.result_ = res
        self.Z_ = res.Z
        self.objective_ = res.objective
        self.certificate_ = res.certificate
        self.duality_gap_ = res.duality_gap
        self.n_iter_ = res.iterations
        self.status_ = res.status
        if self.activation == "relu":
            self.lower_bound_ = res.lower_bound
            self.bracket_ = res.bracket
            self.network_ = self._relu_network()
        return self

    def _checkpoint(self, X: np.ndarray, yi: np.ndarray) -> Checkpoint:
        """The :class:`Checkpoint` at ``self.checkpoint``, keyed by the data, the gates and
        every setting that changes the iterates."""
        arrays = {"X": X, "y": yi}
        if self.gates_ is not None:
            arrays["gates"] = np.asarray(self.gates_)
        settings = {k: getattr(self, k) for k in ("head", "activation", "beta", "loss",
                                                  "solver", "tol", "max_iter", "n_groups")}
        key = arrays_checksum(arrays) + json.dumps(settings, sort_keys=True)
        return Checkpoint(self.checkpoint, key)

    def _check_fitted(self) -> None:
        if not hasattr(self, "Z_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit(X, y).")

    def decision_function(self, X) -> np.ndarray:
        """Pooled head outputs (n, n_classes)."""
        self._check_fitted()
        X = self._check_predict_input(X)
        if self.activation == "relu":  # the ReLU network itself (its patterns, not the gates')
            with torch.no_grad():
                return self.network_(torch.as_tensor(X)).numpy()
        return self._program(X).forward(self.Z_)

    def _relu_network(self) -> ConvexHead:
        return recover_relu_network(self.result_.cone_factors, self.head, self.n_tokens_,
                                    self.n_features_in_, len(self.classes_), self.n_gates,
                                    self.n_groups if self.head == "bfno" else 1)

    def to_network(self) -> ConvexHead:
        """The equivalent non-convex torch head.

        linear / gated ReLU: one unit per singular pair of each block; ReLU: one ReLU unit per
        non-zero cone variable (see :func:`attnlens.convex.recover.recover_relu_network`).
        """
        self._check_fitted()
        if self.activation == "relu":
            return self._relu_network()
        return recover_network(self.Z_, self.head, self.activation, self.n_tokens_,
                               self.n_features_in_, len(self.classes_), self.gates_,
                               self.n_groups if self.head == "bfno" else 1)


class NonConvexAttentionClassifier(_HeadEstimator):
    """The same head trained directly (Adam or SGD) with weight decay ``(beta/2) sum ||W||^2``.

    ``objective_`` is the regularized training objective in the convention of
    :class:`ConvexAttentionClassifier` (evaluated on the full training set at the end), so
    ``objective_ >= ConvexAttentionClassifier(...).objective_`` up to the solver tolerance.
    Gated heads use ``n_heads`` random gates (unit k has gate k), drawn (except for bfno) with
    the sampler of :class:`ConvexAttentionClassifier`: with the same ``random_state`` and
    ``n_gates = n_heads`` both estimators use the same gates, so the convex optimum is a lower
    bound on this objective. ``device`` is the torch device it trains on ("cpu", "cuda"); the
    initialization is drawn on the CPU, so it is the same on every device.
    """

    def __init__(self, head: str = "self_attention", activation: str = "linear",
                 n_heads: int = 5, beta: float = 1e-3, loss: str = "squared",
                 optimizer: str = "adam", lr: float = 1e-2, max_epochs: int = 200,
                 batch_size: int | None = None, random_state=None, n_groups: int = 5,
                 init_scale: float = 0.1, verbose: bool = False, device: str = "cpu"):
        self.head = head
        self.activation = activation
        self.n_heads = n_heads
        self.beta = beta
        self.loss = loss
        self.optimizer = optimizer
        self.lr = lr
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.random_state = random_state
        self.n_groups = n_groups
        self.init_scale = init_scale
        self.verbose = verbose
        self.device = device

    _parameter_constraints = {
        **_SHARED_CONSTRAINTS,
        "device": [str],
        "n_heads": [_COUNT],
        "optimizer": [Options("adam", "sgd")],
        "lr": [_POSITIVE],
        "max_epochs": [_COUNT],
        "batch_size": [None, _COUNT],
        "init_scale": [_POSITIVE],
    }

    def _objective(self, net: ConvexHead, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        out = net(X)  # (b, c)
        return get_loss(self.loss).torch_value(out, Y) + self.beta * net.penalty()

    def fit(self, X, y) -> NonConvexAttentionClassifier:
        X, enc, yi = self._check_fit_input(X, y)
        n, s, d = X.shape
        bs = n if self.batch_size is None else int(self.batch_size)
        rng = check_random_state(self.random_state)
        # gates first, with the convex estimator's sampler: the same random_state (and
        # n_gates = n_heads) gives both estimators the same gates
        shared_gates = (sample_gates(self.head, self.n_heads, s, d, rng)
                        if self.activation == "gated_relu" and self.head != "bfno" else None)
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        self.classes_ = enc.classes_
        c = len(self.classes_)
        mask = None
        if self.head == "bfno":
            w = d // self.n_groups
            mask = torch.zeros(self.n_heads, d, dtype=torch.float64)
            for k in range(self.n_heads):
                g = k % self.n_groups
                mask[k, g * w : (g + 1) * w] = 1.0
        gates = None if shared_gates is None else torch.as_tensor(shared_gates)
        if self.activation == "gated_relu" and self.head == "bfno":
            gates = torch.randn((self.n_heads, s, d), dtype=torch.float64, generator=gen)
            gates = gates * mask[:, None, :]
        net = ConvexHead(self.head, self.activation, self.n_heads, s, d, c, gates=gates,
                         group_mask=mask, generator=gen, init_scale=self.init_scale)
        device = torch.device(resolve_device(self.device, type(self).__name__))
        net = net.to(device)
        Xt = torch.as_tensor(X, device=device)
        Yt = torch.as_tensor(np.eye(c)[yi], device=device)
        opt = (torch.optim.Adam(net.parameters(), lr=self.lr) if self.optimizer == "adam"
               else torch.optim.SGD(net.parameters(), lr=self.lr, momentum=0.9))
        bar = progress_bar(self.verbose, self.max_epochs, "non-convex training")
        self.loss_curve_ = []
        for _ in range(self.max_epochs):
            perm = torch.randperm(n, generator=gen).to(device)
            for i in range(0, n, bs):
                idx = perm[i : i + bs]
                opt.zero_grad()
                obj = self._objective(net, Xt[idx], Yt[idx])
                obj.backward()
                opt.step()
            self.loss_curve_.append(float(obj.detach()))
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        with torch.no_grad():
            self.objective_ = float(self._objective(net, Xt, Yt))
        if not np.isfinite(self.objective_):
            raise FloatingPointError(f"training diverged (objective {self.objective_}); "
                                     f"lower lr (got {self.lr}).")
        self.network_ = net
        self.n_tokens_, self.n_features_in_ = s, d
        self.n_iter_ = self.max_epochs
        return self

    def decision_function(self, X) -> np.ndarray:
        """Pooled head outputs (n, n_classes)."""
        if not hasattr(self, "network_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit(X, y).")
        X = self._check_predict_input(X)
        with torch.no_grad():
            device = next(self.network_.parameters()).device
            return self.network_(torch.as_tensor(X, device=device)).cpu().numpy()
