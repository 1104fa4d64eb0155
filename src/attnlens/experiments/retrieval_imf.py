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
# History (docs/retrieval.md): 1,500 images x 3 epochs at lr 3e-4 left ITM at chance; 3,000
# images x 8 epochs with one fixed caption per image taught the parser (71.6 %) but not the
# local encoder (chance). Now every epoch pairs each training image with a fresh matching and
# a fresh non-matching caption, the visual grid is pooled to 4 x 4 tokens (CPU), and each model
# trains until its validation ITM accuracy reaches ``target_acc`` (or ``epochs`` run out), so
# both encoders are compared at a comparable matching accuracy.
DEFAULTS = {"n_train": 2000, "n_val": 300, "n_test": 500, "epochs": 12, "target_acc": 0.9,
            "mlm": True,
            "dim": 64, "depth": 4, "heads": 4, "pool": 2, "batch_size": 64, "lr": 1e-3,
            "n_threads": 1}


def _inputs(dataset: str, progress: bool) -> dict[str, Any]:
    from attnlens.backbones import load_backbone
    from attnlens.datasets.captions import caption_bank, masked_templates
    from attnlens.experiments.retrieval_common import image_tokens, load_images_named

    data = load_images_named(dataset)
    texts, cap_labels = caption_bank(data.name)
    minilm = load_backbone("minilm")
    captions = minilm.encode(texts, layer=-1, progress=False)
    # MLM inputs: the templates with the class name masked *before* MiniLM, so no other
    # token's state carries the word; position of [MASK] among the language tokens
    masked = masked_templates(data.name, minilm.tokenizer.mask_token)
    encoded = minilm.encode(masked, layer=-1, progress=False)
    ids = minilm.tokenizer(masked)["input_ids"]
    positions = np.array([row.index(minilm.tokenizer.mask_token_id) for row in ids])
    return {"labels": data.labels, "name": data.name,
            "parsing": image_tokens(data.images, data.name, -1, progress)[:, 1:],
            "local": image_tokens(data.images, data.name, 0, progress)[:, 1:],
            "cap_tokens": captions.tokens, "cap_mask": captions.mask, "cap_labels": cap_labels,
            "mlm_tokens": encoded.tokens, "mlm_mask": encoded.mask, "mlm_positions": positions}


def _batches(n: int, size: int, rng: np.random.Generator | None = None):
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for lo in range(0, n, size):
        yield order[lo:lo + size]


