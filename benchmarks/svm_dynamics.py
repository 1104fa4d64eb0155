"""Benchmark: the `local-convergence` experiment (100 seeds, 2000 normalized-GD steps, W and
(K, Q), n=6, T=8, d=10) on the official TF-as-SVM data (seed = run, runs 0-99), batched over
seeds, next to a faithful port of the official notebook's loop
(``attnlens.svm.reference_train``: per seed, torch autograd in float64, K and Q gradients each
divided by its own norm + eps, ridge 2.22e-16), run in the same process on all 100 seeds from
the same initializations. Also: agreement of the two paths step by step (float64, and the
reference loop in float32 on a subset), the correlation of each path with the Att-SVM
solutions of its own selection (the nuclear-bias 2x2), and the issue's check on this
benchmark's former data.

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
from attnlens.svm.dynamics import (  # noqa: E402
    ProblemBatch,
    correlation,
    reference_train,
    svm_references,
    train_attention,
)
from attnlens.svm.dynamics.reference_loop import OFFICIAL_EPS  # noqa: E402

N, T, D, STEPS, LR = 6, 8, 10, 2000, 0.1
SEEDS = 100
F32_SEEDS = 20  # the float32 reference loop: a subset (it only shows where float32 breaks)
INIT_SEED_W, INIT_SEED_KQ = 0, 1  # named seeds of the shared initializations
INIT_STD = 0.1
LOG_EVERY = 10
CHECK_STEPS = (0, 250, 500, 750, 1000, 1250, 1500, 1750, 2000)


def cpu_timed(fn):
    """(result, wall seconds, process CPU seconds): CPU time is less inflated by other jobs."""
    cpu = time.process_time()
    out, wall = timed(fn)
    return out, wall, time.process_time() - cpu


def agreement(A: np.ndarray, B: np.ndarray, steps: np.ndarray) -> dict[str, dict[str, float]]:
    """corr(A[s, k], B[s, k]) at CHECK_STEPS: min and median over seeds."""
    out = {}
    for k in CHECK_STEPS:
        i = int(np.flatnonzero(steps == k)[0])
        c = np.array([correlation(A[s, i], B[s, i]) for s in range(A.shape[0])])
        out[str(k)] = {"min": float(c.min()), "median": float(np.median(c))}
    return out


def first_departure(A: np.ndarray, B: np.ndarray, steps: np.ndarray, tol: float) -> dict:
    """Per seed the first logged step where corr(A, B) < 1 - tol; median and min over seeds."""
    firsts = []
    for s in range(A.shape[0]):
        c = np.array([correlation(A[s, i], B[s, i]) for i in range(len(steps))])
        bad = np.flatnonzero(c < 1 - tol)
        firsts.append(int(steps[bad[0]]) if bad.size else int(steps[-1]) + 1)
    return {"median": float(np.median(firsts)), "min": int(min(firsts)),
            "never_within_2000_steps": int(sum(f > steps[-1] for f in firsts))}


def own_svm_corr(batch: ProblemBatch, W: np.ndarray, selection: np.ndarray) -> dict:
    """corr of W with W^mm and W^mm_* of ``selection`` (the fast certified solvers)."""
    W_mm, feasible, _, _ = svm_references(batch, selection)
    out = {}
    for norm in ("fro", "nuc"):
        c = np.array([correlation(W[s], W_mm[norm][s]) if feasible[norm][s] else np.nan
                      for s in range(W.shape[0])])
        ok = c[np.isfinite(c)]
        out[norm] = {"mean": float(ok.mean()), "min": float(ok.min()),
                     "median": float(np.median(ok)), "frac_ge_0.99": float(np.mean(ok >= 0.99)),
                     "infeasible": int(np.sum(~np.isfinite(c)))}
    return out


def main() -> None:
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    # 1) the experiment as users run it, on the official data
    with tempfile.TemporaryDirectory() as tmp:
        metrics, t_exp = timed(lambda: local_convergence(
            Path(tmp) / "lc", seeds=SEEDS, steps=STEPS, overwrite=True, progress=False,
            data="official"))
    # 2) training only, same data and initializations, batched vs the official-style loop
    batch = ProblemBatch.official(range(SEEDS), N, T, D)
    W0 = INIT_STD * np.random.default_rng(INIT_SEED_W).standard_normal((SEEDS, D, D))
    rng = np.random.default_rng(INIT_SEED_KQ)  # the draws train_attention makes for (K, Q)
    K0 = INIT_STD * rng.standard_normal((SEEDS, D, D))
    Q0 = INIT_STD * rng.standard_normal((SEEDS, D, D))
    trW, t_att_W, c_att_W = cpu_timed(lambda: train_attention(
        batch, "W", steps=STEPS, lr=LR, W0=W0, log_every=LOG_EVERY))
    trKQ, t_att_KQ, c_att_KQ = cpu_timed(lambda: train_attention(
        batch, "KQ", steps=STEPS, lr=LR, ridge=OFFICIAL_EPS, init_scale=INIT_STD,
        random_state=INIT_SEED_KQ, log_every=LOG_EVERY))
    same_init_KQ = float(np.abs(trKQ.W[:, 0] - K0 @ Q0.transpose(0, 2, 1)).max())
    refW, t_ref_W, c_ref_W = cpu_timed(lambda: reference_train(
        batch, "W", steps=STEPS, lr=LR, W0=W0, log_every=LOG_EVERY))
    refKQ, t_ref_KQ, c_ref_KQ = cpu_timed(lambda: reference_train(
        batch, "KQ", steps=STEPS, lr=LR, K0=K0, Q0=Q0, log_every=LOG_EVERY))
    load_after = os.getloadavg()
    sub = list(range(F32_SEEDS))
    sub_batch = ProblemBatch.official(sub, N, T, D)
    refW32 = reference_train(sub_batch, "W", steps=STEPS, lr=LR, W0=W0[sub], dtype="float32",
                             log_every=LOG_EVERY)
    refKQ32 = reference_train(sub_batch, "KQ", steps=STEPS, lr=LR, K0=K0[sub], Q0=Q0[sub],
                              dtype="float32", log_every=LOG_EVERY)
    steps = trW.steps
    t_att, t_ref = t_att_W + t_att_KQ, t_ref_W + t_ref_KQ
    # 3) each path against the SVMs of its own selection (the notebook: W^mm and W^mm_*)
    corr = {
        "attnlens_W": own_svm_corr(batch, trW.W_final, trW.selection),
        "attnlens_KQ": own_svm_corr(batch, trKQ.W_final, trKQ.selection),
        "reference_W_float64": own_svm_corr(batch, refW.W_final, refW.selection),
        "reference_KQ_float64": own_svm_corr(batch, refKQ.W_final, refKQ.selection),
        f"reference_W_float32_first_{F32_SEEDS}_seeds":
            own_svm_corr(sub_batch, refW32.W_final, refW32.selection),
        f"reference_KQ_float32_first_{F32_SEEDS}_seeds":
            own_svm_corr(sub_batch, refKQ32.W_final, refKQ32.selection),
    }
    # 4) the check: this benchmark's former data (ProblemBatch.random seeds 0-4, W0 from
    #    default_rng(0)); the issue reports 0.9975 / 0.9960 on seeds 0 / 4 for the official loop
    old = ProblemBatch.random(range(5), N, T, D)
    W0_old = INIT_STD * np.random.default_rng(0).standard_normal((5, D, D))
    ref_old = reference_train(old, "W", steps=STEPS, lr=LR, W0=W0_old, log_every=STEPS)
    old_corr = own_svm_corr(old, ref_old.W_final, ref_old.selection)
    W_mm_old, _, _, _ = svm_references(old, ref_old.selection, norms=("fro",))
    old_per_seed = [float(correlation(ref_old.W_final[s], W_mm_old["fro"][s])) for s in range(5)]

    payload = {
        "setting": {"n": N, "T": T, "d": D, "steps": STEPS, "lr": LR, "seeds": SEEDS,
                    "data": "official TF-as-SVM generator, seed = run, runs 0-99 (bit for bit)",
                    "ridge_KQ": OFFICIAL_EPS, "init": f"Gaussian std {INIT_STD}, W from "
                    f"default_rng({INIT_SEED_W}), (K, Q) from default_rng({INIT_SEED_KQ}); the "
                    "same initializations for both paths (the notebook leaves its init unseeded)",
                    "log_every": LOG_EVERY},
        "note": (f"2-core machine shared with other sessions; 1-min load average "
                 f"{load_before[0]:.2f} before and {load_after[0]:.2f} after the timed part "
                 "(other jobs inflate the seconds of both paths). torch and BLAS on 1 thread."),
        "experiment_seconds_100_seeds": t_exp,
        "target_seconds": 120.0,
        "meets_target": bool(t_exp < 120.0),
        "experiment_breakdown": {"train_batched_W_and_KQ": metrics["seconds_train"],
                                 "svm_solves_2_per_run": metrics["seconds_svm"]},
        "experiment_results": {"mean_corr_W_Wmm": metrics["corr_W_Wmm"]["mean"],
                               "mean_corr_KQ_Wmm_nuc": metrics["corr_KQ_Wmm_nuc"]["mean"],
                               "paper": 0.99},
        "training_only": {
            "attnlens_batched_seconds": {"W": t_att_W, "KQ": t_att_KQ, "total": t_att},
            "reference_loop_seconds_MEASURED_100_seeds": {"W": t_ref_W, "KQ": t_ref_KQ,
                                                          "total": t_ref},
            "speedup_training_100_seeds": t_ref / t_att,
            "cpu_seconds": {"attnlens": c_att_W + c_att_KQ, "reference_loop": c_ref_W + c_ref_KQ},
            "speedup_training_100_seeds_cpu_time": (c_ref_W + c_ref_KQ) / (c_att_W + c_att_KQ),
            "same_initialization_max_abs_diff_KQ": same_init_KQ,
            "reference_loop": "attnlens.svm.reference_train: the notebook's loop, float64, "
            "autograd, K and Q gradients each normalized by its own norm + eps, SGD lr 0.1; "
            "W logged every LOG_EVERY steps as attnlens's (the notebook copies W every step)",
        },
        "agreement_reference_vs_attnlens_float64": {
            "W": agreement(refW.W, trW.W, steps),
            "KQ": agreement(refKQ.W, trKQ.W, steps),
            "first_step_below_1e-6_W": first_departure(refW.W, trW.W, steps, 1e-6),
            "first_step_below_1e-4_W": first_departure(refW.W, trW.W, steps, 1e-4),
            "same_selection_W": float(np.mean(np.all(refW.selection == trW.selection, 1))),
            "same_selection_KQ": float(np.mean(np.all(refKQ.selection == trKQ.selection, 1))),
        },
        f"agreement_reference_float32_vs_attnlens_first_{F32_SEEDS}_seeds": {
            "W": agreement(refW32.W, trW.W[sub], steps),
            "KQ": agreement(refKQ32.W, trKQ.W[sub], steps),
            "first_step_below_1e-4_W": first_departure(refW32.W, trW.W[sub], steps, 1e-4),
        },
        "corr_with_own_svm": corr,
        "issue_check_former_benchmark_data": {
            "data": "ProblemBatch.random(seeds 0-4), W0 = 0.1 * default_rng(0) normal",
            "reference_loop_corr_W_Wmm_per_seed": old_per_seed,
            "issue_reports_seed0_seed4": [0.9975, 0.9960],
            "summary": old_corr["fro"],
        },
    }
    path = write_result("svm_dynamics", payload)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
        ax = axes[0]
        labels = ["attnlens batched", "official-style loop"]
        vals = [t_att, t_ref]
        ax.bar(labels, vals, color=["C0", "C1"])
        ax.set_ylabel("seconds, training 100 seeds (W + KQ)")
        for i, val in enumerate(vals):
            ax.text(i, val, f"{val:.1f}s", ha="center", va="bottom")
        ax.set_title(f"both measured, {t_ref / t_att:.0f}x")
        ax = axes[1]
        for A, B, lab, st in ((refW.W, trW.W, "W float64", "-"),
                              (refKQ.W, trKQ.W, "(K,Q) float64", "-"),
                              (refW32.W, trW.W[sub], "W float32", "--"),
                              (refKQ32.W, trKQ.W[sub], "(K,Q) float32", "--")):
            med = [np.median([correlation(A[s, i], B[s, i]) for s in range(A.shape[0])])
                   for i in range(len(steps))]
            ax.plot(steps, med, st, label=lab)
        ax.set_xlabel("step")
        ax.set_ylabel("median corr(official-style, attnlens)")
        ax.set_ylim(0, 1.02)
        ax.legend(loc="lower left", fontsize=8)
        fig.tight_layout()
        fig.savefig(RESULTS / "svm_dynamics.png", dpi=100)
    except Exception as exc:  # the JSON is the result; the plot is a convenience
        print(f"plot skipped: {exc}")
    print(path)
    for key in ("experiment_seconds_100_seeds", "experiment_results", "training_only",
                "agreement_reference_vs_attnlens_float64", "corr_with_own_svm",
                "issue_check_former_benchmark_data"):
        print(key, payload[key])


if __name__ == "__main__":
    main()
