"""Experiment ``rerank``: CSA against the classic re-rankers on real features (issue 15).

Features: frozen ViT-S/14 (final-layer CLS token, 112 px) on the labelled image set that
installs here (Fashion-MNIST when the Debian package is present, else the 5,000-image MNIST
subset), MiniLM sentence embeddings of Rotten Tomatoes (relevance = same sentiment), or raw
pixels (smoke runs). Protocol per seed (:func:`~attnlens.experiments.retrieval_common.
make_split`): re-ranker trained on held-out classes (images) or held-out items (text);
first stage = cosine top-K; every method re-orders the same shortlist; mAP over the whole
gallery (shortlist re-ordered, the rest in first-stage order) and mP@10; time per query.
The papers' ROxford/RParis do not install offline; see docs/retrieval.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnlens.experiments import register
from attnlens.report import RunFolder, markdown_table

logger = logging.getLogger(__name__)

METHODS = ("first_stage", "qe", "alpha_qe", "kreciprocal", "diffusion", "csa")
LABELS = {"first_stage": "no re-ranking", "qe": "average QE (n=10)",
          "alpha_qe": "alpha-QE (n=10, alpha=3)", "kreciprocal": "k-reciprocal (20, 6, 0.3)",
          "diffusion": "diffusion (k=50, alpha=0.99)", "csa": "CSA (ours, trained)"}
# CPU-sized CSA (official: D=768, L=512, 100 epochs on 4 GPUs); docs/retrieval.md.
# ``train_k``: length of the training lists (None = k); the official code trains on lists of
# K = L = 512 and re-ranks K = 1024 with L = 512 anchors.
DEFAULTS = {"k": 100, "l": 32, "gallery_per_class": 60, "n_queries": 1000,
            "train_per_class": 100, "epochs": 10, "dim": 64, "heads": 4, "train_k": None,
            "optimizer": "adamw", "lr": 1e-3, "center": True, "n_threads": 1}
CSA_KEYS = ("l", "dim", "heads", "epochs", "optimizer", "lr", "center", "n_threads")


def _features(backbone: str, dataset: str, progress: bool):
    from attnlens.experiments import retrieval_common as rc

    if backbone == "vit":
        return rc.image_features(dataset, progress=progress)
    if backbone == "minilm":
        return rc.text_features("rotten_tomatoes" if dataset == "auto" else dataset,
                                progress=progress)
    return rc.pixel_features("digits" if dataset == "auto" else dataset)


def _baselines() -> dict[str, Callable[..., np.ndarray]]:
    from attnlens import retrieval as R

    return {"qe": lambda Q, G, r: R.average_query_expansion(Q, G, r, n=10),
            "alpha_qe": lambda Q, G, r: R.alpha_query_expansion(Q, G, r, n=10, alpha=3.0),
            "kreciprocal": R.k_reciprocal_rerank,
            "diffusion": lambda Q, G, r: R.diffusion_rerank(Q, G, r, k=min(50, len(G) - 1))}


def run_seed(feats, seed: int, methods: Sequence[str], cfg: dict[str, Any]) -> dict[str, Any]:
    """One seed: split, first stage, every method; metrics and seconds per method."""
    from attnlens import retrieval as R
    from attnlens.experiments.retrieval_common import make_split

    split = make_split(feats.labels, seed, cfg["gallery_per_class"], cfg["n_queries"],
                       cfg["train_per_class"])
    X, y = feats.X.astype(np.float64), feats.labels
    Q, G, ql, gl = X[split.queries], X[split.gallery], y[split.queries], y[split.gallery]
    start, cpu0 = time.perf_counter(), time.process_time()
    full = R.first_stage_ranking(Q, G, len(G))
    first_seconds, first_cpu = time.perf_counter() - start, time.process_time() - cpu0
    shortlist = full[:, : cfg["k"]]
    out: dict[str, Any] = {"n_queries": len(Q), "n_gallery": len(G), "n_train": len(split.train),
                           "held_out_classes": split.held_out_classes, "methods": {}}
    for name in methods:
        fit_seconds = 0.0
        cpu0 = time.process_time()
        if name == "first_stage":
            ranked, seconds = shortlist, first_seconds
        elif name == "csa":
            model = R.CSAReranker(k=cfg["train_k"] or cfg["k"], random_state=seed,
                                  progress=cfg.get("progress", False),
                                  **{key: cfg[key] for key in CSA_KEYS})
            model.fit(X[split.train], y[split.train])
            fit_seconds = model.fit_seconds_
            start, cpu0 = time.perf_counter(), time.process_time()
            ranked = model.rerank(Q, G, shortlist)
            seconds = time.perf_counter() - start
        else:
            start = time.perf_counter()
            ranked = _baselines()[name](Q, G, shortlist)
            seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu0 if name != "first_stage" else first_cpu
        metrics = R.evaluate_ranking(R.complete_ranking(ranked, full), ql, gl, ks=(1, 10))
        out["methods"][name] = {**metrics.as_dict(), "seconds": seconds, "cpu_seconds": cpu,
                                "ms_per_query": 1e3 * seconds / len(Q),
                                "fit_seconds": fit_seconds}
        logger.info("seed %d %s: mAP %.4f", seed, name, metrics.map)
    return out


def summarize(units: dict[str, dict[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for name in methods:
        per = [u["methods"][name] for u in units.values() if name in u["methods"]]
        if not per:
            continue
        col = lambda key, per=per: np.array([p[key] for p in per], dtype=float)  # noqa: E731
        rows.append({"method": LABELS[name], "mAP": col("mAP").mean(),
                     "mAP_std": col("mAP").std(), "mP@10": col("mP@10").mean(),
                     "ms_per_query": col("ms_per_query").mean(),
                     "fit_s": col("fit_seconds").mean(), "seeds": len(per)})
    return rows


def plot(rows: list[dict[str, Any]], title: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = [r["method"] for r in rows]
    ax.barh(names, [100 * r["mAP"] for r in rows], xerr=[100 * r["mAP_std"] for r in rows],
            color=["#999" if i == 0 else "#4c72b0" for i in range(len(rows))])
    ax.invert_yaxis()
    ax.set_xlabel("mAP (%), mean and std over seeds")
    lo = min(100 * r["mAP"] for r in rows)
    ax.set_xlim(max(0.0, lo - 10), min(100.0, max(100 * r["mAP"] for r in rows) + 5))
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


@register("retrieval", "rerank")
def run(out: str | Path, *, seeds: int = 3, overwrite: bool = False, backbone: str = "vit",
        dataset: str = "auto", methods: Sequence[str] = METHODS, progress: bool = True,
        **options: Any) -> dict[str, Any]:
    """Run every seed (resumable), write metrics.json, table.csv, rerank.png, report.md."""
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)}; known: {sorted(DEFAULTS)}.")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown methods {bad}; known: {', '.join(METHODS)}.")
    methods = ["first_stage"] + [m for m in methods if m != "first_stage"]
    cfg = {**DEFAULTS, **options}
    feats = _features(backbone, dataset, progress)
    folder = RunFolder(out, {"backbone": backbone, "dataset": feats.dataset, "seeds": seeds,
                             "methods": list(methods), **cfg}, overwrite=overwrite)
    from attnlens.execution import Unit, run_units

    units = run_units(folder, [Unit(f"seed-{seed}", run_seed,
                                    {"seed": seed, "methods": list(methods),
                                     "cfg": {**cfg, "progress": progress}})
                               for seed in range(seeds)],
                      desc="rerank seeds", shared={"feats": feats}, progress=progress)
    rows = summarize(units, methods)
    title = f"{feats.backbone} features, {feats.dataset}: K={cfg['k']}, L={cfg['l']}"
    folder.write_table(rows, "table")
    folder.save_figure(plot(rows, title), "rerank")
    any_unit = next(iter(units.values()))
    text = (f"# Re-ranking: {title}\n\n{len(units)} seeds; {any_unit['n_queries']} queries, "
            f"gallery {any_unit['n_gallery']}, re-ranker trained on {any_unit['n_train']} items"
            f" ({'held-out classes' if any_unit['held_out_classes'] else 'held-out items'})."
            f"\n\n{markdown_table(rows)}\n")
    folder.write_markdown(text)
    metrics = {"table": rows, "units": units, "dataset": feats.dataset, "backbone": backbone}
    folder.write_metrics(metrics)
    return metrics
