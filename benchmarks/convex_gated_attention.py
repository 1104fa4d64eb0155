"""Convex gated-ReLU self-attention on Rotten Tomatoes: dense per-gate features vs matrix-free.

Issue 16 point 2. The fit of the transfer benchmark (benchmarks/transfer_minilm_rt.py): frozen
MiniLM tokens reduced to d channels (first 32 tokens), seed 0's 3,000 training sentences,
m = 5 gates, beta = 1e-2 (the value the transfer runs select), squared loss on one-hot labels,
certificate (relative duality gap) <= 1e-3, solver "auto", the estimator's gates and rng.

* ``dense`` (before): the previous operator, one materialized (n, d^2, d) feature tensor per
  gate (``pattern_block``), refused at d = 64 (the ``n x m x d^3`` size check);
* ``matrix_free`` (after): :class:`attnlens.convex.gated_attention.GatedAttention`.

Each fit runs in its own process (peak RSS by ``resource.getrusage`` is per process), one
after the other, so the d = 32 pair is measured in the same run under the same load; the load
average is recorded (2 shared cores: timings are noisy, ratios are the robust figure).
Writes benchmarks/results/convex_gated_attention.json. ``--quick`` runs d = 8 and 16 only.
``--merge`` keeps the stored rows (and notes) and replaces only those with the same
(d, operator, max_iter) as a case run now; ``--timeout=S`` kills a case after S seconds wall
(recorded as such). Each row has wall and CPU (``process_time``, the child process) seconds,
the load average before and after, the process peak RSS (feature loading included) and the
peak RSS of the fit alone (``VmHWM`` reset through ``/proc/self/clear_refs`` once the inputs
are loaded), and a certificate trace (every 10 FISTA iterations, from the solver's log).
Target (issue 16.2): d = 64 certified (``tol`` 1e-3) within 4 GB and under 10 minutes.
``--profile D [THREADS ...]`` times forward / adjoint / SVT / certificate of the width-D
program (float32 and float64, 1 and 2 BLAS threads by default) and stores them in the JSON.
``--paths D DATASET`` (``rotten_tomatoes`` or ``fashion_mnist``) times the operator's two
product paths side by side (token products, the path before, vs the cached per-sample
features) and stores them under ``paths``.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import resource
import subprocess
import sys
import time

from _common import option, write_result

NAME = "convex_gated_attention"
SEED = 0
BETA = 1e-2
TOL = 1e-3
N_GATES = 5
MAX_ITER = 3000
MAX_TRAIN = 3000
HEAD_TOKENS = 32
#: (d, operator, max_iter) of the default run; d = 64 dense is not run (refused: 31 GB).
#: ``matrix_free_mixed`` (opt-in experiment): the same program by ``fista_path`` with
#: ``precision="mixed"`` (float32 products until the certificate, confirmed in float64, stalls)
#: instead of the ``"auto"`` switch to float64 at ``max(10 tol, 1e-3)``.
#: ``--cases 32:dense,64:matrix_free:40`` picks others (a capped d = 64 row measures the
#: per-iteration time and memory when a full fit does not fit the session)
CASES = [(32, "dense", MAX_ITER), (32, "matrix_free", MAX_ITER), (64, "matrix_free", MAX_ITER)]
QUICK_CASES = [(8, "dense", MAX_ITER), (8, "matrix_free", MAX_ITER), (16, "dense", MAX_ITER),
               (16, "matrix_free", MAX_ITER)]


def _inputs(d: int, dataset: str = "rotten_tomatoes"):
    """Seed 0's training tokens and labels of the transfer runs: MiniLM on Rotten Tomatoes
    (first 32 tokens, 2 classes) or ViT on all of Fashion-MNIST (``--full`` of
    benchmarks/transfer_vit.py: 17 tokens, 10 classes; features from the cache)."""
    from attnlens.transfer.features import extract_features
    from attnlens.transfer.pipeline import AVGPOOL_STORE_DIM
    from attnlens.transfer.runner import prepare_inputs

    if dataset == "fashion_mnist":
        feats = extract_features("vit", "fashion_mnist", store_dim=AVGPOOL_STORE_DIM,
                                 image_size=112, token_grid=4, test_split="official",
                                 progress=False)
        data = prepare_inputs(feats, d, SEED, max_train=MAX_TRAIN)
    else:
        feats = extract_features("minilm", "rotten_tomatoes", max_tokens=64,
                                 store_dim=AVGPOOL_STORE_DIM, progress=False)
        data = prepare_inputs(feats, d, SEED, max_train=MAX_TRAIN, max_tokens=HEAD_TOKENS)
    return data.tokens[data.train], data.labels[data.train]


TARGET_D64 = {"peak_rss_gb_below": 4.0, "fit_seconds_below": 600.0, "certificate_at_most": TOL}


class _Trace(logging.Handler):
    """Certificates the FISTA solver logs (every ``check_every`` iterations, DEBUG), with wall
    and CPU seconds since the fit started."""

    def __init__(self, wall0: float, cpu0: float) -> None:
        super().__init__(logging.DEBUG)
        self.wall0, self.cpu0, self.rows, self.events = wall0, cpu0, [], []

    def emit(self, record: logging.LogRecord) -> None:
        msg = str(record.msg)
        args = record.args if isinstance(record.args, tuple) else ()
        now = {"wall_seconds": time.perf_counter() - self.wall0,
               "cpu_seconds": time.process_time() - self.cpu0}
        if msg.startswith("fista it") and len(args) >= 3:
            row = {"iteration": int(args[0]), "certificate": float(args[1]),
                   "precision": str(args[2]), **now}
            self.rows.append(row)
        else:
            row = {"message": record.getMessage()[:200], **now}
            self.events.append(row)
        side = os.environ.get("CGA_TRACE_FILE")  # survives a timeout of the child
        if side:
            with open(side, "a") as fh:
                fh.write(json.dumps(row) + "\n")


def _status_gb(field: str = "VmHWM") -> float | None:
    """``field`` of /proc/self/status (VmHWM: peak RSS, VmRSS: current RSS) in GiB."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _dense_program(X, gates, c: int):
    import numpy as np

    from attnlens.convex.operators import Program, pattern_block

    blocks = []
    for H in gates:
        S = np.einsum("nta,ab,nub->ntu", X, H, X, optimize=True)
        blocks.append(pattern_block(X, "self_attention", (S >= 0).astype(np.float64)))
    return Program(blocks, c, "self_attention", "gated_relu", {"groups": 1})


