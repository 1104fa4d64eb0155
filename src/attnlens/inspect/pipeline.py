"""``attnlens inspect``: every lens of :mod:`attnlens.lenses` on one real model and its input.

Capture (one forward pass per input, :mod:`attnlens.backbones.capture`), then rollout and
flow (Abnar & Zuidema 2020), head statistics and Michel et al.'s head importance for a
sentiment read-out on the frozen encoder (:mod:`attnlens.inspect.probe`), the Att-SVM of every
head (Tarzanagh et al. 2023), kernel spectra (Chen et al. 2023) and the
causal lens (Rohekar et al. 2023, CLEANN). Writes ``report.md``, ``report.html`` (self-contained),
``metrics.json`` and the PNGs into one folder.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from attnlens._io import atomic_write_json, atomic_write_text
from attnlens.inspect.render import Section, to_html, to_markdown

logger = logging.getLogger(__name__)

__all__ = ["FLOW_FULL_MAX", "load_image", "run_inspect"]

#: inputs up to this many tokens get every flow row; longer ones the first token's row
FLOW_FULL_MAX = 128
#: queries per input in the Att-SVM lens (evenly spaced; keeps the programs small at d=384)
SVM_QUERIES = 4
#: Att-SVM heatmap: a head "selects like the max-margin SVM" above this cosine with W^mm
SVM_SET_RATIO = 0.5


def load_image(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8; a clear error when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    from attnlens._validation import raise_invalid

    p = Path(path)
    if not p.is_file():
        raise_invalid("image", "an existing image file", str(path), "Check the path.",
                      "inspect")
    try:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise_invalid("image", "a readable image (PNG, JPEG, ...)", str(path),
                      f"Pillow could not read it ({exc}).", "inspect")
    raise AssertionError("unreachable")  # pragma: no cover


def _save(fig, folder: Path, name: str) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(folder / f"{name}.png", dpi=110)
    plt.close(fig)
    return name


def _grid_rows(values: np.ndarray, name: str) -> list[dict[str, Any]]:
    return [{"layer": i, f"mean {name}": float(np.nanmean(values[i])),
             f"max {name}": float(np.nanmax(values[i])),
             "argmax head": int(np.nanargmax(values[i]))} for i in range(values.shape[0])]


#: the causal lens explains the first token's output ([CLS]); candidate sets up to this size
CAUSAL_MAX_SIZE = 3
#: ICD (the paper's search) up to this many tokens, stable PC beyond
CAUSAL_ICD_MAX = 48


def _flip_predicate(encoder, probe, text: str, prediction: int):
    """``is_explanation`` for CLEANN: removing the candidate tokens flips the read-out."""
    import torch

    ids = encoder.tokenizer(text, truncation=True, max_length=encoder.max_positions,
                            return_tensors="pt")["input_ids"][0]

    def flips(candidates):
        out = []
        with torch.inference_mode():
            for cand in candidates:
                keep = torch.ones(len(ids), dtype=torch.bool)
                keep[list(cand)] = False
                keep[0] = keep[-1] = True  # [CLS] and [SEP] stay
                hidden = encoder.model(input_ids=ids[keep][None]).last_hidden_state[0]
                logit = hidden.double().mean(0).numpy() @ probe.weights[-1] + probe.biases[-1]
                out.append(int(logit > 0) != prediction)
        return out

    return flips


def _causal(cap, section: Section, metrics: dict[str, Any], folder: Path,
            encoder=None, probe=None, preds=None) -> None:
    """The causal lens (Rohekar et al. 2023, :mod:`attnlens.lenses.causal`) on the deepest
    layer's head-averaged attention; 'pending' while the module is not importable."""
    if importlib.util.find_spec("attnlens.lenses.causal") is None:
        section.text("causal lens: pending (attnlens.lenses.causal is not importable).")
        metrics["causal"] = {"status": "pending"}
        return
    from attnlens.inspect.figures import causal_graph
    from attnlens.lenses.causal import causal_explanation

    section.text("Rohekar et al. 2023 (CLEANN): the deepest layer's attention (heads "
                 "averaged) read as a linear SEM over the tokens; Fisher-z tests with the "
                 f"hidden size ({cap.dim}) as effective sample size give a graph (ICD up to "
                 f"{CAUSAL_ICD_MAX} tokens, stable PC beyond); the explanation of the first "
                 "token's output is the smallest token set in its PDS-tree whose removal flips "
                 "the sentiment read-out (without a read-out: the whole PDS set).")
    rows = []
    for idx, (tokens, att) in enumerate(zip(cap.tokens, cap.attentions, strict=True)):
        deep = att[-1].mean(axis=0)  # (n, n)
        n = len(tokens)
        predicate = None
        if probe is not None and cap.texts:
            predicate = _flip_predicate(encoder, probe, cap.texts[idx], int(preds[idx]))
        res = causal_explanation(deep, 0, float(cap.dim), search="icd" if n <= CAUSAL_ICD_MAX
                                 else "pc", is_explanation=predicate,
                                 max_size=CAUSAL_MAX_SIZE if predicate else None)
        rows.append({"input": idx, "graph": type(res.graph).__name__.replace("Result", ""),
                     "edges": int(np.triu(res.graph.adjacency, 1).sum()),
                     "PDS set": " ".join(tokens[i] for i in res.pds_set),
                     "explanation": " ".join(tokens[i] for i in res.tokens),
                     "flips the read-out": res.found if predicate else "n/a"})
        if idx < 3 and n <= CAUSAL_ICD_MAX:
            section.image(_save(causal_graph(res.graph.adjacency, tokens, res.tokens,
                                             f"causal graph, input {idx}"), folder,
                                f"causal_{idx}"))
    section.table(rows)
    metrics["causal"] = {"status": "done", "rows": rows}


