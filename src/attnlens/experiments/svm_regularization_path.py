"""Experiment ``regularization-path``: ``argmin_{||W|| <= R} L(W)`` turns towards the Att-SVM
solution as R grows: Frobenius ball -> ``W^mm``, nuclear ball -> ``W^mm_*``.

Tarzanagh, Li, Zhang, Oymak (NeurIPS 2023, arXiv 2306.13596), Theorem on regularization
paths; Tarzanagh, Li, Thrampoulidis, Oymak (arXiv 2308.16898). Score ``x_t^T W z``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from attnlens.experiments import register
from attnlens.experiments.svm_common import band, chunk_key, seed_chunks, summary, sweep
from attnlens.report import RunFolder, markdown_table
from attnlens.svm.dynamics import ProblemBatch
from attnlens.svm.regpath import regularization_path
from attnlens.svm.trackers import correlation, svm_references


def _unit(seeds: list[int], n: int, T: int, d: int, radii: list[float],
          inner_steps: int) -> dict[str, Any]:
    batch = ProblemBatch.random(seeds, n, T, d)
    out: dict[str, Any] = {"seeds": seeds}
    for norm in ("fro", "nuc"):
        rp = regularization_path(batch, radii, norm, inner_steps=inner_steps,
                                 random_state=seeds[0])
        # the selection of the largest radius; its SVMs
        scores = np.einsum("sntd,sde,sne->snt", batch.X, rp.W[:, -1], batch.Z)
        sel = scores.argmax(-1)

        W_mm, _, _, _ = svm_references(batch, sel)
        out[norm] = {
            "corr_fro": correlation(rp.W, W_mm["fro"][:, None]).tolist(),
            "corr_nuc": correlation(rp.W, W_mm["nuc"][:, None]).tolist(),
            "loss": rp.loss.tolist(),
            "seconds": rp.seconds,
        }
    return out


@register("svm", "regularization-path")
def run(
    out: str | Path,
    *,
    seeds: int = 100,
    overwrite: bool = False,
    steps: int = 200,
    n: int = 6,
    T: int = 8,
    d: int = 10,
    radii: tuple[float, ...] = (0.5, 1, 2, 4, 8, 16, 32, 64),
    chunk: int = 50,
    progress: bool = True,
) -> dict[str, Any]:
    """Correlation of the Frobenius- and nuclear-ball paths with both SVMs along R.

    ``steps`` is the number of projected gradient steps per radius.
    """
    import matplotlib.pyplot as plt

    radii = [float(r) for r in radii]
    config = dict(experiment="regularization-path", seeds=seeds, inner_steps=steps, n=n, T=T,
                  d=d, radii=radii, chunk=chunk)
    run_ = RunFolder(out, config, overwrite=overwrite)
    units = [(chunk_key(c), partial(_unit, c, n, T, d, radii, steps))
             for c in seed_chunks(seeds, chunk)]
    done = sweep(run_, units, "regularization-path", progress)

    def cat(norm: str, field: str) -> np.ndarray:
        return np.concatenate([np.asarray(u[norm][field], dtype=float) for u in done.values()])

    metrics: dict[str, Any] = {"radii": radii}
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for ax, norm, title in ((axes[0], "fro", "Frobenius ball"), (axes[1], "nuc", "nuclear ball")):
        cf, cn = cat(norm, "corr_fro"), cat(norm, "corr_nuc")
        metrics[f"{norm}_path"] = {
            "corr_Wmm_at_Rmax": summary(cf[:, -1]),
            "corr_Wmm_nuc_at_Rmax": summary(cn[:, -1]),
            "mean_corr_Wmm_by_R": np.nanmean(cf, axis=0).tolist(),
            "mean_corr_Wmm_nuc_by_R": np.nanmean(cn, axis=0).tolist(),
        }
        band(ax, np.asarray(radii), cf, r"vs $W^{mm}$")
        band(ax, np.asarray(radii), cn, r"vs $W^{mm}_\star$")
        ax.set_xscale("log")
        ax.set_xlabel("radius R")
        ax.set_title(title)
        ax.legend(loc="lower right")
    axes[0].set_ylabel("correlation")
    run_.save_figure(fig, "regularization_path", dpi=100)
    run_.write_metrics(metrics)
    rows = [{"path": norm, "corr W^mm (R max)": metrics[f"{norm}_path"]["corr_Wmm_at_Rmax"]["mean"],
             "corr W^mm_* (R max)": metrics[f"{norm}_path"]["corr_Wmm_nuc_at_Rmax"]["mean"]}
            for norm in ("fro", "nuc")]
    run_.write_markdown(markdown_table(rows))
    return metrics
