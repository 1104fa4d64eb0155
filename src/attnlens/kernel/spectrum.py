r"""Spectrum analysis: how fast the singular values of attention / kernel matrices decay.

Chen, Tao, Tonin, Suykens, NeurIPS 2023 (arXiv 2305.19798), Sec. 3/Fig. 1 motivate a low-rank
KSVD by the quick decay of the singular values of trained attention matrices. For each layer
and head we report the normalized cumulative singular values

.. math:: c_k = \sum_{i \le k} \sigma_i \big/ \sum_i \sigma_i ,

of the (real-token block of the) N x N matrix (softmax attention, or the cosine kernel
``K_ij = <phi_q(x_i), phi_k(x_j)>`` of a Primal-Attention layer; canonical scores are
``score_ij = x_i^T W z_j``, ``W = K Q^T``), averaged over sequences, and ``rank@level``: the
smallest ``k`` with ``c_k >= level``. Works on plain arrays so any model's maps can be fed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Real

import numpy as np

from attnlens._validation import Array, Interval, check_array, check_scalar, validate_params


@dataclass
class Spectrum:
    """Cumulative spectra of one source.

    curves : (L, H, N) mean normalized cumulative singular values (padded with 1 past the
        shortest sequence's length); ranks : (L, H) mean ``rank@level``; level : the level;
    labels : one name per layer.
    """

    curves: np.ndarray
    ranks: np.ndarray
    level: float
    labels: list[str] = field(default_factory=list)

    def summary(self) -> list[dict[str, float | str]]:
        """One row per layer: mean rank@level over heads and c_k at k = 1, 2, 4, 8."""
        rows = []
        for li in range(self.curves.shape[0]):
            row: dict[str, float | str] = {
                "layer": self.labels[li] if self.labels else str(li),
                f"rank@{self.level:g}": float(self.ranks[li].mean()),
            }
            for k in (1, 2, 4, 8):
                if k <= self.curves.shape[2]:
                    row[f"c_{k}"] = float(self.curves[li, :, k - 1].mean())
            rows.append(row)
        return rows


def cumulative_singular_values(matrix: np.ndarray) -> np.ndarray:
    """``c_k`` of one matrix (N, N) -> (N,); a zero matrix gives all ones."""
    s = np.linalg.svd(np.asarray(matrix, dtype=np.float64), compute_uv=False)
    total = s.sum()
    if total <= 0:
        return np.ones_like(s)
    return np.cumsum(s) / total


def rank_at(curve: np.ndarray, level: float = 0.9) -> int:
    """Smallest ``k`` (1-based) with ``curve[k-1] >= level``."""
    return int(np.searchsorted(curve, level - 1e-12) + 1)


@validate_params({
    "maps": [Array(ndim=(4, 5))],
    "mask": [Array(ndim=2, dtype=bool), None],
    "level": [Interval(Real, 0.0, 1.0, closed="right")],
})
def attention_spectrum(
    maps: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    level: float = 0.9,
    labels: list[str] | None = None,
) -> Spectrum:
    """Spectra of per-layer attention maps.

    maps : (L, B, H, N, N) attention (or kernel) matrices, or (B, H, N, N) for one layer.
    mask : (B, N) bool, True at real tokens; each sequence's real block is analysed.
    """
    maps = check_array(maps, "maps", ndim=(4, 5))
    if maps.ndim == 4:
        maps = maps[None]
    n_layers, b, h, n, n2 = maps.shape
    if n != n2:
        raise ValueError(f"maps must hold square N x N matrices, got shape {maps.shape}.")
    check_scalar(level, "level", low=0.0, high=1.0, low_inclusive=False)
    if mask is None:
        mask = np.ones((b, n), dtype=bool)
    mask = check_array(mask, "mask", shape=(b, n), dtype=bool)
    if not mask.any(axis=1).all():
        raise ValueError("mask has a sequence with no real token; drop it first.")
    curves = np.ones((n_layers, b, h, n))
    ranks = np.zeros((n_layers, b, h))
    for bi in range(b):
        idx = np.flatnonzero(mask[bi])
        for li in range(n_layers):
            for hi in range(h):
                c = cumulative_singular_values(maps[li, bi, hi][np.ix_(idx, idx)])
                curves[li, bi, hi, : len(c)] = c
                ranks[li, bi, hi] = rank_at(c, level)
    if labels is not None and len(labels) != n_layers:
        raise ValueError(f"labels must have {n_layers} entries, got {len(labels)}.")
    return Spectrum(curves.mean(axis=1), ranks.mean(axis=1), level,
                    labels or [f"layer {i}" for i in range(n_layers)])


def model_maps(model, x, mask=None) -> tuple[np.ndarray, list[str]]:
    """Attention maps of an attnlens :class:`~attnlens.kernel.models.SequenceClassifier`:
    softmax probabilities for canonical layers, the cosine kernel ``phi_q phi_k^T`` for
    Primal-Attention layers. Returns (L, B, H, N, N) and the layer labels."""
    import torch

    from attnlens.kernel.models import SoftmaxAttention
    from attnlens.kernel.primal import PrimalAttention, cosine_kernel_matrix

    captured: dict[int, torch.Tensor] = {}
    hooks = []
    for i, block in enumerate(model.blocks):
        attn = block.attn
        if isinstance(attn, SoftmaxAttention):
            attn.keep_attention = True
        elif isinstance(attn, PrimalAttention):
            hooks.append(attn.register_forward_pre_hook(
                lambda mod, args, i=i: captured.__setitem__(i, args[0].detach())))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x, mask)
            maps, labels = [], []
            for i, block in enumerate(model.blocks):
                attn = block.attn
                if isinstance(attn, SoftmaxAttention):
                    maps.append(attn.last_attention)  # (B, H, N, N)
                    labels.append(f"layer {i} softmax")
                else:
                    inp = captured[i]  # (B, N, dim)
                    b, n, _ = inp.shape
                    q = attn.q_proj(inp).view(b, n, attn.heads, -1).transpose(1, 2)
                    k = attn.k_proj(inp).view(b, n, attn.heads, -1).transpose(1, 2)
                    maps.append(cosine_kernel_matrix(q, k))  # (B, H, N, N)
                    labels.append(f"layer {i} primal kernel")
    finally:
        for hk in hooks:
            hk.remove()
        for block in model.blocks:
            if isinstance(block.attn, SoftmaxAttention):
                block.attn.keep_attention = False
        model.train(was_training)
    return torch.stack(maps).double().numpy(), labels


def plot_spectra(spectra: dict[str, Spectrum], title: str = ""):
    """One panel per source: mean cumulative curve of each layer (over heads)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(spectra), figsize=(4.2 * len(spectra), 3.4), squeeze=False)
    for ax, (name, sp) in zip(axes[0], spectra.items(), strict=True):
        n = sp.curves.shape[2]
        k = np.arange(1, n + 1)
        for li in range(sp.curves.shape[0]):
            ax.plot(k, sp.curves[li].mean(0), label=sp.labels[li] if sp.labels else str(li))
        ax.axhline(sp.level, ls=":", color="gray", lw=0.8)
        ax.set(title=name, xlabel="k (singular values)", ylabel="normalized cumulative sum",
               xscale="log", ylim=(0, 1.02))
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


__all__ = ["Spectrum", "attention_spectrum", "cumulative_singular_values", "model_maps",
           "plot_spectra", "rank_at"]
