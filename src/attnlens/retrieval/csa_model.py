r"""The CSA transformer (Ouyang et al., NeurIPS 2021; official code MCC-WH/CSA,
``network/RerankTransformer.py``) and its loss.

Shapes: affinity ``(B, 1 + K, L)`` -> linear ``L -> D`` -> ``depth`` pre-norm transformer
encoder blocks (GELU MLP, ratio 4, no position embedding: the list is a set) -> refined
``(B, 1 + K, D)``; the new score of candidate ``j`` is ``cos(z_0, z_j)`` (row 0 = query).
A linear ``D -> L`` head maps refined features back to affinities for the MSE term.

Loss (official ``train.py``), with ``s_j = exp(cos(z_0, z_j) / t)`` over the whole list
including the query itself (``j = 0``, always relevant) and ``y_j`` = relevant:

.. math::
    \mathcal L = -\log\frac{\sum_j y_j s_j}{\sum_j s_j}
      + \alpha\, \frac{1}{1+K}\sum_j \big\| \hat f_j - \hat g_j \big\|_2 ,

``\hat f`` the normalized input affinities, ``\hat g`` the normalized re-projected ones (the
official code clamps the squared norm to [1e-4, 1e4] before the square root; so do we).
Official settings: t = 2, alpha = 0.2, D = 768, 12 heads, depth 2, dropout 0.1.
Differences: ``torch.nn.TransformerEncoderLayer`` (norm_first) replaces the timm-style block
(same computation; its one dropout rate stands for the official attention/MLP dropouts and
stochastic depth 0.1 is left out).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from attnlens._validation import (
    Integral,
    Interval,
    Real,
    Tensor,
    raise_invalid,
    validate,
    validate_params,
)

TEMPERATURE = 2.0
MSE_WEIGHT = 0.2
MSE_CLAMP = (1e-4, 1e4)
INIT_STD = 0.02


def candidate_scores(refined: torch.Tensor) -> torch.Tensor:
    """``cos(z_0, z_j)`` for the candidates j = 1..K: (B, 1+K, D) -> (B, K)."""
    z = F.normalize(refined, dim=-1)  # (B, 1+K, D)
    return torch.einsum("bd,bkd->bk", z[:, 0], z[:, 1:])


@validate_params({"refined": [Tensor(ndim=3)], "projected": [Tensor(ndim=3)],
                  "affinity": [Tensor(ndim=3)], "relevant": [Tensor(ndim=2)],
                  "temperature": [Interval(Real, 0, None, closed="neither")],
                  "alpha": [Interval(Real, 0, None)]})
def csa_loss(refined: torch.Tensor, projected: torch.Tensor, affinity: torch.Tensor,
             relevant: torch.Tensor, temperature: float = TEMPERATURE,
             alpha: float = MSE_WEIGHT) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Contrastive + ``alpha`` * MSE (module docstring); returns (total, contrastive, mse).

    refined (B, 1+K, D), projected (B, 1+K, L), affinity (B, 1+K, L), relevant (B, 1+K)
    with ``relevant[:, 0] = 1`` (the query).
    """
    z = F.normalize(refined, dim=-1)  # (B, 1+K, D)
    logits = torch.einsum("bd,bkd->bk", z[:, 0], z) / temperature  # (B, 1+K)
    pos = torch.logsumexp(logits.masked_fill(relevant <= 0, -math.inf), dim=1)
    contrastive = (torch.logsumexp(logits, dim=1) - pos).mean()
    diff = F.normalize(affinity, dim=-1) - F.normalize(projected, dim=-1)  # (B, 1+K, L)
    mse = diff.pow(2).sum(-1).clamp(*MSE_CLAMP).sqrt().mean()
    return contrastive + alpha * mse, contrastive, mse


class CSATransformer(nn.Module):
    """Affinity features (B, 1+K, L) -> refined features (B, 1+K, D) and re-projection."""

    _parameter_constraints = {
        "n_anchors": [Interval(Integral, 1, None)],
        "dim": [Interval(Integral, 1, None)],
        "depth": [Interval(Integral, 1, None)],
        "heads": [Interval(Integral, 1, None)],
        "mlp_ratio": [Interval(Real, 0, None, closed="neither")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
    }

    def __init__(self, n_anchors: int, dim: int = 128, depth: int = 2, heads: int = 4,
                 mlp_ratio: float = 4.0, dropout: float = 0.1) -> None:
        validate(self._parameter_constraints, locals(), type(self).__name__)
        super().__init__()
        if dim % heads:
            raise_invalid("heads", f"a divisor of dim={dim}", heads, "Pick heads | dim.",
                          type(self).__name__)
        self.proj = nn.Linear(n_anchors, dim)
        self.drop_in = nn.Dropout(dropout)  # official sim_drop (on affinities)
        self.drop_embed = nn.Dropout(dropout)  # official pos_drop (on embeddings)
        layer = nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout,
                                           activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.align = nn.Linear(dim, n_anchors)  # official Feature_align (1 layer)
        self._init_weights()

    def _init_weights(self) -> None:
        """Official init: truncated normal (std 0.02) weights, zero biases, unit LayerNorm."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=INIT_STD, a=-2.0, b=2.0)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.MultiheadAttention):  # the fused qkv projection
                nn.init.trunc_normal_(m.in_proj_weight, std=INIT_STD, a=-2.0, b=2.0)
                nn.init.zeros_(m.in_proj_bias)

    def forward(self, affinity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.drop_embed(self.proj(self.drop_in(affinity)))  # (B, 1+K, D)
        refined = self.encoder(x)  # (B, 1+K, D)
        return refined, self.align(refined)  # (B, 1+K, D), (B, 1+K, L)

    def scores(self, affinity: torch.Tensor) -> torch.Tensor:
        """New candidate scores (B, K) (official ``forward_feature``)."""
        return candidate_scores(self.forward(affinity)[0])

