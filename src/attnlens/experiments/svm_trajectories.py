"""Experiment ``trajectories``: the papers' 2-D pictures (n=2, d=2, T=3 and T=5).

Normalized GD on W; for each sequence the tokens x_it, the path of the effective query
``W(k) z_i / ||W(k)||_F`` (token scores are ``x_t^T W z_i``), the direction ``W^mm z_i``
of the Att-SVM of the converged selection and its margin hyperplanes
``x^T W^mm z_i = x_{i,a_i}^T W^mm z_i - 1`` (support tokens lie on it). Tarzanagh, Li,
Thrampoulidis, Oymak, "Transformers as Support Vector Machines" (arXiv 2308.16898), Fig. 1-2.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from attnlens.experiments import register
from attnlens.experiments.svm_common import chunk_key, seed_chunks, summary, sweep
from attnlens.report import RunFolder, markdown_table
from attnlens.svm.dynamics import ProblemBatch, train_attention
from attnlens.svm.trackers import track_svm

N, D = 2, 2


def _unit(seeds: list[int], T: int, steps: int, lr: float, ridge: float,
          init_scale: float) -> dict[str, Any]:
    batch = ProblemBatch.random(seeds, N, T, D)
    out: dict[str, Any] = {"seeds": seeds}
    for param in ("W", "KQ"):
        traj = train_attention(batch, param, steps=steps, lr=lr, init_scale=init_scale,
                               ridge=ridge if param == "KQ" else None, random_state=seeds[0],
                               log_every=max(1, steps // 100))
        track = track_svm(batch, traj)
        own = "fro" if param == "W" else "nuc"
        out[param] = {
            "corr": track.final[own].tolist(),
            "feasible": track.feasible[own].tolist(),
            "global": track.globally_optimal.tolist(),
            # kept for the picture of the first seed of the chunk
            "path": traj.W[0].tolist(),
            "W_mm": track.W_mm[own][0].tolist(),
            "selection": traj.selection[0].tolist(),
        }
    out["X"] = batch.X[0].tolist()
    out["Z"] = batch.Z[0].tolist()
    return out


def _picture(ax_row: Any, unit: dict[str, Any], T: int) -> None:
    X = np.asarray(unit["X"])
    Z = np.asarray(unit["Z"])
    path = np.asarray(unit["W"]["path"])  # (L, 2, 2)
    W_mm = np.asarray(unit["W"]["W_mm"])
    sel = unit["W"]["selection"]
    for i, ax in enumerate(ax_row):
        ax.scatter(X[i, :, 0], X[i, :, 1], c="gray", s=25, label="tokens")
        ax.scatter(*X[i, sel[i]], marker="*", s=160, c="C3", label="selected", zorder=3)
        norms = np.sqrt(np.sum(path**2, axis=(1, 2)))[:, None]
        q = np.einsum("lde,e->ld", path, Z[i]) / np.where(norms > 0, norms, 1.0)
        ax.plot(q[:, 0], q[:, 1], ".-", ms=2, lw=0.8, c="C0", label=r"$W(k)z/\|W(k)\|$")
        if np.all(np.isfinite(W_mm)):
            p = W_mm @ Z[i]
            pn = p / np.linalg.norm(W_mm)
            ax.annotate("", xy=pn, xytext=(0, 0),
                        arrowprops=dict(arrowstyle="->", color="C2", lw=1.5))
            ax.plot([], [], c="C2", label=r"$W^{mm}z/\|W^{mm}\|$")
            level = X[i, sel[i]] @ p
            t = np.linspace(-1.5, 1.5, 2)
            normal = p / np.dot(p, p)
            tangent = np.array([-p[1], p[0]]) / np.linalg.norm(p)
            for c, ls in ((level, "-"), (level - 1.0, "--")):
                base = normal * c
                ax.plot(base[0] + t * tangent[0], base[1] + t * tangent[1], ls, c="k", lw=0.7)
        ax.set_xlim(-1.6, 1.6)
        ax.set_ylim(-1.6, 1.6)
        ax.set_aspect("equal")
        ax.set_title(f"T={T}, sequence {i}")
    ax_row[0].legend(fontsize=6, loc="lower left")


@register("svm", "trajectories")
def run(
    out: str | Path,
    *,
    seeds: int = 100,
    overwrite: bool = False,
    steps: int = 1000,
    lr: float = 0.1,
    ridge: float = 1e-16,
    init_scale: float = 0.1,
    chunk: int = 50,
    progress: bool = True,
) -> dict[str, Any]:
    """2-D trajectories; metrics are the final correlations over ``seeds`` instances."""
    import matplotlib.pyplot as plt

    config = dict(experiment="trajectories", seeds=seeds, steps=steps, lr=lr, ridge=ridge,
                  init_scale=init_scale, chunk=chunk, n=N, d=D, T=[3, 5])
    run_ = RunFolder(out, config, overwrite=overwrite)
    units = [(f"T={T},{chunk_key(c)}", partial(_unit, c, T, steps, lr, ridge, init_scale))
             for T in (3, 5) for c in seed_chunks(seeds, chunk)]
    done = sweep(run_, units, "trajectories", progress)
    metrics: dict[str, Any] = {}
    fig, axes = plt.subplots(2, 2, figsize=(7, 7))
    for r, T in enumerate((3, 5)):
        us = [u for k, u in done.items() if k.startswith(f"T={T},")]
        for param, own in (("W", "W^mm"), ("KQ", "W^mm_*")):
            corr = np.concatenate([np.asarray(u[param]["corr"], dtype=float) for u in us])
            metrics[f"T={T}"] = metrics.get(f"T={T}", {})
            metrics[f"T={T}"][f"corr_{param}_{own}"] = summary(corr)
            metrics[f"T={T}"][f"frac_global_{param}"] = float(
                np.mean(np.concatenate([u[param]["global"] for u in us])))
        _picture(axes[r], us[0], T)
    run_.save_figure(fig, "trajectories", dpi=100)
    run_.write_metrics(metrics)
    rows = [{"T": T, "run": k, "mean corr": v["mean"]} for T in (3, 5)
            for k, v in metrics[f"T={T}"].items() if isinstance(v, dict)]
    run_.write_markdown(markdown_table(rows))
    return metrics
