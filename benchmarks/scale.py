"""Scale-out: one sweep and one transfer run on the serial, processes and Ray backends (issue 19).

Workloads (the same seeds on every backend; the numbers must come out identical):

1. ``svm reproduce local-convergence``: 100 seeds, 2000 steps, in 10 units of 10 seeds.
2. A transfer run: MiniLM on 2,000 Rotten Tomatoes sentences (features extracted once, before
   the timings, and cached), heads linear, mlp, attention_linear (non-convex, torch) and
   convex_attention_linear (certified), 4 seeds, d=16, 1,000 training sentences: 16 units.

Backends: serial (this process), processes (2 spawned workers) and a local 2-CPU Ray cluster
started by the sweep (its start-up is reported on its own); every unit computes with one
thread on every backend (``Unit.threads``). Per backend: wall time of the sweep, start-up, the
wall and CPU seconds spent inside the units, the overhead per unit
``((wall - start-up) x workers - unit seconds) / units`` (worker time not spent computing:
spawning, imports, shipping arguments and results, idle tail), the driver's CPU seconds and,
for the process pool, its workers' whole CPU seconds (imports included; Ray's workers are not
children of the driver, so only their in-unit CPU is known). The machine has 2 cores shared
with other sessions: the load average is recorded before and after each run, and timings are
noisy. No GPU here: the device is recorded, no GPU number is measured.

Writes benchmarks/results/scale.json and .png. ``--quick`` runs a seconds-long version.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, write_result

from attnlens.execution import Execution, use_execution

BACKENDS = ("serial", "processes", "ray")
#: workers of the processes pool and CPUs of the local Ray cluster
WORKERS = 2
LC = {"seeds": 100, "steps": 2000, "chunk": 10}
LC_QUICK = {"seeds": 8, "steps": 200, "chunk": 2}
TRANSFER = {"backbone": "minilm", "dataset": "rotten_tomatoes",
            "heads": ["linear", "mlp", "attention_linear", "convex_attention_linear"],
            "seeds": [0, 1, 2, 3], "dims": [16], "n_items": 2000, "max_train": 1000,
            "max_tokens": 32, "options": {"convex_tol": 1e-3, "convex_max_iter": 3000,
                                          "nonconvex_max_epochs": 20,
                                          "nonconvex_batch_size": 256}}
TRANSFER_QUICK = {**TRANSFER, "heads": ["linear", "attention_linear"], "seeds": [0, 1],
                  "n_items": 300, "max_train": 150}
#: cluster sizes for the projected speedup (docs/scale.md)
PROJECTED_WORKERS = (1, 2, 8, 32, 128)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class _Clock:
    """Wall, driver CPU and reaped-children CPU seconds of a block (with the load average)."""

    def __enter__(self) -> _Clock:
        self.load_before = _load()
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        self.children = _children_cpu()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        self.children = _children_cpu() - self.children
        self.load_after = _load()

    def fields(self) -> dict[str, Any]:
        return {"driver_cpu_seconds": self.cpu, "children_cpu_seconds": self.children,
                "load_before": self.load_before, "load_after": self.load_after}


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timing(execution: dict[str, Any], wall: float) -> dict[str, Any]:
    units, workers = max(execution["ran"], 1), max(execution["workers"], 1)
    sweep = execution["wall_seconds"]
    return {
        "workers": workers, "units": execution["ran"], "call_seconds": wall,
        "sweep_seconds": sweep, "startup_seconds": execution["startup_seconds"],
        "unit_seconds_total": execution["task_seconds"],
        "unit_seconds_mean": execution["task_seconds"] / units,
        "unit_cpu_seconds_total": execution.get("task_cpu_seconds"),
        "unit_cpu_seconds_mean": execution.get("task_cpu_seconds", 0.0) / units,
        "overhead_per_unit_s": ((sweep - execution["startup_seconds"]) * workers
                                - execution["task_seconds"]) / units,
    }


def local_convergence(backend: str, out: Path, size: dict[str, int]) -> dict[str, Any]:
    from attnlens.experiments import get, load

    load("svm")
    with _Clock() as clock, use_execution(
            Execution(backend, workers=None if backend == "serial" else WORKERS)):
        metrics = get("svm", "local-convergence")(out, progress=False, **size)
    execution = json.loads((out / "metrics.json").read_text())["execution"]
    units = {}
    for path in sorted((out / "units").glob("*.json")):
        unit = json.loads(path.read_text())
        units[path.stem] = {p: {k: v for k, v in unit[p].items() if not k.startswith("seconds")}
                            for p in ("W", "KQ")}
    numbers = {k: v for k, v in metrics.items()
               if k not in ("execution", "seconds_train", "seconds_svm")}
    return {"backend": backend, **_timing(execution, clock.wall), **clock.fields(),
            "corr_W_Wmm": metrics["corr_W_Wmm"]["mean"],
            "corr_KQ_Wmm_nuc": metrics["corr_KQ_Wmm_nuc"]["mean"],
            "_compare": {"metrics": numbers, "units": units}}


def transfer(backend: str, out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    from attnlens.transfer.pipeline import run_benchmark

    with _Clock() as clock, use_execution(
            Execution(backend, workers=None if backend == "serial" else WORKERS)):
        metrics = run_benchmark(out, progress=False, **settings)
    execution = json.loads((out / "metrics.json").read_text())["execution"]
    units = {path.stem: _timeless(json.loads(path.read_text()))
             for path in sorted((out / "units").glob("*.json"))}
    rows = metrics["per_d"][str(settings["dims"][0])]["rows"]
    return {"backend": backend, **_timing(execution, clock.wall - metrics["feature_seconds"]),
            "feature_seconds": metrics["feature_seconds"], "device": metrics["device"],
            **clock.fields(),
            "test_acc": {r["head"]: r.get("test_acc_mean") for r in rows},
            "_compare": units}


def _timeless(unit: Any) -> Any:
    """A stored unit without its wall-clock fields (keys naming seconds, at any depth)."""
    if isinstance(unit, dict):
        return {k: _timeless(v) for k, v in unit.items() if "seconds" not in k}
    if isinstance(unit, list):
        return [_timeless(v) for v in unit]
    return unit


def warm_features(settings: dict[str, Any]) -> float:
    """Extract (or load) the transfer run's features once, before any backend is timed."""
    from attnlens.transfer.features import extract_features
    from attnlens.transfer.pipeline import AVGPOOL_STORE_DIM

    start = time.perf_counter()
    extract_features(settings["backbone"], settings["dataset"],
                     max_tokens=settings["max_tokens"], store_dim=AVGPOOL_STORE_DIM,
                     reduce="avgpool", n_items=settings["n_items"], progress=False)
    return time.perf_counter() - start


