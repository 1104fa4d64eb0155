"""``attnlens svm solve`` and ``attnlens svm reproduce``.

``solve``: solve Att-SVM / Att-SVM* on a generated problem or an ``.npz`` file.

Score convention ``score_t = x_t^T W z``. Input ``.npz`` keys:

* ``X`` (n, T, d) tokens (required);
* ``Z`` (n, d) queries (cross-attention), or (n, K, d) one query per output position
  (seq2seq); absent for self-attention (with ``query_index``) or when every token is a query;
* ``query_index`` scalar int: self-attention, ``z_i = x_{i, query_index}``;
* ``selection`` (n,) or (n, K) selected token indices; when absent, ``Y`` (n,) labels +-1
  and ``v`` (d,) head select the optimal tokens ``argmax_t Y_i v^T x_it`` (cross/self).

The variant is inferred (``query_index`` -> self, ``Z`` 2-D -> cross, ``Z`` 3-D or no ``Z``
-> seq2seq) unless ``--variant`` is given.
"""

from __future__ import annotations

import enum
import logging
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import typer

from attnlens.cli.execution import ADDRESS, BACKEND, WORKERS, backend_options
from attnlens.execution import Backend

logger = logging.getLogger(__name__)

app = typer.Typer(no_args_is_help=True, add_completion=False)



class Norm(str, enum.Enum):
    """``--norm``: Att-SVM (Frobenius), Att-SVM* (nuclear) or both."""

    fro = "fro"
    nuc = "nuc"
    both = "both"


class Variant(str, enum.Enum):
    """``--variant``: how the queries are formed (see the module docstring)."""

    cross = "cross"
    self_ = "self"
    seq2seq = "seq2seq"
    causal = "causal"


class Data(str, enum.Enum):
    """``--data``: attnlens's numpy generator, or the official TF-as-SVM notebook's (torch,
    seed = run, bit for bit)."""

    attnlens = "attnlens"
    official = "official"


class Method(str, enum.Enum):
    """``--method``: the solver (``attnlens.svm.att_svm``'s ``method``)."""

    auto = "auto"
    cvxpy = "cvxpy"
    active_set = "active_set"
    interior_point = "interior_point"



class _InputError(ValueError):
    """Bad ``--input`` file (the message says what to fix)."""


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _planted_selection(X: np.ndarray, Q: np.ndarray, causal: bool, rng) -> np.ndarray:
    """Top token under a planted Gaussian ``W0`` per query: ``argmax_t x_t^T W0 q_k``."""
    d = X.shape[2]
    W0 = rng.standard_normal((d, d))
    S = np.einsum("itd,ikd->ikt", X, Q @ W0.T)  # (n, K, T)
    if causal:
        T = X.shape[1]
        S = np.where(np.arange(T)[None, None, :] <= np.arange(S.shape[1])[None, :, None], S,
                     -np.inf)
    return S.argmax(axis=2)


def _optimal_per_position(gamma: np.ndarray, K: int, causal: bool) -> np.ndarray:
    """``argmax_t gamma_it`` for each output position (causal: over ``t <= k``)."""
    n, T = gamma.shape
    G = np.broadcast_to(gamma[:, None, :], (n, K, T))
    if causal:
        G = np.where(np.arange(T)[None, None, :] <= np.arange(K)[None, :, None], G, -np.inf)
    return G.argmax(axis=2)


def generated_problem(n: int, T: int, d: int, seed: int, variant: str, planted: bool,
                      query_index: int = 0) -> dict[str, Any]:
    """A random problem (the papers' unit-norm Gaussian setting) with its selection.

    ``planted``: per query, the top token under a planted Gaussian ``W0`` (feasible by
    construction); otherwise the optimal tokens ``argmax_t Y_i v^T x_it`` (may be
    infeasible when n is large compared with d).
    """
    from attnlens.svm.problems import planted_problem, random_problem

    rng = np.random.default_rng(seed)
    if variant == "cross" and planted:
        p, sel = planted_problem(n, T, d, seed=rng)
        return {"X": p.X, "Z": p.Z, "selection": sel, "query_index": None}
    p = random_problem(n, T, d, rng, self_attention=variant == "self", query_index=query_index)
    if variant in ("cross", "self"):
        Q = p.queries[:, None, :]
        sel = (_planted_selection(p.X, Q, False, rng)[:, 0] if planted else p.optimal_tokens)
        return {"X": p.X, "Z": p.Z, "selection": sel,
                "query_index": query_index if variant == "self" else None}
    causal = variant == "causal"
    sel = (_planted_selection(p.X, p.X, causal, rng) if planted
           else _optimal_per_position(p.token_scores, T, causal))
    return {"X": p.X, "Z": None, "selection": sel, "query_index": None}


