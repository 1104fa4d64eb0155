"""Att-SVM solvers: attnlens (``method="auto"``) vs the cvxpy reference (``method="cvxpy"``,
Clarabel), same instances, same run.

Instances: unit-norm Gaussian tokens and queries (the papers' random setting) from
``attnlens.svm.planted_problem``: the selection is, in each sequence, the top token under a
planted Gaussian ``W0`` (``argmax_t x_t^T W0 z_i``), so the program is feasible by
construction even when n >> d (random selections usually are not). Seed ``SEED`` for every
case. Score convention ``score_t = x_t^T W z``.

Cases (issue 2): both norms at (n, T, d) = (6, 8, 10) and (50, 16, 32) and the nuclear norm at
(100, 16, 64), each next to cvxpy; attnlens alone at (2000, 32, 64) and (10000, 64, 128),
Frobenius and nuclear, each large case in a child process with a time limit
(``--large-timeout``, default 600 s): a case that does not finish is recorded as such.
Reported per case: seconds (wall) and cpu_seconds (``process_time`` of the same solve), the
load average before and after each solve, speedup (cvxpy / attnlens, wall and CPU), relative
objective difference, certificates (relative duality gaps), method chosen by "auto", status,
support size, rank, iterations. Proximal point solves (``method="auto"`` beyond 3,000
constraints) also record the certificate after every outer step with its wall and CPU seconds
(``trace``, from the solver's INFO log) and the first time it reaches 1e-3 ... 1e-7; the PNG
plots these traces next to the bar chart.

Issue 16.1 targets: nuclear (10000,64,128) certified <= 1e-4 in under 5 minutes -- judged on a
second child process that solves it with ``tol=1e-4`` (the default ``tol=1e-7`` run is kept
next to it); nuclear (2000,32,64) no slower than the 34.6 s of the interior point; the SCS
(cvxpy default) speedup at (100,16,64) unchanged or better than 25.7x.

Results are written after every case to benchmarks/results/attsvm.json (+ attsvm.png), so an
interrupted run keeps what finished; ``--resume`` skips the cases already stored; ``--only``
re-runs the named cases and keeps the other stored ones; a plain run starts a fresh file.

Side-by-side cases also time ``cvxpy_default``: ``min ||W||`` with cvxpy's default solver
choice (SCS for the nuclear norm, at its default low accuracy), the way the papers' code and
the DESIGN.md anchors ran (``--skip-default`` drops it).

Usage: python benchmarks/attsvm.py [--skip-large] [--only fro-6x8x10,nuc-50x16x32]
       [--resume] [--skip-default] [--large-timeout S]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, write_result  # noqa: E402

from attnlens.svm import att_svm, planted_problem  # noqa: E402

NAME = "attsvm"
SEED = 0
SMALL = [("fro", (6, 8, 10)), ("nuc", (6, 8, 10)), ("fro", (50, 16, 32)), ("nuc", (50, 16, 32)),
         ("nuc", (100, 16, 64))]
LARGE = [("fro", (2000, 32, 64)), ("nuc", (2000, 32, 64)), ("fro", (10000, 64, 128)),
         ("nuc", (10000, 64, 128))]
ANCHORS = {  # cvxpy seconds measured on this machine kind (DESIGN.md)
    "fro-50x16x32": 10.8, "nuc-50x16x32": 3.5, "fro-100x16x64": 235.0, "nuc-100x16x64": 20.0}
TARGETS = {  # issue 2, issue 16.1
    "fro-50x16x32": {"speedup_at_least": 100.0},
    "nuc-100x16x64": {"speedup_at_least": 10.0,
                      "speedup_vs_cvxpy_default_at_least_issue16": 25.7},
    "fro-10000x64x128": {"attnlens_seconds_below": 60.0},
    "nuc-2000x32x64": {"attnlens_seconds_below": 34.6},
    "nuc-10000x64x128": {"certificate_at_most": 1e-4, "attnlens_seconds_below": 300.0},
}
#: issue 16.1: the large nuclear cases are also solved with ``tol`` = this (the target's
#: accuracy), in a second child process, next to the default ``tol`` = 1e-7
TARGET_TOL = {"nuc-10000x64x128": 1e-4}
PPA_LOGGER = "attnlens.svm._solvers.nuclear_ppa"


def case_name(norm: str, shape: tuple[int, int, int]) -> str:
    return f"{norm}-{'x'.join(map(str, shape))}"


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


class _Trace(logging.Handler):
    """Certificate after every proximal point outer step (the solver logs it at INFO), with
    wall and CPU seconds since the solve started."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.rows: list[dict[str, float]] = []
        self.reset()

    def reset(self) -> None:
        self.rows = []
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if not str(record.msg).startswith("ppa outer") or len(args) < 5:
            return
        self.rows.append({"outer": int(args[0]), "tau": float(args[1]),
                          "working_set": int(args[2]), "lbfgsb_iterations": int(args[3]),
                          "certificate": float(args[4]),
                          "wall_seconds": time.perf_counter() - self.wall0,
                          "cpu_seconds": time.process_time() - self.cpu0})


