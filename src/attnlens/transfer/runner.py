"""Run heads on frozen-backbone features: seeds, validation selection, per-head results.

Protocol (one *unit* = one head on one seed, stored in a :class:`attnlens.report.RunFolder`
so an interrupted benchmark resumes):

1. The test items are fixed by the features (``TransferFeatures.test_idx``); they are used
   once, to score the head selected on validation, and never for fitting or selection.
2. For each seed, the remaining items are split (stratified, seeded) into train and
   validation; tokens are reduced to ``d`` channels, centred by the training tokens' mean
   and scaled by their RMS norm (statistics of the training items only).
3. Each head is fitted on train for every value of its grid (``C``, ``alpha`` or ``beta``);
   the value with the best validation accuracy is kept and scored on test.
4. Convex heads record their objective and certificate at every ``beta``; non-convex heads
   record their objective too, so the aggregate sets the convex optimum next to the
   non-convex run at the same ``beta``, seed and data.
"""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from attnlens._validation import check_int, check_option
from attnlens.transfer.features import TransferFeatures
from attnlens.transfer.heads import HEADS, HeadSpec, count_parameters, get_head
from attnlens.transfer.reduce import masked_mean, pool_tokens, reduce_tokens

logger = logging.getLogger(__name__)

#: the errors that mean "this head cannot run on this machine" (see :func:`run_transfer`)
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (ImportError, MemoryError)

__all__ = ["UNAVAILABLE_ERRORS", "SeedInputs", "TransferResult", "prepare_inputs", "run_head", "run_transfer"]


@dataclass
class SeedInputs:
    """The three input views of one seed's data and its split."""

    tokens: np.ndarray  # (n, s, d) float64, normalized with training statistics
    pooled: np.ndarray  # (n, d) float64, masked mean of the reduced tokens
    pooled_full: np.ndarray  # (n, D) float64
    labels: np.ndarray  # (n,)
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def view(self, inputs: str) -> np.ndarray:
        return {"tokens": self.tokens, "pooled": self.pooled, "pooled_full": self.pooled_full}[
            inputs
        ]


@dataclass
class TransferResult:
    """Per-head aggregate rows, per-unit records and the run's configuration."""

    rows: list[dict[str, Any]]
    units: dict[str, dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)


