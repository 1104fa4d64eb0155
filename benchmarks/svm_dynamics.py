"""Benchmark: the `local-convergence` experiment (100 seeds, 2000 normalized-GD steps, W and
(K, Q), n=6, T=8, d=10) batched over seeds, next to a naive per-seed torch-autograd loop (the
reference implementations' style), run in the same process on a subset of seeds and
extrapolated (labelled as such). Agreement: final directions of the two paths from the same
initialization. Target: the whole experiment in under 2 minutes on 2 cores.

Run: ``python benchmarks/svm_dynamics.py`` -> ``benchmarks/results/svm_dynamics.json`` (+ PNG).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, timed, write_result  # noqa: E402

from attnlens.experiments.svm_local_convergence import run as local_convergence  # noqa: E402
from attnlens.svm.dynamics import ProblemBatch, train_attention  # noqa: E402
from attnlens.svm.trackers import SOLVER_COUNTS, correlation, svm_solution  # noqa: E402

N, T, D, STEPS, LR, RIDGE = 6, 8, 10, 2000, 0.1, 1e-16
SEEDS = 100
NAIVE_SEEDS = 5


def naive_train(X, Y, v, Z, param, init, steps=STEPS, lr=LR, ridge=RIDGE):
    """One seed, torch autograd, one step at a time (how the papers' code trains)."""
    X, Y, v, Z = (torch.tensor(a) for a in (X, Y, v, Z))
    params = [torch.tensor(a, requires_grad=True) for a in init]
    for _ in range(steps):
        W = params[0] if param == "W" else params[0] @ params[1].T
        p = torch.softmax(torch.einsum("ntd,de,ne->nt", X, W, Z), dim=-1)
        f = torch.einsum("nt,ntd,d->n", p, X, v)
        loss = torch.nn.functional.softplus(-Y * f).mean()
        if param == "KQ":
            loss = loss + ridge * sum((q**2).sum() for q in params)
        grads = torch.autograd.grad(loss, params)
        gn = torch.sqrt(sum((g**2).sum() for g in grads))
        with torch.no_grad():
            for q, g in zip(params, grads, strict=True):
                q -= lr * g / gn if gn > 0 else 0 * g
    with torch.no_grad():
        W = params[0] if param == "W" else params[0] @ params[1].T
    return W.detach().numpy()


def main() -> None:
    torch.set_num_threads(1)
    # 1) the experiment as users run it: train both parameterizations + solve 2 SVMs per run
    with tempfile.TemporaryDirectory() as tmp:
        metrics, t_exp = timed(lambda: local_convergence(
            Path(tmp) / "lc", seeds=SEEDS, steps=STEPS, overwrite=True, progress=False))
    # 2) training only, batched vs naive per-seed loop, same initializations
    batch = ProblemBatch.random(range(NAIVE_SEEDS), N, T, D)
    rng = np.random.default_rng(0)
    W0 = 0.1 * rng.standard_normal((NAIVE_SEEDS, D, D))
    trW, t_batch_W = timed(lambda: train_attention(batch, "W", steps=STEPS, W0=W0))
    trKQ, t_batch_KQ = timed(lambda: train_attention(batch, "KQ", steps=STEPS, ridge=RIDGE,
                                                    random_state=1))
    rngKQ = np.random.default_rng(1)
    K0 = 0.1 * rngKQ.standard_normal((NAIVE_SEEDS, D, D))
    Q0 = 0.1 * rngKQ.standard_normal((NAIVE_SEEDS, D, D))
    agree_W, agree_KQ, naive_vs_mm, batched_vs_mm = [], [], [], []
    start = time.perf_counter()
    for s in range(NAIVE_SEEDS):
        Wn = naive_train(batch.X[s], batch.Y[s], batch.v[s], batch.Z[s], "W", [W0[s]])
        agree_W.append(float(correlation(Wn, trW.W_final[s])))
        W_mm = svm_solution(batch.X[s], batch.Z[s], trW.selection[s], "fro", method="cvxpy")
        naive_vs_mm.append(float(correlation(Wn, W_mm)))
        batched_vs_mm.append(float(correlation(trW.W_final[s], W_mm)))
    t_naive_W = time.perf_counter() - start
    start = time.perf_counter()
    for s in range(NAIVE_SEEDS):
        Wn = naive_train(batch.X[s], batch.Y[s], batch.v[s], batch.Z[s], "KQ", [K0[s], Q0[s]])
        agree_KQ.append(float(correlation(Wn, trKQ.W_final[s])))
    t_naive_KQ = time.perf_counter() - start
    per_seed_naive = (t_naive_W + t_naive_KQ) / NAIVE_SEEDS
    train_batched_100 = metrics["seconds_train"]
    payload = {
        "setting": {"n": N, "T": T, "d": D, "steps": STEPS, "lr": LR, "ridge_KQ": RIDGE,
                    "seeds": SEEDS},
        "note": f"2-core machine; load average {os.getloadavg()} when the result was written "
                "(other jobs inflate the seconds).",
        "experiment_seconds_100_seeds": t_exp,
        "target_seconds": 120.0,
        "meets_target": bool(t_exp < 120.0),
        "experiment_breakdown": {"train_batched_W_and_KQ": train_batched_100,
                                 "svm_solves_2_per_run": metrics["seconds_svm"],
                                 "svm_solutions_by_solver": dict(SOLVER_COUNTS),
                                 "svm_solver_note": "fast = attnlens.svm.attsvm.att_svm; "
                                 "cvxpy = Clarabel reference, used where the fast solver was "
                                 "missing or failed at run time"},
        "results": {"mean_corr_W_Wmm": metrics["corr_W_Wmm"]["mean"],
                    "mean_corr_KQ_Wmm_nuc": metrics["corr_KQ_Wmm_nuc"]["mean"],
                    "paper": 0.99},
        "training_only": {
            "batched_seconds_per_seed": (t_batch_W + t_batch_KQ) / NAIVE_SEEDS,
            "naive_torch_loop_seconds_per_seed": per_seed_naive,
            "naive_measured_seeds": NAIVE_SEEDS,
            "naive_100_seeds_seconds_EXTRAPOLATED": per_seed_naive * SEEDS,
            "batched_100_seeds_seconds_measured": train_batched_100,
            "speedup_training_100_seeds": per_seed_naive * SEEDS / train_batched_100,
            "agreement_corr_naive_vs_batched_W": agree_W,
            "agreement_corr_naive_vs_batched_KQ": agree_KQ,
            "corr_with_Wmm_naive_W": naive_vs_mm,
            "corr_with_Wmm_batched_W": batched_vs_mm,
            "agreement_note": "float64 autograd underflows once the softmax saturates (the "
            "gradient becomes exactly 0 or rounding noise), so the naive W runs stall short of "
            "W^mm; the batched solver's gradient is formed relative to the attended token and "
            "keeps converging. Compare corr_with_Wmm_* above.",
        },
    }
    path = write_result("svm_dynamics", payload)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3))
        labels = ["batched (measured)", "naive loop (extrapolated)"]
        vals = [train_batched_100, per_seed_naive * SEEDS]
        ax.bar(labels, vals, color=["C0", "C1"])
        ax.set_ylabel("seconds, training 100 seeds (W + KQ)")
        for i, val in enumerate(vals):
            ax.text(i, val, f"{val:.1f}s", ha="center", va="bottom")
        fig.tight_layout()
        fig.savefig(RESULTS / "svm_dynamics.png", dpi=100)
    except Exception as exc:  # the JSON is the result; the plot is a convenience
        print(f"plot skipped: {exc}")
    print(path)
    print({k: payload[k] for k in ("experiment_seconds_100_seeds", "results")})
    print(payload["training_only"])


if __name__ == "__main__":
    main()