def solve(norm: str, shape: tuple[int, int, int], method: str, repeat: int = 1,
          tol: float | None = None) -> dict[str, Any]:
    """Best wall time of ``repeat`` solves of the case's instance, and the last result;
    CPU seconds (``process_time``: this process, all its threads) of the same solve."""
    n, T, d = shape
    p, sel = planted_problem(n, T, d, seed=SEED)
    best, cpu, res, caught_all = float("inf"), float("inf"), None, []
    trace = _Trace()
    logger = logging.getLogger(PPA_LOGGER)
    logger.addHandler(trace)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    load_before = loadavg()
    kwargs = {} if tol is None else {"tol": tol}
    try:
        for _ in range(repeat):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                trace.reset()
                start, cstart = time.perf_counter(), time.process_time()
                res = att_svm(p.X, p.Z, sel, norm=norm, method=method, **kwargs)
                wall = time.perf_counter() - start
                if wall < best:
                    best, cpu = wall, time.process_time() - cstart
            caught_all = [f"{w.category.__name__}: {w.message}"[:300] for w in caught]
    finally:
        logger.removeHandler(trace)
        logger.setLevel(old_level)
    assert res is not None
    out = {
        "method": res.method,
        "tol": 1e-7 if tol is None else tol,
        "seconds": best,
        "cpu_seconds": cpu,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "objective": res.objective,
        "certificate": res.certificate,
        "status": str(res.status),
        "iterations": res.iterations,
        "support_size": int(sum(len(s) for s in res.support)),
        "rank": res.rank,
        "warnings": sorted(set(caught_all)),
    }
    if trace.rows:
        out["trace"] = trace.rows
        for thr in (1e-3, 1e-4, 1e-5, 1e-6, 1e-7):
            hit = next((r for r in trace.rows if r["certificate"] <= thr), None)
            if hit is not None:
                out[f"first_certificate_at_most_{thr:.0e}"] = {
                    k: hit[k] for k in ("outer", "wall_seconds", "cpu_seconds", "certificate")}
    return out