def one(d: int, operator: str, max_iter: int = MAX_ITER) -> dict:
    """One certified fit (run in a child process)."""
    import numpy as np

    from attnlens._validation import check_random_state
    from attnlens.convex.programs import build_program, sample_gates
    from attnlens.convex.solvers import solve

    load_before = list(os.getloadavg())
    w0, c0 = time.perf_counter(), time.process_time()
    X, y = _inputs(d)
    inputs_wall, inputs_cpu = time.perf_counter() - w0, time.process_time() - c0
    gc.collect()
    loading_peak = _status_gb()
    hwm_reset = _reset_hwm()
    n, s, _ = X.shape
    classes, yi = np.unique(y, return_inverse=True)
    Y = np.eye(len(classes))[yi]
    rng = check_random_state(SEED)  # as ConvexAttentionClassifier(random_state=SEED).fit
    gates = sample_gates("self_attention", N_GATES, s, d, rng)
    t0, c0 = time.perf_counter(), time.process_time()
    trace = _Trace(t0, c0)
    for name in ("attnlens.convex.nuclear", "attnlens.convex.gated_attention"):
        lg = logging.getLogger(name)
        lg.addHandler(trace)
        lg.setLevel(logging.DEBUG)
    if operator == "dense":
        program = _dense_program(X, gates, len(classes))
    else:
        program = build_program(X, "self_attention", "gated_relu", len(classes), gates=gates)
    build, build_cpu = time.perf_counter() - t0, time.process_time() - c0
    if operator == "matrix_free_mixed":  # experiment: float32 products to the end
        from attnlens.convex.nuclear import fista_path

        res = fista_path(program, Y, BETA, "squared", tol=TOL, max_iter=max_iter, rng=rng,
                         precision="mixed")
    else:
        res = solve(program, Y, BETA, "squared", tol=TOL, max_iter=max_iter, rng=rng,
                    warn=False)
    total, total_cpu = time.perf_counter() - t0, time.process_time() - c0
    fit_peak = _status_gb() if hwm_reset else None
    pred = program.forward(res.Z).argmax(axis=1)
    fused = program.fused
    return {
        "d": d, "operator": operator, "n": n, "s": s, "m": N_GATES, "max_iter": max_iter,
        "tokens": int(getattr(fused, "T", int(np.count_nonzero(np.any(X != 0, axis=2))))),
        "build_seconds": build, "fit_seconds": total, "solve_seconds": res.seconds,
        "build_cpu_seconds": build_cpu, "fit_cpu_seconds": total_cpu,
        "inputs_seconds": inputs_wall, "inputs_cpu_seconds": inputs_cpu,
        "iterations": res.iterations, "seconds_per_iteration": res.seconds / res.iterations,
        "objective": res.objective, "certificate": res.certificate,
        "status": str(res.status), "method": res.method,
        "train_accuracy": float(np.mean(pred == yi)),
        "ranks": [int(np.linalg.matrix_rank(Z, tol=1e-6 * max(np.abs(Z).max(), 1e-300)))
                  for Z in res.Z],
        # ru_maxrss follows VmHWM, which the reset cleared: the process peak is the larger of
        # the loading peak and the fit peak
        "peak_rss_gb": max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                           loading_peak or 0.0),
        "loading_peak_rss_gb": loading_peak,
        "fit_peak_rss_gb": fit_peak,
        "loadavg_before": load_before,
        "loadavg": list(os.getloadavg()),
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        "trace": trace.rows, "solver_events": trace.events,
    }