def load_npz_problem(path: Path, variant: str | None) -> dict[str, Any]:
    """Read an input ``.npz`` (keys in the module docstring); returns the solve arguments."""
    path = Path(path)
    if not path.is_file():
        raise _InputError(f"--input {str(path)!r} does not exist; pass an .npz file with X, "
                          "Z or query_index, and selection.")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise _InputError(f"--input {str(path)!r} is not a readable .npz file ({exc}); write "
                          "it with numpy.savez(path, X=..., Z=..., selection=...).") from exc
    keys = sorted(arrays)
    if "X" not in arrays:
        raise _InputError(f"--input {path.name} has no array 'X' (found keys {keys}); it needs "
                          "X (n, T, d) tokens, Z (n, d) or query_index, and selection (n,).")
    X = arrays["X"]
    if X.ndim != 3:
        raise _InputError(f"--input {path.name}: X must have shape (n, T, d), got {X.shape}.")
    Z = arrays.get("Z")
    qi = arrays.get("query_index")
    if qi is not None:
        if qi.size != 1 or qi.dtype.kind not in "iu":
            raise _InputError(f"--input {path.name}: query_index must be one integer, got "
                              f"{qi!r}.")
        qi = int(qi.reshape(()))
        if Z is not None:
            raise _InputError(f"--input {path.name} holds both Z and query_index; keep Z for "
                              "cross-attention or query_index for self-attention.")
    if variant is None:
        if qi is not None:
            variant = "self"
        elif Z is not None and Z.ndim == 2:
            variant = "cross"
        else:
            variant = "seq2seq"
    sel = arrays.get("selection")
    if sel is None:
        if "Y" not in arrays or "v" not in arrays:
            raise _InputError(f"--input {path.name} has no 'selection' (found keys {keys}); "
                              "add selection (n,), or Y (n,) and v (d,) to select the optimal "
                              "tokens.")
        if variant not in ("cross", "self"):
            raise _InputError(f"--input {path.name}: selecting optimal tokens from Y and v "
                              f"works for cross/self only (variant {variant!r}); add selection.")
        from attnlens.svm.problems import TokenSelectionProblem

        p = TokenSelectionProblem(X, arrays["Y"], arrays["v"], Z=Z, query_index=qi)
        sel = p.optimal_tokens
    return {"X": X, "Z": Z, "selection": sel, "query_index": qi, "variant": variant}


def _summary(res: Any) -> dict[str, Any]:
    sup = res.support
    flat = [s for row in sup for s in (row if isinstance(row, list) else [row])]
    return {
        "norm": res.norm,
        "method": res.method,
        "status": str(res.status),
        "objective": res.objective,
        "certificate": res.certificate,
        "seconds": res.seconds,
        "iterations": res.iterations,
        "rank": res.rank,
        "support_size": int(sum(len(s) for s in flat)),
    }


def _table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("norm", "method", "status", "objective", "certificate", "seconds", "rank",
                "support", "iterations"):
        table.add_column(col, justify="left" if col in ("norm", "method", "status") else "right")
    for r in rows:
        if r.get("status") == "infeasible":
            table.add_row(r["norm"], r["method"], "infeasible", "-", "-", f"{r['seconds']:.3f}",
                          "-", "-", "-")
            continue
        table.add_row(r["norm"], r["method"], r["status"], f"{r['objective']:.10g}",
                      f"{r['certificate']:.2e}", f"{r['seconds']:.3f}", str(r["rank"]),
                      str(r["support_size"]), str(r["iterations"]))
    Console(width=120).print(table)


