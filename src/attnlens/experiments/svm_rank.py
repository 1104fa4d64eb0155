"""Experiment ``rank``: rank of ``W^mm`` (Frobenius Att-SVM) vs ``W^mm_*`` (nuclear norm) for
the globally optimal selection, over n, T in {5, 10, 15} and d in {1, 2, 3, 4, 5, 10, 15, 20}.

Tarzanagh, Li, Thrampoulidis, Oymak (arXiv 2308.16898): ``W^mm_*`` is low rank, ``W^mm``
tends to full rank. Infeasible instances (the selection cannot be separated, typical when
n(T-1) is large against d^2) are counted and reported as such, never plotted as a rank (the
reference code reads cvxpy's ``None`` as rank 1). Score ``x_t^T W z``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from attnlens.experiments import register
from attnlens.experiments.svm_common import sweep
from attnlens.report import RunFolder, markdown_table
from attnlens.svm.attsvm import RANK_RTOL
from attnlens.svm.dynamics import ProblemBatch, numerical_rank
from attnlens.svm.trackers import svm_references


def _unit(n: int, T: int, d: int, seeds: int, rtol: float) -> dict[str, Any]:
    batch = ProblemBatch.random(range(seeds), n, T, d)
    sel = batch.token_scores.argmax(-1)
    W_mm, feasible, _, _ = svm_references(batch, sel)
    out: dict[str, Any] = {"n": n, "T": T, "d": d, "seeds": seeds}
    for norm in ("fro", "nuc"):
        ok = feasible[norm]
        ranks = numerical_rank(W_mm[norm][ok], rtol) if ok.any() else np.array([])
        out[f"rank_{norm}"] = ranks.tolist()
        out[f"infeasible_{norm}"] = int((~ok).sum())
    return out


@register("svm", "rank")
def run(
    out: str | Path,
    *,
    seeds: int = 20,
    overwrite: bool = False,
    nTs: tuple[int, ...] = (5, 10, 15),
    ds: tuple[int, ...] = (1, 2, 3, 4, 5, 10, 15, 20),
    rtol: float = RANK_RTOL,
    progress: bool = True,
) -> dict[str, Any]:
    """Mean numerical rank (singular values above ``rtol * sigma_max``) of both SVMs."""
    import matplotlib.pyplot as plt

    nTs, ds = [int(x) for x in nTs], [int(x) for x in ds]
    config = dict(experiment="rank", seeds=seeds, nTs=nTs, ds=ds, rtol=rtol)
    run_ = RunFolder(out, config, overwrite=overwrite)
    units = [(f"n={n},T={T},d={d}", partial(_unit, n, T, d, seeds, rtol))
             for n in nTs for T in nTs for d in ds]
    done = sweep(run_, units, "rank", progress)
    rows = []
    for u in done.values():
        rows.append({
            "n": u["n"], "T": u["T"], "d": u["d"], "seeds": u["seeds"],
            "infeasible": u["infeasible_fro"],
            "mean_rank_Wmm": float(np.mean(u["rank_fro"])) if u["rank_fro"] else None,
            "mean_rank_Wmm_nuc": float(np.mean(u["rank_nuc"])) if u["rank_nuc"] else None,
        })
    run_.write_table(rows, "rank")
    fig, axes = plt.subplots(len(nTs), len(nTs), figsize=(3 * len(nTs), 2.6 * len(nTs)),
                             sharex=True, sharey=True, squeeze=False)
    fig.suptitle("rank of the SVM solution (lines, left axis); infeasible instances (bars, "
                 "right axis) are not plotted as a rank", fontsize=9)
    for a, n in enumerate(nTs):
        for b, T in enumerate(nTs):
            ax = axes[a, b]
            r = [x for x in rows if x["n"] == n and x["T"] == T]
            feas = [x for x in r if x["mean_rank_Wmm"] is not None]
            ax.plot([x["d"] for x in feas], [x["mean_rank_Wmm"] for x in feas], "o-",
                    label=r"$W^{mm}$")
            ax.plot([x["d"] for x in feas], [x["mean_rank_Wmm_nuc"] for x in feas], "s-",
                    label=r"$W^{mm}_\star$")
            ax.plot(ds, ds, ":", c="gray", lw=0.8, label="d")
            ax2 = ax.twinx()
            ax2.bar([x["d"] for x in r], [x["infeasible"] / x["seeds"] for x in r], width=0.8,
                    color="C3", alpha=0.3, label="infeasible fraction")
            ax2.set_ylim(0, 1)
            ax2.tick_params(labelsize=7, colors="C3")
            if b == 0 and a == 0:
                ax2.legend(fontsize=7, loc="center right")
            ax.set_title(f"n={n}, T={T}", fontsize=9)
            if a == len(nTs) - 1:
                ax.set_xlabel("d")
            if b == 0:
                ax.set_ylabel("mean rank")
    axes[0, 0].legend(fontsize=7)
    run_.save_figure(fig, "rank", dpi=100)
    metrics = {"grid": rows, "rtol": rtol,
               "infeasible_total": int(sum(x["infeasible"] for x in rows)),
               "instances_total": int(sum(x["seeds"] for x in rows))}
    run_.write_metrics(metrics)
    run_.write_markdown(markdown_table(rows))
    return metrics
