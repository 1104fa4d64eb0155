"""What limits the FISTA certificate: the primal converges long before the duality gap closes.

The solvers certify a point by the relative duality gap against the dual point built from
the gradient, ``nu = -t grad f(A Z)`` with ``t = min(1, beta / max_j ||A_j^* grad f||_2)``
(:mod:`attnlens.convex.certificate`). This benchmark traces one fit of the transfer
benchmark's convex gated-ReLU self-attention (ViT tokens of Fashion-MNIST, the ``--full``
run's seed-0 training images: 3,000 images, 17 tokens, 10 classes, m = 5 gates, squared loss,
``fista_path`` with the default settings) past the transfer tolerance (1e-3) down to
``--tol`` (default 1e-4) and records at every certificate check of the final stage:

* ``certificate``: the gap the solver reports (the anchor);
* ``primal_excess``: ``(P(Z_k) - P_end) / P_end``, how far the primal value still is from
  the end of the traced fit (an upper bound on the true suboptimality at the last check);
* two other rigorous dual candidates, each feasible by the same scaling: the best dual value
  seen so far, and Celer's dual extrapolation (Massias, Gramfort & Salmon, "Celer: a Fast
  Solver for the Lasso with Dual Extrapolation", ICML 2018): the affine combination
  ``r = sum_i c_i g_{k-K+i}`` of the last ``K + 1`` check gradients with ``c`` from
  ``(U^T U) z = 1``, ``U`` their ``K`` differences, ``c = z / 1^T z``; ``A^* r`` is the same
  combination of the stored adjoints (no extra operator product).

It reports the iteration at which each rule reaches 1e-3 (the transfer tolerance) and writes
benchmarks/results/certificate_dual.json and .png. ``--d=16`` (default), ``--betas=0.01,0.03``,
``--tol=1e-4``, ``--k=5``.
"""

from __future__ import annotations

import math
import time

import numpy as np
from _common import RESULTS, option, write_result

NAME = "certificate_dual"
SEED = 0
N_GATES = 5
CHECK_TOL = 1e-3  # the transfer benchmark's tolerance


class _Recorder:
    """A :class:`attnlens.checkpoint.Checkpoint` stand-in: nothing to resume, every state kept."""

    def __init__(self) -> None:
        self.states: list = []

    def load(self) -> None:
        return None

    def save(self, state, force: bool = False) -> bool:
        self.states.append(state())
        return True


def _scaled_dual(loss, g: np.ndarray, G: list, Y: np.ndarray, beta: float) -> float:
    """Dual value at ``-t g`` with the feasibility scaling ``t = min(1, beta / max ||G_j||)``."""
    from attnlens.convex._linalg import spectral_norm

    gnorm = max(spectral_norm(Gj) for Gj in G)
    return loss.dual_value(g, Y, 1.0 if gnorm <= beta else beta / gnorm)


def _extrapolated(gs: list, Gs: list) -> tuple[np.ndarray, list] | None:
    """Celer's combination of the last ``K + 1`` gradients (and adjoints); None if singular."""
    U = np.stack([(b - a).ravel() for a, b in zip(gs[:-1], gs[1:], strict=True)], axis=1)  # (n c, K)
    try:
        z = np.linalg.solve(U.T @ U, np.ones(U.shape[1]))
    except np.linalg.LinAlgError:
        return None
    if not np.isfinite(z).all() or abs(z.sum()) < 1e-300:
        return None
    c = z / z.sum()
    g = sum(ci * gi for ci, gi in zip(c, gs[1:], strict=True))
    G = [sum(ci * Gi[j] for ci, Gi in zip(c, Gs[1:], strict=True)) for j in range(len(Gs[0]))]
    return g, G