@app.command("solve")
def solve(
    n: int = typer.Option(50, "--n", min=1, help="Sequences (generated problem)."),
    T: int = typer.Option(16, "--T", min=2, help="Tokens per sequence (generated problem)."),
    d: int = typer.Option(32, "--d", min=1, help="Token dimension (generated problem)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated problem."),
    norm: Norm = typer.Option(Norm.fro, "--norm", help="fro (Att-SVM), nuc (Att-SVM*) or both."),
    variant: Variant = typer.Option(None, "--variant", help="cross | self | seq2seq | causal "
                                "(default: cross for generated problems, inferred for --input)."),
    planted: bool = typer.Option(True, "--planted/--random", help="Generated selection: top "
                                 "token under a planted random W (feasible), or the optimal "
                                 "tokens argmax_t Y v^T x_t (may be infeasible when n >> d)."),
    method: Method = typer.Option(Method.auto, "--method", help="auto (fast default), cvxpy "
                               "(reference), or a named method of attnlens.svm.att_svm."),
    tol: float = typer.Option(1e-7, "--tol", min=0.0, help="Target relative duality gap."),
    query_index: int = typer.Option(0, "--query-index", min=0, help="Query token of the "
                                    "generated self-attention problem."),
    input: Path = typer.Option(None, "--input", help="An .npz with X, Z or query_index, and "
                               "selection (or Y and v); see `attnlens svm solve --help`."),
    out: Path = typer.Option(None, "--out", help="Folder to write result.json and result.npz "
                             "(atomically)."),
) -> None:
    """Solve Att-SVM (min ||W||_F) and/or Att-SVM* (min ||W||_*) s.t.
    (x_{i,a_i} - x_it)^T W z_i >= 1, and print objective, status, certificate, seconds, rank.

    Input .npz keys: X (n, T, d); Z (n, d) for cross-attention or (n, K, d) for seq2seq, or
    query_index for self-attention; selection (n,) or (n, K), or Y (n,) and v (d,) to select
    the optimal tokens. Exit codes: 0 solved, 1 infeasible, 2 bad input.
    """
    from attnlens._io import atomic_save_npz, atomic_write_json
    from attnlens.errors import InfeasibleError
    from attnlens.svm.attsvm import att_svm

    norm, method = Norm(norm).value, Method(method).value
    variant = None if variant is None else Variant(variant).value
    if norm == "both" and method not in ("auto", "cvxpy"):
        _fail(f"--method {method} solves one norm only; with --norm both use auto or cvxpy, "
              "or pick --norm fro|nuc.")
    if tol <= 0:
        _fail(f"--tol must be > 0; got {tol!r}.")
    if input is not None:
        try:
            prob = load_npz_problem(input, variant)
        except (_InputError, ValueError, TypeError) as exc:
            _fail(str(exc))
        source = {"input": str(input), "variant": prob["variant"]}
    else:
        variant = variant or "cross"
        if variant == "self" and query_index >= T:
            _fail(f"--query-index must be < T={T}; got {query_index}.")
        prob = generated_problem(n, T, d, seed, variant, planted, query_index)
        prob["variant"] = variant
        source = {"generated": "planted" if planted else "random", "n": n, "T": T, "d": d,
                  "seed": seed, "variant": variant,
                  "selection_rule": ("top token under a planted Gaussian W0" if planted
                                     else "optimal tokens argmax_t Y_i v^T x_it")}
    X, Z, sel = prob["X"], prob["Z"], prob["selection"]
    source.update(shape=list(np.shape(X)))
    norms = ["fro", "nuc"] if norm == "both" else [norm]
    rows: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {"selection": np.asarray(sel)}
    code = 0
    for nm in norms:
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                res = att_svm(X, Z, sel, norm=nm, variant=prob["variant"], method=method,
                              tol=tol, query_index=prob["query_index"])
            for w in caught:
                typer.echo(f"warning: {w.message}", err=True)
        except InfeasibleError as exc:
            seqs = exc.evidence.get("sequences")
            typer.echo(f"{nm}: {exc}", err=True)
            rows.append({"norm": nm, "method": method, "status": "infeasible",
                         "seconds": time.perf_counter() - start, "sequences": seqs})
            code = 1
            continue
        except (ValueError, TypeError) as exc:
            _fail(str(exc))
        row = _summary(res)
        rows.append(row)
        arrays[f"W_{nm}"] = res.W
        arrays[f"margins_{nm}"] = res.margins
        arrays[f"duals_{nm}"] = res.duals
    desc = ", ".join(f"{k}={v}" for k, v in source.items() if k != "selection_rule")
    _table(rows, f"Att-SVM ({desc})")
    if out is not None:
        out = Path(out)
        payload = {"problem": source, "results": {r["norm"]: r for r in rows}}
        atomic_save_npz(out / "result.npz", **arrays)
        atomic_write_json(out / "result.json", payload)
        typer.echo(f"wrote {out / 'result.json'} and {out / 'result.npz'}")
    if code:
        raise typer.Exit(code)


