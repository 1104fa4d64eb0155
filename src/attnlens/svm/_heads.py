"""Prediction heads of one-layer attention, shared by the dynamics and Gen-SVM's finite part.

``h(r) = v^T r`` (linear) or ``h(r) = v2^T phi(V1 r)`` (a fixed two-layer MLP), applied to the
attended token ``r = X^T softmax(X W z)`` (score ``x_t^T W z``). Arrays carry a leading seed
axis ``S``.

The multi-token head of the official Att-SVM code (umich-sota/TF-as-SVM,
``multi_token_converge.ipynb``) is ``h(r) = 1^T ReLU(V^T r)`` with a Gaussian ``V`` (d, d)
scaled to ``||V||_F = 1``: :func:`sum_relu_head`, or ``MLPHead.sum_relu(V)`` for the
training loop (``V1 = V^T``, ``v2 = 1``, ReLU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from attnlens._validation import check_random_state

ACTIVATIONS = ("relu", "tanh")


@dataclass
class MLPHead:
    """A fixed two-layer head ``h(r) = v2^T phi(V1 r)``; V1 (S, m, d), v2 (S, m)."""

    V1: np.ndarray
    v2: np.ndarray
    activation: str = "relu"

    @classmethod
    def random(
        cls, S: int, d: int, hidden: int, seed: Any, activation: str = "relu"
    ) -> MLPHead:
        rng = check_random_state(seed, "seed")
        V1 = rng.standard_normal((S, hidden, d)) / np.sqrt(d)
        v2 = rng.standard_normal((S, hidden)) / np.sqrt(hidden)
        return cls(V1, v2, activation)

    @classmethod
    def sum_relu(cls, V: np.ndarray) -> MLPHead:
        """The official multi-token head ``h(r) = 1^T ReLU(V^T r)``; ``V`` (d, m) or (S, d, m)
        (a leading seed axis is added when absent)."""
        V = np.asarray(V, dtype=np.float64)
        V = V[None] if V.ndim == 2 else V
        return cls(np.ascontiguousarray(V.transpose(0, 2, 1)), np.ones(V.shape[::2]), "relu")


def sum_relu_head(r: np.ndarray, V: np.ndarray) -> np.ndarray:
    """``h(r) = 1^T ReLU(V^T r)`` for attended tokens ``r`` (..., d) and ``V`` (d, m): (...,).

    The prediction head of the official multi-token experiment (Tarzanagh, Li, Thrampoulidis,
    Oymak, arXiv 2308.16898; umich-sota/TF-as-SVM ``multi_token_converge.ipynb``).
    """
    return np.maximum(np.asarray(r, dtype=np.float64) @ np.asarray(V, dtype=np.float64),
                      0.0).sum(axis=-1)


def head_output(
    r: np.ndarray, v: np.ndarray | None, mlp: MLPHead | None
) -> tuple[np.ndarray, np.ndarray]:
    """Head output f (S, n) and its gradient u = dh/dr (S, n, d) at attended tokens r (S, n, d);
    the linear head ``v`` (S, d) when ``mlp`` is None."""
    if mlp is None:
        f = (r @ v[..., None])[..., 0]  # (S, n)
        return f, np.broadcast_to(v[:, None, :], r.shape)
    pre = np.einsum("smd,snd->snm", mlp.V1, r)  # (S, n, m)
    if mlp.activation == "relu":
        act, dact = np.maximum(pre, 0.0), (pre > 0).astype(np.float64)
    else:
        act = np.tanh(pre)
        dact = 1.0 - act**2
    f = np.einsum("snm,sm->sn", act, mlp.v2)  # (S, n)
    u = np.einsum("snm,sm,smd->snd", dact, mlp.v2, mlp.V1)  # (S, n, d)
    return f, u
