"""Spectrum analysis on constructed matrices and on a model's maps."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnlens.kernel.models import PrimalPlusTransformer
from attnlens.kernel.spectrum import (
    attention_spectrum,
    cumulative_singular_values,
    model_maps,
    rank_at,
)


def test_known_spectra():
    rng = np.random.default_rng(0)
    u = rng.standard_normal((6, 1))
    c = cumulative_singular_values(u @ u.T)  # rank one
    np.testing.assert_allclose(c, np.ones(6), atol=1e-12)
    np.testing.assert_allclose(cumulative_singular_values(np.eye(4)), [0.25, 0.5, 0.75, 1.0])
    assert rank_at(np.array([0.25, 0.5, 0.75, 1.0]), 0.9) == 4
    assert rank_at(np.array([0.95, 1.0]), 0.9) == 1


def test_attention_spectrum_respects_mask():
    maps = np.zeros((1, 2, 1, 4, 4))
    maps[0, 0, 0] = np.eye(4)
    maps[0, 1, 0, :2, :2] = np.eye(2)
    maps[0, 1, 0, 2:, :] = 7.0  # padding rows/cols must be ignored
    maps[0, 1, 0, :, 2:] = 7.0
    mask = np.array([[True] * 4, [True, True, False, False]])
    sp = attention_spectrum(maps, mask, level=0.9)
    # sequence 1: [0.5, 1, 1, 1]; sequence 0: [0.25, 0.5, 0.75, 1]; mean of both
    np.testing.assert_allclose(sp.curves[0, 0], [0.375, 0.75, 0.875, 1.0])
    assert sp.ranks[0, 0] == pytest.approx((4 + 2) / 2)
    with pytest.raises(ValueError, match="square"):
        attention_spectrum(np.zeros((1, 1, 1, 3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        attention_spectrum(np.full((1, 1, 2, 2), np.nan))


def test_model_maps():
    torch.manual_seed(0)
    model = PrimalPlusTransformer(3, 2, 6, dim=8, heads=2, depth=2, ff_dim=8, rank=2,
                                  rank_multi=2)
    x = torch.randn(2, 6, 3)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    maps, labels = model_maps(model, x, mask)
    assert maps.shape == (2, 2, 2, 6, 6) and "softmax" in labels[0] and "primal" in labels[1]
    np.testing.assert_allclose(maps[0].sum(-1), 1.0, atol=1e-6)  # softmax rows
    assert np.allclose(maps[0][1, :, :, 4:], 0)  # no attention on padding keys
    # primal kernel: cosine of the layer's own q/k projections of the block input
    block_in = {}
    model.blocks[1].attn.register_forward_pre_hook(lambda m, a: block_in.update(x=a[0]))
    model.eval()
    with torch.no_grad():
        model(x, mask)
        attn = model.blocks[1].attn
        q = F.normalize(attn.q_proj(block_in["x"]).view(2, 6, 2, 4), dim=-1)
        k = F.normalize(attn.k_proj(block_in["x"]).view(2, 6, 2, 4), dim=-1)
        ref = torch.einsum("bihp,bjhp->bhij", q, k)
    np.testing.assert_allclose(maps[1], ref.double().numpy(), atol=1e-6)