@app.command("reproduce")
def reproduce(
    name: str = typer.Argument(..., help="Experiment name (see `--list`)."),
    seeds: int | None = typer.Option(
        None, "--seeds", min=1, help="Number of seeds or runs (experiment default: 100; "
        "multi-token 500 counted runs per d and rank 100 instances per cell, as the official "
        "notebooks)."),
    out: str = typer.Option(None, "--out", help="Run folder (default runs/<NAME>)."),
    steps: int = typer.Option(None, "--steps", min=1, help="Training steps (experiment default)."),
    chunk: int = typer.Option(None, "--chunk", min=1, help="Seeds per unit (experiment "
                              "default); smaller chunks spread over more workers."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard a stored run with "
                                   "another config."),
    backend: Backend = BACKEND,
    address: str = ADDRESS,
    workers: int = WORKERS,
    data: Data = typer.Option(None, "--data", help="Problem generator: attnlens (default) or "
                              "official (the TF-as-SVM notebook's, seed = run; "
                              "local-convergence and nuclear-bias)."),
) -> None:
    """Reproduce an Att-SVM dynamics experiment; writes config.json, metrics.json and PNGs and
    resumes an interrupted sweep in the same folder (on any --backend)."""
    from attnlens.experiments import accepts, get, load
    from attnlens.report import markdown_table

    known = load("svm")
    if name not in known:
        typer.echo(f"unknown experiment {name!r}; known: {', '.join(known)}", err=True)
        raise typer.Exit(2)
    kwargs: dict[str, Any] = {"overwrite": overwrite}
    if seeds is not None:
        kwargs["seeds"] = seeds
    if steps is not None:
        if not accepts("svm", name, "steps"):
            typer.echo(f"experiment {name!r} does not take --steps; drop it.", err=True)
            raise typer.Exit(2)
        kwargs["steps"] = steps
    if chunk is not None:
        if not accepts("svm", name, "chunk"):
            typer.echo(f"experiment {name!r} does not take --chunk; drop it.", err=True)
            raise typer.Exit(2)
        kwargs["chunk"] = chunk
    if data is not None:
        if not accepts("svm", name, "data"):
            typer.echo(f"experiment {name!r} does not take --data; drop it.", err=True)
            raise typer.Exit(2)
        kwargs["data"] = Data(data).value
    folder = out or f"runs/{name}"
    with backend_options(backend, address, workers):
        metrics = get("svm", name)(folder, **kwargs)
    rows = [{"metric": k, "value": v} for k, v in _flatten(metrics)]
    typer.echo(markdown_table(rows))
    typer.echo(f"results written to {folder}")


def _flatten(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Scalar leaves of nested metrics (means only for summaries; lists and paper values
    are left to metrics.json)."""
    out: list[tuple[str, Any]] = []
    for key, val in metrics.items():
        name = f"{prefix}{key}"
        if key == "paper" or isinstance(val, list):
            continue
        if isinstance(val, dict):
            if "mean" in val:
                out.append((f"{name}.mean", val["mean"]))
            else:
                out.extend(_flatten(val, f"{name}."))
        elif isinstance(val, int | float):
            out.append((name, val))
    return out
