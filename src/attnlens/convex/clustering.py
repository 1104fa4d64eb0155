r"""The clustering reading of convex attention: block-diagonal Grams give block-diagonal Z.

Sahiner et al., ICML 2022 (arXiv 2205.08078). Linear self-attention pools to
:math:`\bar x^\top W_1 G W_2` with :math:`G = X^\top X`; its convex variable is
``Z[(a,b),(e,c)] = sum_k W1_k[a,b] W2_k[e,c]``. If every sample's Gram ``G_i`` is block-diagonal
over feature groups (tokens of one cluster live on one group of channels), entries with
``group(b) != group(e)`` never reach the loss, and zeroing them is a *pinching*, which never
raises the nuclear norm: the optimal ``Z`` is block-diagonal -- attention mixes tokens only
within clusters. Score convention: ``score_t = x_t^T W1 z``.
"""

from __future__ import annotations

import numpy as np

from attnlens._validation import (
    Array,
    InstanceOf,
    Integral,
    Interval,
    check_array,
    raise_invalid,
    validate_params,
)

_COUNT = Interval(Integral, 1, None)


@validate_params({
    "n": [_COUNT], "s": [_COUNT], "d": [_COUNT], "groups": [_COUNT], "n_classes": [_COUNT],
    "rng": [InstanceOf(np.random.Generator)],
})
def block_diagonal_tokens(n: int, s: int, d: int, groups: int, n_classes: int,
                          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Tokens whose features are supported on one channel group each (block-diagonal Grams)."""
    if d % groups:
        raise_invalid("groups", f"a divisor of d={d}", groups, "Pick a divisor of d.",
                      "block_diagonal_tokens")
    w = d // groups
    X = rng.standard_normal((n, s, d))
    cluster = rng.integers(0, groups, (n, s))
    mask = (np.arange(d)[None, None, :] // w) == cluster[:, :, None]
    X = X * mask
    teacher = rng.standard_normal((d, n_classes))
    y = np.argmax(X.mean(axis=1) @ teacher, axis=1)
    return X, y


@validate_params({"Z": [Array(ndim=2)], "d": [_COUNT], "n_outputs": [_COUNT],
                  "groups": [_COUNT]})
def off_block_fraction(Z: np.ndarray, d: int, n_outputs: int, groups: int) -> float:
    """Share of ``||Z||_F^2`` on entries ``(a,b),(e,c)`` with ``group(b) != group(e)``."""
    Z = check_array(Z, "Z", shape=(d * d, d * n_outputs), caller="off_block_fraction")
    if d % groups:
        raise_invalid("groups", f"a divisor of d={d}", groups, "Pick a divisor of d.",
                      "off_block_fraction")
    w = d // groups
    Z4 = Z.reshape(d, d, d, n_outputs)  # (a, b, e, c)
    gb = np.arange(d) // w
    off = (gb[:, None] != gb[None, :])[None, :, :, None]
    tot = float(np.sum(Z4**2))
    return float(np.sum((Z4 * off) ** 2) / tot) if tot > 0 else 0.0
