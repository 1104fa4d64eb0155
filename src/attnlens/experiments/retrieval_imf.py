"""Experiment ``imf``: inter-modality flow of a fusion transformer with a self-attention
visual parser vs a local (CNN-like) visual encoder (Xue et al., NeurIPS 2021; issue 15).

Image-text pairs are built offline from a labelled image set (captions from templates per
class, :mod:`attnlens.datasets.captions`; a stand-in for COCO / Visual Genome, which do not
install here). Language tokens: frozen MiniLM last-layer states of the caption. Visual tokens
(8 x 8 patches at 112 px):
- ``parsing``: frozen ViT-S/14 final-layer patch tokens (after 12 self-attention blocks);
- ``local``: ViT-S/14 patch embeddings before any attention block, through two trainable
  3 x 3 convolutions (no self-attention on the visual side).
A :class:`~attnlens.retrieval.FusionTransformer` is trained for image-text matching (ITM,
binary cross-entropy, half the pairs matching); reported: ITM accuracy on held-out images
and the IMF per fusion layer on them (before and after training), per seed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from attnlens.experiments import register
from attnlens.report import RunFolder, markdown_table

logger = logging.getLogger(__name__)

ENCODERS = ("parsing", "local")
# 1,500 images x 3 epochs at lr 3e-4 left ITM at chance (docs/retrieval.md)
DEFAULTS = {"n_train": 3000, "n_test": 500, "epochs": 8, "dim": 64, "depth": 4, "heads": 4,
            "batch_size": 64, "lr": 1e-3, "n_threads": 1}


def _inputs(dataset: str, progress: bool) -> dict[str, Any]:
    from attnlens.backbones import load_backbone
    from attnlens.datasets.captions import caption_bank
    from attnlens.experiments.retrieval_common import image_tokens, load_images_named

    data = load_images_named(dataset)
    texts, cap_labels = caption_bank(data.name)
    captions = load_backbone("minilm").encode(texts, layer=-1, progress=False)
    return {"labels": data.labels, "name": data.name,
            "parsing": image_tokens(data.images, data.name, -1, progress)[:, 1:],
            "local": image_tokens(data.images, data.name, 0, progress)[:, 1:],
            "cap_tokens": captions.tokens, "cap_mask": captions.mask, "cap_labels": cap_labels}


def _batches(n: int, size: int, rng: np.random.Generator | None = None):
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for lo in range(0, n, size):
        yield order[lo:lo + size]


def train_and_probe(inputs: dict[str, Any], encoder: str, train: np.ndarray, test: np.ndarray,
                    seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """Train one fusion model; ITM accuracy and IMF per layer on the test pairs."""
    import torch

    from attnlens.datasets.captions import matching_pairs
    from attnlens.retrieval import FusionTransformer, inter_modality_flow
    from attnlens.retrieval.csa import torch_threads

    rng = np.random.default_rng(seed)
    labels = inputs["labels"]
    cap_tr, y_tr = matching_pairs(labels[train], inputs["cap_labels"], rng)
    cap_te, y_te = matching_pairs(labels[test], inputs["cap_labels"], rng)
    vis = inputs[encoder]
    T, M = inputs["cap_tokens"], inputs["cap_mask"]

    def tensors(items, caps):
        return (torch.as_tensor(vis[items], dtype=torch.float32),
                torch.as_tensor(T[caps], dtype=torch.float32), torch.as_tensor(M[caps]))

    def probe(model) -> tuple[float, np.ndarray]:
        model.eval()
        correct, maps_all, masks = 0, [], []
        with torch.no_grad():
            for idx in _batches(len(test), 256):
                v, t, m = tensors(test[idx], cap_te[idx])
                logits, maps, modality = model(v, t, m)
                correct += int(((logits > 0).long().numpy() == y_te[idx]).sum())
                maps_all.append(maps.numpy())
                masks.append(np.concatenate([np.ones((len(idx), 1), bool), m.numpy(),
                                             np.ones((len(idx), v.shape[1]), bool)], axis=1))
        imf = inter_modality_flow(np.concatenate(maps_all, axis=1), modality.numpy(),
                                  np.concatenate(masks))
        return correct / len(test), imf

    with torch.random.fork_rng(), torch_threads(cfg["n_threads"]):
        torch.manual_seed(seed)
        model = FusionTransformer(vis.shape[-1], T.shape[-1], cfg["dim"], cfg["depth"],
                                  cfg["heads"], visual_encoder=encoder)
        acc0, imf0 = probe(model)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"])
        start = time.perf_counter()
        for _ in range(cfg["epochs"]):
            model.train()
            for idx in _batches(len(train), cfg["batch_size"], rng):
                v, t, m = tensors(train[idx], cap_tr[idx])
                logits = model(v, t, m)[0]
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    logits, torch.as_tensor(y_tr[idx], dtype=torch.float32))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        seconds = time.perf_counter() - start
        acc, imf = probe(model)
    return {"itm_accuracy": acc, "itm_accuracy_init": acc0, "imf": imf.per_layer.tolist(),
            "imf_init": imf0.per_layer.tolist(),
            "vision_to_language": imf.vision_to_language.tolist(),
            "language_to_vision": imf.language_to_vision.tolist(), "train_seconds": seconds}


def plot(units: dict[str, Any], title: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    for encoder, color in zip(ENCODERS, ("#c44e52", "#4c72b0"), strict=True):
        arr = np.array([u[encoder]["imf"] for u in units.values()])  # (seeds, layers)
        init = np.array([u[encoder]["imf_init"] for u in units.values()])
        layers = np.arange(1, arr.shape[1] + 1)
        ax.errorbar(layers, arr.mean(0), yerr=arr.std(0), color=color, marker="o",
                    capsize=3, label=f"{encoder} (trained)")
        ax.plot(layers, init.mean(0), color=color, ls=":", label=f"{encoder} (init)")
    ax.set_xlabel("fusion layer")
    ax.set_ylabel("inter-modality flow")
    ax.set_xticks(layers)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def imf_unit(inputs: dict[str, Any], seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """One seed: a seeded train/test draw of the pairs, then every encoder trained and probed."""
    perm = np.random.default_rng(seed).permutation(len(inputs["labels"]))
    train, test = perm[: cfg["n_train"]], perm[cfg["n_train"]: cfg["n_train"] + cfg["n_test"]]
    return {enc: train_and_probe(inputs, enc, train, test, seed, cfg) for enc in ENCODERS}


@register("retrieval", "imf")
def run(out: str | Path, *, seeds: int = 3, overwrite: bool = False, dataset: str = "auto",
        progress: bool = True, **options: Any) -> dict[str, Any]:
    """Per seed and visual encoder: train ITM, probe IMF; writes the run folder."""
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)}; known: {sorted(DEFAULTS)}.")
    cfg = {**DEFAULTS, **options}
    inputs = _inputs(dataset, progress)
    folder = RunFolder(out, {"dataset": inputs["name"], "seeds": seeds, **cfg},
                       overwrite=overwrite)
    from attnlens.execution import Unit, run_units

    units = run_units(folder, [Unit(f"seed-{seed}", imf_unit, {"seed": seed, "cfg": cfg})
                               for seed in range(seeds)],
                      desc="imf seeds", shared={"inputs": inputs}, progress=progress)
    rows = []
    for enc in ENCODERS:
        imf = np.array([u[enc]["imf"] for u in units.values()])
        acc = np.array([u[enc]["itm_accuracy"] for u in units.values()])
        rows.append({"visual encoder": enc, "ITM acc": acc.mean(), "ITM acc std": acc.std(),
                     "mean IMF": imf.mean(), **{f"IMF L{i + 1}": v for i, v in
                                                enumerate(imf.mean(0))}})
    title = f"IMF per fusion layer, {inputs['name']} image-caption ITM, {len(units)} seeds"
    folder.write_table(rows, "table")
    folder.save_figure(plot(units, title), "imf")
    folder.write_markdown(f"# {title}\n\n{markdown_table(rows)}\n")
    metrics = {"table": rows, "units": units, "dataset": inputs["name"]}
    folder.write_metrics(metrics)
    return metrics
