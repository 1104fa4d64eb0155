"""Experiment ``local-convergence``: normalized GD on W and on (K, Q) converges in direction to
the Att-SVM solution of the selection it converges to (``W^mm`` for W, ``W^mm_*`` for (K, Q)).

Setting of Tarzanagh, Li, Thrampoulidis, Oymak, "Transformers as Support Vector Machines"
(arXiv 2308.16898): n=6, T=8, d=10, unit-norm Gaussian tokens and queries, unit v, Y=+-1,
2000 normalized-GD steps with lr 0.1, logistic loss; score ``x_t^T W z`` with ``W = K Q^T``.
Reported: mean corr(W, W^mm) ~ 0.99 and corr((K,Q), W^mm_*) ~ 0.99 (own SVM), ~0.86 across.

``data="attnlens"`` draws the problems with :meth:`ProblemBatch.random` (numpy, seed = run);
``data="official"`` with the official notebook's generator (torch, seed = run, bit for bit the
data of ``local_converge.ipynb``'s runs 0-99: :func:`attnlens.svm.official_data.official_problem`).
The model initialization is Gaussian with std ``init_scale`` from ``random_state`` = the
chunk's first seed (the official notebook leaves it unseeded).
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from attnlens._validation import check_option
from attnlens.experiments import register
from attnlens.experiments.svm_common import band, chunk_key, seed_chunks, summary, sweep
from attnlens.report import RunFolder, markdown_table
from attnlens.svm.dynamics import ProblemBatch, train_attention
from attnlens.svm.trackers import track_svm

PAPER = {"W_vs_fro": 0.99, "KQ_vs_nuc": 0.99, "W_vs_nuc": 0.86}
DATA = ("attnlens", "official")


def problem_batch(seeds: list[int], n: int, T: int, d: int, data: str) -> ProblemBatch:
    """The problems of ``seeds``: attnlens's numpy generator or the official torch one."""
    check_option(data, "data", DATA)
    if data == "official":
        return ProblemBatch.official(seeds, n, T, d)
    return ProblemBatch.random(seeds, n, T, d)


def convergence_unit(
    seeds: list[int],
    *,
    n: int,
    T: int,
    d: int,
    steps: int,
    lr: float,
    ridge: float,
    init_scale: float,
    log_every: int,
    data: str = "attnlens",
) -> dict[str, Any]:
    """Train W and (K, Q) on the problems of ``seeds`` (batched) and correlate with both SVMs."""
    batch = problem_batch(seeds, n, T, d, data)
    out: dict[str, Any] = {"seeds": list(seeds)}
    for param in ("W", "KQ"):
        start = time.perf_counter()
        traj = train_attention(
            batch, param, steps=steps, lr=lr, normalized=True,
            ridge=ridge if param == "KQ" else None, init_scale=init_scale,
            log_every=log_every, random_state=seeds[0],
        )
        t_train = time.perf_counter() - start
        start = time.perf_counter()
        track = track_svm(batch, traj)
        t_svm = time.perf_counter() - start
        out[param] = {
            "corr_fro": track.final["fro"].tolist(),
            "corr_nuc": track.final["nuc"].tolist(),
            "path_fro": track.corr["fro"].tolist(),
            "path_nuc": track.corr["nuc"].tolist(),
            "feasible": track.feasible["fro"].tolist(),
            "global": track.globally_optimal.tolist(),
            "local": track.locally_optimal.tolist(),
            "prob_selected": traj.prob_selected[:, -1].tolist(),
            "norm": traj.norm[:, -1].tolist(),
            "rank": traj.rank[:, -1].tolist(),
            "seconds_train": t_train,
            "seconds_svm": t_svm,
        }
    out["steps"] = traj.steps.tolist()
    return out


def collect(units: dict[str, dict[str, Any]], param: str, field: str) -> np.ndarray:
    return np.concatenate([np.asarray(u[param][field], dtype=np.float64) for u in units.values()])