def profile(d: int, thread_counts: tuple[int, ...] = (1, 2)) -> dict:
    """Where one FISTA iteration's time goes at width ``d``: forward, adjoint, SVT and the
    certificate, float32 and float64 operator products, at 1 and 2 BLAS threads (best of 2;
    wall and CPU seconds). Iterate: the gates' blocks at rank 2 (the fit's solutions have rank
    1-2; the iterates FISTA extrapolates through are not always low rank, so the forward is
    also timed on a full-rank iterate, which skips the factored path)."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from attnlens._validation import check_random_state
    from attnlens.convex.certificate import certificate
    from attnlens.convex.nuclear import svt_flat
    from attnlens.convex.programs import build_program, sample_gates

    X, y = _inputs(d)
    classes, yi = np.unique(y, return_inverse=True)
    Y = np.eye(len(classes))[yi]
    rng = check_random_state(SEED)
    gates = sample_gates("self_attention", N_GATES, X.shape[1], d, rng)
    program = build_program(X, "self_attention", "gated_relu", len(classes), gates=gates)
    gen = np.random.default_rng(0)
    Zs = [gen.standard_normal((a, 2)) @ gen.standard_normal((2, b)) * 1e-3
          for a, b in program.zshapes()]
    x = program.flatten(Zs)
    x_full = gen.standard_normal(x.shape) * 1e-3
    R = gen.standard_normal((X.shape[0], len(classes)))
    ops = {
        "forward_f32": lambda: program.forward_flat(x, True),
        "forward_f64": lambda: program.forward_flat(x, False),
        "forward_f32_full_rank": lambda: program.forward_flat(x_full, True),
        "forward_f64_full_rank": lambda: program.forward_flat(x_full, False),
        "adjoint_f32": lambda: program.adjoint_flat(R, True),
        "adjoint_f64": lambda: program.adjoint_flat(R, False),
        "svt": lambda: svt_flat(program, x, 1e-4),
        "certificate_f64": lambda: certificate(program, Zs, Y, BETA, "squared"),
    }
    out: dict = {"d": d, "loadavg_before": list(os.getloadavg()), "seconds": {}}
    for threads in thread_counts:
        with threadpool_limits(threads):
            for name, fn in ops.items():
                best = (float("inf"), float("inf"))
                for _ in range(2):
                    w, c = time.perf_counter(), time.process_time()
                    fn()
                    best = min(best, (time.perf_counter() - w, time.process_time() - c))
                out["seconds"][f"{name}_threads{threads}"] = {"wall": best[0], "cpu": best[1]}
                print(name, threads, best, flush=True)
    out["loadavg_after"] = list(os.getloadavg())
    return out


def profile_paths(d: int, dataset: str) -> dict:
    """The two product paths of the matrix-free operator side by side, same program, same
    run: ``tokens`` (the (T, P) token products, the path before; per-sample features off)
    and ``features`` (the per-sample features ``F_i = M_i^T Q_i``, built once). Times (best
    of 2, wall and CPU) a full-rank forward and an adjoint in float32 and float64, the
    feature build, the RSS growth, and the products' agreement."""
    import numpy as np

    import attnlens.convex.gated_attention as ga
    from attnlens._validation import check_random_state
    from attnlens.convex.programs import build_program, sample_gates

    X, y = _inputs(d, dataset)
    classes, yi = np.unique(y, return_inverse=True)
    gates = sample_gates("self_attention", N_GATES, X.shape[1], d, check_random_state(SEED))
    gen = np.random.default_rng(0)
    out: dict = {"d": d, "dataset": dataset, "n": int(X.shape[0]), "s": int(X.shape[1]),
                 "c": len(classes), "m": N_GATES, "loadavg_before": list(os.getloadavg()),
                 "seconds": {}, "feature_gb": None}
    results = {}
    x = R = None
    default_cap = ga.FEATURE_CACHE_BYTES
    for path, cap in (("tokens", 0), ("features", 2**40)):
        ga.FEATURE_CACHE_BYTES = cap
        program = build_program(X, "self_attention", "gated_relu", len(classes), gates=gates)
        if x is None:  # one full-rank iterate and one residual for both paths
            x = gen.standard_normal(sum(a * b for a, b in program.zshapes())) * 1e-3
            R = gen.standard_normal((X.shape[0], len(classes)))
        if path == "features":
            rss0, w, c = _status_gb("VmRSS"), time.perf_counter(), time.process_time()
            F = program.fused._features(np.float32)
            out["build_f32"] = {"wall": time.perf_counter() - w, "cpu": time.process_time() - c}
            out["feature_gb"] = F.nbytes / 2**30
            out["rss_growth_gb"] = _status_gb("VmRSS") - rss0
            del F
        for name, product, arg, single in (
                ("forward_f32_full_rank", program.forward_flat, x, True),
                ("adjoint_f32", program.adjoint_flat, R, True),
                ("forward_f64_full_rank", program.forward_flat, x, False),
                ("adjoint_f64", program.adjoint_flat, R, False)):
            if path == "features" and not single:
                program.fused._F.pop("float32", None)  # room for the float64 copy
            best = (float("inf"), float("inf"))
            for _ in range(2):
                w, c = time.perf_counter(), time.process_time()
                val = product(arg, single)
                best = min(best, (time.perf_counter() - w, time.process_time() - c))
            out["seconds"][f"{name}_{path}"] = {"wall": best[0], "cpu": best[1]}
            results[name, path] = val
            if path == "features":  # the float64 copy may not fit the budget: tokens then
                out[f"{name}_used_features"] = program.fused._F.get(
                    "float32" if single else "float64") is not None
            print(path, name, best, flush=True)
        del program
        gc.collect()
    out["speedup_wall"] = {
        name: out["seconds"][f"{name}_tokens"]["wall"] / out["seconds"][f"{name}_features"]["wall"]
        for name in ("forward_f32_full_rank", "adjoint_f32", "forward_f64_full_rank",
                     "adjoint_f64")}
    out["max_rel_diff"] = {
        name: float(np.abs(results[name, "features"] - results[name, "tokens"]).max()
                    / np.abs(results[name, "tokens"]).max())
        for name in ("forward_f32_full_rank", "adjoint_f32", "forward_f64_full_rank",
                     "adjoint_f64")}
    out["loadavg_after"] = list(os.getloadavg())
    ga.FEATURE_CACHE_BYTES = default_cap
    return out


