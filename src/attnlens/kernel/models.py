"""Sequence classifiers: PrimalFormer, Primal.+Transformer and the canonical Transformer.

Chen, Tao, Tonin, Suykens, NeurIPS 2023 (arXiv 2305.19798), Sec. 4: *PrimalFormer* uses
Primal-Attention in every layer; *Primal.+Trans.* keeps canonical softmax attention (scores
``score_ij = x_i^T W z_j`` with ``W = K Q^T``, scaled and softmax-normalized) and makes only
the last layer primal. All three share the same body, built from standard torch layers:
linear input embedding, learnable positional embedding, post-norm encoder blocks
(attention + GELU feed-forward, LayerNorm), masked mean pooling and a linear head.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import ClassVar, Literal

import torch
from torch import nn

from attnlens._validation import Interval, Options, raise_invalid, validate
from attnlens.kernel.primal import KSVDTerms, PrimalAttention


class SoftmaxAttention(nn.Module):
    """Canonical multi-head softmax attention (``nn.MultiheadAttention``), mask-aware."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim must be divisible by heads; got dim={dim}, heads={heads}.")
        self.mha = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.last_attention: torch.Tensor | None = None
        self.keep_attention = False

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        pad = None if mask is None else ~mask  # (B, N) True at padding
        out, attn = self.mha(x, x, x, key_padding_mask=pad, need_weights=self.keep_attention,
                             average_attn_weights=False)  # (B, N, dim), (B, H, N, N)
        self.last_attention = attn
        return out


class EncoderBlock(nn.Module):
    """Post-norm block: ``x + attn(x)`` then ``x + ff(x)``, each followed by LayerNorm."""

    def __init__(self, attn: nn.Module, dim: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.attn = attn
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(ff_dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, KSVDTerms | None]:
        """Returns the block output (B, N, dim) and the KSVD terms of a primal attention."""
        terms = None
        if isinstance(self.attn, PrimalAttention):
            a, terms = self.attn(x, mask, return_terms=True)  # (B, N, dim), KSVDTerms
        else:
            a = self.attn(x, mask)  # (B, N, dim)
        x = self.norm1(x + self.drop(a))  # (B, N, dim)
        return self.norm2(x + self.drop(self.ff(x))), terms  # (B, N, dim)


class SequenceClassifier(nn.Module):
    """Encoder classifier over (B, N, in_channels) sequences with a (B, N) validity mask.

    ``primal_layers`` lists which of the ``depth`` layers use :class:`PrimalAttention`
    (``"all"`` or ``"last"`` are shorthands).
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "in_channels": [Interval(Integral, 1, None)],
        "n_classes": [Interval(Integral, 2, None)],
        "max_len": [Interval(Integral, 1, None)],
        "dim": [Interval(Integral, 1, None)],
        "heads": [Interval(Integral, 1, None)],
        "depth": [Interval(Integral, 1, None)],
        "ff_dim": [Interval(Integral, 1, None)],
        "rank": [Interval(Integral, 1, None)],
        "rank_multi": [Interval(Integral, 1, None)],
        "dropout": [Interval(Real, 0.0, 1.0, closed="left")],
        "primal_layers": [tuple, list, Options("all", "last")],
        "ksvd_form": [Options("sum", "mean")],
    }

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        max_len: int,
        *,
        dim: int = 64,
        heads: int = 8,
        depth: int = 3,
        ff_dim: int = 256,
        rank: int = 30,
        rank_multi: int = 5,
        dropout: float = 0.1,
        primal_layers: tuple[int, ...] | Literal["all", "last"] = (),
        ksvd_form: str = "mean",
    ) -> None:
        super().__init__()
        validate(self._parameter_constraints, locals(), type(self).__name__)
        if isinstance(primal_layers, str):
            primal_layers = tuple(range(depth)) if primal_layers == "all" else (depth - 1,)
        bad = [i for i in primal_layers if not 0 <= i < depth]
        if bad:
            raise_invalid("primal_layers", f"layer indices in 0..{depth - 1}", primal_layers,
                          caller=type(self).__name__)
        self.max_len = max_len
        self.embed = nn.Linear(in_channels, dim)
        self.pos = nn.Parameter(torch.empty(1, max_len, dim).uniform_(-0.02, 0.02))
        blocks = []
        for i in range(depth):
            attn: nn.Module
            if i in primal_layers:
                attn = PrimalAttention(dim, heads, rank, rank_multi=rank_multi, dropout=0.0,
                                       max_len=max_len, ksvd_form=ksvd_form)
            else:
                attn = SoftmaxAttention(dim, heads, dropout=dropout)
            blocks.append(EncoderBlock(attn, dim, ff_dim, dropout))
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(dim, n_classes)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, return_terms: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[KSVDTerms]]:
        """x : (B, N, in_channels), mask : (B, N) bool. Returns logits (B, n_classes).

        With ``return_terms=True`` returns ``(logits, terms)``, the :class:`KSVDTerms` of the
        primal layers in order (for :func:`attnlens.kernel.ksvd_loss`).
        """
        if x.ndim != 3 or x.shape[1] > self.max_len:
            raise ValueError(f"x must have shape (batch, tokens <= {self.max_len}, channels), "
                             f"got {tuple(x.shape)}.")
        b, n, _ = x.shape
        if mask is None:
            mask = torch.ones(b, n, dtype=torch.bool, device=x.device)
        h = self.embed(x) + self.pos[:, :n]  # (B, N, dim)
        terms: list[KSVDTerms] = []
        for block in self.blocks:
            h, t = block(h, mask)  # (B, N, dim)
            if t is not None:
                terms.append(t)
        m = mask[..., None].to(h.dtype)  # (B, N, 1)
        pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, dim)
        logits = self.head(pooled)  # (B, n_classes)
        return (logits, terms) if return_terms else logits


class PrimalFormer(SequenceClassifier):
    """Every layer Primal-Attention."""

    def __init__(self, in_channels: int, n_classes: int, max_len: int, **kw) -> None:
        super().__init__(in_channels, n_classes, max_len, primal_layers="all", **kw)


class PrimalPlusTransformer(SequenceClassifier):
    """Canonical softmax layers, the last layer Primal-Attention (the paper's Primal.+Trans.)."""

    def __init__(self, in_channels: int, n_classes: int, max_len: int, **kw) -> None:
        super().__init__(in_channels, n_classes, max_len, primal_layers="last", **kw)


class Transformer(SequenceClassifier):
    """Canonical softmax attention in every layer (the baseline)."""

    def __init__(self, in_channels: int, n_classes: int, max_len: int, **kw) -> None:
        super().__init__(in_channels, n_classes, max_len, primal_layers=(), **kw)


MODELS = {"primalformer": PrimalFormer, "primal+trans": PrimalPlusTransformer,
          "transformer": Transformer}

__all__ = ["MODELS", "EncoderBlock", "PrimalFormer", "PrimalPlusTransformer",
           "SequenceClassifier", "SoftmaxAttention", "Transformer"]
