"""Rollout and flow against independent paths: path enumeration, closed forms, networkx."""

import itertools

import numpy as np
import pytest

from attnlens.errors import InvalidParameterError
from attnlens.lenses import attention_flow, attention_rollout, raw_attention_flow
from attnlens.lenses._attention import residual_attention
from attnlens.lenses._reference import flow_reference


def _random_attention(rng, layers, heads, n, power=4.0):
    a = rng.random((layers, heads, n, n)) ** power
    return a / a.sum(axis=-1, keepdims=True)


def test_rollout_is_the_sum_over_paths_of_weight_products():
    rng = np.random.default_rng(0)
    att = _random_attention(rng, 3, 2, 4)
    aug = residual_attention(att)
    want = np.zeros((4, 4))
    for out, inp in itertools.product(range(4), range(4)):
        for mid in itertools.product(range(4), repeat=2):  # nodes at layers 2 and 1
            path = (out, *mid, inp)
            want[out, inp] += np.prod([aug[2 - s, path[s], path[s + 1]] for s in range(3)])
    got = attention_rollout(att)
    np.testing.assert_allclose(got, want, atol=1e-12)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("layers,n,seed", [(1, 5, 0), (2, 6, 1), (3, 7, 2), (4, 8, 3), (5, 6, 4)])
def test_flow_equals_the_networkx_reference(layers, n, seed):
    att = _random_attention(np.random.default_rng(seed), layers, 3, n)
    got = attention_flow(att)
    np.testing.assert_allclose(got, flow_reference(att), atol=1e-6, rtol=0)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-12)


def test_flow_closed_forms_for_one_and_two_layers():
    rng = np.random.default_rng(5)
    one = _random_attention(rng, 1, 2, 6)
    np.testing.assert_allclose(raw_attention_flow(one), residual_attention(one)[0], atol=1e-12)
    two = _random_attention(rng, 2, 2, 6)
    a1, a2 = residual_attention(two)
    # two layers: the paths j -> k -> i share no edge, so the flow is sum_k min(a2[j,k], a1[k,i])
    want = np.minimum(a2[:, :, None], a1[None, :, :]).sum(axis=1)
    np.testing.assert_allclose(raw_attention_flow(two), want, atol=1e-12)


def test_flow_on_real_minilm_attention_equals_networkx(minilm_capture):
    att = minilm_capture.attentions[1]  # 6 layers, 12 heads, a short sentence
    np.testing.assert_allclose(attention_flow(att), flow_reference(att), atol=1e-6, rtol=0)


def test_flow_is_bounded_by_rollout_support_and_by_capacities():
    att = _random_attention(np.random.default_rng(6), 4, 2, 9, power=8.0)
    raw = raw_attention_flow(att)
    aug = residual_attention(att)
    # a flow never exceeds the source's out-capacity (1) nor the sink's in-capacity
    assert raw.max() <= 1.0 + 1e-12
    assert np.all(raw <= aug[0].sum(axis=0)[None, :] + 1e-12)


@pytest.mark.parametrize("bad,match", [
    (np.ones((2, 3, 4)), "dimensions"),
    (np.ones((1, 1, 3, 4)) / 4, "shape"),
    (-np.ones((1, 1, 2, 2)), "nonnegative"),
    (np.ones((1, 1, 3, 3)), "row-stochastic"),
])
def test_bad_attention_is_refused(bad, match):
    for fn in (attention_rollout, attention_flow):
        with pytest.raises(InvalidParameterError, match=match):
            fn(bad)


def test_flow_of_selected_outputs_equals_those_rows():
    att = _random_attention(np.random.default_rng(7), 3, 2, 7)
    full = attention_flow(att)
    np.testing.assert_allclose(attention_flow(att, outputs=[0, 5]), full[[0, 5]], atol=1e-14)
    with pytest.raises(InvalidParameterError, match="outputs"):
        attention_flow(att, outputs=[7])
