r"""Inter-Modality Flow (IMF) of a fusion transformer's attention (Xue et al., "Probing
Inter-modality: Visual Parsing with Self-Attention for Vision-and-Language Pre-training",
NeurIPS 2021).

For one layer, sample ``b`` and head ``h`` with attention probabilities ``A`` (rows = queries,
columns = keys, each real row sums to 1) over tokens of modality ``m_i`` (0 = vision,
1 = language), restricted to real tokens:

.. math::
    \mathrm{IMF}_{b,h} = \frac{\sum_{i,j:\, m_i \ne m_j} A_{ij}}{\sum_{i,j} A_{ij}},

the share of attention mass that crosses modalities; the layer's IMF is its mean over samples
and heads. The paper has no public code; this is its prose definition ("the ratio of the
attention weights between the two modalities to all attention weights", per layer, averaged).
The two directions (vision queries on language keys, and the reverse) are returned as well
and sum to the IMF.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from attnlens._validation import Array, check_array, raise_invalid, validate_params


@dataclass(frozen=True)
class IMFResult:
    """Per-layer IMF (L,), its two directions (L,), and per-head means (L, H)."""

    per_layer: np.ndarray
    vision_to_language: np.ndarray
    language_to_vision: np.ndarray
    per_head: np.ndarray

    def as_dict(self) -> dict[str, Any]:
        return {"imf": self.per_layer.tolist(),
                "vision_to_language": self.vision_to_language.tolist(),
                "language_to_vision": self.language_to_vision.tolist()}


@validate_params({"attentions": [Array(ndim=5)], "modality": [Array(ndim=(1, 2), dtype=None)],
                  "mask": [None, Array(ndim=2, dtype=bool)]})
def inter_modality_flow(attentions: Any, modality: Any, mask: Any = None) -> IMFResult:
    """IMF per layer of attention maps (L, B, H, N, N) (see the module docstring).

    modality : (N,) or (B, N) with 0 for vision tokens and 1 for language tokens.
    mask : (B, N) True for real tokens (padding excluded as query and key); None = all real.
    """
    caller = "inter_modality_flow"
    A = check_array(attentions, "attentions", ndim=5, caller=caller)
    n_layers, b, _h, n, n2 = A.shape
    if n != n2:
        raise_invalid("attentions", "square maps (L, B, H, N, N)", f"got shape {A.shape}",
                      "Pass query x key attention probabilities.", caller)
    if np.any(A < 0):
        raise_invalid("attentions", "non-negative attention probabilities",
                      "got negative entries", "Pass softmax outputs, not logits.", caller)
    m = check_array(modality, "modality", ndim=(1, 2), dtype=None, caller=caller)
    m = np.broadcast_to(m, (b, n)) if m.ndim == 1 and m.shape == (n,) else m
    if m.shape != (b, n) or not np.isin(m, (0, 1)).all():
        raise_invalid("modality", f"0/1 flags of shape ({n},) or ({b}, {n})", modality,
                      "0 = vision token, 1 = language token.", caller)
    if len(np.unique(m)) < 2:
        raise_invalid("modality", "flags of both modalities", modality,
                      "A single modality has no inter-modality flow.", caller)
    real = np.ones((b, n), bool) if mask is None else check_array(
        mask, "mask", shape=(b, n), dtype=bool, caller=caller)
    pair = real[:, :, None] & real[:, None, :]  # (B, N, N)
    vis = (m == 0)[:, :, None] & (m == 1)[:, None, :]  # vision query, language key
    lang = (m == 1)[:, :, None] & (m == 0)[:, None, :]
    W = A * pair[None, :, None]  # (L, B, H, N, N)
    total = W.sum(axis=(-1, -2))  # (L, B, H)
    if np.any(total <= 0):
        raise_invalid("attentions", "maps with attention mass on real tokens",
                      "got a map with none", "Check the mask.", caller)
    v2l = (W * vis[None, :, None]).sum(axis=(-1, -2)) / total
    l2v = (W * lang[None, :, None]).sum(axis=(-1, -2)) / total
    per_head = (v2l + l2v).mean(axis=1)  # (L, H)
    return IMFResult(per_layer=per_head.mean(axis=1), vision_to_language=v2l.mean(axis=(1, 2)),
                     language_to_vision=l2v.mean(axis=(1, 2)), per_head=per_head)
