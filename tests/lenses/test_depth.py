"""Depth threshold of Levine et al. (2020): the formula against the paper's worked values, the
parameter count against torch's own Transformer layer, the depth comparison on planted curves."""

import math

import numpy as np
import pytest
import torch

from attnlens.errors import InvalidParameterError
from attnlens.lenses import (
    COMMON_MODELS,
    compare_depths,
    depth_regime,
    depth_threshold,
    threshold_table,
    transformer_params,
    width_for_params,
)


@pytest.mark.parametrize("width,threshold", [(3, 1), (9, 2), (27, 3), (81, 4), (243, 5), (729, 6)])
def test_threshold_at_the_papers_worked_widths(width, threshold):
    # L_th = log_3(d_x): the worked values 27 -> 3, 81 -> 4, 243 -> 5, exact at powers of 3
    assert depth_threshold(width) == threshold


@pytest.mark.parametrize("width", [2, 10, 384, 768, 1024, 12288])
def test_threshold_is_the_base_3_logarithm(width):
    assert depth_threshold(width) == pytest.approx(float(np.emath.logn(3, width)), rel=1e-12)
    assert 3 ** depth_threshold(width) == pytest.approx(width, rel=1e-9)


def test_regimes_and_table():
    assert depth_regime(2, 27) == "depth-efficient"  # 2 < 3
    assert depth_regime(3, 27) == "width-bottlenecked"  # at the threshold: no longer efficient
    assert depth_regime(6, 768) == "depth-efficient"  # BERT-base width, 6 < 6.05
    rows = threshold_table()
    assert [r["model"] for r in rows] == [m.name for m in COMMON_MODELS]
    bert_large = next(r for r in rows if r["model"] == "BERT-large")
    assert bert_large["threshold log3(width)"] == pytest.approx(math.log(1024, 3), abs=0.01)


@pytest.mark.parametrize("width,depth", [(12, 1), (48, 3), (96, 2)])
def test_parameter_count_matches_torch_transformer_layers(width, depth):
    layers = [torch.nn.TransformerEncoderLayer(width, 4, dim_feedforward=4 * width)
              for _ in range(depth)]
    counted = sum(p.numel() for layer in layers for p in layer.parameters()) + 2 * width  # + ln_f
    assert transformer_params(depth, width) == counted
    assert transformer_params(depth, width, vocab=50, context=8) == counted + 58 * width


def test_width_for_params_is_the_closest_allowed_width():
    for depth, budget in [(1, 3000), (4, 100_000), (6, 30_000)]:
        w = width_for_params(depth, budget, multiple=3)
        assert w % 3 == 0
        best = min(range(3, 400, 3), key=lambda x: abs(transformer_params(depth, x) - budget))
        assert w == best


def test_compare_depths_finds_a_planted_crossover():
    # depth 2 beats depth 1 only above 1e4 parameters (curves cross there)
    p = np.logspace(3, 5, 9)
    loss1 = 3.0 - 0.20 * np.log10(p)
    loss2 = 3.4 - 0.30 * np.log10(p)  # equal at log10 p = 4
    cmp = compare_depths(np.r_[np.ones(9, int), 2 * np.ones(9, int)], np.r_[p, p],
                         np.r_[loss1, loss2], grid=201)
    assert cmp.depths == (1, 2)
    assert cmp.crossover[0] == pytest.approx(1e4, rel=0.03)
    assert cmp.predicted_crossover[0] == transformer_params(2, 9)
    assert cmp.best_depth[0] == 1 and cmp.best_depth[-1] == 2


@pytest.mark.parametrize("bad", [0, -3, 2.5, "27", None, True])
def test_bad_width_is_a_named_error(bad):
    with pytest.raises(InvalidParameterError, match="width"):
        depth_threshold(bad)
    with pytest.raises(InvalidParameterError, match="depth"):
        depth_regime(bad, 27)
