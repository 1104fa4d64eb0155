"""A sentiment read-out on the frozen encoder: the classifier that head importance and the
Att-SVM token scores use.

Per hidden state ``l`` (0 = embeddings, L = last block) a logistic regression on the
mean-pooled states of a seeded, stratified Rotten Tomatoes subset (``N_TRAIN`` sentences),
scored on ``N_VAL`` held-out sentences. The last one is the classifier "on top of the frozen
backbone"; the others give each block's read-out direction ``v_l``. Cached as a small npz
under ``<cache root>/lenses`` keyed on the weights' hash and the settings.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attnlens._io import atomic_save_npz

logger = logging.getLogger(__name__)

N_TRAIN = 1000
N_VAL = 400
PROBE_SEED = 0
PROBE_C = 1.0
MAX_TOKENS = 64
BATCH = 32


@dataclass(frozen=True)
class Probe:
    """weights (L + 1, d), biases (L + 1,), val_accuracy (L + 1,): one read-out per state."""

    weights: np.ndarray
    biases: np.ndarray
    val_accuracy: np.ndarray


def _weights_hash(path: Path) -> str:
    from attnlens.backbones.base import file_sha256

    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return file_sha256(path / name)[:16]
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]


def pooled_states(encoder, texts: list[str], progress: bool = False) -> np.ndarray:
    """(B, L + 1, d) mean-pooled hidden states of every layer."""
    import torch
    from tqdm.auto import tqdm

    out = []
    with torch.inference_mode():
        for lo in tqdm(range(0, len(texts), BATCH), desc="probe features", disable=not progress):
            enc = encoder.tokenizer(texts[lo:lo + BATCH], padding=True, truncation=True,
                                    max_length=MAX_TOKENS, return_tensors="pt")
            hs = encoder.model(**enc, output_hidden_states=True).hidden_states
            m = enc["attention_mask"].unsqueeze(-1).to(hs[0].dtype)  # (b, n, 1)
            pooled = [(h * m).sum(1) / m.sum(1) for h in hs]  # (b, d) each
            out.append(torch.stack(pooled, dim=1).double().numpy())
    return np.concatenate(out)


def sentiment_probe(encoder, cache_root: str | Path | None = None,
                    progress: bool = False) -> Probe:
    """Train (or load) the per-layer sentiment read-outs of ``encoder``."""
    from sklearn.linear_model import LogisticRegression

    from attnlens.cache import default_root
    from attnlens.datasets.text import load_text

    root = Path(cache_root) if cache_root is not None else default_root()
    key = f"probe-{_weights_hash(encoder.path)}-{N_TRAIN}-{N_VAL}-{PROBE_SEED}-{MAX_TOKENS}"
    path = root / "lenses" / f"{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            return Probe(z["weights"], z["biases"], z["val_accuracy"])
    ds = load_text("rotten_tomatoes")
    labels = np.asarray(ds.labels)
    rng = np.random.default_rng(PROBE_SEED)
    per_class = (N_TRAIN + N_VAL) // 2
    idx = np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                          for c in (0, 1)])
    rng.shuffle(idx)
    texts = [ds.texts[i] for i in idx]
    feats = pooled_states(encoder, texts, progress)  # (B, L + 1, d)
    y = labels[idx]
    tr, va = slice(0, N_TRAIN), slice(N_TRAIN, None)
    weights, biases, acc = [], [], []
    for layer in range(feats.shape[1]):
        clf = LogisticRegression(C=PROBE_C, max_iter=2000).fit(feats[tr, layer], y[tr])
        weights.append(clf.coef_[0])
        biases.append(clf.intercept_[0])
        acc.append(clf.score(feats[va, layer], y[va]))
    probe = Probe(np.array(weights), np.array(biases), np.array(acc))
    atomic_save_npz(path, weights=probe.weights, biases=probe.biases,
                    val_accuracy=probe.val_accuracy)
    logger.info("sentiment probe cached at %s (val accuracy %s)", path, probe.val_accuracy)
    return probe


def importance_loss(encoder, texts: list[str], probe: Probe, targets: np.ndarray):
    """``loss_fn(mask) -> (B,)`` for :func:`attnlens.lenses.head_importance`: binary
    cross-entropy of the last-layer read-out on ``targets`` with head outputs gated."""
    import torch

    w = torch.as_tensor(probe.weights[-1])
    b = float(probe.biases[-1])
    encoded = [encoder.tokenizer(t, truncation=True, max_length=encoder.max_positions,
                                 return_tensors="pt") for t in texts]
    y = torch.as_tensor(np.asarray(targets, dtype=np.float64))
    for p in encoder.model.parameters():
        p.requires_grad_(False)

    def loss_fn(mask):
        hooks = encoder.head_mask_hooks(mask)
        try:
            losses = []
            for enc in encoded:
                hidden = encoder.model(**enc).last_hidden_state[0]  # (n, d)
                logit = hidden.mean(0).to(torch.float64) @ w + b
                losses.append(torch.nn.functional.binary_cross_entropy_with_logits(
                    logit, y[len(losses)]))
            return torch.stack(losses)
        finally:
            for h in hooks:
                h.remove()

    return loss_fn
