"""The ReLU program's projected FISTA: this tree against a baseline revision, same run (issue 16.3).

The lazy cone solver (``ConeBlock.prox`` skips columns that shrink to zero, the certificate's
largest dual norm computed lazily, active-set repairs, cutting planes that stop once a column
cannot matter, a spaced-out dual while far from ``tol``) must give the same iterates as the
exhaustive one it replaced. Each case runs :func:`attnlens.convex.relu.solve_relu` for a fixed
number of FISTA iterations (``tol = 0``: no early stop) on the transfer benchmark's inputs
(MiniLM / Rotten Tomatoes tokens reduced to ``d`` channels, seed 0's first ``n`` training
sentences, ``s`` tokens, ``m`` gates) in a child process per tree: the baseline revision is
checked out with ``git worktree`` (default ``a950707``, the commit before the lazy solver).
Reports CPU seconds (``time.process_time``, one BLAS thread), cutting-plane NNLS solves, the
objective reached (must agree) and the speed-up.

``python benchmarks/relu_cone_speed.py [--baseline=REV] [--cases=head:d:n:s:m:beta:iters,...]
[--out=NAME]`` writes benchmarks/results/relu_cone_speed.json (or NAME.json).

relu_cone_speed_workingset.json measures this session's cutting-plane changes (the working set
capped at ``WORKING_SET * p`` rows, violated rows partitioned alone, ``make_feasible`` on
nonzero columns, 474e302) against ``bb1a792``, the commit before them:
``--baseline=bb1a792 --out=relu_cone_speed_workingset
--cases=self_attention:16:100:32:5:0.01:20,bfno:16:500:32:5:0.003:100``.
relu_cone_speed_fno.json checks FNO (p = s d = 512, the largest cone rows) for a regression
since the first transfer-size run (8b1177f), both trees under the same load:
``--baseline=8b1177f --out=relu_cone_speed_fno --cases=fno:16:500:32:5:0.003:40``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAME = "relu_cone_speed"
BASELINE = "a950707"
#: (head, d, n, s, m, beta, FISTA iterations)
CASES = [("bfno", 16, 500, 32, 5, 3e-3, 100), ("self_attention", 4, 200, 8, 3, 1e-2, 300)]


def child(src: str, case: str) -> dict:
    """Run one case with the attnlens found in ``src`` (imported before anything else)."""
    sys.path.insert(0, src)
    import attnlens  # noqa: F401  (bound to src now: _common's path insert below cannot move it)

    sys.path.insert(1, str(HERE))
    import time

    import numpy as np
    from relu_bracket import _inputs  # the relu_bracket benchmark's inputs

    from attnlens._validation import check_random_state
    from attnlens.convex import cones
    from attnlens.convex._linalg import one_blas_thread
    from attnlens.convex.programs import build_program, sample_gates
    from attnlens.convex.relu import solve_relu
    from attnlens.transfer.heads import BFNO_GROUPS

    head, d, n, s, m, beta, iters = _parse(case)
    X, y = _inputs(d, n, s, 0)
    Y = np.eye(len(np.unique(y)))[np.unique(y, return_inverse=True)[1]]
    rng = check_random_state(0)
    groups = BFNO_GROUPS if head == "bfno" else 1
    gates = sample_gates(head, m, X.shape[1], d, rng, groups)
    calls = {"n": 0}
    nnls = cones.ConeBlock._nnls_project

    def counted(self, *args, **kwargs):
        calls["n"] += 1
        return nnls(self, *args, **kwargs)

    cones.ConeBlock._nnls_project = counted
    with one_blas_thread():
        program = build_program(X, head, "relu", Y.shape[1], gates=gates, groups=groups)
        c0 = time.process_time()
        res = solve_relu(program, Y, beta, "squared", tol=0.0, max_iter=iters, rng=rng)
        cpu = time.process_time() - c0
    return {"cpu_seconds": cpu, "iterations": res.iterations, "objective": res.objective,
            "nnls_solves": calls["n"]}


def _parse(case: str) -> tuple:
    head, d, n, s, m, beta, iters = case.split(":")
    return head, int(d), int(n), int(s), int(m), float(beta), int(iters)


def _run(src: Path, case: str) -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, __file__, "--child", f"--src={src}", f"--case={case}"],
                         check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(cases: list[str], baseline: str, name: str = NAME) -> dict:
    from _common import machine, write_result

    root = HERE.parent
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", str(tree),
                        baseline], check=True, capture_output=True)
        try:
            for case in cases:
                base = _run(tree / "src", case)
                new = _run(root / "src", case)
                row = {"case": case, "baseline": base, "current": new,
                       "speedup": base["cpu_seconds"] / new["cpu_seconds"],
                       "objective_rel_diff": abs(new["objective"] - base["objective"])
                       / abs(base["objective"]), "loadavg": list(os.getloadavg())}
                rows.append(row)
                print(json.dumps({k: row[k] for k in ("case", "speedup", "objective_rel_diff")}
                                 | {"cpu": [base["cpu_seconds"], new["cpu_seconds"]],
                                    "nnls": [base["nnls_solves"], new["nnls_solves"]]}),
                      flush=True)
        finally:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(tree)],
                           check=False, capture_output=True)
    payload = {"benchmark": name, "machine": machine(), "baseline_revision": baseline,
               "settings": {"loss": "squared", "tol": 0.0, "blas_threads": 1,
                            "dataset": "rotten_tomatoes", "backbone": "minilm", "seed": 0,
                            "case_format": "head:d:n:s:m:beta:fista_iterations"},
               "rows": rows,
               "note": "baseline and current run back to back in child processes of the same "
                       "run; CPU seconds by time.process_time"}
    write_result(name, payload)
    return payload


if __name__ == "__main__":
    # no _common import before child(): attnlens must first be bound to --src
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    if "--child" in sys.argv:
        print(json.dumps(child(args["src"], args["case"])))
    else:
        sys.path.insert(0, str(HERE))
        main(args["cases"].split(",") if "cases" in args
             else [":".join(map(str, c)) for c in CASES], args.get("baseline", BASELINE),
             args.get("out", NAME))