def sweep_convergence(
    out: str | Path, name: str, *, seeds: int, overwrite: bool, steps: int, n: int, T: int,
    d: int, lr: float, ridge: float, init_scale: float, chunk: int, log_every: int,
    progress: bool, data: str = "attnlens",
) -> tuple[RunFolder, dict[str, dict[str, Any]]]:
    check_option(data, "data", DATA)
    config = dict(experiment=name, seeds=seeds, steps=steps, n=n, T=T, d=d, lr=lr, ridge=ridge,
                  init_scale=init_scale, chunk=chunk, log_every=log_every)
    if data != "attnlens":  # runs stored before the option existed keep their config
        config["data"] = data
    run = RunFolder(out, config, overwrite=overwrite)
    units = [
        (chunk_key(c), partial(
            convergence_unit, c, n=n, T=T, d=d, steps=steps, lr=lr, ridge=ridge,
            init_scale=init_scale, log_every=log_every, data=data))
        for c in seed_chunks(seeds, chunk)
    ]
    return run, sweep(run, units, name, progress)


@register("svm", "local-convergence")
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
    ridge: float = 1e-16,
    init_scale: float = 0.1,
    chunk: int = 50,
    log_every: int = 20,
    progress: bool = True,
    data: str = "attnlens",
) -> dict[str, Any]:
    """Mean final correlation of W with W^mm and of (K, Q) with W^mm_* over ``seeds`` seeds
    (``data``: ``"attnlens"`` or ``"official"``, see the module docstring)."""
    import matplotlib.pyplot as plt

    run_, units = sweep_convergence(
        out, "local-convergence", seeds=seeds, overwrite=overwrite, steps=steps, n=n, T=T, d=d,
        lr=lr, ridge=ridge, init_scale=init_scale, chunk=chunk, log_every=log_every,
        progress=progress, data=data)
    steps_axis = np.asarray(next(iter(units.values()))["steps"])
    w_fro = collect(units, "W", "corr_fro")
    kq_nuc = collect(units, "KQ", "corr_nuc")
    metrics = {
        "corr_W_Wmm": summary(w_fro),
        "corr_KQ_Wmm_nuc": summary(kq_nuc),
        "frac_W_above_0.99": float(np.nanmean(w_fro >= 0.99)),
        "frac_KQ_above_0.99": float(np.nanmean(kq_nuc >= 0.99)),
        "infeasible_W": int(np.sum(~collect(units, "W", "feasible").astype(bool))),
        "infeasible_KQ": int(np.sum(~collect(units, "KQ", "feasible").astype(bool))),
        "frac_global_W": float(np.mean(collect(units, "W", "global"))),
        "frac_local_W": float(np.mean(collect(units, "W", "local"))),
        "mean_prob_selected_W": float(np.mean(collect(units, "W", "prob_selected"))),
        "mean_prob_selected_KQ": float(np.mean(collect(units, "KQ", "prob_selected"))),
        "seconds_train": float(sum(u[p]["seconds_train"] for u in units.values()
                                   for p in ("W", "KQ"))),
        "seconds_svm": float(sum(u[p]["seconds_svm"] for u in units.values()
                                 for p in ("W", "KQ"))),
        "data": data,
        "paper": {"corr_W_Wmm": PAPER["W_vs_fro"], "corr_KQ_Wmm_nuc": PAPER["KQ_vs_nuc"]},
    }
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    band(axes[0], steps_axis, collect(units, "W", "path_fro").reshape(-1, len(steps_axis)),
         r"W vs $W^{mm}$")
    band(axes[0], steps_axis, collect(units, "KQ", "path_nuc").reshape(-1, len(steps_axis)),
         r"(K,Q) vs $W^{mm}_\star$")
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("correlation")
    axes[0].set_ylim(0, 1.02)
    axes[0].legend(loc="lower right")
    axes[0].set_title(f"n={n}, T={T}, d={d}, {seeds} seeds, {data} data")
    axes[1].hist([w_fro, kq_nuc], bins=20, label=["W", "(K,Q)"])
    axes[1].set_xlabel("final correlation with own SVM")
    axes[1].legend()
    run_.save_figure(fig, "correlation", dpi=100)
    run_.write_metrics(metrics)
    rows = [
        {"quantity": "corr(W, W^mm)", "measured": metrics["corr_W_Wmm"]["mean"],
         "paper": PAPER["W_vs_fro"]},
        {"quantity": "corr((K,Q), W^mm_*)", "measured": metrics["corr_KQ_Wmm_nuc"]["mean"],
         "paper": PAPER["KQ_vs_nuc"]},
    ]
    run_.write_markdown(markdown_table(rows))
    return metrics
