"""Convex attention heads: attnlens vs cvxpy (linear self-attention) and vs pyscnn (gated MLP).

Data: random Gaussian tokens X ~ N(0, 1/d), labels from a class-dependent mean shift of the
first feature (so the problem is learnable); gated-ReLU MLP: Gaussian X (n, d), sign targets of
a random linear teacher. Squared loss, one-hot targets. Results are written after every case
(benchmarks/results/convex_heads.json), so an interrupted run still reports what finished.
Usage: python benchmarks/convex_heads.py [--skip-large] [--skip-cvxpy-big] [--only-mlp]
(--only-mlp writes benchmarks/results/convex_heads_mlp.json)
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from _common import machine, write_result  # noqa: E402

from attnlens.convex import _pyscnn  # noqa: E402
from attnlens.convex.programs import build_program  # noqa: E402
from attnlens.convex.solvers import solve  # noqa: E402

BETA = 1e-2


def tokens(n, s, d, c, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    X = rng.standard_normal((n, s, d)) / np.sqrt(d)
    X[:, :, 0] += 0.5 * (y[:, None] / max(c - 1, 1) - 0.5)
    return X, np.eye(c)[y]


def main() -> None:
    args = set(sys.argv[1:])
    out = {"machine": machine(), "beta": BETA, "cases": [],
           "note": "2-core machine shared with ~5 other jobs (load average 9-15) during this "
                   "run: absolute seconds are inflated; cvxpy and attnlens ran side by side "
                   "under the same load."}

    name = "convex_heads_mlp" if "--only-mlp" in args else "convex_heads"

    def save(case):
        out["cases"].append(case)
        write_result(name, out)
        print(case, flush=True)

    # 1. linear self-attention: cvxpy (Clarabel) vs attnlens
    sizes = [] if "--only-mlp" in args else [(1000, 16, 8, 10), (2000, 16, 12, 10)]
    for (n, s, d, c) in sizes:
        X, Y = tokens(n, s, d, c)
        prog = build_program(X, "self_attention", "linear", c)
        res = solve(prog, Y, BETA, "squared", solver="auto", tol=1e-6, max_iter=20000)
        case = {"case": "self_attention_linear", "n": n, "s": s, "d": d, "c": c,
                "attnlens_method": res.method, "attnlens_seconds": res.seconds,
                "attnlens_objective": res.objective, "attnlens_certificate": res.certificate,
                "attnlens_iterations": res.iterations}
        if (n, s, d, c) == (2000, 16, 12, 10) and "--skip-cvxpy-big" in args:
            save(case)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            ref = solve(prog, Y, BETA, "squared", solver="cvxpy", tol=1e-6)
        case.update({"cvxpy_method": ref.method, "cvxpy_seconds": time.perf_counter() - t0,
                     "cvxpy_objective": ref.objective, "cvxpy_certificate": ref.certificate,
                     "relative_objective_diff": abs(res.objective - ref.objective)
                     / abs(ref.objective),
                     "speedup": (time.perf_counter() - t0) / res.seconds})
        save(case)

    # 2. gated-ReLU MLP vs pyscnn (n=2000, d=50, 100 gates)
    rng = np.random.default_rng(1)
    n, d, m = 2000, 50, 100
    Xm = rng.standard_normal((n, d))
    ym = np.sign(Xm @ rng.standard_normal(d))
    H = rng.standard_normal((m, d))
    prog = build_program(Xm[:, None, :], "mlp", "gated_relu", 1, gates=H)
    res = solve(prog, ym[:, None], BETA, "squared", solver="fista", tol=1e-6)
    case = {"case": "mlp_gated_relu", "n": n, "d": d, "gates": m,
            "attnlens_seconds": res.seconds, "attnlens_objective": res.objective,
            "attnlens_certificate": res.certificate, "attnlens_iterations": res.iterations}
    if _pyscnn.available():
        obj, sec = _pyscnn.solve_gated_relu(Xm, ym, H, BETA, tol=1e-6)
        case.update({"pyscnn_seconds": sec, "pyscnn_objective": obj,
                     "time_ratio_attnlens_over_pyscnn": res.seconds / sec,
                     "relative_objective_diff": abs(res.objective - obj) / abs(obj)})
    save(case)

    # 3. attnlens alone at scale
    if "--skip-large" not in args and "--only-mlp" not in args:
        for (n, s, d, c) in [(25000, 64, 32, 2), (10000, 65, 48, 10)]:
            X, Y = tokens(n, s, d, c)
            t0 = time.perf_counter()
            prog = build_program(X, "self_attention", "linear", c)
            build = time.perf_counter() - t0
            res = solve(prog, Y, BETA, "squared", solver="auto", tol=1e-4, max_iter=3000,
                        progress=True)
            save({"case": "self_attention_linear_large", "n": n, "s": s, "d": d, "c": c,
                  "build_seconds": build, "attnlens_method": res.method,
                  "attnlens_seconds": res.seconds, "attnlens_objective": res.objective,
                  "attnlens_certificate": res.certificate, "status": str(res.status),
                  "attnlens_iterations": res.iterations})


if __name__ == "__main__":
    main()
