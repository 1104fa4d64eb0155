"""Retrieval benchmark (issue 15): re-ranking quality and speed, and inter-modality flow.

1. Quality, 3 seeds each: frozen ViT-S/14 CLS features (112 px) of the labelled image set that
   installs here (Fashion-MNIST if its Debian package is present, else the 5,000-image MNIST
   subset; the JSON records which) and MiniLM sentence embeddings of 4,000 Rotten Tomatoes
   sentences (relevance = same sentiment). Methods: no re-ranking, average QE, alpha-QE,
   k-reciprocal, diffusion, CSA (trained per seed on held-out classes / items). mAP over the
   whole gallery, mP@10, ms per query; CSA's training time separately.
2. Speed, side by side in the same run: k-reciprocal vectorized vs the set-by-set reference,
   diffusion with one sparse LU vs one conjugate-gradient solve per query (the paper's way),
   CSA re-ranking K = 100 for 1,000 queries.
3. IMF per fusion layer for the self-attention visual parser vs the local encoder (3 seeds).

The papers' ROxford/RParis cannot be installed offline; their numbers are quoted, not
reproduced (docs/retrieval.md). CPU only (no GPU in this session); the machine is shared, so
timings are noisy: compare the ratios measured in the same run.
Writes benchmarks/results/retrieval.json and .png. ``--quick`` runs one seed, fewer epochs.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, timed, write_result

from attnlens import retrieval as R
from attnlens.experiments import get, load
from attnlens.retrieval._reference import diffusion_reference, k_reciprocal_reference

SEED = 0
PAPER = {
    "source": "MCC-WH/CSA README (gl18-tl-resnet101-gem-w features, K=1024, L=512)",
    "roxford_medium": {"first_stage": 67.3, "csa": 77.92},
    "roxford_hard": {"first_stage": 44.24, "csa": 58.43},
    "rparis_medium": {"first_stage": 80.57, "csa": 87.2},
    "rparis_hard": {"first_stage": 61.46, "csa": 74.41},
    "claim": "CSA outperforms alpha-QE, k-reciprocal and diffusion re-ranking on ROxf/RPar "
             "(paper, Table 2)",
}
IMF_CLAIM = ("Xue et al. 2021: with a self-attention visual backbone (visual parsing) the "
             "fusion transformer's inter-modality flow is higher than with a CNN backbone")


def quality(seeds: int, epochs: int, work: Path) -> dict:
    load("retrieval")
    run = get("retrieval", "rerank")
    out = {}
    for name, backbone in (("vit", "vit"), ("minilm", "minilm")):
        start = time.perf_counter()
        metrics = run(work / name, seeds=seeds, backbone=backbone, epochs=epochs,
                      progress=False, overwrite=True)
        out[name] = {"dataset": metrics["dataset"], "table": metrics["table"],
                     "units": metrics["units"], "wall_seconds": time.perf_counter() - start,
                     "loadavg_after": os.getloadavg()}
        print(name, metrics["dataset"], flush=True)
        for row in metrics["table"]:
            print(f"  {row['method']:<30} mAP {100 * row['mAP']:.2f} +- "
                  f"{100 * row['mAP_std']:.2f}  mP@10 {100 * row['mP@10']:.2f}  "
                  f"{row['ms_per_query']:.3f} ms/query", flush=True)
    return out


def speed() -> dict:
    rng = np.random.default_rng(SEED)
    out = {}
    # k-reciprocal: vectorized vs the set-by-set reference (small, the reference is slow)
    Q, G = rng.standard_normal((20, 64)), rng.standard_normal((200, 64))
    fast, t_fast = timed(lambda: R.k_reciprocal_distance(Q, G), repeat=3)
    ref, t_ref = timed(lambda: k_reciprocal_reference(Q, G, 20, 6, 0.3))
    Qb, Gb = rng.standard_normal((1000, 384)), rng.standard_normal((3000, 384))
    _, t_big = timed(lambda: R.k_reciprocal_distance(Qb, Gb))
    out["kreciprocal"] = {"n_q": 20, "n_g": 200, "vectorized_s": t_fast, "reference_s": t_ref,
                          "speedup": t_ref / t_fast, "max_abs_diff": float(np.abs(fast - ref).max()),
                          "vectorized_1000x3000_s": t_big}
    # diffusion: one block CG for all queries vs one CG per query (official settings)
    Q, G = rng.standard_normal((200, 64)), rng.standard_normal((2000, 64))
    fast, t_fast = timed(lambda: R.diffusion_scores(Q, G, k=50), repeat=2)
    ref, t_ref = timed(lambda: diffusion_reference(Q, G, 50, 0.99, 3.0, rtol=1e-6))
    out["diffusion"] = {"n_q": 200, "n_g": 2000, "block_cg_s": t_fast, "per_query_cg_s": t_ref,
                        "speedup": t_ref / t_fast,
                        "max_rel_diff": float(np.abs(fast - ref).max() / np.abs(ref).max())}
    X, y = rng.standard_normal((400, 384)), rng.integers(0, 8, 400)
    # re-ranking K = 100 for 1,000 queries after training: the default model and the
    # benchmark's smaller one
    Qc, Gc = rng.standard_normal((1000, 384)), rng.standard_normal((3000, 384))
    ranking = R.first_stage_ranking(Qc, Gc, 100)
    for name, size in (("csa_rerank", {"l": 64, "dim": 128}),
                       ("csa_rerank_benchmark_size", {"l": 32, "dim": 64})):
        csa = R.CSAReranker(k=100, epochs=1, n_threads=2, **size).fit(X, y)
        cpu0 = time.process_time()
        _, t_csa = timed(lambda csa=csa: csa.rerank(Qc, Gc, ranking), repeat=2)
        out[name] = {"n_q": 1000, "K": 100, **size, "seconds": t_csa, "target_s": 10.0,
                     "cpu_seconds_per_call": (time.process_time() - cpu0) / 2,
                     "n_threads": 2, "loadavg": os.getloadavg()}
    for k, v in out.items():
        print(k, {a: (float(f"{b:.4g}") if isinstance(b, float) else b) for a, b in v.items()},
              flush=True)
    return out


def imf(seeds: int, work: Path) -> dict:
    load("retrieval")
    metrics = get("retrieval", "imf")(work / "imf", seeds=seeds, progress=False,
                                      overwrite=True)
    for row in metrics["table"]:
        print(" ", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()},
              flush=True)
    return {"dataset": metrics["dataset"], "table": metrics["table"],
            "units": metrics["units"], "claim": IMF_CLAIM}


def plot(result: dict) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for ax, name in zip(axes[:2], ("vit", "minilm"), strict=True):
        rows = result["quality"][name]["table"]
        ax.barh([r["method"] for r in rows], [100 * r["mAP"] for r in rows],
                xerr=[100 * r["mAP_std"] for r in rows],
                color=["#999"] + ["#4c72b0"] * (len(rows) - 1))
        ax.invert_yaxis()
        lo = min(100 * r["mAP"] for r in rows)
        ax.set_xlim(max(0, lo - 10), min(100, max(100 * r["mAP"] for r in rows) + 5))
        ax.set_xlabel("mAP (%)")
        ax.set_title(f"{name}: {result['quality'][name]['dataset']}", fontsize=9)
    ax = axes[2]
    units = result["imf"]["units"]
    for enc, color in (("parsing", "#c44e52"), ("local", "#4c72b0")):
        arr = np.array([u[enc]["imf"] for u in units.values()])
        layers = np.arange(1, arr.shape[1] + 1)
        ax.errorbar(layers, arr.mean(0), yerr=arr.std(0), marker="o", capsize=3, color=color,
                    label=enc)
    ax.set_xlabel("fusion layer")
    ax.set_ylabel("inter-modality flow")
    ax.legend(fontsize=8)
    ax.set_title(f"IMF, {result['imf']['dataset']} captions", fontsize=9)
    fig.tight_layout()
    fig.savefig(RESULTS / "retrieval.png", dpi=120)


def main(argv: list[str]) -> None:
    """``--quick``: one seed, 3 CSA epochs. ``--section speed|quality|imf``: rerun one part
    and keep the others from the stored JSON; ``--imf-seeds N`` sets the IMF seeds."""
    import json

    quick = "--quick" in argv
    seeds, epochs = (1, 3) if quick else (3, 10)
    sections = {"speed", "quality", "imf"}
    if "--section" in argv:
        sections = {argv[argv.index("--section") + 1]}
    stored = RESULTS / "retrieval.json"
    result = json.loads(stored.read_text()) if stored.exists() and len(sections) < 3 else {}
    result.pop("benchmark", None)
    result.pop("machine", None)
    result["settings"] = {"seeds": seeds, "csa_epochs": epochs, "quick": quick}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "speed" in sections:
            result["speed"] = speed()
        if "quality" in sections:
            result["quality"] = quality(seeds, epochs, work)
        if "imf" in sections:
            imf_seeds = int(argv[argv.index("--imf-seeds") + 1]) if "--imf-seeds" in argv \
                else seeds
            result["imf"] = imf(imf_seeds, work)
    result["paper"] = PAPER
    write_result("retrieval", result)
    plot(result)


if __name__ == "__main__":
    main(sys.argv[1:])
