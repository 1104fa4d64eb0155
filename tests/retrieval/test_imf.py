"""Inter-modality flow against a direct loop, its two extremes, and the fusion model's maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnlens.errors import InvalidParameterError
from attnlens.retrieval import FusionTransformer, inter_modality_flow

SEED = 13


def _maps(L=2, B=3, H=2, N=6, seed=SEED):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((L, B, H, N, N))
    A = np.exp(logits)
    return A / A.sum(-1, keepdims=True)


def test_imf_against_a_direct_loop_with_padding():
    A = _maps()
    modality = np.array([1, 1, 1, 0, 0, 0])
    mask = np.ones((3, 6), bool)
    mask[1, 2] = False  # a padded language token
    got = inter_modality_flow(A, modality, mask)
    L, B, H, N, _ = A.shape
    want = np.zeros(L)
    for layer in range(L):
        vals = []
        for b in range(B):
            for h in range(H):
                cross = total = 0.0
                for i in range(N):
                    for j in range(N):
                        if mask[b, i] and mask[b, j]:
                            total += A[layer, b, h, i, j]
                            if modality[i] != modality[j]:
                                cross += A[layer, b, h, i, j]
                vals.append(cross / total)
        want[layer] = np.mean(vals)
    np.testing.assert_allclose(got.per_layer, want, atol=1e-12)
    np.testing.assert_allclose(got.vision_to_language + got.language_to_vision, want,
                               atol=1e-12)


def test_imf_extremes():
    modality = np.array([0, 0, 1, 1])
    block = np.kron(np.eye(2), np.full((2, 2), 0.5))[None, None, None]  # within modality
    cross = np.kron(1 - np.eye(2), np.full((2, 2), 0.5))[None, None, None]
    assert inter_modality_flow(block, modality).per_layer[0] == 0.0
    assert inter_modality_flow(cross, modality).per_layer[0] == 1.0
    with pytest.raises(InvalidParameterError, match="modality"):
        inter_modality_flow(block, np.zeros(4, int))


def test_fusion_model_maps_are_row_stochastic_and_ignore_padding():
    torch.manual_seed(SEED)
    model = FusionTransformer(visual_dim=5, text_dim=7, dim=16, depth=2, heads=2,
                              visual_encoder="local").eval()
    visual, text = torch.randn(2, 9, 5), torch.randn(2, 4, 7)  # 3 x 3 patch grid
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        logits, maps, modality = model(visual, text, mask)
    assert logits.shape == (2,) and maps.shape == (2, 2, 2, 14, 14)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, 2, 14))
    assert float(maps[:, 1, :, :, 3:5].abs().max()) == 0.0  # padded text keys get nothing
    assert modality.tolist() == [1] * 5 + [0] * 9


def test_pooled_visual_encoders_against_a_direct_computation():
    """parsing: LayerNorm, 2 x 2 mean over the grid, linear; local: a strided conv halves the
    grid side; the MLM head reads the fused state at the masked language position."""
    torch.manual_seed(SEED)
    model = FusionTransformer(6, 5, dim=8, depth=1, heads=2, pool=2, n_words=3).eval()
    vis = torch.randn(2, 16, 6)  # a 4 x 4 grid
    emb = model.visual[0]
    x = torch.nn.functional.layer_norm(vis, (6,), emb.norm.weight, emb.norm.bias)
    grid = x.reshape(2, 4, 4, 6)
    pooled = grid.reshape(2, 2, 2, 2, 2, 6).mean(dim=(2, 4)).reshape(2, 4, 6)  # (B, 4, d)
    torch.testing.assert_close(emb(vis), emb.proj(pooled))
    local = FusionTransformer(6, 5, dim=8, depth=1, heads=2, visual_encoder="local", pool=2)
    assert local.visual(vis).shape == (2, 4, 8)
    text, mask = torch.randn(2, 3, 5), torch.ones(2, 3, dtype=torch.bool)
    pos = torch.tensor([0, 2])
    with torch.no_grad():
        states = model.fuse(vis, text, mask)[0]
        want = torch.stack([model.mlm_head(states[b, 1 + pos[b]]) for b in range(2)])
        torch.testing.assert_close(model.mlm_logits(vis, text, mask, pos), want)
