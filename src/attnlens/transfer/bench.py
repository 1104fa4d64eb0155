"""Shared driver of the ``benchmarks/transfer_*.py`` scripts: run, then record JSON + PNG.

Each script calls :func:`main` with its settings. ``--budget-s=SECONDS`` bounds one call (no
extraction chunk or unit starts after it; the process exits with status 3 while the run is
incomplete, 0 once it is complete), so a long benchmark runs in pieces of bounded length
under the shared CPU lock and resumes from its stored units::

    until /work/coord/heavy python benchmarks/transfer_minilm_rt.py --budget-s=720; do :; done
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from attnlens.report import markdown_table, save_figure
from attnlens.transfer.heads import HEADS
from attnlens.transfer.pipeline import run_benchmark
from attnlens.transfer.summary import plot_dims, table_rows, verdict

__all__ = ["BENCH_GRIDS", "BENCH_OPTIONS", "INCOMPLETE_EXIT", "main", "merge_into",
           "run_and_record"]

#: solver and training settings of the recorded benchmarks (stated in the JSON): convex heads
#: to a relative duality gap of 1e-3; non-convex heads by Adam on minibatches of 256
BENCH_OPTIONS = {"convex_tol": 1e-3, "convex_max_iter": 3000, "nonconvex_max_epochs": 20,
                 "nonconvex_batch_size": 256, "nonconvex_lr": 1e-2}
#: beta grids overriding the heads' defaults (none: the defaults of attnlens.transfer.heads)
BENCH_GRIDS: dict[str, list[float]] = {}
#: exit status of a benchmark script whose run is not complete yet (run it again to resume)
INCOMPLETE_EXIT = 3


def run_and_record(name: str, settings: Mapping[str, Any], results_dir: str | Path,
                   probe: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run the transfer benchmark ``settings`` into ``runs/bench-<name>`` (resumable) and return
    the JSON payload; the accuracy plot over all d is copied to ``results_dir/<name>.png``."""
    settings = dict(settings)
    heads = settings.pop("heads", "all")
    heads = list(HEADS) if heads == "all" else list(heads)
    options = {**BENCH_OPTIONS, **settings.pop("options", {})}
    grids = {**BENCH_GRIDS, **settings.pop("grids", {})}
    out = Path(settings.pop("out", f"runs/bench-{name}"))
    start = time.perf_counter()
    metrics = run_benchmark(out, heads=heads, options=options, grids=grids, **settings)
    payload: dict[str, Any] = {
        "settings": {**settings, "heads": heads, "options": options, "grids": grids},
        "complete": bool(metrics.get("complete")),
        "run_folder": str(out),
        "call_seconds": time.perf_counter() - start,
        "loadavg": _loadavg(),
    }
    if "per_d" not in metrics:  # paused during the feature extraction
        payload["paused"] = metrics.get("paused")
        payload["summary"] = f"paused during feature extraction: {metrics.get('paused')}"
        return payload
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    plot = out / ("accuracy.png" if (out / "accuracy.png").is_file()
                  else f"accuracy_d{next(iter(metrics['per_d']))}.png")
    shutil.copyfile(plot, results_dir / f"{name}.png")
    summary = []
    for d, part in metrics["per_d"].items():
        summary += [f"d={d}", markdown_table(table_rows(part["rows"])), part["verdict"]]
    feats = metrics["features"]
    payload.update({
        "features": feats,
        "subset": bool(feats.get("subset")) or settings.get("max_train") is not None,
        "subset_note": (
            f"{feats['n_items']} of {feats['n_items_available']} items; test items: "
            f"{_test_note(feats)}; training items capped at {settings.get('max_train')} per seed"
        ),
        "per_d": metrics["per_d"],
        "feature_seconds": metrics["feature_seconds"],
        "total_seconds": metrics["total_seconds"],
        "fit_seconds_total": _fit_seconds(metrics["per_d"]),
        "anchor": "linear_full (logistic regression on full-dimension pooled features), same run",
        "reference_probe": dict(probe or {}),
        "machine_note": (
            f"{os.cpu_count()} CPU cores; runs in pieces under a CPU lock shared with other "
            "jobs (light jobs of others still ran beside it): seconds are indicative"
        ),
        "summary": "\n".join(summary),
    })
    return payload


def merge_into(stored: Mapping[str, Any], payload: Mapping[str, Any]) -> dict[str, Any]:
    """``stored`` (a recorded payload) with the rows of ``payload`` (a run of some of its heads
    at some of its d) in place of the same heads' rows; verdicts and summary recomputed.

    The runs must share the features and splits (same script settings): a head's row is
    replaced whole, and a convex head's ``nonconvex_objective`` comes from the run it was
    fitted in (run its non-convex counterpart with it).
    """
    merged = {k: v for k, v in stored.items() if k not in ("benchmark", "machine")}
    if payload.get("features", {}).get("n_items") != stored.get("features", {}).get("n_items"):
        raise ValueError("merge: the new run's features differ from the stored ones "
                         f"({payload.get('features', {}).get('n_items')} vs "
                         f"{stored.get('features', {}).get('n_items')} items); run the "
                         "same script settings.")
    per_d = {d: dict(part) for d, part in stored["per_d"].items()}
    for d, part in payload["per_d"].items():
        old = per_d.setdefault(d, {"rows": [], "seconds": 0.0})
        new = {r["head"]: r for r in part["rows"]}
        rows = [new.pop(r["head"], r) for r in old["rows"]] + list(new.values())
        per_d[d] = {**old, "rows": rows, "verdict": verdict(rows)}
    summary = []
    for d, part in per_d.items():
        summary += [f"d={d}", markdown_table(table_rows(part["rows"])), part["verdict"]]
    merged.update(per_d=per_d, summary="\n".join(summary),
                  fit_seconds_total=_fit_seconds(per_d),
                  complete=bool(stored.get("complete")) and bool(payload.get("complete")))
    merged["merged_runs"] = [*stored.get("merged_runs", []), {
        "heads": payload["settings"]["heads"], "dims": list(payload["per_d"]),
        "run_folder": payload["run_folder"], "call_seconds": payload["call_seconds"],
        "loadavg": payload["loadavg"], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }]
    return merged


