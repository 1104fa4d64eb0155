"""Experiment ``joint-training``: the head v and the attention weights W trained together by
normalized GD (each block normalized separately), logistic loss.

Tarzanagh, Li, Zhang, Oymak, "Max-Margin Token Selection in Attention Mechanism" (NeurIPS
2023, arXiv 2306.13596), joint (v, p) analysis: v converges in direction to the max-margin
classifier of the selected tokens, ``v^mm = argmin ||v|| s.t. Y_i v^T x_{i,a_i} >= 1``, and W to
the Att-SVM ``W^mm`` of the selection ``a``. Score ``x_t^T W z``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from attnlens.experiments import register
from attnlens.experiments.svm_common import band, chunk_key, seed_chunks, summary, sweep
from attnlens.report import RunFolder, markdown_table
from attnlens.svm.dynamics import ProblemBatch, train_attention
from attnlens.svm.trackers import track_svm


def head_svm(X_sel: np.ndarray, Y: np.ndarray) -> np.ndarray | None:
    """Hard-margin SVM without bias on the selected tokens (n, d); None when not separable."""
    import cvxpy as cp

    v = cp.Variable(X_sel.shape[1])
    prob = cp.Problem(cp.Minimize(cp.sum_squares(v)), [cp.multiply(Y, X_sel @ v) >= 1])
    prob.solve(solver=cp.CLARABEL)
    if prob.status not in ("optimal", "optimal_inaccurate") or v.value is None:
        return None
    return np.asarray(v.value)


def _unit(seeds: list[int], n: int, T: int, d: int, steps: int, lr: float,
          init_scale: float, log_every: int) -> dict[str, Any]:
    batch = ProblemBatch.random(seeds, n, T, d)
    traj = train_attention(batch, "W", steps=steps, lr=lr, train_v=True, init_scale=init_scale,
                           random_state=seeds[0], log_every=log_every)
    track = track_svm(batch, traj, norms=("fro",))
    corr_v, v_glob = [], []
    for s in range(len(seeds)):
        sel = traj.selection[s]
        X_sel = batch.X[s, np.arange(n), sel]
        v_mm = head_svm(X_sel, batch.Y[s])
        vf = traj.v_final[s]
        corr_v.append(float(vf @ v_mm / np.linalg.norm(vf) / np.linalg.norm(v_mm))
                      if v_mm is not None else float("nan"))
        gamma = batch.Y[s][:, None] * (batch.X[s] @ vf)
        v_glob.append(bool(np.all(gamma.argmax(-1) == sel)))
    return {
        "seeds": seeds,
        "corr_W_Wmm": track.final["fro"].tolist(),
        "path_W_Wmm": track.corr["fro"].tolist(),
        "corr_v_vmm": corr_v,
        "selection_optimal_for_final_v": v_glob,
        "selection_optimal_for_initial_v": track.globally_optimal.tolist(),
        "loss_final": traj.loss[:, -1].tolist(),
        "steps": traj.steps.tolist(),
    }


@register("svm", "joint-training")
def run(
    out: str | Path,
    *,
    seeds: int = 100,
    overwrite: bool = False,
    steps: int = 2000,
    n: int = 6,
    T: int = 8,
    d: int = 10,
    lr: float = 0.1,
    init_scale: float = 0.1,
    chunk: int = 50,
    log_every: int = 20,
    progress: bool = True,
) -> dict[str, Any]:
    """Directions of v and W after joint training vs v^mm and W^mm."""
    import matplotlib.pyplot as plt

    config = dict(experiment="joint-training", seeds=seeds, steps=steps, n=n, T=T, d=d, lr=lr,
                  init_scale=init_scale, chunk=chunk, log_every=log_every)
    run_ = RunFolder(out, config, overwrite=overwrite)
    units = [(chunk_key(c), partial(_unit, c, n, T, d, steps, lr, init_scale, log_every))
             for c in seed_chunks(seeds, chunk)]
    done = sweep(run_, units, "joint-training", progress)

    def cat(field: str) -> np.ndarray:
        return np.concatenate([np.asarray(u[field], dtype=float) for u in done.values()])

    steps_axis = np.asarray(next(iter(done.values()))["steps"])
    metrics = {
        "corr_W_Wmm": summary(cat("corr_W_Wmm")),
        "corr_v_vmm": summary(cat("corr_v_vmm")),
        "frac_selection_optimal_for_final_v": float(cat("selection_optimal_for_final_v").mean()),
        "frac_selection_optimal_for_initial_v":
            float(cat("selection_optimal_for_initial_v").mean()),
        "mean_final_loss": float(cat("loss_final").mean()),
    }
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    band(axes[0], steps_axis, cat("path_W_Wmm").reshape(-1, len(steps_axis)), r"W vs $W^{mm}$")
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("correlation")
    axes[0].legend(loc="lower right")
    axes[1].hist([cat("corr_W_Wmm"), cat("corr_v_vmm")], bins=20,
                 label=[r"W vs $W^{mm}$", r"v vs $v^{mm}$"])
    axes[1].set_xlabel("final correlation")
    axes[1].legend()
    run_.save_figure(fig, "joint_training", dpi=100)
    run_.write_metrics(metrics)
    run_.write_markdown(markdown_table([
        {"quantity": "corr(W, W^mm)", "measured": metrics["corr_W_Wmm"]["mean"]},
        {"quantity": "corr(v, v^mm)", "measured": metrics["corr_v_vmm"]["mean"]},
    ]))
    return metrics
