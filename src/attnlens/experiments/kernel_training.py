"""Training loop for the UEA sequence classifiers (application layer: it consumes dataset splits):
cross-entropy + ``eta * ksvd_loss``, seeded."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attnlens._validation import check_int, check_positive
from attnlens.datasets.timeseries import TimeSeriesSplit
from attnlens.kernel.losses import ksvd_loss, primal_layers

logger = logging.getLogger(__name__)


def _tensors(split: TimeSeriesSplit) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (torch.from_numpy(split.X), torch.from_numpy(split.mask), torch.from_numpy(split.y))


@torch.no_grad()
def accuracy(model: nn.Module, split: TimeSeriesSplit, batch_size: int = 256) -> float:
    """Fraction of correctly classified sequences."""
    model.eval()
    X, M, y = _tensors(split)
    correct = 0
    for i in range(0, len(y), batch_size):
        logits = model(X[i : i + batch_size], M[i : i + batch_size])  # (b, classes)
        correct += int((logits.argmax(1) == y[i : i + batch_size]).sum())
    return correct / len(y)


def train_classifier(
    model: nn.Module,
    train: TimeSeriesSplit,
    test: TimeSeriesSplit,
    *,
    val: TimeSeriesSplit | None = None,
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 16,
    eta: float = 0.2,
    ksvd_form: str = "mean",
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """RAdam on ``CE + eta * ksvd_loss(model)`` (the KSVD term only if the model has primal
    layers). Returns per-epoch train loss, KSVD loss and test accuracy, and the final-epoch
    and best-over-epochs test accuracy (the latter selects on the test set; it is what the
    paper reports). With a ``val`` split, also the per-epoch validation accuracy and
    ``val_selected_test_acc``: the test accuracy at the epoch of best validation accuracy
    (the latest such epoch on ties), the honest headline."""
    epochs = check_int(epochs, "epochs", low=1)
    batch_size = check_int(batch_size, "batch_size", low=1)
    check_positive(lr, "lr")
    check_positive(eta, "eta", strict=False)
    gen = torch.Generator().manual_seed(seed)
    has_primal = bool(primal_layers(model))
    opt = torch.optim.RAdam(model.parameters(), lr=lr)
    X, M, y = _tensors(train)
    hist: dict[str, list[float]] = {"loss": [], "ksvd": [], "test_acc": []}
    if val is not None:
        hist["val_acc"] = []
    start = time.perf_counter()
    it = range(epochs)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=type(model).__name__, leave=False)
    for _ in it:
        model.train()
        perm = torch.randperm(len(y), generator=gen)
        tot, tot_k, nb = 0.0, 0.0, 0
        for i in range(0, len(y), batch_size):
            idx = perm[i : i + batch_size]
            logits, terms = model(X[idx], M[idx], return_terms=True)  # (b, classes)
            loss = F.cross_entropy(logits, y[idx])
            k = ksvd_loss(terms, form=ksvd_form) if has_primal else torch.zeros(())
            opt.zero_grad()
            (loss + eta * k).backward()
            opt.step()
            tot, tot_k, nb = tot + float(loss.detach()), tot_k + float(k.detach()), nb + 1
        hist["loss"].append(tot / nb)
        hist["ksvd"].append(tot_k / nb)
        hist["test_acc"].append(accuracy(model, test))
        if val is not None:
            hist["val_acc"].append(accuracy(model, val))
    acc = np.asarray(hist["test_acc"])
    selected: dict[str, Any] = {}
    if val is not None:
        va = np.asarray(hist["val_acc"])
        epoch = int(np.flatnonzero(va == va.max())[-1])
        selected = {"val_selected_test_acc": float(acc[epoch]), "val_best_epoch": epoch + 1,
                    "val_acc": float(va[epoch])}
    return {
        **selected,
        "final_test_acc": float(acc[-1]),
        "best_test_acc": float(acc.max()),
        "best_epoch": int(acc.argmax()) + 1,
        "train_acc": accuracy(model, train),
        "seconds": time.perf_counter() - start,
        "history": hist,
    }


__all__ = ["accuracy", "train_classifier"]
