"""``CSAReranker``: contextual similarity aggregation with self-attention (Ouyang et al.,
"Contextual Similarity Aggregation with Self-attention for Visual Re-ranking", NeurIPS 2021;
official code MCC-WH/CSA), as a scikit-learn style estimator.

``fit(X, y)`` builds ranking lists inside the training set (every item a query against the
others, relevance = same label), turns them into affinity features
(:mod:`~attnlens.retrieval.affinity`) and trains :class:`~attnlens.retrieval.csa_model.
CSATransformer` with the contrastive + MSE loss. ``rerank(Q, G, ranking)`` re-orders any
first-stage shortlist (n_q, K) by the refined similarities to the query.

Differences from the official code (all stated in docs/retrieval.md):
- sizes: official K = 512 (train) / 1024 (test), L = 512, D = 768, 12 heads, depth 2, batch
  256, 100 epochs of SGD (lr 0.1 x batch/256, momentum 0.9, weight decay 1e-6, 20 warm-up
  epochs from 0.001, cosine to 0), fp16 autocast, 4 GPUs. Defaults here are CPU sized:
  K = 100, L = 64, D = 128, 4 heads, depth 2, 30 epochs of AdamW (lr 1e-3, same warm-up /
  cosine shape, 20% warm-up), float32. ``optimizer="sgd"`` gives the official optimizer
  (lr scaled by batch / 256 as there).
- centering (``center=True``, the default here): each list's mean affinity row is subtracted
  before the model. Without it, on features whose cosines are all high (CLIP/ViT/MiniLM
  embeddings are anisotropic; pixel vectors are non-negative) the affinity rows of a list are
  nearly parallel, the refined features collapse to one direction and the contrastive loss
  stays at its collapse value ``mean(-log(fraction relevant))`` (measured: 0.3744 at every
  epoch on digits, for three learning rates). The official GeM features of landmark images
  have spread-out cosines, where this does not arise as strongly. ``center=False`` is the
  official input.
- the official loader shuffles the candidates of each list; without a position embedding
  the model is permutation-equivariant and the loss permutation-invariant, so that shuffle
  changes nothing and is not done.
- augmentation: the official "AUG" run builds the training lists from the features of three
  backbones (ResNet-50/101/152) of the same images. Here ``fit(X, y, views=[X2, ...])`` does
  the same with any extra feature arrays of the training items (dimensions may differ: only
  similarities enter the model).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from attnlens._validation import (
    Array,
    Boolean,
    Integral,
    Interval,
    Options,
    ParamsValidatedMixin,
    RandomState,
    Real,
    check_array,
    check_consistent_length,
    raise_invalid,
    validate_params,
)
from attnlens.errors import NotFittedError
from attnlens.retrieval._checks import check_rerank_inputs, l2_normalize, reorder
from attnlens.retrieval.affinity import affinity_from_normalized
from attnlens.retrieval.csa_model import MSE_WEIGHT, TEMPERATURE, CSATransformer, csa_loss

logger = logging.getLogger(__name__)

DEFAULT_SEED = 0
WARMUP_START_FACTOR = 0.01  # official: warm-up from 0.001 to 0.1
OFFICIAL_BATCH = 256  # the official lr is scaled by batch / 256
RERANK_BATCH = 256
SIM_CHUNK = 2048


def training_lists(X: np.ndarray, k: int) -> np.ndarray:
    """Every row a query against the others: top-``k`` indices per row (n, k), self excluded."""
    out = np.empty((len(X), k), dtype=np.int64)
    for lo in range(0, len(X), SIM_CHUNK):
        sim = X[lo:lo + SIM_CHUNK] @ X.T  # (b, n)
        sim[np.arange(len(sim)), np.arange(lo, lo + len(sim))] = -np.inf
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sim, part, axis=1), axis=1, kind="stable")
        out[lo:lo + len(sim)] = np.take_along_axis(part, order, axis=1)
    return out


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: unchanged), then restore."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 0 (the official WarmupCos_Scheduler's shape)."""
    if step < warmup:
        return WARMUP_START_FACTOR + (1 - WARMUP_START_FACTOR) * step / max(warmup, 1)
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only, none on biases and LayerNorm parameters (the official
    ``create_optimizer``/``add_weight_decay``; its skip list names ``feature_align``, which
    matches no parameter name, so the re-projection head is decayed there as here)."""
    params = list(model.parameters())
    return [{"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
            {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay}]


class CSAReranker(ParamsValidatedMixin):
    """Self-attention re-ranker over affinity features (see the module docstring).

    Parameters
    ----------
    k : shortlist length of the training lists (``rerank`` accepts any K >= l - 1).
    l : number of anchors L (the query and its top L - 1 items).
    dim, depth, heads, mlp_ratio, dropout : the transformer (official: 768, 2, 12, 4, 0.1).
    temperature, alpha : the loss's t and MSE weight (official 2.0 and 0.2).
    epochs, batch_size, lr, weight_decay, warmup_fraction, optimizer : training.
    max_queries : use at most this many training queries per epoch (sampled), None = all.
    random_state : seed of the weight init, the sampling and dropout.
    progress : a tqdm bar over epochs.
    center : subtract each list's mean affinity row before the model (not in the official
        code; see the module docstring). ``False`` feeds the raw affinities as the official
        code does.
    n_threads : torch intra-op threads while fitting and re-ranking (None: leave torch's
        setting); 1 is several times faster on a small, busy CPU.

    Attributes
    ----------
    model_ : the trained :class:`CSATransformer`; history_ : per-epoch mean losses;
    fit_seconds_ : training wall time.
    """

    _parameter_constraints = {
        "k": [Interval(Integral, 1, None)],
        "l": [Interval(Integral, 1, None)],
        "dim": [Interval(Integral, 1, None)],
        "depth": [Interval(Integral, 1, None)],
        "heads": [Interval(Integral, 1, None)],
        "mlp_ratio": [Interval(Real, 0, None, closed="neither")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "alpha": [Interval(Real, 0, None)],
        "epochs": [Interval(Integral, 1, None)],
        "batch_size": [Interval(Integral, 1, None)],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None)],
        "warmup_fraction": [Interval(Real, 0, 1, closed="left")],
        "optimizer": [Options("adamw", "sgd")],
        "max_queries": [None, Interval(Integral, 1, None)],
        "random_state": [RandomState()],
        "progress": [Boolean()],
        "n_threads": [None, Interval(Integral, 1, None)],
        "center": [Boolean()],
    }

    def __init__(self, k: int = 100, l: int = 64, dim: int = 128, depth: int = 2,  # noqa: E741
                 heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.1,
                 temperature: float = TEMPERATURE, alpha: float = MSE_WEIGHT, epochs: int = 30,
                 batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 1e-6,
                 warmup_fraction: float = 0.2, optimizer: str = "adamw",
                 max_queries: int | None = None, random_state: Any = DEFAULT_SEED,
                 progress: bool = False, n_threads: int | None = None,
                 center: bool = True) -> None:
        self.k, self.l, self.dim, self.depth, self.heads = k, l, dim, depth, heads
        self.mlp_ratio, self.dropout = mlp_ratio, dropout
        self.temperature, self.alpha = temperature, alpha
        self.epochs, self.batch_size, self.lr = epochs, batch_size, lr
        self.weight_decay, self.warmup_fraction, self.optimizer = (weight_decay,
                                                                   warmup_fraction, optimizer)
        self.max_queries, self.random_state, self.progress = max_queries, random_state, progress
        self.n_threads, self.center = n_threads, center

    # ------------------------------------------------------------------ training data
    def _lists(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalized features and candidate lists (n, k) of one view."""
        Xn = l2_normalize(X)
        return Xn, training_lists(Xn, self.k)

    def _check_fit(self, X: Any, y: Any, views: Any) -> list[np.ndarray]:
        caller = type(self).__name__ + ".fit"
        X = check_array(X, "X", ndim=2, caller=caller)
        y = check_array(y, "y", ndim=1, dtype=None, caller=caller)
        check_consistent_length("X", X, "y", y, caller)
        if self.k >= len(X):
            raise_invalid("k", f"an int < {len(X)} (training items minus the query)", self.k,
                          "Lower k or pass more training items.", caller)
        if self.l - 1 > self.k:
            raise_invalid("l", f"an int <= k + 1 = {self.k + 1}", self.l,
                          "The anchors are the query and its top l - 1 items.", caller)
        if self.dim % self.heads:
            raise_invalid("heads", f"a divisor of dim={self.dim}", self.heads,
                          "Pick heads dividing dim.", caller)
        out = [X]
        for i, V in enumerate(views or []):
            V = check_array(V, f"views[{i}]", ndim=2, caller=caller)
            check_consistent_length("X", X, f"views[{i}]", V, caller)
            out.append(V)
        return out

    @validate_params({"X": [Array(ndim=2)], "y": [Array(ndim=1, dtype=None)],
                      "views": [None, list, tuple]})
    def fit(self, X: Any, y: Any, views: Any = None) -> CSAReranker:
        """Train on ranking lists built inside (X, y); ``views``: extra features of X's items."""
        self._check_params()
        feats = self._check_fit(X, y, views)
        y = np.asarray(y)
        rng = np.random.default_rng(self.random_state) if not isinstance(
            self.random_state, np.random.Generator) else self.random_state
        torch_seed = int(rng.integers(2**31 - 1))
        lists = [self._lists(V, y) for V in feats]  # per view: (Xn, cand)
        n_per_view = len(y)
        total_q = n_per_view * len(lists)
        per_epoch = total_q if self.max_queries is None else min(self.max_queries, total_q)
        steps_per_epoch = math.ceil(per_epoch / self.batch_size)
        total_steps = steps_per_epoch * self.epochs
        warmup = int(round(self.warmup_fraction * total_steps))
        start = time.perf_counter()
        from tqdm.auto import tqdm

        with torch.random.fork_rng(), torch_threads(self.n_threads):
            torch.manual_seed(torch_seed)
            model = CSATransformer(self.l, self.dim, self.depth, self.heads, self.mlp_ratio,
                                   self.dropout)
            groups = _decay_groups(model, self.weight_decay)
            if self.optimizer == "adamw":
                opt: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=self.lr)
            else:
                opt = torch.optim.SGD(groups, lr=self.lr * self.batch_size / OFFICIAL_BATCH,
                                      momentum=0.9)
            base = [g["lr"] for g in opt.param_groups]
            history: list[dict[str, float]] = []
            step = 0
            model.train()
            for _epoch in tqdm(range(self.epochs), desc="CSA epochs", unit="epoch",
                               disable=not self.progress):
                order = rng.permutation(total_q)[:per_epoch]
                sums = np.zeros(3)
                for lo in range(0, per_epoch, self.batch_size):
                    idx = order[lo:lo + self.batch_size]
                    view, item = idx // n_per_view, idx % n_per_view
                    aff, rel = self._batch(lists, y, view, item)
                    for g, b in zip(opt.param_groups, base, strict=True):
                        g["lr"] = b * _lr_factor(step, total_steps, warmup)
                    refined, projected = model(aff)
                    loss, con, mse = csa_loss(refined, projected, aff, rel,
                                              self.temperature, self.alpha)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    step += 1
                    sums += np.array([loss.item(), con.item(), mse.item()]) * len(idx)
                history.append(dict(zip(("loss", "contrastive", "mse"),
                                        (sums / per_epoch).tolist(), strict=True)))
        model.eval()
        self.model_ = model
        self.history_ = history
        self.n_views_ = len(lists)
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _batch(self, lists: list[tuple[np.ndarray, np.ndarray]], y: np.ndarray,
               view: np.ndarray, item: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        affs, rels = [], []
        for v in np.unique(view):
            sel = item[view == v]
            Xn, cand = lists[v]
            affs.append(self._prepare(affinity_from_normalized(Xn[sel], Xn, cand[sel],
                                                               self.l)))
            rel = np.concatenate([np.ones((len(sel), 1), bool), y[cand[sel]] == y[sel, None]],
                                 axis=1)  # (b, 1+k): the query is relevant to itself
            rels.append(rel)
        return (torch.from_numpy(np.concatenate(affs)),
                torch.from_numpy(np.concatenate(rels).astype(np.float32)))

    def _prepare(self, aff: np.ndarray) -> np.ndarray:
        """(b, 1+K, L) affinities as the model sees them: centered over the list or raw."""
        return aff - aff.mean(axis=1, keepdims=True) if self.center else aff

    # ------------------------------------------------------------------ inference
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("CSAReranker is not fitted yet; call fit(X, y) first.")

    @validate_params({"Q": [Array(ndim=2)], "G": [Array(ndim=2)],
                      "ranking": [Array(ndim=2, dtype=None)]})
    def scores(self, Q: Any, G: Any, ranking: Any) -> np.ndarray:
        """Refined similarities (n_q, K) of each shortlist's items to its query."""
        self._check_fitted()
        caller = "CSAReranker.rerank"
        Q, G, ranking = check_rerank_inputs(Q, G, ranking, caller)
        if self.l - 1 > ranking.shape[1]:
            raise_invalid("ranking", f"shortlists of at least l - 1 = {self.l - 1} items",
                          f"got shape {ranking.shape}", "Pass a longer first-stage shortlist.",
                          caller)
        Qn, Gn = l2_normalize(Q), l2_normalize(G)
        out = np.empty(ranking.shape, dtype=np.float32)
        with torch.inference_mode(), torch_threads(self.n_threads):
            for lo in range(0, len(Qn), RERANK_BATCH):
                sl = slice(lo, lo + RERANK_BATCH)
                aff = self._prepare(affinity_from_normalized(Qn[sl], Gn, ranking[sl], self.l))
                out[sl] = self.model_.scores(torch.from_numpy(aff)).numpy()
        return out

    @validate_params({"Q": [Array(ndim=2)], "G": [Array(ndim=2)],
                      "ranking": [Array(ndim=2, dtype=None)]})
    def rerank(self, Q: Any, G: Any, ranking: Any) -> np.ndarray:
        """Re-order each shortlist: Q (n_q, d), G (n_g, d), ranking (n_q, K) -> (n_q, K)."""
        s = self.scores(Q, G, ranking)
        return reorder(np.asarray(ranking, dtype=np.int64), s)
