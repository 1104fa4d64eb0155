"""The ReLU program's bracket on MiniLM / Rotten Tomatoes, before and after tightening (issue 16.3).

The transfer benchmark's inputs (benchmarks/transfer_minilm_rt.py: frozen MiniLM tokens reduced
to ``d`` channels, normalized with training statistics, seed ``seed``'s training split) at the
small sizes the dense ReLU cone program allows: the first ``n`` training sentences, the first
``s`` tokens, ``m`` gates drawn as ``ConvexAttentionClassifier(random_state=seed)`` draws them,
squared loss on one-hot labels, ``activation="relu"`` self-attention.

* ``before``: :func:`attnlens.convex.relu.solve_relu` -- attained objective of the default
  dictionary (output axes + the gated solution's right singular vectors) vs the gated
  relaxation's certified lower bound;
* ``round0``: the cone-aware dual bound at that same solution (no new directions);
* ``after``: :func:`attnlens.convex.relu_bracket.refine_bracket` (column generation on the
  dictionary, cone-aware bound) with ``bracket_tol`` and ``max_rounds``.

Both ends concern ``P_relu(S)``, the ReLU program on the sampled patterns. Widths are relative,
``(upper - lower) / upper``. CPU seconds by ``time.process_time`` (one BLAS thread). Writes
benchmarks/results/relu_bracket.json after every case. ``--cases=d:n:s:m:beta:seed,...``
picks others (``--append`` adds their rows to the existing file, ``--out=NAME`` writes
benchmarks/results/NAME.json instead); ``--head=mlp`` (or ``fno``, ``bfno``) runs another head's
ReLU program on the same inputs (rows without a ``head`` field are self-attention);
``--tol=1e-3`` solves the restricted programs to that certificate instead of 1e-6 (both ends
of the bracket are valid at any accuracy);
``--quick`` runs the first case only (no file written).

Resuming: the initial solve of each case (the ``before`` column, half an hour or more at the
transfer size) is saved to ``.attnlens-cache/relu_bracket/`` (an
:class:`attnlens.checkpoint.Checkpoint`: atomic, keyed by the case, head and tol); a re-run of the same case loads it instead of solving again and reports the
CPU seconds the original solve took (``before.resumed: true``). Likewise the refinement after
every re-solve (``refine_bracket(on_resolve=)``: the best result, the rounds so far and the rng
state): a re-run continues with the next round (``after.resumed_after_rounds``; the CPU seconds
add up, ``iterations`` and ``directions_added`` count this run's re-solves only).

At the transfer runs' own size (n = 3000 sentences, 32 tokens, m = 5 gates, the beta the
transfer run selected) only the heads with small cones are in reach:
``python benchmarks/relu_bracket.py --head=mlp --out=relu_bracket_transfer
--cases=16:3000:32:5:0.003:0,...``; self-attention there needs an exact projection onto a cone
of ``n s^2 = 3.1e6`` rows in ``d^2`` dimensions per dictionary column and FISTA iteration.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

from _common import HERE, option, write_result

NAME = "relu_bracket"
BRACKET_TOL = 1e-2
MAX_ROUNDS = 10
#: where each case's initial solve is pickled (a re-run resumes from it)
CHECKPOINTS = HERE.parent / ".attnlens-cache" / "relu_bracket"
TOL = 1e-6
#: (d, n, s, m, beta, seed)
CASES = [(4, 200, 8, 3, 1e-2, 0), (4, 200, 8, 3, 1e-2, 1), (4, 200, 8, 3, 1e-2, 2),
         (4, 200, 8, 3, 1e-3, 0), (8, 200, 8, 3, 1e-2, 0)]


def _inputs(d: int, n: int, s: int, seed: int):
    from attnlens.transfer.features import extract_features
    from attnlens.transfer.pipeline import AVGPOOL_STORE_DIM
    from attnlens.transfer.runner import prepare_inputs

    feats = extract_features("minilm", "rotten_tomatoes", max_tokens=64,
                             store_dim=AVGPOOL_STORE_DIM, progress=False)
    data = prepare_inputs(feats, d, seed, max_train=n, max_tokens=s)
    return data.tokens[data.train], data.labels[data.train]


def _checkpoint(name: str, key: str):
    """The case's :class:`attnlens.checkpoint.Checkpoint` ``CHECKPOINTS/<name>.pkl``, keyed by
    the case (a file of another case is ignored); every save is forced (one per solve)."""
    from attnlens.checkpoint import Checkpoint

    return Checkpoint(CHECKPOINTS / f"{name}.pkl", key, every_s=0.0)


def _initial_solve(key: str, solve, rng):
    """``solve()`` -> ``(result, cpu_seconds, resumed)``, saved under ``key`` with ``rng``'s
    state after the solve (a resumed run continues with the same random stream)."""
    store = _checkpoint(key, key)
    saved = store.load()
    if saved is not None:
        base, cpu, state = saved
        rng.bit_generator.state = state
        return base, cpu, True
    c0 = time.process_time()
    base = solve()
    cpu = time.process_time() - c0
    store.save(lambda: (base, cpu, rng.bit_generator.state), force=True)
    return base, cpu, False


def one(d: int, n: int, s: int, m: int, beta: float, seed: int,
        head: str = "self_attention", tol: float = TOL, progress=None) -> dict:
    import numpy as np

    from attnlens._validation import check_random_state
    from attnlens.convex._linalg import one_blas_thread
    from attnlens.convex.losses import get_loss
    from attnlens.convex.programs import build_program, sample_gates
    from attnlens.convex.relu import solve_relu
    from attnlens.convex.relu_bracket import refine_bracket
    from attnlens.transfer.heads import BFNO_GROUPS

    X, y = _inputs(d, n, s, seed)
    classes, yi = np.unique(y, return_inverse=True)
    Y = np.eye(len(classes))[yi]
    rng = check_random_state(seed)  # as ConvexAttentionClassifier(random_state=seed).fit
    groups = BFNO_GROUPS if head == "bfno" else 1  # as the transfer's B-FNO
    gates = sample_gates(head, m, X.shape[1], d, rng, groups)
    with one_blas_thread():
        program = build_program(X, head, "relu", len(classes), gates=gates, groups=groups)
        key = f"{head}-{d}-{n}-{s}-{m}-{beta:g}-{seed}-{tol:g}"
        base, cpu0, resumed = _initial_solve(
            key,
            lambda: solve_relu(program, Y, beta, "squared", tol=tol, max_iter=20000, rng=rng),
            rng)
        width = lambda u, lo: (u - lo) / u  # noqa: E731
        case = {"head": head, "tol": tol, "d": d, "n": n, "s": s, "m": m, "beta": beta,
                "seed": seed}
        before = {"upper": base.objective, "lower": base.lower_bound,
                  "width": width(base.objective, base.lower_bound),
                  "certificate": base.certificate, "iterations": base.iterations,
                  "cpu_seconds": cpu0, "resumed": resumed,
                  "directions": [int(E.shape[1] // 2) for _, E in base.cone_factors]}
        # refinement done by an interrupted run: (re-solves, best result, rounds, rng state,
        # CPU seconds)
        rounds_store = _checkpoint(f"{key}-rounds", key)
        done, start, rounds, state, cpu_done = rounds_store.load() or (0, base, [], None, 0.0)
        if state is not None:
            rng.bit_generator.state = state
        c1 = time.process_time() - cpu_done  # CPU seconds count from the first round

        def on_round(r: int, lower: float, upper: float) -> None:
            rounds.append({"round": done + r, "lower": lower, "upper": upper,
                           "width": width(upper, lower),
                           "cpu_seconds": time.process_time() - c1})
            if progress is not None:
                progress(case | {"in_progress": True, "before": before, "rounds": rounds})

        def on_resolve(r: int, best) -> None:  # the next round starts from here
            rounds_store.save(lambda: (done + r, best, rounds, rng.bit_generator.state,
                                       time.process_time() - c1), force=True)

        program = dataclasses.replace(program, directions=[
            E[:, : E.shape[1] // 2] for _, E in base.cone_factors])
        R = get_loss("squared").gradient(program.forward(base.Z), Y)
        _, res = refine_bracket(program, Y, beta, "squared", start, bracket_tol=BRACKET_TOL,
                                max_rounds=MAX_ROUNDS - done, tol=tol, max_iter=20000, rng=rng,
                                callback=on_round, on_resolve=on_resolve)
        c2 = time.process_time()
    info = res.bracket
    earlier = rounds[:done]  # rounds of an interrupted run, before this one's first bound
    return case | {
        "before": before,
        "round0_cone_bound": {"lower": rounds[0]["lower"],
                              "width": width(base.objective, rounds[0]["lower"]),
                              "spectral_over_beta": [float(np.linalg.norm(
                                  blk.adjoint(R), 2) / beta) for blk in program.blocks]},
        "after": {"upper": res.objective, "lower": res.lower_bound, "width": info.width,
                  "status": str(info.status), "rounds": done + info.rounds,
                  "resumed_after_rounds": done,
                  "directions_added": info.directions_added, "iterations": info.iterations,
                  "cpu_seconds": c2 - c1,
                  "upper_per_round": [r["upper"] for r in earlier] + info.upper,
                  "lower_per_round": [r["lower"] for r in earlier] + info.lower,
                  "directions": [int(E.shape[1] // 2) for _, E in res.cone_factors]},
        "width_ratio": info.width / width(base.objective, base.lower_bound),
        "loadavg": list(os.getloadavg()),
    }


def _parse(text: str) -> list[tuple]:
    out = []
    for item in text.split(","):
        d, n, s, m, beta, seed = item.split(":")
        out.append((int(d), int(n), int(s), int(m), float(beta), int(seed)))
    return out


def main(cases: list | None = None, quick: bool = False, append: bool = False,
         name: str = NAME, head: str = "self_attention", tol: float = TOL) -> dict:
    import json

    from _common import RESULTS

    path = RESULTS / f"{name}.json"
    rows = json.loads(path.read_text())["rows"] if append and path.exists() else []
    rows = [r for r in rows if not r.get("in_progress")]

    def payload(rows: list) -> dict:
        return {
            "settings": {"dataset": "rotten_tomatoes", "backbone": "minilm",
                         "activation": "relu", "loss": "squared", "bracket_tol": BRACKET_TOL,
                         "max_rounds": MAX_ROUNDS, "max_tokens": 64, "blas_threads": 1,
                         "head_and_tol": "per row (rows without them: self_attention, 1e-6)"},
            "rows": rows,
            "target": "P_relu(S): the ReLU program on the sampled gate patterns S (lower "
                      "bound: certified dual value; upper: attained by a ReLU network)",
            "previous_figure": "no bracket was measured on transfer data before; docs quoted "
                               "0.20 vs 0.39 on a synthetic self-attention problem",
            "note": "CPU only, 2 cores shared with other sessions (see loadavg per row); a row "
                    "with in_progress: true holds the rounds of a case still running",
        }

    def progress(row: dict) -> None:  # every round's bracket as soon as it is known
        if not quick:
            write_result(name, payload(rows + [row]))

    for case in cases or (CASES[:1] if quick else CASES):
        rows.append(one(*case, head=head, tol=tol, progress=progress))
        print(json.dumps({k: rows[-1][k] for k in ("head", "d", "n", "s", "beta", "seed",
                                                   "width_ratio")}
                         | {"before": rows[-1]["before"]["width"],
                            "after": rows[-1]["after"]["width"],
                            "cpu": rows[-1]["after"]["cpu_seconds"]}), flush=True)
        if not quick:
            write_result(name, payload(rows))
    return payload(rows)


if __name__ == "__main__":
    chosen = option("cases")
    main(_parse(chosen) if chosen else None, quick="--quick" in sys.argv,
         append="--append" in sys.argv, name=option("out", NAME),
         head=option("head", "self_attention"), tol=float(option("tol", TOL)))