def _merged_plot(payload: Mapping[str, Any], out: Path) -> Path:
    """The accuracy-over-d figure of a merged payload, saved in the new run's folder."""
    feats = payload["features"]
    fig = plot_dims(payload["per_d"], f"{feats['backbone']} / {feats['dataset']}: test accuracy, "
                                      "mean ± std over seeds (merged runs)")
    return save_figure(fig, out / "accuracy_merged.png")


def _test_note(feats: Mapping[str, Any]) -> str:
    if feats.get("test_split") == "official":
        return f"the official test part ({feats.get('n_test')} items)"
    n_test = feats.get("n_test")
    return (f"a fixed stratified {feats.get('test_fraction')} of them"
            + (f" ({n_test} items)" if n_test is not None else ""))


def _fit_seconds(per_d: Mapping[str, Any]) -> float:
    """Sum over heads, seeds and d of the fitting time of every grid value (the run's cost)."""
    total = 0.0
    for part in per_d.values():
        for r in part["rows"]:
            if r.get("grid_seconds") is not None:
                total += r["grid_seconds"] * r.get("seeds", 0)
    return total


def _loadavg() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def main(name: str, settings: Mapping[str, Any], results: Path,
         write_result: Callable[[str, dict[str, Any]], Any],
         probe: Mapping[str, Any] | None = None, argv: Sequence[str] | None = None,
         full_settings: Mapping[str, Any] | None = None) -> int:
    """Command-line driver of one benchmark script; returns the process exit status.

    Flags: ``--seeds=0,1`` (run or resume a subset of seeds), ``--budget-s=720`` (bound this
    call), ``--stored-only`` (summarize the stored units, fit nothing), ``--quick`` (a small
    smoke run into its own folder, not recorded), ``--full`` (the script's ``full_settings``:
    every item of the dataset, recorded as ``<name>_full``), ``--workers=2`` (run the units
    on that many local processes, :mod:`attnlens.execution`), ``--unit-threads=2`` (compute
    threads of each unit, ``Execution.unit_threads``: a serial run of one long unit on every
    core), ``--heads=a,b`` / ``--dims=32,64``
    (run only those heads / d), ``--merge`` (merge that run's rows into the recorded
    ``<name>.json``: :func:`merge_into`).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    settings = dict(settings)
    quick = "--quick" in argv
    workers = unit_threads = None
    if "--full" in argv:
        if full_settings is None:
            raise SystemExit(f"{name} has no full-size settings; drop --full.")
        name, settings = f"{name}_full", {**settings, **full_settings}
    for arg in argv:
        if arg.startswith("--seeds="):
            settings["seeds"] = tuple(int(v) for v in arg.split("=", 1)[1].split(","))
        elif arg.startswith("--budget-s="):
            settings["time_budget_s"] = float(arg.split("=", 1)[1])
        elif arg == "--stored-only":
            settings["stored_only"] = True
        elif arg.startswith("--workers="):
            workers = int(arg.split("=", 1)[1])
        elif arg.startswith("--unit-threads="):
            unit_threads = int(arg.split("=", 1)[1])
        elif arg.startswith("--heads="):
            settings["heads"] = arg.split("=", 1)[1].split(",")
        elif arg.startswith("--dims="):
            settings["dims"] = tuple(int(v) for v in arg.split("=", 1)[1].split(","))
        elif arg not in ("--quick", "--full", "--merge"):
            raise SystemExit(f"unknown argument {arg!r}; use --seeds=, --budget-s=, "
                             "--workers=, --unit-threads=, --heads=, --dims=, --merge, "
                             "--stored-only, --quick or --full.")
    merge = "--merge" in argv
    if merge:  # a run of some heads / d, merged into the recorded results
        stored_path = Path(results) / f"{name}.json"
        if not stored_path.is_file():
            raise SystemExit(f"--merge needs the recorded {stored_path}; run without it first.")
        heads = settings.get("heads", "all")
        tag = "-".join(heads) if isinstance(heads, list) else str(heads)
        if any(arg.startswith("--dims=") for arg in argv):  # a run at other d: another folder
            tag += "-d" + "_".join(map(str, settings["dims"]))
        settings["out"] = f"{settings.get('out', f'runs/bench-{name}')}-{tag}"  # its own folder
    if quick:
        settings.update(n_items=400, seeds=(0,), dims=(16,), max_train=None,
                        out=f"runs/bench-quick-{name}")
    if workers is None and unit_threads is None:
        payload = run_and_record(name, settings, results, probe=probe)
    else:  # local processes (--workers) and/or N threads per unit (--unit-threads)
        from attnlens.execution import Execution, use_execution

        execution = Execution("serial" if workers is None else "processes", workers=workers,
                              unit_threads=unit_threads)
        with use_execution(execution):
            payload = run_and_record(name, settings, results, probe=probe)
    if merge and "per_d" in payload:
        payload = merge_into(json.loads(stored_path.read_text()), payload)
        shutil.copyfile(_merged_plot(payload, Path(settings["out"])), Path(results) / f"{name}.png")
    if not quick and "per_d" in payload:
        write_result(name, payload)
    print(payload["summary"])
    if not payload["complete"]:
        print(f"{name}: incomplete (time budget); run the same command again to resume.")
        return INCOMPLETE_EXIT
    return 0
