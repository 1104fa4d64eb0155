r"""The Non-Parametric Transformer network (Kossen et al., "Self-Attention Between Datapoints",
NeurIPS 2021, arXiv 2106.02584; official code OATML/non-parametric-transformers).

A table of N rows and D columns (features and the target) enters as per-column encodings
(value or one-hot, plus a mask bit), is embedded per column to (N, D, E), and passes through
alternating blocks:

* ABD, attention between datapoints: each row flattened to one token of width D*E, multi-head
  self-attention over the N rows, :math:`H \in \mathbb R^{1 \times N \times DE}`;
* ABA, attention between attributes: per row, self-attention over its D column tokens of width E.

Each block is the official MAB (pre-LayerNorm, separate residual projection
:math:`\mathrm{res}(X) + \mathrm{mix}(\mathrm{MHA}(\mathrm{LN}(X)))`, then a 4x GELU row-wise
feed-forward with a residual). Scores :math:`\mathrm{softmax}(QK^\top/\sqrt{d_{in}})` with
:math:`d_{in}` the block's full input width, as in the official code (not the per-head width).
Output: per-column linear de-embeddings to the value (numerical) or the class logits.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: LayerNorm epsilon of the official code (BERT's)
LAYER_NORM_EPS = 1e-12
#: width factor of the row-wise feed-forward (as in "Attention is all you need")
RFF_EXPANSION = 4


def multihead_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_heads: int,
                        scale_dim: int, dropout: float = 0.0, training: bool = False
                        ) -> torch.Tensor:
    """Multi-head attention over axis 1 with the official NPT scaling :math:`1/\\sqrt{scale\\_dim}`.

    q, k, v: (B, T, W) with W divisible by ``n_heads``; returns (B, T, W).
    """
    B, T, W = q.shape
    h = n_heads

    def split(x):  # (B, T, W) -> (B, h, T, W/h)
        return x.reshape(B, x.shape[1], h, W // h).transpose(1, 2)

    # the official scaling 1/sqrt(scale_dim), not SDPA's default 1/sqrt(head width); without
    # attention dropout torch picks its fused (flash) CPU kernel, which never forms the map
    out = nn.functional.scaled_dot_product_attention(
        split(q), split(k), split(v), dropout_p=dropout if training else 0.0,
        scale=1.0 / math.sqrt(scale_dim))  # (B, h, T, W/h)
    return out.transpose(1, 2).reshape(B, T, W)


class MAB(nn.Module):
    """Multi-head self-attention block of the official NPT code (pre-LN, residual projection)."""

    def __init__(self, dim: int, n_heads: int, dropout: float, att_dropout: float) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"block width {dim} is not divisible by n_heads={n_heads}")
        self.n_heads, self.dim, self.att_dropout = n_heads, dim, att_dropout
        self.ln0 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.ln1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.mix = nn.Linear(dim, dim)
        self.res = nn.Linear(dim, dim)
        self.rff = nn.Sequential(nn.Linear(dim, RFF_EXPANSION * dim), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(RFF_EXPANSION * dim, dim),
                                 nn.Dropout(dropout))
        self.drop = nn.Dropout(dropout)

    def forward(self, X: torch.Tensor) -> torch.Tensor:  # X: (B, T, dim)
        q, k, v = self.qkv(self.ln0(X)).chunk(3, dim=-1)  # 3 x (B, T, dim)
        att = multihead_attention(q, k, v, self.n_heads, self.dim, self.att_dropout,
                                  self.training)  # (B, T, dim)
        H = self.res(X) + self.drop(self.mix(att))  # (B, T, dim)
        return H + self.rff(self.ln1(H))  # (B, T, dim)


class NPTNet(nn.Module):
    """Embeddings, ``depth`` alternating ABD/ABA blocks (ABD first), de-embeddings.

    in_dims: per column, the encoding width including the mask bit (2 for a numerical column,
    n_categories + 1 for a categorical one); out_dims: the prediction width per column (1 or the
    number of categories). ``is_cat`` marks categorical columns (feature-type embedding).
    """

    def __init__(self, in_dims: list[int], out_dims: list[int], is_cat: list[bool], dim: int,
                 depth: int, n_heads: int, dropout: float, att_dropout: float) -> None:
        super().__init__()
        D = len(in_dims)
        self.D, self.dim = D, dim
        self.in_dims, self.out_dims = list(in_dims), list(out_dims)
        self.max_in, self.max_out = max(in_dims), max(out_dims)
        # per-column linear embeddings, stored batched: column j uses rows [:in_dims[j]]
        self.in_weight = nn.Parameter(_column_init((D, self.max_in, dim), in_dims))
        self.in_bias = nn.Parameter(_column_init((D, dim), in_dims))
        self.index_embed = nn.Embedding(D, dim)
        self.type_embed = nn.Embedding(2, dim) if 0 < sum(is_cat) < D else None
        self.register_buffer("types", torch.tensor([int(c) for c in is_cat]), persistent=False)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            MAB(dim * D if i % 2 == 0 else dim, n_heads, dropout, att_dropout)
            for i in range(depth))
        self.out_weight = nn.Parameter(_column_init((D, dim, self.max_out), [dim] * D))
        self.out_bias = nn.Parameter(_column_init((D, self.max_out), [dim] * D))

    def forward(self, cols: list[torch.Tensor]) -> list[torch.Tensor]:
        """cols[j]: (N, in_dims[j]) -> list of (N, out_dims[j])."""
        N = cols[0].shape[0]
        padded = torch.zeros(N, self.D, self.max_in, dtype=cols[0].dtype)  # (N, D, H_max)
        for j, c in enumerate(cols):
            padded[:, j, : c.shape[1]] = c
        X = torch.einsum("ndh,dhe->nde", padded, self.in_weight) + self.in_bias  # (N, D, E)
        X = X + self.index_embed.weight[None]  # (N, D, E)
        if self.type_embed is not None:
            X = X + self.type_embed(self.types)[None]
        X = self.drop(X)
        for i, block in enumerate(self.blocks):
            if i % 2 == 0:  # ABD: rows as tokens of width D*E
                X = block(X.reshape(1, N, self.D * self.dim)).reshape(N, self.D, self.dim)
            else:  # ABA: per row, the D columns as tokens of width E
                X = block(X)  # (N, D, E)
        X = self.drop(X)
        Y = torch.einsum("nde,deo->ndo", X, self.out_weight) + self.out_bias  # (N, D, O_max)
        return [Y[:, j, :o] for j, o in enumerate(self.out_dims)]


def _column_init(shape: tuple[int, ...], fan_in: list[int]) -> torch.Tensor:
    """nn.Linear's default uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) init, per column."""
    bound = torch.tensor([1.0 / math.sqrt(f) for f in fan_in]).reshape(-1, *[1] * (len(shape) - 1))
    return (torch.rand(shape) * 2 - 1) * bound