def _finish(rows: list[dict[str, Any]]) -> None:
    """Speedup over serial and whether every number equals serial's (then drop the copies)."""
    ref = rows[0]
    for row in rows:
        row["speedup_vs_serial"] = ref["sweep_seconds"] / row["sweep_seconds"]
        row["identical_to_serial"] = row["_compare"] == ref["_compare"]
    for row in rows:
        row.pop("_compare")


def projection(rows: list[dict[str, Any]], units: int) -> list[dict[str, Any]]:
    """Sweep time on N one-CPU workers: start-up + ceil(units / N) x (unit + overhead), with
    the unit time of the serial run and the overhead per unit measured on Ray."""
    serial = next(r for r in rows if r["backend"] == "serial")
    ray = next(r for r in rows if r["backend"] == "ray")
    unit, over = serial["unit_seconds_mean"], max(ray["overhead_per_unit_s"], 0.0)
    out = []
    for n in PROJECTED_WORKERS:
        t = ray["startup_seconds"] + -(-units // n) * (unit + over)
        out.append({"workers": n, "projected_seconds": t,
                    "projected_speedup": serial["sweep_seconds"] / t})
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, title in ((axes[0], "local_convergence", "local-convergence, 100 seeds"),
                           (axes[1], "transfer", "transfer, 16 units")):
        rows = result[key]["runs"]
        names = [r["backend"] for r in rows]
        start = [r["startup_seconds"] for r in rows]
        rest = [r["sweep_seconds"] - r["startup_seconds"] for r in rows]
        ax.bar(names, start, color="0.7", label="start-up (pool / cluster)")
        ax.bar(names, rest, bottom=start, color="tab:blue", label="units")
        for i, r in enumerate(rows):
            ax.text(i, r["sweep_seconds"], f"{r['sweep_seconds']:.0f} s", ha="center",
                    va="bottom", fontsize=8)
        ax.set_title(title)
        ax.set_ylabel("wall seconds (2 shared cores)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long sizes")
    parser.add_argument("--skip-transfer", action="store_true")
    args = parser.parse_args()
    lc_size = LC_QUICK if args.quick else LC
    tr = TRANSFER_QUICK if args.quick else TRANSFER
    tmp = Path(tempfile.mkdtemp(prefix="attnlens-scale-"))
    result: dict[str, Any] = {"workers": WORKERS, "note": (
        "2 CPU cores shared with other sessions (load average per run); every unit computes "
        "with one thread on every backend (Unit.threads). No GPU was lent: GPU numbers not "
        "measured.")}
    try:
        rows = [local_convergence(b, tmp / f"lc-{b}", lc_size) for b in BACKENDS]
        _finish(rows)
        result["local_convergence"] = {"size": lc_size, "runs": rows,
                                       "projection": projection(rows, lc_size["seeds"]
                                                                // lc_size["chunk"])}
        for row in rows:
            print(f"local-convergence {row['backend']:9s} {row['sweep_seconds']:7.1f} s "
                  f"(start-up {row['startup_seconds']:.1f} s, overhead/unit "
                  f"{row['overhead_per_unit_s']:.2f} s, unit CPU {row['unit_cpu_seconds_total']:.1f}"
                  f" s, load {row['load_before'][0]}) identical={row['identical_to_serial']}",
                  flush=True)
        if not args.skip_transfer:
            result["feature_warmup_seconds"] = warm_features(tr)
            rows = [transfer(b, tmp / f"tr-{b}", tr) for b in BACKENDS]
            _finish(rows)
            n_units = len(tr["heads"]) * len(tr["seeds"]) * len(tr["dims"])
            result["transfer"] = {"settings": tr, "runs": rows,
                                  "projection": projection(rows, n_units)}
            for row in rows:
                print(f"transfer {row['backend']:9s} {row['sweep_seconds']:7.1f} s (start-up "
                      f"{row['startup_seconds']:.1f} s, overhead/unit "
                      f"{row['overhead_per_unit_s']:.2f} s, unit CPU "
                      f"{row['unit_cpu_seconds_total']:.1f} s, load {row['load_before'][0]}) identical="
                      f"{row['identical_to_serial']}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    name = "scale_quick" if args.quick else "scale"
    path = write_result(name, result)
    if "transfer" in result:
        plot(result, RESULTS / f"{name}.png")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