def solve_cvxpy_default(norm: str, shape: tuple[int, int, int]) -> dict[str, Any]:
    """The reference code's way: ``min ||W||`` with cvxpy's default solver choice (Clarabel
    for Frobenius, SCS for the nuclear norm in cvxpy 1.9), default tolerances."""
    import cvxpy as cp

    n, T, d = shape
    p, sel = planted_problem(n, T, d, seed=SEED)
    start, cstart = time.perf_counter(), time.process_time()
    i, t = np.nonzero(np.arange(T)[None, :] != sel[:, None])
    D = p.X[i, sel[i]] - p.X[i, t]  # (m, d) deltas x_{i,a} - x_it
    Q = p.Z[i]  # (m, d) queries
    W = cp.Variable((d, d))
    obj = cp.norm(W, "fro") if norm == "fro" else cp.normNuc(W)
    prob = cp.Problem(cp.Minimize(obj), [cp.sum(cp.multiply(D @ W, Q), axis=1) >= 1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prob.solve()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cstart
    Wv = np.asarray(W.value)
    margins = np.einsum("md,md->m", D @ Wv, Q)
    return {
        "solver": prob.solver_stats.solver_name,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "objective": float(prob.value),
        "status": prob.status,
        "min_margin": float(margins.min()),
        "objective_of_feasible_rescaling": float(
            (np.linalg.norm(Wv) if norm == "fro" else np.linalg.norm(Wv, "nuc"))
            / margins.min()),
        "warnings": sorted({f"{w.category.__name__}: {w.message}"[:300] for w in caught}),
    }


def run_child(norm: str, shape: tuple[int, int, int], timeout: float,
              tol: float | None = None) -> dict[str, Any]:
    """Solve a large case in a child process; record a timeout instead of hanging the run."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "case.json"
        cmd = [sys.executable, __file__, "--child", case_name(norm, shape), "--child-out",
               str(out)]
        if tol is not None:
            cmd += ["--child-tol", repr(tol)]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, timeout=timeout, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            return {"status": "did_not_finish", "time_limit_seconds": timeout,
                    "note": f"killed after {timeout:.0f} s wall (child process)"}
        if proc.returncode != 0 or not out.exists():
            return {"status": "error", "returncode": proc.returncode,
                    "stderr_tail": proc.stderr[-2000:],
                    "wall_seconds": time.perf_counter() - start}
        return json.loads(out.read_text())


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skip-large", action="store_true", help="only the side-by-side cases")
    ap.add_argument("--only", default="", help="comma-separated case names, e.g. fro-6x8x10")
    ap.add_argument("--resume", action="store_true", help="keep and skip stored cases")
    ap.add_argument("--skip-default", action="store_true",
                    help="do not time cvxpy's default solver choice (the anchors' path)")
    ap.add_argument("--large-timeout", type=float, default=600.0, help="seconds per large case")
    ap.add_argument("--plot-only", action="store_true", help="redraw the PNG from the JSON")
    ap.add_argument("--table", action="store_true",
                    help="print the docs/svm.md markdown table from the JSON")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-tol", type=float, default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def _shape(name: str) -> tuple[str, tuple[int, int, int]]:
    norm, dims = name.split("-")
    n, T, d = (int(x) for x in dims.split("x"))
    return norm, (n, T, d)


def plot(cases: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = [case_name(nm, sh) for nm, sh in SMALL + LARGE]
    cases = sorted(cases, key=lambda c: order.index(c["case"]) if c["case"] in order else 99)
    names = [c["case"] for c in cases]
    series = [("attnlens", "attnlens (auto)", "C0"), ("cvxpy", "cvxpy Clarabel (method='cvxpy')",
              "C1"), ("cvxpy_default", "cvxpy default solver (anchor path)", "C2")]
    x = np.arange(len(names))
    traced = [(c["case"], k, c[k]) for c in cases for k in ("attnlens", "attnlens_tol_1e-04")
              if c.get(k, {}).get("trace")]
    if traced:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(max(7, 1.2 * len(names)) + 5.5, 4.4),
                                      gridspec_kw={"width_ratios": [max(7, 1.2 * len(names)),
                                                                    5.5]})
    else:
        fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(names)), 4.4))
    w = 0.27
    for j, (key, label, color) in enumerate(series):
        vals = [c.get(key, {}).get("seconds", np.nan) for c in cases]
        ax.bar(x + (j - 1) * w, vals, w, label=label, color=color)
    for xi, c in zip(x, cases, strict=True):
        top = max(c.get(k, {}).get("seconds", 0.0) or 0.0 for k, _, _ in series)
        if "speedup" in c:
            sp = c["speedup"]
            ax.text(xi, top, f"{sp:.0f}x" if sp >= 10 else f"{sp:.2g}x", ha="center",
                    va="bottom", fontsize=8)
        elif c.get("attnlens", {}).get("status") == "did_not_finish":
            ax.text(xi - w, 1.0, "DNF", ha="center", va="bottom", fontsize=8, color="C3")
    ax.set_yscale("log")
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("seconds (log)")
    ax.set_title("Att-SVM solve time, planted instances (seed 0)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=3)
    if traced:
        for j, (name, _key, r) in enumerate(traced):
            t = [0.0] + [row["cpu_seconds"] for row in r["trace"]]
            g = [np.nan] + [row["certificate"] for row in r["trace"]]
            tol = r.get("tol", 1e-7)
            ax2.semilogy(t, g, "o-", ms=3, color=f"C{j}",
                         label=f"{name}, tol={tol:.0e} ({r.get('cpu_seconds', np.nan):.0f} s "
                               f"CPU, {r.get('seconds', np.nan):.0f} s wall)")
        ax2.axhline(1e-4, color="gray", ls=":", lw=1)
        ax2.axvline(300, color="gray", ls=":", lw=1)
        ax2.set_xlabel("CPU seconds since the solve started (process_time)")
        ax2.set_ylabel("certificate (relative duality gap)")
        ax2.set_title("proximal point: certificate per outer step", fontsize=9)
        ax2.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{NAME}.png", dpi=100)
    plt.close(fig)


def _g(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}g}"


def _tol(x: float) -> str:
    return f"{x:.0e}".replace("e-0", "e-")


def table(data: dict[str, Any]) -> str:
    """The docs/svm.md table: one row per stored case (and per extra ``tol`` solve)."""
    order = [case_name(nm, sh) for nm, sh in SMALL + LARGE]
    cases = sorted(data["cases"], key=lambda c: order.index(c["case"]) if c["case"] in order
                   else 99)
    lines = ["| case | method | tol | attnlens s wall / CPU | cvxpy Clarabel s wall / CPU | "
             "cvxpy default s wall / CPU (solver) | speedup vs Clarabel / default (wall; CPU) "
             "| rel. obj. diff | certificate | status | load avg before | target |",
             "|" + "---|" * 12]
    for c in cases:
        for key in ("attnlens", "attnlens_tol_1e-04"):
            a = c.get(key)
            if not a:
                continue
            cl, df = c.get("cvxpy", {}), c.get("cvxpy_default", {})
            sp = "–"
            if key == "attnlens" and "speedup" in c:
                sp = f"{c['speedup']:.0f}x / {c.get('speedup_vs_cvxpy_default', np.nan):.1f}x"
                if "speedup_cpu_seconds" in c:
                    sp += (f" ({c['speedup_cpu_seconds']:.0f}x / "
                           f"{c['speedup_vs_cvxpy_default_cpu_seconds']:.1f}x)")
            tgt = ""
            if c.get("target_met") is not None and (
                    c.get("target_judged_on", "attnlens") == key):
                tgt = "met" if c["target_met"] else "not met"
                if "target_met_cpu_seconds" in c:
                    tgt += f" (CPU: {'met' if c['target_met_cpu_seconds'] else 'not met'})"
            load = a.get("loadavg_before") or c.get("loadavg_before") or []
            lines.append(
                f"| {c['case']} | {a.get('method', a.get('status'))} | {_tol(a.get('tol', 1e-7))} "
                f"| {_g(a.get('seconds'))} / {_g(a.get('cpu_seconds'))} "
                f"| {_g(cl.get('seconds'))} / {_g(cl.get('cpu_seconds'))} "
                f"| {_g(df.get('seconds'))} / {_g(df.get('cpu_seconds'))}"
                f"{' (' + df['solver'] + ')' if 'solver' in df else ''} | {sp} "
                f"| {_g(c.get('relative_objective_diff') if key == 'attnlens' else None, 2)} "
                f"| {_g(a.get('certificate'), 2)} | {a.get('status')} "
                f"| {_g(load[0], 2) if load else '–'} | {tgt} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    args = parse(argv)
    if args.table:
        print(table(json.loads((RESULTS / f"{NAME}.json").read_text())))
        return
    if args.child:  # child process of a large case
        norm, shape = _shape(args.child)
        Path(args.child_out).write_text(json.dumps(solve(norm, shape, "auto",
                                                         tol=args.child_tol)))
        return
    if args.plot_only:
        plot(json.loads((RESULTS / f"{NAME}.json").read_text())["cases"])
        return
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    todo = [(nm, sh, True) for nm, sh in SMALL]
    if not args.skip_large:
        todo += [(nm, sh, False) for nm, sh in LARGE]
    if only:
        known = {case_name(nm, sh) for nm, sh, _ in todo}
        unknown = only - known
        if unknown:
            raise SystemExit(f"--only: unknown case(s) {sorted(unknown)}; known: {sorted(known)}")
        todo = [t for t in todo if case_name(t[0], t[1]) in only]
    path = RESULTS / f"{NAME}.json"
    stored: list[dict[str, Any]] = []
    if (args.resume or only) and path.exists():  # a full run without --resume starts afresh
        stored = json.loads(path.read_text()).get("cases", [])
    done = {c["case"] for c in stored} if args.resume else set()
    out: dict[str, Any] = {
        "instances": "attnlens.svm.planted_problem(n, T, d, seed=0): unit-norm Gaussian tokens "
                     "and queries; selection = top token per sequence under a planted Gaussian "
                     "W0 (feasible by construction), for every case",
        "seed": SEED,
        "attnlens_method": "auto",
        "reference": "cvxpy (Clarabel), method='cvxpy', same instance, same process: the "
                     "accurate reference (certificate ~1e-8)",
        "reference_default_solver": "cvxpy_default: min ||W|| solved with cvxpy's default "
                     "solver choice (Clarabel for fro, SCS for nuc, default tolerances) as the "
                     "papers' code does; the DESIGN.md anchors were measured this way. SCS "
                     "stops at low accuracy: see its min_margin and objective difference",
        "timing": "best of 3 for both solvers at (6,8,10), single solve otherwise; seconds "
                  "(wall) include input validation and the certificate; cpu_seconds = "
                  "time.process_time() of the same solve (the whole process, all BLAS "
                  "threads; rows measured before 2026-12-06 have none); the machine's 2 "
                  "cores are shared, so wall seconds depend on the load average recorded "
                  "per solve",
        "blas_threads": {k: os.environ.get(k, "default") for k in
                         ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
        "anchors_cvxpy_seconds_design_md": ANCHORS,
        "targets": TARGETS,
        "loadavg_start": loadavg(),
        "cases": stored,
    }

    def save(case: dict[str, Any]) -> None:
        out["cases"] = [c for c in out["cases"] if c["case"] != case["case"]] + [case]
        out["loadavg_last"] = loadavg()
        write_result(NAME, out)
        try:
            plot(out["cases"])
        except Exception as exc:  # the JSON is the result; the plot is a convenience
            print(f"plot skipped: {exc}", flush=True)
        print(json.dumps(case, default=str), flush=True)

    for norm, shape, side_by_side in todo:
        name = case_name(norm, shape)
        if name in done:
            print(f"skip {name} (stored)", flush=True)
            continue
        n, T, d = shape
        case: dict[str, Any] = {"case": name, "norm": norm, "n": n, "T": T, "d": d,
                                "loadavg_before": loadavg()}
        if side_by_side:
            repeat = 3 if shape == (6, 8, 10) else 1
            case["attnlens"] = solve(norm, shape, "auto", repeat)
            case["cvxpy"] = solve(norm, shape, "cvxpy", repeat)
            a, c = case["attnlens"], case["cvxpy"]
            case["speedup"] = c["seconds"] / a["seconds"]
            case["speedup_cpu_seconds"] = c["cpu_seconds"] / a["cpu_seconds"]
            case["relative_objective_diff"] = abs(a["objective"] - c["objective"]) / c["objective"]
            if not args.skip_default:
                case["cvxpy_default"] = dflt = solve_cvxpy_default(norm, shape)
                case["speedup_vs_cvxpy_default"] = dflt["seconds"] / a["seconds"]
                case["speedup_vs_cvxpy_default_cpu_seconds"] = (
                    dflt["cpu_seconds"] / a["cpu_seconds"])
                case["relative_objective_diff_cvxpy_default"] = (
                    abs(a["objective"] - dflt["objective"]) / a["objective"])
        else:
            case["attnlens"] = run_child(norm, shape, args.large_timeout)
            if name in TARGET_TOL:
                case[f"attnlens_tol_{TARGET_TOL[name]:.0e}"] = run_child(
                    norm, shape, args.large_timeout, tol=TARGET_TOL[name])
        if name in ANCHORS:
            case["anchor_cvxpy_seconds"] = ANCHORS[name]
        target = TARGETS.get(name)
        if target:
            if "speedup_at_least" in target and "speedup" in case:
                case["target_met"] = bool(case["speedup"] >= target["speedup_at_least"])
            if "attnlens_seconds_below" in target and "certificate_at_most" not in target:
                sec = case["attnlens"].get("seconds")
                case["target_met"] = bool(sec is not None
                                          and sec < target["attnlens_seconds_below"])
                cpu = case["attnlens"].get("cpu_seconds")
                if cpu is not None:
                    case["target_met_cpu_seconds"] = bool(cpu < target["attnlens_seconds_below"])
            if "certificate_at_most" in target:  # certified to the target in the time limit
                key = (f"attnlens_tol_{TARGET_TOL[name]:.0e}" if name in TARGET_TOL
                       else "attnlens")
                r = case.get(key, {})
                ok = r.get("certificate") is not None and (
                    r["certificate"] <= target["certificate_at_most"])
                case["target_judged_on"] = key
                case["target_met"] = bool(ok and r["seconds"] < target["attnlens_seconds_below"])
                case["target_met_cpu_seconds"] = bool(
                    ok and r.get("cpu_seconds", np.inf) < target["attnlens_seconds_below"])
            if "speedup_vs_cvxpy_default_at_least_issue16" in target and (
                    "speedup_vs_cvxpy_default" in case):
                case["target_issue16_unchanged_or_better"] = bool(
                    case["speedup_vs_cvxpy_default"]
                    >= target["speedup_vs_cvxpy_default_at_least_issue16"])
        save(case)
    print(path)
    print(machine())


if __name__ == "__main__":
    main(sys.argv[1:])
