"""The transfer benchmark end to end: features -> heads per d -> run folder report."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attnlens._validation import check_int, check_option, raise_invalid
from attnlens.cache import ExtractionPaused
from attnlens.execution import resolve_device
from attnlens.report import RunFolder, markdown_table
from attnlens.transfer.features import extract_features
from attnlens.transfer.runner import run_transfer
from attnlens.transfer.summary import plot_dims, plot_rows, table_rows, verdict

logger = logging.getLogger(__name__)

__all__ = ["TABLE_FIELDS", "run_benchmark", "table_rows"]

TABLE_FIELDS = ("head", "kind", "test_acc", "n_params", "train_s", "selected", "objective",
                "nonconvex_objective", "nonconvex_excess", "convex<=nonconvex", "certificate",
                "status")


#: channels stored by average pooling: the largest ``d`` without PCA, and every ``d`` must divide it
AVGPOOL_STORE_DIM = 64


def check_dims(dims: Sequence[int], reduce: str) -> list[int]:
    """Validate the reduced dimensions before any feature is extracted.

    With ``reduce="avgpool"`` the features are stored at :data:`AVGPOOL_STORE_DIM` channels
    and each ``d`` is an average over groups of them, so ``d`` must divide it.
    """
    dims = [check_int(d, "dims", low=1, caller="run_benchmark") for d in dims]
    if not dims:
        raise_invalid("dims", "a non-empty list of reduced dimensions", "got []",
                      "Pass e.g. [32].", caller="run_benchmark")
    if reduce == "avgpool":
        allowed = [g for g in range(1, AVGPOOL_STORE_DIM + 1) if AVGPOOL_STORE_DIM % g == 0]
        for d in dims:
            if d not in allowed:
                raise_invalid(
                    "dims", f"values in {allowed} with reduce='avgpool'", d,
                    f"Features are stored at {AVGPOOL_STORE_DIM} channels; use one of those, "
                    "or reduce='pca' for other values.", caller="run_benchmark",
                )
    return dims


_NAMES = {"minilm": "MiniLM", "vit": "ViT-S/14", "rotten_tomatoes": "Rotten Tomatoes",
          "imdb": "IMDB", "fashion_mnist": "Fashion-MNIST", "mnist": "MNIST (5k)",
          "digits": "digits"}


def run_benchmark(
    out: str | Path,
    *,
    backbone: str = "minilm",
    dataset: str = "rotten_tomatoes",
    heads: Sequence[str] = ("linear_full", "linear", "mlp"),
    seeds: Sequence[int] = (0, 1, 2),
    dims: Sequence[int] = (32,),
    reduce: str = "avgpool",
    n_items: int | None = None,
    max_train: int | None = None,
    max_tokens: int = 64,
    head_tokens: int | None = None,
    token_pool: int = 1,
    token_grid: int = 4,
    image_size: int = 224,
    test_fraction: float = 0.2,
    test_split: str = "stratified",
    val_fraction: float = 0.2,
    options: Mapping[str, Any] | None = None,
    grids: Mapping[str, Sequence[float]] | None = None,
    cache_dir: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    stored_only: bool = False,
    time_budget_s: float | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Run the transfer benchmark and write ``out`` (config, units, metrics, CSV, PNG, markdown).

    Returns the metrics dict (also in ``out/metrics.json``): per-d aggregate rows, the verdict on
    the paper's finding, feature metadata and timings. Re-running with the same arguments
    resumes: finished (head, seed, d) units are loaded from ``out/units``.

    ``head_tokens`` keeps the first tokens for the heads and ``token_pool`` averages groups of
    that many consecutive tokens (see :func:`attnlens.transfer.runner.prepare_inputs`).
    ``test_split``: "stratified" (a fixed ``test_fraction``) or "official" (the dataset's own
    test part, Fashion-MNIST only; :func:`attnlens.transfer.features.extract_features`).
    ``time_budget_s`` bounds one call: no extraction chunk or (head, seed, d) unit is started
    after it; ``metrics["complete"]`` says whether everything ran (call again to resume).
    The (head, seed, d) units run on the current :mod:`attnlens.execution` backend; the
    backbone extracts features and torch heads train on ``device`` (default: the GPU when one
    is visible), named in the metrics.
    """
    check_option(reduce, "reduce", ("avgpool", "pca"), caller="run_benchmark")
    dims = check_dims(dims, reduce)
    config = {
        "backbone": backbone, "dataset": dataset, "heads": list(heads), "seeds": list(seeds),
        "dims": dims, "reduce": reduce, "n_items": n_items, "max_train": max_train,
        "max_tokens": max_tokens, "head_tokens": head_tokens, "token_pool": token_pool,
        "token_grid": token_grid,
        "test_fraction": test_fraction, "val_fraction": val_fraction,
        "options": dict(options or {}), "grids": {k: list(v) for k, v in (grids or {}).items()},
    }
    if backbone == "vit":
        config["image_size"] = image_size
    if test_split != "stratified":  # (kept out otherwise: earlier run folders stay valid)
        config["test_split"] = test_split
    # seeds stay out of the folder's identity: units are keyed by seed, so adding seeds to a
    # finished run resumes it instead of starting over
    run = RunFolder(out, {k: v for k, v in config.items() if k != "seeds"}, overwrite=overwrite)
    start = time.perf_counter()
    deadline = None if time_budget_s is None else time.monotonic() + float(time_budget_s)
    try:
        features = extract_features(
            backbone, dataset, max_tokens=max_tokens,
            store_dim=max(dims) if reduce == "pca" else AVGPOOL_STORE_DIM, reduce=reduce, n_items=n_items,
            test_fraction=test_fraction, test_split=test_split, token_grid=token_grid,
            image_size=image_size,
            cache_dir=cache_dir, progress=progress, deadline=deadline, device=device,
        )
    except ExtractionPaused as exc:
        logger.info("%s", exc)
        metrics = {"config": config, "complete": False, "stored_only": stored_only,
                   "paused": str(exc), "extraction_chunks": [exc.done, exc.total],
                   "total_seconds": time.perf_counter() - start}
        run.write_metrics(metrics)
        return metrics
    feature_seconds = time.perf_counter() - start
    per_d: dict[str, Any] = {}
    complete = True
    csv_rows: list[dict[str, Any]] = []
    md = [f"# Transfer: {backbone} on {features.meta['dataset']}\n"]
    if features.meta.get("subset"):
        md.append(f"**Subset run**: {features.meta['n_items']} of "
                  f"{features.meta['n_items_available']} items (stratified, seeded).\n")
    for d in dims:
        t0 = time.perf_counter()
        result = run_transfer(
            features, heads=heads, seeds=seeds, d=d, val_fraction=val_fraction,
            max_train=max_train, max_tokens=head_tokens, token_pool=token_pool, options=options,
            grids=grids, run=run, progress=progress, stored_only=stored_only, deadline=deadline,
            device=device,
        )
        complete = complete and result.config["complete"]
        text = verdict(result.rows)
        per_d[str(d)] = {"rows": result.rows, "verdict": text,
                         "seconds": time.perf_counter() - t0}
        table = table_rows(result.rows)
        csv_rows.extend(table)
        run.save_figure(plot_rows(result.rows, f"{backbone} / {features.meta['dataset']}, d={d}"),
                        f"accuracy_d{d}")
        md += [f"## d = {d}\n", markdown_table(table), f"\n{text}\n",
               f"\n![accuracy](accuracy_d{d}.png)\n"]
    metrics = {
        "config": config,
        "complete": complete,
        "stored_only": stored_only,
        "features": features.meta,
        "feature_seconds": feature_seconds,
        "per_d": per_d,
        "total_seconds": time.perf_counter() - start,
        "device": resolve_device(device),
    }
    if len(per_d) > 1:
        title = (f"{_NAMES.get(backbone, backbone)} / "
                 f"{_NAMES.get(features.meta['dataset'], features.meta['dataset'])}: test "
                 f"accuracy, mean ± std over {len(seeds)} seeds")
        run.save_figure(plot_dims(per_d, title), "accuracy")
        md.insert(1, "![accuracy over d](accuracy.png)\n")
    if not complete:
        md.insert(1, "**Incomplete**: some (head, seed, d) units have not run yet (time budget "
                     "or stored-only summary); run the same command again to resume.\n")
    run.write_metrics(metrics)
    run.write_table(csv_rows, "results")
    run.write_markdown("\n".join(md))
    return metrics
