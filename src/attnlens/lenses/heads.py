r"""Head statistics: attention entropy, mean attention distance, head importance.

Entropy and distance describe each head's maps (rows = queries):

.. math:: H_{\ell h} = \frac1n \sum_i -\sum_j A_{\ell h}[i,j] \log A_{\ell h}[i,j], \qquad
          D_{\ell h} = \frac1n \sum_i \sum_j A_{\ell h}[i,j]\, \|p_i - p_j\| ,

with token positions ``p`` (1-D token index for text, 2-D patch coordinates for images; the
ViT papers' "mean attention distance", Dosovitskiy et al. 2021, Fig. 7).

Head importance (Michel, Levy, Neubig, "Are Sixteen Heads Really Better than One?", NeurIPS
2019, Eq. 2): each head's output is multiplied by a gate :math:`\xi_{\ell h}` (1 = kept) and

.. math:: I_{\ell h} = \mathbb E_x \Big| \frac{\partial \mathcal L(x)}{\partial \xi_{\ell h}}
          \Big|_{\xi = 1} , \qquad
          \Delta_{\ell h} = \mathbb E_x\big[\mathcal L(x; \xi_{\ell h} = 0)\big]
          - \mathbb E_x\big[\mathcal L(x; \xi = 1)\big] ,

the first-order estimate and the loss change when the head alone is masked. The model enters
as a callable ``loss_fn(mask) -> per-example losses``, so this module loads nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnlens._validation import Array, Integral, Interval, raise_invalid, validate_params
from attnlens.lenses._attention import check_attention

__all__ = ["HeadImportance", "attention_entropy", "head_importance", "mean_attention_distance"]


@validate_params({"att": [Array(ndim=4)]})
def attention_entropy(att) -> np.ndarray:
    """(layers, heads, n, n) -> (layers, heads): mean over queries of the row entropy (nats)."""
    a = check_attention(att, caller="attention_entropy")
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(a > 0, -a * np.log(a), 0.0)
    return terms.sum(axis=-1).mean(axis=-1)


@validate_params({"att": [Array(ndim=4)], "positions": [None, Array(ndim=2)]})
def mean_attention_distance(att, positions=None) -> np.ndarray:
    """(layers, heads, n, n) -> (layers, heads): mean over queries of the expected distance.

    positions : (n, p) coordinates of the tokens; None uses the token index (text).
    """
    a = check_attention(att, caller="mean_attention_distance")
    n = a.shape[-1]
    if positions is None:
        pos = np.arange(n, dtype=np.float64)[:, None]
    else:
        pos = np.asarray(positions, dtype=np.float64)
        if pos.shape[0] != n:
            raise_invalid("positions", f"an array with {n} rows (one per token)",
                          f"got shape {pos.shape}", "Pass one coordinate row per token.",
                          "mean_attention_distance")
    dist = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)  # (n, n)
    return np.einsum("lhij,ij->lh", a, dist) / n


@dataclass(frozen=True)
class HeadImportance:
    """gradient: (L, H) ``E|dL/dxi|``; masked_delta: (L, H) loss change when the head alone is
    masked (None when not computed); base_loss: mean loss with every head kept; n_examples."""

    gradient: np.ndarray
    masked_delta: np.ndarray | None
    base_loss: float
    n_examples: int


@validate_params({"loss_fn": ["callable"], "n_layers": [Interval(Integral, 1, None)],
                  "n_heads": [Interval(Integral, 1, None)], "masked": ["boolean"]})
def head_importance(loss_fn, n_layers: int, n_heads: int, masked: bool = True) -> HeadImportance:
    """Michel et al.'s head importance of a model given as ``loss_fn``.

    loss_fn : ``mask (n_layers, n_heads) torch.float64 -> (B,) per-example losses``, the
        model run with head ``(l, h)``'s output multiplied by ``mask[l, h]``.
    masked : also run the ``n_layers * n_heads`` forward passes with one head masked.
    """
    import torch

    mask = torch.ones((n_layers, n_heads), dtype=torch.float64, requires_grad=True)
    losses = loss_fn(mask)
    if losses.ndim != 1 or losses.numel() == 0:
        raise_invalid("loss_fn", "a callable returning per-example losses of shape (B,)",
                      f"got shape {tuple(losses.shape)}", "Return one loss per example.",
                      "head_importance")
    grads = np.zeros((n_layers, n_heads))
    for b in range(losses.numel()):
        (g,) = torch.autograd.grad(losses[b], mask, retain_graph=b + 1 < losses.numel())
        grads += np.abs(g.detach().numpy())
    base = float(losses.detach().mean())
    delta = None
    if masked:
        delta = np.zeros((n_layers, n_heads))
        with torch.no_grad():
            for layer in range(n_layers):
                for head in range(n_heads):
                    m = torch.ones((n_layers, n_heads), dtype=torch.float64)
                    m[layer, head] = 0.0
                    delta[layer, head] = float(loss_fn(m).mean()) - base
    return HeadImportance(gradient=grads / losses.numel(), masked_delta=delta, base_loss=base,
                          n_examples=int(losses.numel()))
