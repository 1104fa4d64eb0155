"""Shared driver of the ``benchmarks/transfer_*.py`` scripts: run, then record JSON + PNG."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attnlens.report import markdown_table
from attnlens.transfer.heads import HEADS
from attnlens.transfer.pipeline import run_benchmark, table_rows

__all__ = ["BENCH_OPTIONS", "BENCH_GRIDS", "run_and_record"]

#: solver settings of the recorded benchmarks (stated in the JSON): relative duality gap 1e-3
BENCH_OPTIONS = {"convex_tol": 1e-3, "convex_max_iter": 2000, "nonconvex_max_epochs": 200}
#: beta grids of the token heads (the same for a convex head and its non-convex twin)
BENCH_GRIDS: dict[str, list[float]] = {}


def run_and_record(name: str, settings: Mapping[str, Any], results_dir: str | Path,
                   probe: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run the transfer benchmark ``settings`` into ``runs/bench-<name>`` (resumable) and return
    the JSON payload; the first accuracy plot is copied to ``results_dir/<name>.png``."""
    settings = dict(settings)
    heads = list(HEADS) if settings.pop("heads", "all") == "all" else settings.pop("heads")
    options = {**BENCH_OPTIONS, **settings.pop("options", {})}
    grids = {**BENCH_GRIDS, **settings.pop("grids", {})}
    out = Path(settings.pop("out", f"runs/bench-{name}"))
    metrics = run_benchmark(out, heads=heads, options=options, grids=grids, **settings)
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    first_d = next(iter(metrics["per_d"]))
    shutil.copyfile(out / f"accuracy_d{first_d}.png", results_dir / f"{name}.png")
    summary = []
    for d, part in metrics["per_d"].items():
        summary += [f"d={d}", markdown_table(table_rows(part["rows"])), part["verdict"]]
    feats = metrics["features"]
    return {
        "settings": {**settings, "heads": heads, "options": options, "grids": grids},
        "features": feats,
        "subset": bool(feats.get("subset")) or settings.get("max_train") is not None,
        "subset_note": (
            f"{feats['n_items']} of {feats['n_items_available']} items; "
            f"training items capped at {settings.get('max_train')} per seed"
        ),
        "per_d": metrics["per_d"],
        "feature_seconds": metrics["feature_seconds"],
        "total_seconds": metrics["total_seconds"],
        "anchor": "linear_full (logistic regression on full-dimension pooled features), same run",
        "reference_probe": dict(probe or {}),
        "shared_machine_note": (
            f"run on {os.cpu_count()} CPU cores shared with other jobs (load varied); "
            "seconds are indicative only"
        ),
        "run_folder": str(out),
        "summary": "\n".join(summary),
    }