def _parse_cases(text: str) -> list[tuple[int, str, int]]:
    out = []
    for item in text.split(","):
        parts = item.split(":")
        out.append((int(parts[0]), parts[1], int(parts[2]) if len(parts) > 2 else MAX_ITER))
    return out


def _target(row: dict) -> dict:
    t = TARGET_D64
    return {
        "targets": t,
        "memory_met": bool(row["peak_rss_gb"] < t["peak_rss_gb_below"]),
        "time_met_wall": bool(row["fit_seconds"] < t["fit_seconds_below"]),
        "time_met_cpu": bool(row.get("fit_cpu_seconds", float("inf")) < t["fit_seconds_below"]),
        "certified": bool(row["certificate"] <= t["certificate_at_most"]),
    }


def main(quick: bool = False, cases: list | None = None, merge: bool = False,
         timeout: float | None = None) -> dict:
    from _common import RESULTS

    path = RESULTS / f"{NAME}.json"
    stored = json.loads(path.read_text()) if merge and path.exists() else {}
    new_rows = []
    for d, operator, max_iter in cases or (QUICK_CASES if quick else CASES):
        start = time.perf_counter()
        side = RESULTS / f".{NAME}_{d}_{operator}_trace.jsonl"
        side.unlink(missing_ok=True)
        try:
            out = subprocess.run([sys.executable, __file__, "--one", str(d), operator,
                                  str(max_iter)], check=True, capture_output=True, text=True,
                                 timeout=timeout, env={**os.environ, "CGA_TRACE_FILE": str(side)})
            row = json.loads(out.stdout.strip().splitlines()[-1])
        except subprocess.TimeoutExpired:
            lines = [json.loads(x) for x in side.read_text().splitlines()] if side.exists() else []
            row = {"d": d, "operator": operator, "max_iter": max_iter,
                   "status": "did_not_finish", "time_limit_seconds": timeout,
                   "wall_seconds_until_killed": time.perf_counter() - start,
                   "loadavg": list(os.getloadavg()),
                   "trace": [x for x in lines if "iteration" in x],
                   "solver_events": [x for x in lines if "message" in x]}
        side.unlink(missing_ok=True)
        if d == 64 and "certificate" in row:
            row["target_issue16"] = _target(row)
        new_rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "trace"}), flush=True)
    keys = {(r["d"], r["operator"], r["max_iter"]) for r in new_rows}
    rows = [r for r in stored.get("rows", [])
            if (r["d"], r["operator"], r["max_iter"]) not in keys] + new_rows
    by = {(r["d"], r["operator"]): r for r in rows if r.get("max_iter") == MAX_ITER
          and "certificate" in r}
    ratios = {}
    for d in sorted({r["d"] for r in rows}):
        if (d, "dense") in by and (d, "matrix_free") in by:
            a, b = by[(d, "dense")], by[(d, "matrix_free")]
            ratios[str(d)] = {
                "fit_speedup": a["fit_seconds"] / b["fit_seconds"],
                "per_iteration_speedup": a["seconds_per_iteration"] / b["seconds_per_iteration"],
                "objective_rel_diff": abs(a["objective"] - b["objective"]) / abs(a["objective"]),
                "rss_ratio": a["peak_rss_gb"] / b["peak_rss_gb"],
            }
    payload = {
        "settings": {"dataset": "rotten_tomatoes", "backbone": "minilm", "seed": SEED,
                     "beta": BETA, "tol": TOL, "n_gates": N_GATES, "max_iter": MAX_ITER,
                     "max_train": MAX_TRAIN, "head_tokens": HEAD_TOKENS, "loss": "squared",
                     "solver": "auto"},
        "rows": rows, "ratios": ratios,
        "dense_refused_at_64": "n x m x d^3 = 3000 x 5 x 64^3 = 3.93e9 float64 entries (31 GB)",
        "previous_figure": "312 s per fit at d=32 (transfer_minilm_rt, dense), refused at d=64",
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        "note": "CPU only (no GPU), 2 cores shared with other sessions: see loadavg per row",
    }
    if merge:  # keep the stored notes and probes
        payload = {**{k: v for k, v in stored.items() if k not in ("benchmark", "machine")},
                   **{k: v for k, v in payload.items() if k not in ("blas_threads",)}}
        payload.setdefault("blas_threads", os.environ.get("OPENBLAS_NUM_THREADS", "default"))
    if not quick:
        write_result(NAME, payload)
    return payload


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--profile":  # merged into the JSON
        from _common import RESULTS

        prof = profile(int(sys.argv[2]), tuple(int(t) for t in sys.argv[3:]) or (1, 2))
        data = json.loads((RESULTS / f"{NAME}.json").read_text())
        data[f"d{sys.argv[2]}_profile_{time.strftime('%Y_%m_%d_%H%M')}"] = prof
        write_result(NAME, {k: v for k, v in data.items() if k not in ("benchmark", "machine")})
    elif len(sys.argv) >= 4 and sys.argv[1] == "--paths":  # --paths D DATASET: merged
        from _common import RESULTS

        prof = profile_paths(int(sys.argv[2]), sys.argv[3])
        data = json.loads((RESULTS / f"{NAME}.json").read_text())
        data.setdefault("paths", {})[f"{sys.argv[3]}_d{sys.argv[2]}"] = prof
        write_result(NAME, {k: v for k, v in data.items() if k not in ("benchmark", "machine")})
    elif len(sys.argv) >= 4 and sys.argv[1] == "--one":
        print(json.dumps(one(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))))
    else:
        chosen = option("cases")
        tmo = option("timeout")
        tmo = float(tmo) if tmo is not None else None
        main(quick="--quick" in sys.argv, cases=_parse_cases(chosen) if chosen else None,
             merge="--merge" in sys.argv, timeout=tmo)
