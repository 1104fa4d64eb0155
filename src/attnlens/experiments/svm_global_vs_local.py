"""Experiment ``global-vs-local``: how often normalized GD on W converges to the globally
optimal token selection (``a_i = argmax_t Y_i v^T x_it``) rather than a merely locally optimal
one, as the dimension d and the number of sequences n vary (T fixed).

Theory (Tarzanagh et al., arXiv 2306.13596 and 2308.16898): GD converges to the Att-SVM of a
locally optimal selection; over-parameterization (d large relative to n) makes the global one
typical. Neither paper's code contains this sweep. Score ``x_t^T W z``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from attnlens.experiments import register
from attnlens.experiments.svm_common import sweep
from attnlens.report import RunFolder, markdown_table
from attnlens.svm.dynamics import ProblemBatch, train_attention
from attnlens.svm.trackers import track_svm


def _unit(n: int, d: int, T: int, seeds: int, steps: int, lr: float,
          init_scale: float) -> dict[str, Any]:
    batch = ProblemBatch.random(range(seeds), n, T, d)
    traj = train_attention(batch, "W", steps=steps, lr=lr, init_scale=init_scale,
                           random_state=n * 1000 + d, log_every=steps)
    converged = traj.probs_final.max(-1).min(-1) > 0.99  # every sequence picks one token
    track = track_svm(batch, traj, norms=("fro",))
    glob = track.globally_optimal & converged
    local = track.locally_optimal & converged & ~glob
    return {
        "n": n, "d": d, "seeds": seeds,
        "global": int(glob.sum()),
        "local_not_global": int(local.sum()),
        "converged_not_local": int((converged & ~glob & ~local).sum()),
        "not_converged": int((~converged).sum()),
        "mean_corr_Wmm": float(np.nanmean(np.where(converged, track.final["fro"], np.nan)))
        if converged.any() else float("nan"),
    }


@register("svm", "global-vs-local")
def run(
    out: str | Path,
    *,
    seeds: int = 100,
    overwrite: bool = False,
    steps: int = 2000,
    T: int = 8,
    ns: tuple[int, ...] = (2, 4, 6, 10),
    ds: tuple[int, ...] = (2, 4, 6, 10, 16, 24),
    lr: float = 0.1,
    init_scale: float = 0.1,
    progress: bool = True,
) -> dict[str, Any]:
    """Fractions of runs converging to the global / a local selection on an (n, d) grid."""
    import matplotlib.pyplot as plt

    ns, ds = [int(x) for x in ns], [int(x) for x in ds]
    config = dict(experiment="global-vs-local", seeds=seeds, steps=steps, T=T, ns=ns, ds=ds,
                  lr=lr, init_scale=init_scale)
    run_ = RunFolder(out, config, overwrite=overwrite)
    units = [(f"n={n},d={d}", partial(_unit, n, d, T, seeds, steps, lr, init_scale))
             for n in ns for d in ds]
    done = sweep(run_, units, "global-vs-local", progress)
    rows = []
    for u in done.values():
        rows.append({"n": u["n"], "d": u["d"], "seeds": u["seeds"],
                     "frac_global": u["global"] / u["seeds"],
                     "frac_local_not_global": u["local_not_global"] / u["seeds"],
                     "frac_converged_not_local": u["converged_not_local"] / u["seeds"],
                     "frac_not_converged": u["not_converged"] / u["seeds"],
                     "mean_corr_Wmm": u["mean_corr_Wmm"]})
    run_.write_table(rows, "global_vs_local")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for n in ns:
        r = [row for row in rows if row["n"] == n]
        axes[0].plot([x["d"] for x in r], [x["frac_global"] for x in r], "o-", label=f"n={n}")
        axes[1].plot([x["d"] for x in r], [x["frac_local_not_global"] for x in r], "o-",
                     label=f"n={n}")
    axes[0].set_title("converged to the global selection")
    axes[1].set_title("converged to a local (non-global) one")
    for ax in axes:
        ax.set_xlabel("d")
        ax.legend()
    axes[0].set_ylabel(f"fraction of {seeds} runs (T={T})")
    run_.save_figure(fig, "global_vs_local", dpi=100)
    metrics = {"grid": rows}
    run_.write_metrics(metrics)
    run_.write_markdown(markdown_table(rows))
    return metrics