def split_train_val(
    labels: np.ndarray, test_idx: np.ndarray, val_fraction: float, seed: int,
    max_train: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded train/validation split of the non-test items."""
    from sklearn.model_selection import train_test_split

    pool = np.setdiff1d(np.arange(len(labels)), test_idx)
    train, val = train_test_split(
        pool, test_size=val_fraction, stratify=labels[pool], random_state=seed
    )
    if max_train is not None and len(train) > max_train:
        train, _ = train_test_split(
            train, train_size=max_train, stratify=labels[train], random_state=seed
        )
    return np.sort(train), np.sort(val)


def prepare_inputs(
    features: TransferFeatures, d: int, seed: int, *, val_fraction: float = 0.2,
    max_train: int | None = None, max_tokens: int | None = None, token_pool: int = 1,
) -> SeedInputs:
    """Reduce to ``d`` channels, split, and normalize tokens with training statistics.

    ``max_tokens`` keeps the first tokens of each item; ``token_pool = k`` then averages
    consecutive groups of ``k`` tokens for the token heads (:func:`pool_tokens`). The pooled
    view of the linear and MLP heads is the mean of the reduced tokens before token pooling.
    """
    train, val = split_train_val(features.labels, features.test_idx, val_fraction, seed, max_train)
    tokens, mask = features.tokens, features.mask
    if max_tokens is not None and max_tokens < tokens.shape[1]:
        tokens, mask = tokens[:, :max_tokens], mask[:, :max_tokens]
    method = features.meta.get("reduce", "avgpool")
    # the reduction is linear, so the mean of reduced tokens is the reduced mean token
    mean_token = masked_mean(tokens, mask)[:, None, :]  # (n, 1, D)
    pooled = reduce_tokens(mean_token, np.ones(mean_token.shape[:2], bool), d, method)[:, 0]
    tokens, mask = pool_tokens(tokens, mask, token_pool)  # (n, s, D) with s = ceil(N / k)
    red = np.asarray(reduce_tokens(tokens, mask, d, method), dtype=np.float64)  # (n, s, d)
    valid = mask[train]  # (n_train, s)
    rows = red[train][valid]  # (n_valid, d)
    center = rows.mean(axis=0)  # (d,)
    scale = float(np.sqrt(np.mean(np.sum((rows - center) ** 2, axis=1)))) or 1.0
    normed = (red - center) / scale * mask[..., None]  # (n, s, d), padding stays 0
    return SeedInputs(
        tokens=normed,
        pooled=pooled,
        pooled_full=np.asarray(features.pooled_full, dtype=np.float64),
        labels=np.asarray(features.labels),
        train=train,
        val=val,
        test=np.asarray(features.test_idx),
    )


#: items per predict call: keeps the per-call temporaries of every head bounded (the convex
#: gated self-attention head is matrix-free, but its token products are (tokens, d^2) per call)
PREDICT_CHUNK = 2048


def _accuracy(model: Any, X: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of ``model.predict`` (items are independent, so prediction is chunked)."""
    pred = np.concatenate([np.asarray(model.predict(X[lo:lo + PREDICT_CHUNK]))
                           for lo in range(0, len(X), PREDICT_CHUNK)])
    return float(np.mean(pred == y))


def _fit_seconds(fit: Mapping[str, Any]) -> float:
    """A fit's seconds: a convex fit resumed from a checkpoint, or reused finished, spans
    several calls, and its solver's own seconds add them up (``seconds`` is this call's)."""
    return max(fit["seconds"], fit["solver_seconds"] or 0.0)


def run_head(
    spec: HeadSpec, data: SeedInputs, seed: int, options: Mapping[str, Any] | None = None,
    grid: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Fit ``spec`` on train for each grid value, select on validation, score on test."""
    options = dict(options or {})
    X = data.view(spec.inputs)
    y = data.labels
    Xtr, ytr = X[data.train], y[data.train]
    Xva, yva = X[data.val], y[data.val]
    grid = tuple(spec.grid if grid is None else grid)
    fits: list[dict[str, Any]] = []
    best: tuple[float, int, Any] | None = None
    total = 0.0
    for value in grid:
        model = spec.make(float(value), seed, options)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.perf_counter()
            model.fit(Xtr, ytr)
            seconds = time.perf_counter() - start
        final = model.steps[-1][1] if hasattr(model, "steps") else model
        fit = {
            spec.param: float(value),
            "train_acc": _accuracy(model, Xtr, ytr),
            "val_acc": _accuracy(model, Xva, yva),
            "seconds": seconds,
            "objective": _float_or_none(getattr(final, "objective_", None)),
            "certificate": _float_or_none(getattr(final, "certificate_", None)),
            "status": str(getattr(final, "status_", "")) or None,
            "n_iter": _int_or_none(getattr(final, "n_iter_", None)),
            # the solver's own seconds: over every call when a fit resumed from a checkpoint
            "solver_seconds": _float_or_none(getattr(getattr(final, "result_", None),
                                                     "seconds", None)),
            "warnings": sorted({f"{w.category.__name__}: {w.message}"[:200] for w in caught}),
        }
        fits.append(fit)
        total += _fit_seconds(fit)
        if best is None or fit["val_acc"] > best[0]:
            best = (fit["val_acc"], len(fits) - 1, model)
    if best is None:
        raise ValueError(f"the grid of head {spec.name!r} is empty; give at least one value.")
    _, k, model = best
    chosen = fits[k]
    return {
        "head": spec.name,
        "kind": spec.kind,
        "seed": seed,
        "param": spec.param,
        "selected": chosen[spec.param],
        "val_acc": chosen["val_acc"],
        "train_acc": chosen["train_acc"],
        "test_acc": _accuracy(model, X[data.test], y[data.test]),
        "train_seconds": _fit_seconds(chosen),
        "grid_seconds": total,
        "n_params": count_parameters(model),
        "objective": chosen["objective"],
        "certificate": chosen["certificate"],
        "status": chosen["status"],
        "n_train": int(len(data.train)),
        "n_val": int(len(data.val)),
        "n_test": int(len(data.test)),
        "fits": fits,
    }


def _float_or_none(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _int_or_none(v: Any) -> int | None:
    """An iteration count; scikit-learn stores one per class, so take the largest."""
    try:
        arr = np.asarray(v)
        return None if v is None or arr.size == 0 else int(arr.max())
    except (TypeError, ValueError):
        return None


#: the last inputs prepared in this process, with the features they came from (a worker runs
#: the heads of one seed in a row; held by reference, so a hit is the very same features)
_LAST_INPUTS: dict[str, Any] = {}


def _inputs_for(features: TransferFeatures, d: int, seed: int,
                prep: Mapping[str, Any]) -> SeedInputs:
    key = (d, seed, tuple(sorted(prep.items())))
    if _LAST_INPUTS.get("features") is not features or _LAST_INPUTS.get("key") != key:
        _LAST_INPUTS.clear()
        _LAST_INPUTS.update(features=features, key=key,
                            inputs=prepare_inputs(features, d, seed, **prep))
    return _LAST_INPUTS["inputs"]


def transfer_unit(features: TransferFeatures, *, name: str, seed: int, d: int,
                  prep: Mapping[str, Any], options: Mapping[str, Any],
                  grid: Sequence[float] | None, device: str,
                  checkpoint_dir: str | None = None) -> dict[str, Any]:
    """One (head, seed, d) unit, on whatever worker: inputs, fit over the grid, test score.

    ``checkpoint_dir``: this unit's folder where the convex heads' fits save their solver
    state, so a re-run resumes a fit stopped midway and reuses the grid's finished fits (see
    :class:`~attnlens.convex.estimators.ConvexAttentionClassifier`'s ``checkpoint``);
    :func:`run_transfer` removes the folder once the unit is stored.

    ``features`` is shared (sent to each worker once). A head whose estimator cannot be
    imported comes back unstored (:data:`attnlens.execution.NOT_STORED`) so a later run with
    the package retries it; one over its memory budget is stored with that status.
    """
    from attnlens.execution import NOT_STORED

    spec = get_head(name)
    data = _inputs_for(features, d, seed, prep)
    try:
        opts = {**options, "device": device, "checkpoint_dir": checkpoint_dir}
        unit = run_head(spec, data, seed, opts, grid)
    except ImportError as exc:
        logger.warning("head %s unavailable: %s", name, exc)
        return {"head": name, "kind": spec.kind, "seed": seed, "status": f"unavailable: {exc}",
                NOT_STORED: True}
    except MemoryError as exc:  # declared: the problem exceeds this machine's memory budget
        logger.warning("head %s too large on seed %d: %s", name, seed, exc)
        return {"head": name, "kind": spec.kind, "seed": seed, "d": d,
                "status": f"unavailable: {type(exc).__name__}: {exc}"[:300]}
    unit["d"] = d
    unit["device"] = device
    unit["threads"] = torch.get_num_threads()  # the unit's pinned threads (its times use them)
    return unit


def run_transfer(
    features: TransferFeatures,
    *,
    heads: Sequence[str],
    seeds: Sequence[int] = (0, 1, 2),
    d: int = 32,
    val_fraction: float = 0.2,
    max_train: int | None = None,
    max_tokens: int | None = None,
    token_pool: int = 1,
    options: Mapping[str, Any] | None = None,
    grids: Mapping[str, Sequence[float]] | None = None,
    run: Any | None = None,
    progress: bool = True,
    stored_only: bool = False,
    deadline: float | None = None,
    device: str | None = None,
) -> TransferResult:
    """Run ``heads`` over ``seeds`` on ``features`` and aggregate per head.

    A unit (head, seed) already stored in ``run`` (a :class:`attnlens.report.RunFolder`) is
    loaded, not recomputed; with ``stored_only=True`` nothing new is fitted and missing units are
    reported as ``"not run (stored_only)"`` (to summarize a run stopped for time). With a
    ``deadline`` (a :func:`time.monotonic` value), no unit is started after it; the rest are
    reported ``"not run (time budget)"`` and ``result.config["complete"]`` is False, so a long
    benchmark runs in bounded pieces that resume from the stored units. A head
    whose estimator cannot be imported is reported with ``status="unavailable: <reason>"``
    and not stored (a later run with the package retries it); a head that fails (for example
    a convex program too large for its dense form) is stored with that status, so resumed and
    stored-only summaries keep the reason (delete its unit file to retry it).

    The units run on the current backend of :mod:`attnlens.execution` (``--backend``), the
    features sent to each worker once; torch heads train on ``device`` (default: ``"cuda"``
    when a GPU is visible, else ``"cpu"``), recorded in each unit.
    """
    from attnlens.execution import Unit, resolve_device, run_units
    from attnlens.transfer.summary import aggregate

    heads = [check_option(h, "heads", HEADS) for h in heads]
    if not heads:
        raise ValueError("heads is empty; pass at least one head name, e.g. ['linear'].")
    seeds = [check_int(s, "seeds", low=0) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty; pass at least one seed, e.g. [0].")
    d = check_int(d, "d", low=1)
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1); got {val_fraction!r}.")
    grids = dict(grids or {})
    for name, grid in grids.items():
        if len(tuple(grid)) == 0:
            raise ValueError(f"grids[{name!r}] is empty; give at least one value.")
    # non-convex heads first, so a convex head's counterpart objective is there when it is read
    order = sorted(heads, key=lambda h: {"baseline": 0, "nonconvex": 1, "convex": 2}[HEADS[h].kind])
    device = resolve_device(device)
    prep = {"val_fraction": val_fraction, "max_train": max_train, "max_tokens": max_tokens,
            "token_pool": token_pool}
    todo = [
        Unit(key, transfer_unit,
             {"name": name, "seed": seed, "d": d, "prep": prep, "options": dict(options or {}),
              "grid": grids.get(name), "device": device,
              "checkpoint_dir": None if run is None else str(run.path / "checkpoints" / key)})
        for seed in seeds for name in order for key in [f"{name}-seed{seed}-d{d}"]
    ]
    if stored_only:
        found = {u.key: run.load_unit(u.key) for u in todo
                 if run is not None and run.has_unit(u.key)}
    else:
        found = run_units(run, todo, desc=f"transfer d={d}", shared={"features": features},
                          progress=progress, deadline=deadline)
    if run is not None:  # a stored unit's finished fits are no longer needed to resume it
        for key in found:
            if run.has_unit(key):
                shutil.rmtree(run.path / "checkpoints" / key, ignore_errors=True)
    units: dict[str, dict[str, Any]] = {}
    for u in todo:
        if u.key in found:
            units[u.key] = found[u.key]
            continue
        why = "stored_only: stopped for time" if stored_only else "time budget: run again"
        units[u.key] = {"head": u.kwargs["name"], "kind": HEADS[u.kwargs["name"]].kind,
                        "seed": u.kwargs["seed"], "status": f"not run ({why})"}
    complete = all("test_acc" in u or str(u.get("status", "")).startswith("unavailable")
                   for u in units.values())
    config = {"heads": list(heads), "seeds": list(seeds), "d": d, "val_fraction": val_fraction,
              "max_train": max_train, "max_tokens": max_tokens, "token_pool": token_pool,
              "options": dict(options or {}), "features": features.meta, "complete": complete}
    return TransferResult(rows=aggregate(units, heads, d), units=units, config=config)