def trace(d: int, beta: float, tol: float, k: int) -> dict:
    from convex_gated_attention import _inputs

    from attnlens._validation import check_random_state
    from attnlens.convex.certificate import certificate
    from attnlens.convex.losses import get_loss
    from attnlens.convex.nuclear import fista_path
    from attnlens.convex.programs import build_program, sample_gates

    X, y = _inputs(d, "fashion_mnist")
    classes, yi = np.unique(y, return_inverse=True)
    Y = np.eye(len(classes))[yi]
    rng = check_random_state(SEED)  # as ConvexAttentionClassifier(random_state=SEED).fit
    gates = sample_gates("self_attention", N_GATES, X.shape[1], d, rng)
    program = build_program(X, "self_attention", "gated_relu", len(classes), gates=gates)
    loss = get_loss("squared")
    rec = _Recorder()
    start = time.perf_counter()
    res = fista_path(program, Y, beta, loss, tol=tol, max_iter=3000, rng=rng, checkpoint=rec)
    seconds = time.perf_counter() - start
    last = max(s.stage for s in rec.states)
    final = [s for s in rec.states if s.stage == last and s.inner is not None]
    rows, gs, Gs = [], [], []
    best, best_ex = -math.inf, -math.inf
    for s in final:  # every check of the final stage but the one that stopped it
        Zs = program.unflatten(s.inner.Z)
        c = certificate(program, Zs, Y, beta, loss)  # float64
        g = loss.gradient(program.forward(Zs), Y)
        gs, Gs = (gs + [g])[-(k + 1):], (Gs + [c.gradient])[-(k + 1):]
        best = max(best, c.dual)
        ex = _extrapolated(gs, Gs) if len(gs) == k + 1 else None
        ex_dual = _scaled_dual(loss, *ex, Y, beta) if ex is not None else -math.inf
        best_ex = max(best_ex, ex_dual, c.dual)
        rows.append({"iteration": s.used + s.inner.it, "primal": c.primal, "dual": c.dual,
                     "certificate": c.certificate, "grad_ratio": c.grad_ratio,
                     "best_dual_certificate": (c.primal - best) / abs(c.primal),
                     "extrapolated_certificate": (c.primal - best_ex) / abs(c.primal)})
    end = res.objective
    for r in rows:
        r["primal_excess"] = (r["primal"] - end) / abs(end)
    rows.append({"iteration": res.iterations, "primal": end, "dual": res.dual_objective,
                 "certificate": res.certificate, "grad_ratio": res.grad_ratio,
                 "primal_excess": 0.0})

    def first(key: str) -> int | None:
        return next((r["iteration"] for r in rows if r.get(key, math.inf) <= CHECK_TOL), None)

    at = next((r for r in rows if r["certificate"] <= CHECK_TOL), rows[-1])
    return {"d": d, "beta": beta, "tol": tol, "k": k, "iterations": res.iterations,
            "certificate": res.certificate, "status": str(res.status), "seconds": seconds,
            "stages": last + 1,
            "reaches_1e-3": {"certificate": first("certificate"),
                             "best_dual": first("best_dual_certificate"),
                             "extrapolated": first("extrapolated_certificate")},
            "primal_excess_at_1e-3": at["primal_excess"], "rows": rows}


def plot(cases: list, path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cases), figsize=(5.5 * len(cases), 4), squeeze=False)
    for ax, case in zip(axes[0], cases, strict=True):
        rows = [r for r in case["rows"] if "best_dual_certificate" in r]
        it = [r["iteration"] for r in rows]
        ax.semilogy(it, [r["certificate"] for r in rows], label="certificate (reported)")
        ax.semilogy(it, [r["extrapolated_certificate"] for r in rows], "--",
                    label="with Celer dual extrapolation")
        ax.semilogy(it, [max(r["primal_excess"], 1e-12) for r in rows], ":",
                    label="primal excess over the fit's end")
        ax.axhline(CHECK_TOL, color="grey", lw=0.8)
        ax.set(title=f"d = {case['d']}, beta = {case['beta']:g}", xlabel="FISTA iteration",
               ylabel="relative gap / excess")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    d = int(option("d", "16"))
    tol = float(option("tol", "1e-4"))
    k = int(option("k", "5"))
    betas = [float(b) for b in option("betas", "0.01,0.03").split(",")]
    cases = []
    for beta in betas:
        case = trace(d, beta, tol, k)
        cases.append(case)
        print(f"d={d} beta={beta:g}: {case['iterations']} iterations to {case['certificate']:.1e}; "
              f"1e-3 reached at {case['reaches_1e-3']}; primal excess there "
              f"{case['primal_excess_at_1e-3']:.1e}", flush=True)
    plot(cases, RESULTS / f"{NAME}.png")
    write_result(NAME, {"dataset": "fashion_mnist (--full, seed 0 training images)",
                        "seed": SEED, "gates": N_GATES, "loss": "squared", "cases": cases})


if __name__ == "__main__":
    main()
