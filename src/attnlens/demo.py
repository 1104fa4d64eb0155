"""``attnlens demo``: the main job, end to end on a real pretrained transformer and real data.

1. all-MiniLM-L6-v2 (frozen, offline) encodes the 8,530 Rotten Tomatoes sentences; token
   features are reduced to d channels by average pooling over feature groups and cached
   (:mod:`attnlens.transfer.features`), so a second run skips the extraction.
2. Heads are fitted on a seeded train split, selected on validation, scored on the fixed test
   split: logistic regression on the full 384-d pooled features, logistic regression and an MLP
   on the pooled d-dim features, the non-convex linear self-attention head (m=5) and its convex
   program solved to a certified optimum (Sahiner et al., ICML 2022). Self-attention scores use
   ``score_t = x_t^T W z`` with ``W = K Q^T``.
3. One Att-SVM check (Tarzanagh et al., 2023): normalized GD on W lines up with W^mm.

Everything lands in a report folder: ``metrics.json``, ``results.csv``, ``accuracy.png`` and
``report.md`` (plus the resumable transfer run under ``transfer/``).
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
from attnlens.transfer.heads import DEMO_HEADS

logger = logging.getLogger(__name__)

__all__ = ["run_demo"]


def run_demo(
    out: str | Path = "reports/demo",
    *,
    n_items: int | None = None,
    seeds: Sequence[int] = (0,),
    d: int = 16,
    max_train: int | None = 500,
    head_tokens: int | None = 32,
    heads: Sequence[str] = DEMO_HEADS,
    max_tokens: int = 64,
    cache_dir: str | Path | None = None,
    options: dict[str, Any] | None = None,
    svm_check: bool = True,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run the demo and write its report folder; returns the metrics written to ``metrics.json``.

    ``n_items`` runs on a stratified subset (tests use ~60 sentences); None uses all 8,530.
    ``max_train`` caps the training sentences per seed (the convex attention program is solved
    to a relative duality gap of 1e-3, which takes ~10-60 s at 500 sentences on 2 cores);
    ``head_tokens`` keeps the first 32 tokens for the token heads (Rotten Tomatoes sentences
    average 27 tokens).
    The folder is rewritten when the settings change; finished units of the same settings are
    reused (so an interrupted demo resumes).
    """
    from rich.console import Console

    from attnlens.transfer.cli import print_rows
    from attnlens.transfer.pipeline import run_benchmark, table_rows
    from attnlens.transfer.summary import plot_rows

    console = Console(quiet=quiet)
    out = Path(out)
    start = time.perf_counter()
    options = {"convex_tol": 1e-3, "convex_max_iter": 5000, "nonconvex_max_epochs": 200,
               **dict(options or {})}
    config = {"backbone": "minilm", "dataset": "rotten_tomatoes", "n_items": n_items,
              "seeds": list(seeds), "d": d, "heads": list(heads), "max_tokens": max_tokens,
              "max_train": max_train, "head_tokens": head_tokens, "options": options, "svm_check": svm_check}
    run = RunFolder(out, config, overwrite=True)
    console.rule("[bold]attnlens demo: MiniLM on Rotten Tomatoes")
    console.print(f"[1/3] features + heads {', '.join(heads)} (d={d}, seeds {list(seeds)})")
    try:
        bench = run_benchmark(
            out / "transfer", backbone="minilm", dataset="rotten_tomatoes", heads=heads,
            seeds=seeds, dims=[d], n_items=n_items, max_tokens=max_tokens, options=options,
            max_train=max_train, head_tokens=head_tokens, cache_dir=cache_dir,
            progress=not quiet, overwrite=False,
        )
    except RunFolderMismatchError:  # a transfer folder of other settings: start it over
        shutil.rmtree(out / "transfer")
        bench = run_benchmark(
            out / "transfer", backbone="minilm", dataset="rotten_tomatoes", heads=heads,
            seeds=seeds, dims=[d], n_items=n_items, max_tokens=max_tokens, options=options,
            max_train=max_train, head_tokens=head_tokens, cache_dir=cache_dir,
            progress=not quiet,
        )
    part = bench["per_d"][str(d)]
    rows = part["rows"]
    certified = _certified(rows)
    check: dict[str, Any] | None = None
    if svm_check:
        console.print("[2/3] Att-SVM: normalized GD on W vs W^mm (n=6, T=8, d=10, seed 0)")
        from attnlens.svm.convergence_check import convergence_check

        check = convergence_check(seed=0)
    console.print("[3/3] report")
    title = f"MiniLM / Rotten Tomatoes, d={d}, {len(seeds)} seed(s), test n={rows[0].get('n_test')}"
    print_rows(rows, title)
    console.print(part["verdict"])
    console.print(certified["line"])
    svm_line = _svm_line(check)
    if svm_line:
        console.print(svm_line)
    metrics = {
        "config": config,
        "features": bench["features"],
        "feature_seconds": bench["feature_seconds"],
        "rows": rows,
        "verdict": part["verdict"],
        "convex_certified": certified,
        "attsvm_check": check,
        "attsvm_line": svm_line,
        "total_seconds": time.perf_counter() - start,
    }
    run.write_metrics(metrics)
    table = table_rows(rows)
    run.write_table(table, "results")
    run.save_figure(plot_rows(rows, title), "accuracy")
    run.write_markdown("\n".join([
        "# attnlens demo\n",
        f"MiniLM (all-MiniLM-L6-v2, frozen) on Rotten Tomatoes: {bench['features']['n_items']} "
        f"sentences, tokens reduced to d={d} by average pooling over feature groups; "
        f"test accuracy mean ± std over seeds {list(seeds)}, selected on validation.\n",
        markdown_table(table),
        f"\n{part['verdict']}\n",
        f"\n{certified['line']}\n",
        f"\n{svm_line}\n" if svm_line else "",
        "\n![accuracy](accuracy.png)\n",
        f"\nTotal {metrics['total_seconds']:.0f} s (features {bench['feature_seconds']:.0f} s).\n",
    ]))
    console.print(f"report written to {out}/report.md ({metrics['total_seconds']:.0f} s)")
    return metrics


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