def run_inspect(
    out: str | Path,
    *,
    model: str = "minilm",
    texts: list[str] | None = None,
    images: list[np.ndarray] | None = None,
    truncate: bool = True,
    image_size: int = 224,
    svm_queries: int = SVM_QUERIES,
    importance: bool = True,
    attsvm: bool = True,
    progress: bool = True,
    cache_root: str | Path | None = None,
) -> dict[str, Any]:
    """Run the lenses and write the report folder; returns the metrics (also metrics.json)."""
    from tqdm.auto import tqdm

    from attnlens import lenses as LN
    from attnlens.backbones.capture import capture_images, capture_text, load_encoder
    from attnlens.inspect import figures

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    encoder = None
    if model == "vit":
        if images is None:
            raise ValueError("inspect: --model vit needs --image PATH.")
        cap = capture_images(np.stack(images), image_size=image_size)
    else:
        if not texts:
            raise ValueError("inspect: pass --text or --file with at least one sentence.")
        encoder = load_encoder(model)
        cap = capture_text(texts, encoder, truncate=truncate)
    timings["capture"] = time.perf_counter() - t0
    sections: list[Section] = []
    metrics: dict[str, Any] = {"model": cap.model, "n_inputs": len(cap),
                               "tokens": [len(t) for t in cap.tokens],
                               "truncated": cap.truncated, "n_layers": cap.n_layers,
                               "n_heads": cap.n_heads}

    # rollout and flow
    t = time.perf_counter()
    sec = Section("rollout-flow", "Attention rollout and attention flow")
    sec.text("Abnar & Zuidema 2020: heads averaged, residual as 0.5 A + 0.5 I (rows "
             "renormalized); rollout multiplies the layers, flow is the exact max-flow in the "
             "layered graph (Dinic, equal to the paper's networkx reference to 1e-6 in the "
             "tests). Row i = output position i at the last layer over the input tokens.")
    flow_rows = []
    for idx, (tokens, att) in enumerate(tqdm(list(zip(cap.tokens, cap.attentions,
                                                      strict=True)),
                                             desc="rollout/flow", disable=not progress)):
        n = len(tokens)
        roll = LN.attention_rollout(att)
        rows = None if n <= FLOW_FULL_MAX else [0]
        flow = LN.attention_flow(att, outputs=rows)
        top_roll = np.argsort(-roll[0])[:5]
        top_flow = np.argsort(-flow[0])[:5]
        flow_rows.append({"input": idx, "tokens": n,
                          "flow rows": "all" if rows is None else "first token only",
                          "rollout top (first token)": " ".join(tokens[i] for i in top_roll),
                          "flow top (first token)": " ".join(tokens[i] for i in top_flow)})
        if idx < 3:
            sec.image(_save(figures.token_map(roll, tokens, f"rollout, input {idx}"), folder,
                            f"rollout_{idx}"))
            sec.image(_save(figures.token_map(flow, tokens, f"flow, input {idx}",
                                              rows=rows), folder, f"flow_{idx}"))
    sec.table(flow_rows)
    sections.append(sec)
    metrics["rollout_flow"] = flow_rows
    timings["rollout_flow"] = time.perf_counter() - t

    # head statistics
    t = time.perf_counter()
    sec = Section("heads", "Head statistics")
    positions = None
    if model == "vit":
        side = image_size // 14
        grid = np.array([[r, c] for r in range(side) for c in range(side)], dtype=float)
        positions = np.vstack([[side / 2 - 0.5, side / 2 - 0.5], grid])  # CLS at the centre
    ent = np.mean([LN.attention_entropy(a) for a in cap.attentions], axis=0)
    dist = np.mean([LN.mean_attention_distance(a, positions) for a in cap.attentions], axis=0)
    sec.text("Entropy (nats) of each query's attention row and the expected distance "
             f"({'patches' if model == 'vit' else 'tokens'}) to the attended token, averaged "
             "over queries and inputs.")
    sec.image(_save(figures.head_grid(ent, "attention entropy (nats)", "viridis"), folder,
                    "head_entropy"))
    sec.image(_save(figures.head_grid(dist, "mean attention distance", "viridis", ".1f"),
                    folder, "head_distance"))
    metrics["entropy"] = ent.tolist()
    metrics["distance"] = dist.tolist()
    probe = None
    if encoder is not None and (importance or attsvm):
        from attnlens.inspect.probe import importance_loss, sentiment_probe

        probe = sentiment_probe(encoder, cache_root=cache_root, progress=progress)
        metrics["probe_val_accuracy"] = probe.val_accuracy.tolist()
    preds = None
    if probe is not None:
        from attnlens.inspect.probe import pooled_states

        pooled = pooled_states(encoder, list(cap.texts))[:, -1]  # (B, d)
        preds = (pooled @ probe.weights[-1] + probe.biases[-1] > 0).astype(int)
        metrics["predictions"] = preds.tolist()
    if probe is not None and importance:
        imp = LN.head_importance(importance_loss(encoder, list(cap.texts), probe, preds),
                                 cap.n_layers, cap.n_heads)
        sec.text("Head importance (Michel et al. 2019) for the sentiment read-out on the "
                 f"frozen encoder (validation accuracy {probe.val_accuracy[-1]:.3f} on Rotten "
                 "Tomatoes), with the read-out's own predictions as targets: |dL/d xi| (left) "
                 "and the loss change when the head alone is masked (right).")
        sec.image(_save(figures.head_grid(imp.gradient, "importance |dL/d xi|", "magma",
                                          ".3f"), folder, "head_importance"))
        sec.image(_save(figures.head_grid(imp.masked_delta, "loss change when masked",
                                          "coolwarm", ".3f"), folder, "head_masked"))
        metrics["importance"] = {"gradient": imp.gradient.tolist(),
                                 "masked_delta": imp.masked_delta.tolist(),
                                 "base_loss": imp.base_loss}
    sections.append(sec)
    timings["head_statistics"] = time.perf_counter() - t

    # Att-SVM of real heads
    sec = Section("attsvm", "Att-SVM of real heads")
    t = time.perf_counter()
    if cap.hidden is None or not attsvm:
        sec.text("Not run: " + ("the ViT graph exposes no attention inputs (normalized "
                                "states) to solve on." if cap.hidden is None else
                                "disabled (--no-attsvm)."))
    else:
        labels = np.where(preds > 0, 1.0, -1.0) if preds is not None else None
        results = {}
        pairs = [(lay, h) for lay in range(cap.n_layers) for h in range(cap.n_heads)]
        for lay, h in tqdm(pairs, desc="Att-SVM heads", disable=not progress):
            results[(lay, h)] = LN.head_attsvm(
                [x[lay] for x in cap.hidden], [a[lay, h] for a in cap.attentions],
                cap.score_matrix(lay, h),
                v=None if probe is None else probe.weights[lay], labels=labels,
                set_ratio=SVM_SET_RATIO, max_queries=svm_queries)
        grid = np.full((cap.n_layers, cap.n_heads), np.nan)
        local = np.full_like(grid, np.nan)
        for (lay, h), r in results.items():
            if r.cos_mm is not None:
                grid[lay, h] = r.cos_mm
            if r.share_local is not None:
                local[lay, h] = r.share_local
        statuses = [r.status for r in results.values()]
        summary = {"heads": len(results), "certified": statuses.count("optimal"),
                   "infeasible_heads": statuses.count("infeasible"),
                   "infeasible_rows": int(sum(max(r.n_infeasible, 0) for r in
                                              results.values())),
                   "rows_per_head": next(iter(results.values())).n_rows}
        sec.text(f"For each head, W = K Q^T / sqrt(d_h) (score_t = x_t^T W z) against W^mm, "
                 f"the Att-SVM of the tokens the head selects (argmax of its real attention) "
                 f"for {svm_queries} queries per input, on the same attention inputs. "
                 f"{summary['certified']}/{summary['heads']} programs certified optimal, "
                 f"{summary['infeasible_heads']} infeasible ({summary['infeasible_rows']} "
                 "rows in their certificates; infeasible selections are counted, never "
                 "dropped). Local/global optimality uses the layer's sentiment read-out v "
                 "(token score Y v^T x_t).")
        sec.image(_save(figures.head_grid(grid, "cos(W, W^mm)", "viridis", ".2f"), folder,
                        "attsvm_cos"))
        sec.image(_save(figures.head_grid(local, "share of queries locally optimal",
                                          "viridis", ".2f", 0, 1), folder, "attsvm_local"))
        best = sorted(results.items(), key=lambda kv: -(kv[1].cos_mm or -1))[:8]
        sec.table([{"layer": lay, "head": h, "cos(W, W^mm)": r.cos_mm,
                    "cos(W, Gen-SVM)": r.cos_gen, "rank W": r.rank_w, "rank W^mm": r.rank_mm,
                    "locally optimal": r.share_local, "globally optimal": r.share_global,
                    "selected mass": r.selected_mass, "status": r.status}
                   for (lay, h), r in best])
        metrics["attsvm"] = {"summary": summary,
                             "heads": [{"layer": lay, "head": h, **r.as_dict()}
                                       for (lay, h), r in results.items()]}
    sections.append(sec)
    timings["attsvm"] = time.perf_counter() - t

    # kernel spectra
    t = time.perf_counter()
    sec = Section("spectra", "Kernel spectra")
    specs = [LN.map_spectrum(a) for a in cap.attentions]
    ranks = {f"rank@{lv:g}": np.mean([s.ranks[lv] for s in specs], axis=0)
             for lv in LN.ENERGY_LEVELS}
    sec.text("Normalized cumulative singular values of each head's map (Chen et al. 2023, "
             "Primal-Attention): the rank needed for 90/95/99 % of the spectral energy, mean "
             "over heads and inputs, against the number of tokens.")
    rows = [{"layer": lay, "tokens (mean)": float(np.mean([s.n for s in specs])),
             **{k: float(v[lay].mean()) for k, v in ranks.items()}}
            for lay in range(cap.n_layers)]
    sec.table(rows)
    longest = int(np.argmax([s.n for s in specs]))
    sec.image(_save(figures.spectra_plot({f"{cap.model}, input {longest}":
                                          specs[longest].curves}, LN.ENERGY_LEVELS),
                    folder, "spectra"))
    metrics["spectra"] = rows
    sections.append(sec)
    timings["spectra"] = time.perf_counter() - t

    # causal lens
    t = time.perf_counter()
    sec = Section("causal", "Causal lens")
    _causal(cap, sec, metrics, folder, encoder, probe, preds)
    sections.append(sec)
    timings["causal"] = time.perf_counter() - t

    timings["total"] = time.perf_counter() - t0
    metrics["seconds"] = timings
    sec = Section("inputs", "Inputs and timings")
    sec.table([{"input": i, "tokens": len(tok), "truncated": cut,
                "text": (" ".join(tok))[:80]}
               for i, (tok, cut) in enumerate(zip(cap.tokens, cap.truncated, strict=True))])
    sec.table([{"lens": k, "seconds": round(v, 2)} for k, v in timings.items()])
    sections.append(sec)
    title = f"attnlens inspect: {cap.model}"
    intro = (f"{len(cap)} input(s) through {cap.model} ({cap.n_layers} layers x {cap.n_heads} "
             f"heads), attention captured with {cap.attn_implementation}.")
    atomic_write_text(folder / "report.md", to_markdown(title, intro, sections))
    atomic_write_text(folder / "report.html", to_html(title, intro, sections, folder))
    atomic_write_json(folder / "metrics.json", metrics)
    return metrics
