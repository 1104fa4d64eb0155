r"""The ReLU program as data: gated-pattern blocks, one cone per block, a direction dictionary.

Sahiner et al., "Unraveling Attention via Convex Duality", ICML 2022 (arXiv 2205.08078);
Pilanci & Ergen, ICML 2020; Sahiner et al., ICLR 2021. The program solved over it is described
in :mod:`attnlens.convex.relu`; here are the program (:class:`ReluProgram`), its builder and its
certificate (:func:`certify_relu`): a residual floating-point cone violation is repaired by
moving the column along the gate generator ``h_j`` (inside ``K_j``) before the primal value is
taken; the dual point ``t grad f`` with ``t = min(1, beta / max_k ||Pi_K(-A^* grad f e_k)||)`` is
dual feasible (the dual norm of a cone-constrained column is computed exactly by one
projection), so ``(P - D) / P`` bounds the relative suboptimality of the restricted program.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from attnlens.convex.cones import build_cones
from attnlens.convex.gated_attention import GatedAttention
from attnlens.convex.losses import Loss, get_loss
from attnlens.convex.operators import Program, group_slices, pattern_block


@dataclass
class ReluProgram(Program):
    """Gated-pattern blocks plus one cone per block and the right-direction dictionaries.

    ``forward(Zs)`` is the convex model's output (patterns fixed). ``directions[b]`` is a
    (q c, K_b) matrix of unit columns (``None``: output-coordinate axes, set by the solver).
    """

    cones: list = field(default_factory=list)
    directions: list | None = None

    def as_gated(self) -> Program:
        """The gated-ReLU relaxation on the same patterns (drops the cone constraints)."""
        return Program(self.blocks, self.n_outputs, self.head, "gated_relu", dict(self.meta),
                       fused=self.fused)

    def signed_directions(self) -> list[np.ndarray]:
        dirs = self.directions if self.directions is not None else self.axis_directions()
        return [np.hstack([G, -G]) for G in dirs]

    def axis_directions(self) -> list[np.ndarray]:
        return [np.eye(b.zshape(self.n_outputs)[1]) for b in self.blocks]

    # ---------------------------------------------------------------- factored operator
    def zs(self, Xs: list[np.ndarray]) -> list[np.ndarray]:
        """``Z_j = X_j E_j^T`` (p, q c) from the cone variables ``X_j`` (p, 2K_j)."""
        return [X @ E.T for X, E in zip(Xs, self.signed_directions(), strict=True)]

    def forward_x(self, Xs: list[np.ndarray]) -> np.ndarray:
        return self.forward(self.zs(Xs))

    def grad_x(self, R: np.ndarray) -> list[np.ndarray]:
        """``A_j^*(R) E_j`` (p, 2K_j): gradient of ``<R, forward_x(X)>`` in ``X_j``."""
        return [b.adjoint(R) @ E for b, E in zip(self.blocks, self.signed_directions(),
                                                 strict=True)]

    def x_zeros(self) -> list[np.ndarray]:
        return [np.zeros((c.p, E.shape[1])) for c, E in zip(self.cones,
                                                            self.signed_directions(),
                                                            strict=True)]


def build_relu_program(X: np.ndarray, head: str, n_outputs: int, gates: np.ndarray,
                       groups: int = 1) -> ReluProgram:
    """ReLU program of ``head`` on tokens ``X`` (n, s, d) for gate generators ``gates``."""
    n, s, d = X.shape
    nb = groups if head == "bfno" else 1
    if d % nb:
        raise ValueError(f"groups={nb} must divide the feature dimension d={d}.")
    cones, patterns = build_cones(X, head, gates, nb)
    meta = {"groups": groups, "s": s, "d": d}
    if head == "self_attention":  # matrix-free blocks and cones (patterns: gate_patterns)
        fused = GatedAttention(X, gates)
        return ReluProgram(fused.blocks, n_outputs, head, "relu", meta, fused=fused,
                           cones=cones)
    shape = {"self_attention": (n, s, s), "mixer": (n, s, d), "fno": (n, s), "bfno": (n, s),
             "mlp": (n,)}[head]
    blocks = []
    b = 0
    for sl in group_slices(d, nb):
        Xg = X[:, :, sl] if head == "bfno" else X
        for _ in gates:
            blocks.append(pattern_block(Xg, head, patterns[b].reshape(shape)))
            b += 1
    return ReluProgram(blocks, n_outputs, head, "relu", meta, cones=cones)


# ------------------------------------------------------------------------ certificate


def make_feasible(program: ReluProgram, Xs: list[np.ndarray]):
    """Move violated columns along the gate generator until ``C_j x >= 0``.

    Returns ``(Xs_feasible, violation, ok)``: ``violation`` is the largest relative violation
    ``max(-C x) / max|C x|`` before the repair; ``ok`` is False when a violated row has a zero
    generator pre-activation (a tie) and cannot be repaired this way.
    """
    out, worst, ok = [], 0.0, True
    for X, cone in zip(Xs, program.cones, strict=True):
        ch = None  # C h (N,) >= 0, computed on the first violation
        tau = np.zeros(X.shape[1])
        live = np.flatnonzero(np.any(X != 0, axis=0))  # a zero column is feasible
        for sl in cone.column_chunks(live.size):  # (N, chunk) at a time
            V = cone.apply(X[:, live[sl]])
            neg = V < 0
            if not neg.any():
                continue
            scale = float(np.max(np.abs(V)))
            worst = max(worst, float(np.max(-V[neg])) / max(scale, 1e-300))
            if ch is None:
                ch = cone.apply(cone.interior[:, None])[:, 0]
            if (neg & (ch[:, None] <= 0)).any():
                ok = False
            with np.errstate(divide="ignore", invalid="ignore"):
                need = np.where(neg & (ch[:, None] > 0), -V / ch[:, None], 0.0)
            tau[live[sl]] = need.max(axis=0) * (1 + 1e-9)
        out.append(X if ch is None else X + cone.interior[:, None] * tau[None, :])
    return out, worst, ok


@dataclass(frozen=True)
class ReluCertificate:
    """What :func:`certify_relu` computed at one point of a :class:`ReluProgram`.

    ``primal`` / ``dual``: objective at the repaired point and the dual value; ``certificate``:
    the relative gap ``(primal - dual) / primal``; ``grad_ratio``: largest dual norm of a column
    over ``beta``; ``X``: the repaired cone variables; ``violation``: the largest relative cone
    violation before the repair; ``repairable``: False when a violated row had a zero generator
    pre-activation; ``warm``: active sets of the projections (pass back as ``warm``).
    """

    primal: float
    dual: float
    certificate: float
    grad_ratio: float
    X: list
    violation: float
    repairable: bool
    warm: list


def max_dual_norm(cones: list, Hs: list[np.ndarray], warm: list | None = None):
    """``max`` over blocks ``b`` and columns ``k`` of ``||Pi_{K_b}(Hs[b][:, k])||``, exactly.

    Lazy: every column gets the cheap upper bound of :meth:`ConeBlock.norm_bounds`; columns are
    projected exactly in decreasing order of their bound until the best exact value reaches the
    next bound (the others cannot exceed it). Typically a few projections instead of one per
    column. Returns ``(value, warm)`` (active sets per block, to pass back).
    """
    warm = [None] * len(cones) if warm is None else list(warm)
    warm = [w if w is not None and w.shape == (H.shape[1], H.shape[0])
            else np.full((H.shape[1], H.shape[0]), -1, dtype=np.intp)
            for H, w in zip(Hs, warm, strict=True)]
    bounds = [cone.norm_bounds(H, w) for cone, H, w in zip(cones, Hs, warm, strict=True)]
    order = sorted(((float(v), b, k) for b, bb in enumerate(bounds) for k, v in enumerate(bb)),
                   reverse=True)
    best = 0.0
    for bound, b, k in order:
        if bound <= best:
            break
        P, act, _ = cones[b].project_or_bound(Hs[b][:, [k]], np.array([best]),
                                              warm[b][[k]])  # stops once it cannot win
        warm[b][k] = act[0]
        best = max(best, float(np.linalg.norm(P)))
    return best, warm


def certify_relu(program: ReluProgram, Xs: list[np.ndarray], Y: np.ndarray, beta: float,
                 loss: str | Loss, warm: list | None = None,
                 dual: bool = True) -> ReluCertificate:
    """Primal value at the repaired point, dual value and relative gap (see module doc).

    The dual norm of column ``k`` is ``min_{mu >= 0} ||grad_k - C^T mu|| = ||Pi_K(-grad_k)||``
    (one cone projection); only their maximum enters, computed exactly by
    :func:`max_dual_norm`. ``dual=False``: the primal value only (``certificate`` inf).
    """
    loss = get_loss(loss, "certify_relu")
    Xf, violation, ok = make_feasible(program, Xs)
    yhat = program.forward_x(Xf)
    primal = loss.value(yhat, Y) + beta * sum(
        float(np.linalg.norm(X, axis=0).sum()) for X in Xf)
    if not dual:  # primal value only (the dual norms are the expensive part)
        return ReluCertificate(primal=primal, dual=-np.inf, certificate=np.inf,
                               grad_ratio=np.nan, X=Xf, violation=violation, repairable=ok,
                               warm=warm)
    grad = loss.gradient(yhat, Y)
    gam, new_warm = max_dual_norm(program.cones, [-W for W in program.grad_x(grad)], warm)
    t = 1.0 if gam <= beta else beta / gam
    dual = loss.dual_value(grad, Y, t)
    gap = max(primal - dual, 0.0)
    return ReluCertificate(primal=primal, dual=dual, certificate=gap / max(abs(primal), 1e-12),
                           grad_ratio=gam / beta, X=Xf, violation=violation, repairable=ok,
                           warm=new_warm)