def balanced_pairs(labels: np.ndarray, cap_labels: np.ndarray, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each image twice: with a matching and with a non-matching caption (drawn afresh).

    Returns (image position (2n,), caption index (2n,), match (2n,) 0/1)."""
    from attnlens.datasets.captions import matching_pairs

    n = len(labels)
    pos, _ = matching_pairs(labels, cap_labels, rng, positive_fraction=1.0)
    neg, _ = matching_pairs(labels, cap_labels, rng, positive_fraction=0.0)
    return (np.concatenate([np.arange(n), np.arange(n)]), np.concatenate([pos, neg]),
            np.concatenate([np.ones(n, np.int64), np.zeros(n, np.int64)]))


def train_and_probe(inputs: dict[str, Any], encoder: str, train: np.ndarray, test: np.ndarray,
                    seed: int, cfg: dict[str, Any], val: np.ndarray | None = None
                    ) -> dict[str, Any]:
    """Train one fusion model on ITM; ITM accuracy and IMF per layer on the test pairs.

    Training stops after the first epoch whose accuracy on the ``val`` pairs reaches
    ``cfg["target_acc"]`` (when given), else after ``cfg["epochs"]``.
    """
    import torch

    from attnlens.retrieval import FusionTransformer, inter_modality_flow
    from attnlens.retrieval.csa import torch_threads

    rng = np.random.default_rng(seed)
    labels, cap_labels = inputs["labels"], inputs["cap_labels"]
    te_item, te_cap, y_te = balanced_pairs(labels[test], cap_labels, rng)
    if val is not None:
        va_item, va_cap, y_va = balanced_pairs(labels[val], cap_labels, rng)
    vis = inputs[encoder]
    T, M = inputs["cap_tokens"], inputs["cap_mask"]

    def tensors(items, caps):
        return (torch.as_tensor(vis[items], dtype=torch.float32),
                torch.as_tensor(T[caps], dtype=torch.float32), torch.as_tensor(M[caps]))

    def probe(model, items, caps, y, flow: bool = True):
        model.eval()
        correct, maps_all, masks = 0, [], []
        with torch.no_grad():
            for idx in _batches(len(items), 256):
                v, t, m = tensors(items[idx], caps[idx])
                logits, maps, modality = model(v, t, m)
                correct += int(((logits > 0).long().numpy() == y[idx]).sum())
                if flow:
                    n_vis = maps.shape[-1] - 1 - m.shape[1]
                    maps_all.append(maps.numpy())
                    masks.append(np.concatenate([np.ones((len(idx), 1), bool), m.numpy(),
                                                 np.ones((len(idx), n_vis), bool)], axis=1))
        if not flow:
            return correct / len(items), None
        imf = inter_modality_flow(np.concatenate(maps_all, axis=1), modality.numpy(),
                                  np.concatenate(masks))
        return correct / len(items), imf

    mlm = bool(cfg.get("mlm", False))
    n_words = int(cap_labels.max()) + 1

    def mlm_batch(items):  # one masked template per image; target = the image's class
        which = rng.integers(len(inputs["mlm_tokens"]), size=len(items))
        return (torch.as_tensor(vis[items], dtype=torch.float32),
                torch.as_tensor(inputs["mlm_tokens"][which], dtype=torch.float32),
                torch.as_tensor(inputs["mlm_mask"][which]),
                torch.as_tensor(inputs["mlm_positions"][which]),
                torch.as_tensor(labels[items]))

    def mlm_accuracy(model, items) -> float:
        model.eval()
        with torch.no_grad():
            v, t, m, pos, target = mlm_batch(items)
            return float((model.mlm_logits(v, t, m, pos).argmax(1) == target).float().mean())

    with torch.random.fork_rng(), torch_threads(cfg["n_threads"]):
        torch.manual_seed(seed)
        model = FusionTransformer(vis.shape[-1], T.shape[-1], cfg["dim"], cfg["depth"],
                                  cfg["heads"], visual_encoder=encoder,
                                  pool=cfg.get("pool", 1), n_words=n_words if mlm else None)
        acc0, imf0 = probe(model, test[te_item], te_cap, y_te)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"])
        start = time.process_time()
        val_history: list[float] = []
        for _ in range(cfg["epochs"]):
            model.train()
            for idx in _batches(len(train), cfg["batch_size"], rng):
                # ITM: every image of the batch with a fresh matching and non-matching caption
                item, cap, y = balanced_pairs(labels[train[idx]], cap_labels, rng)
                v, t, m = tensors(train[idx][item], cap)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    model(v, t, m)[0], torch.as_tensor(y, dtype=torch.float32))
                if mlm:
                    v, t, m, pos, target = mlm_batch(train[idx])
                    loss = loss + torch.nn.functional.cross_entropy(
                        model.mlm_logits(v, t, m, pos), target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if val is not None:
                val_history.append(probe(model, val[va_item], va_cap, y_va, flow=False)[0])
                logger.info("%s seed %d epoch %d: val ITM %.3f", encoder, seed,
                            len(val_history), val_history[-1])
                if val_history[-1] >= cfg.get("target_acc", 1.0):
                    break
        seconds = time.process_time() - start
        acc, imf = probe(model, test[te_item], te_cap, y_te)
        mlm_acc = mlm_accuracy(model, test) if mlm else None
    return {"itm_accuracy": acc, "itm_accuracy_init": acc0, "mlm_accuracy": mlm_acc,
            "imf": imf.per_layer.tolist(), "imf_init": imf0.per_layer.tolist(),
            "vision_to_language": imf.vision_to_language.tolist(),
            "language_to_vision": imf.language_to_vision.tolist(),
            "epochs_run": len(val_history) if val is not None else cfg["epochs"],
            "val_accuracy_history": val_history, "train_cpu_seconds": seconds}


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
    cut = np.cumsum([cfg["n_train"], cfg["n_val"], cfg["n_test"]])
    train, val, test = perm[: cut[0]], perm[cut[0]: cut[1]], perm[cut[1]: cut[2]]
    return {enc: train_and_probe(inputs, enc, train, test, seed, cfg, val=val)
            for enc in ENCODERS}


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
