"""Shared data of the convex tests."""

import numpy as np
import pytest

from attnlens.convex.programs import build_program, sample_gates


def small_gated_problem(n=60, s=4, d=3, m=2, c=2, seed=0):
    """A gated-ReLU self-attention program on Gaussian tokens with random one-hot targets."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, s, d))
    gates = sample_gates("self_attention", m, s, d, rng)
    Y = np.eye(c)[rng.integers(0, c, n)]
    return build_program(X, "self_attention", "gated_relu", c, gates=gates), Y


@pytest.fixture
def gated_problem():
    """:func:`small_gated_problem` (call it with the sizes wanted)."""
    return small_gated_problem
