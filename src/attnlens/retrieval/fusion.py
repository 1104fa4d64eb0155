"""A small vision-language fusion transformer for the IMF experiment (Xue et al., NeurIPS 2021).

Visual tokens (B, Nv, dv) and language tokens (B, Nt, dt) are projected to ``dim``, given a
modality embedding, concatenated behind a learned [CLS] token (counted as language, like
BERT's) and fused by ``depth`` pre-norm transformer blocks that return their attention maps;
an image-text matching (ITM) head reads [CLS].

Two visual encoders, the paper's comparison in small. Both read a square grid of patch tokens
(B, g*g, d), LayerNorm them (the two inputs differ in scale by ~20x) and hand ``(g/p)^2``
tokens to the fusion (``pool = p``; 2 turns an 8 x 8 grid into 16 tokens, which keeps CPU
training affordable):
- ``"parsing"``: the visual tokens already come from a self-attention visual backbone (frozen
  ViT-S patch tokens); p x p average pooling, a linear layer and a LayerNorm embed them (the
  paper embeds its Transformer visual tokens the same way);
- ``"local"``: a CNN-like encoder without self-attention (inputs: patch embeddings before any
  attention block): a 1 x 1 convolution, a 3 x 3 convolution and a 3 x 3 convolution of stride
  p (a ResNet-stage-like downsampling), GELU between them, so each visual token only sees its
  neighbourhood before fusion.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from attnlens._validation import Integral, Interval, Options, Real, validate

VISION, LANGUAGE = 0, 1


class FusionBlock(nn.Module):
    """Pre-norm transformer block that also returns its attention maps (B, H, N, N)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.norm1(x)  # (B, N, D)
        out, attn = self.attn(h, h, h, key_padding_mask=pad, need_weights=True,
                              average_attn_weights=False)  # (B, N, D), (B, H, N, N)
        x = x + out
        return x + self.mlp(self.norm2(x)), attn


def _grid(tokens: torch.Tensor) -> torch.Tensor:
    """(B, g*g, d) tokens of a square grid -> (B, d, g, g)."""
    b, n, d = tokens.shape
    g = math.isqrt(n)
    return tokens.transpose(1, 2).reshape(b, d, g, g)


class LocalPatchEncoder(nn.Module):
    """1x1, 3x3 and strided 3x3 convolutions over a patch grid: (B, g*g, d) -> (B, (g/p)^2, dim)."""

    def __init__(self, in_dim: int, dim: int, pool: int = 1) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.conv1 = nn.Conv2d(in_dim, dim, 1)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv3 = nn.Conv2d(dim, dim, 3, stride=pool, padding=1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = _grid(self.norm(tokens))  # (B, d, g, g)
        x = self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))  # (B, dim, g/p, g/p)
        return x.flatten(2).transpose(1, 2)  # (B, (g/p)^2, dim)


class ParsedTokenEmbedding(nn.Module):
    """LayerNorm, p x p average pooling and a linear map: (B, g*g, d) -> (B, (g/p)^2, dim)."""

    def __init__(self, in_dim: int, dim: int, pool: int = 1) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.pool = pool
        self.proj = nn.Linear(in_dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(_grid(self.norm(tokens)), self.pool)  # (B, d, g/p, g/p)
        return self.proj(x.flatten(2).transpose(1, 2))  # (B, (g/p)^2, dim)


class FusionTransformer(nn.Module):
    """Fusion of visual and language tokens with an ITM head (module docstring).

    ``pool``: the visual grid side shrinks by this factor before fusion (it must divide it).
    """

    _parameter_constraints = {
        "visual_dim": [Interval(Integral, 1, None)],
        "text_dim": [Interval(Integral, 1, None)],
        "dim": [Interval(Integral, 1, None)],
        "depth": [Interval(Integral, 1, None)],
        "heads": [Interval(Integral, 1, None)],
        "mlp_ratio": [Interval(Real, 0, None, closed="neither")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "visual_encoder": [Options("parsing", "local")],
        "pool": [Interval(Integral, 1, None)],
        "n_words": [None, Interval(Integral, 1, None)],
    }

    def __init__(self, visual_dim: int, text_dim: int, dim: int = 128, depth: int = 4,
                 heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.1,
                 visual_encoder: str = "parsing", pool: int = 1,
                 n_words: int | None = None) -> None:
        validate(self._parameter_constraints, locals(), type(self).__name__)
        super().__init__()
        self.visual_encoder = visual_encoder
        encoder = ParsedTokenEmbedding if visual_encoder == "parsing" else LocalPatchEncoder
        self.visual = nn.Sequential(encoder(visual_dim, dim, pool), nn.LayerNorm(dim))
        self.text = nn.Sequential(nn.Linear(text_dim, dim), nn.LayerNorm(dim))
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.modality = nn.Embedding(2, dim)
        self.blocks = nn.ModuleList(FusionBlock(dim, heads, mlp_ratio, dropout)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 1)
        # masked language modelling over a small vocabulary (the class words), or none
        self.mlm_head = nn.Linear(dim, n_words) if n_words else None

    def forward(self, visual: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ITM logits (B,), attentions (depth, B, H, N, N), modality flags (N,).

        Token order: [CLS], language tokens, visual tokens; ``text_mask`` (B, Nt) True = real.
        """
        x, maps, modality = self.fuse(visual, text, text_mask)
        return self.head(x[:, 0]).squeeze(-1), maps, modality  # (B,), ...

    def mlm_logits(self, visual: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                   positions: torch.Tensor) -> torch.Tensor:
        """Word logits (B, n_words) at the masked language position of each sample (B,)."""
        if self.mlm_head is None:
            raise RuntimeError("FusionTransformer was built without n_words: no MLM head.")
        x = self.fuse(visual, text, text_mask)[0]  # (B, N, D)
        return self.mlm_head(x[torch.arange(len(x)), 1 + positions])  # (B, n_words)

    def fuse(self, visual: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Final normalized states (B, N, D), attentions (depth, B, H, N, N), modality (N,)."""
        v = self.visual(visual) + self.modality.weight[VISION]  # (B, Nv, D)
        t = self.text(text) + self.modality.weight[LANGUAGE]  # (B, Nt, D)
        b = len(v)
        cls = self.cls.expand(b, -1, -1) + self.modality.weight[LANGUAGE]  # (B, 1, D)
        x = torch.cat([cls, t, v], dim=1)  # (B, N, D)
        real = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x.device),
                          text_mask.bool(),
                          torch.ones(b, v.shape[1], dtype=torch.bool, device=x.device)], dim=1)
        maps = []
        for blk in self.blocks:
            x, attn = blk(x, ~real)
            maps.append(attn)
        modality = torch.cat([torch.full((1 + t.shape[1],), LANGUAGE),
                              torch.full((v.shape[1],), VISION)])  # (N,)
        return self.norm(x), torch.stack(maps), modality
