"""Experiment ``nuclear-bias``: W is biased towards the Frobenius Att-SVM, (K, Q) towards the
nuclear-norm Att-SVM; each trajectory is correlated with both solutions.

Tarzanagh, Li, Thrampoulidis, Oymak (arXiv 2308.16898) report ~0.99 with the own SVM and
~0.86 with the other one (n=6, T=8, d=10). Score ``x_t^T W z``, ``W = K Q^T``. The official
figure comes from the same notebook as ``local-convergence`` (``local_converge.ipynb``, runs
0-99 with seed = run); ``data="official"`` uses its data generator (see
:mod:`attnlens.experiments.svm_local_convergence`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from attnlens.experiments import register
from attnlens.experiments.svm_common import band, summary
from attnlens.experiments.svm_local_convergence import collect, sweep_convergence
from attnlens.report import markdown_table

PAPER = {"W_fro": 0.99, "W_nuc": 0.86, "KQ_nuc": 0.99, "KQ_fro": 0.86}


@register("svm", "nuclear-bias")
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
    """2x2 table: {W, (K,Q)} x {W^mm, W^mm_*} mean final correlations."""
    import matplotlib.pyplot as plt

    run_, units = sweep_convergence(
        out, "nuclear-bias", seeds=seeds, overwrite=overwrite, steps=steps, n=n, T=T, d=d,
        lr=lr, ridge=ridge, init_scale=init_scale, chunk=chunk, log_every=log_every,
        progress=progress, data=data)
    steps_axis = np.asarray(next(iter(units.values()))["steps"])
    table = {
        "W_fro": summary(collect(units, "W", "corr_fro")),
        "W_nuc": summary(collect(units, "W", "corr_nuc")),
        "KQ_fro": summary(collect(units, "KQ", "corr_fro")),
        "KQ_nuc": summary(collect(units, "KQ", "corr_nuc")),
    }
    rank_W = collect(units, "W", "rank")
    rank_KQ = collect(units, "KQ", "rank")
    metrics = {**table, "mean_rank_W": float(rank_W.mean()), "mean_rank_KQ": float(rank_KQ.mean()),
               "data": data, "paper": PAPER}
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    L = len(steps_axis)
    for ax, param, title in ((axes[0], "W", "W parameterization"), (axes[1], "KQ", "(K,Q)")):
        band(ax, steps_axis, collect(units, param, "path_fro").reshape(-1, L), r"vs $W^{mm}$")
        band(ax, steps_axis, collect(units, param, "path_nuc").reshape(-1, L),
             r"vs $W^{mm}_\star$")
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.legend(loc="lower right")
    axes[0].set_ylabel("correlation")
    run_.save_figure(fig, "nuclear_bias", dpi=100)
    run_.write_metrics(metrics)
    rows = [{"trajectory": k.split("_")[0], "svm": "W^mm" if k.endswith("fro") else "W^mm_*",
             "measured": v["mean"], "paper": PAPER[k]} for k, v in table.items()]
    run_.write_markdown(markdown_table(rows))
    return metrics
