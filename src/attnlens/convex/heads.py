r"""Non-convex attention-style heads (torch): the networks the convex programs are equivalent to.

Sahiner et al., "Unraveling Attention via Convex Duality", ICML 2022 (arXiv 2205.08078).
Every head maps tokens ``X`` (b, s, d) to per-token outputs (b, s, c); :class:`ConvexHead`
pools them by the token mean. ``sigma`` is ``linear``, ``relu`` or ``gated_relu`` (a fixed gate
``1[pre-activation of a fixed random H_j >= 0]``; head k uses gate ``gates[gate_index[k]]``).

* self-attention: ``sum_k sigma(X W1_k X^T) X W2_k``; score convention
  ``score_{tu} = x_t^T W1 x_u`` (``W1 = K Q^T``, i.e. ``score_t = x_t^T W z`` with query ``z``).
* MLP-Mixer token mixing: ``sum_k sigma(W1_k X) W2_k`` with ``W1_k`` (s, s).
* FNO: ``sum_k sigma(circ(X) vec(W1_k)) w2_k^T`` (circular convolution over tokens, filter
  ``W1_k`` (s, d)); block FNO restricts each head's filter to one of B channel groups.
* MLP: ``sum_k sigma(xbar^T w1_k) w2_k^T`` on the mean token ``xbar``.

Weight decay: ``(beta/2) sum_k (||W1_k||^2 + ||W2_k||^2)`` (:meth:`ConvexHead.penalty`).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from attnlens._validation import (
    InstanceOf,
    Integral,
    Interval,
    Options,
    Real,
    Tensor,
    raise_invalid,
    validate,
    validate_params,
    warn_ignored,
)

HEADS = ("self_attention", "mixer", "fno", "bfno", "mlp")
ACTIVATIONS = ("linear", "gated_relu", "relu")


def _act(pre: torch.Tensor, gate_pre: torch.Tensor | None, activation: str) -> torch.Tensor:
    if activation == "linear":
        return pre
    if activation == "relu":
        return torch.relu(pre)
    return pre * (gate_pre >= 0).to(pre.dtype)


def circ(X: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``out[b, k, t] = sum_{u,e} X[b, (t+u) % s, e] h[k, u, e]`` by FFT; X (b,s,d), h (k,s,d)."""
    s = X.shape[1]
    FX = torch.fft.rfft(X, dim=1)  # (b, f, d)
    Fh = torch.fft.rfft(h, dim=1)  # (k, f, d)
    prod = torch.einsum("bfd,kfd->bkf", FX, Fh.conj())  # (b, k, f)
    return torch.fft.irfft(prod, n=s, dim=-1)  # (b, k, s)


def _weight_shapes(head: str, m: int, s: int, d: int, c: int) -> tuple[tuple, tuple]:
    """Shapes of ``W1`` (and of the gates) and of ``W2`` for ``m`` units of ``head``."""
    return {"self_attention": ((m, d, d), (m, d, c)), "mixer": ((m, s, s), (m, d, c)),
            "fno": ((m, s, d), (m, c)), "bfno": ((m, s, d), (m, c)),
            "mlp": ((m, d), (m, c))}[head]


def _check_shape(name: str, value: torch.Tensor, shape: tuple, caller: str) -> None:
    if tuple(value.shape) != tuple(shape):
        raise_invalid(name, f"a tensor of shape {tuple(shape)}", f"got shape {tuple(value.shape)}",
                      "Check the head's shape conventions in the docstring.", caller)


@validate_params({
    "X": [Tensor(ndim=3)],
    "W1": [Tensor(ndim=(2, 3))],
    "W2": [Tensor(ndim=(2, 3))],
    "head": [Options(*HEADS)],
    "activation": [Options(*ACTIVATIONS)],
    "gates": [None, Tensor(ndim=(2, 3))],
})
def head_outputs(X: torch.Tensor, W1: torch.Tensor, W2: torch.Tensor, head: str,
                 activation: str, gates: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token outputs (b, s, c) of ``head``; ``gates`` holds one gate generator per head.

    Shapes: self_attention W1 (m,d,d) W2 (m,d,c) gates (m,d,d); mixer W1 (m,s,s) W2 (m,d,c)
    gates (m,s,s); fno/bfno W1 (m,s,d) W2 (m,c) gates (m,s,d); mlp W1 (m,d) W2 (m,c) gates (m,d).
    """
    _, s, d = X.shape
    m, c = W2.shape[0], W2.shape[-1]
    shape1, shape2 = _weight_shapes(head, m, s, d, c)
    _check_shape("W1", W1, shape1, "head_outputs")
    _check_shape("W2", W2, shape2, "head_outputs")
    if activation == "gated_relu":
        if gates is None:
            raise_invalid("gates", "a tensor of gate generators for activation='gated_relu'",
                          None, f"Pass one generator per unit, shape {shape1}.", "head_outputs")
        _check_shape("gates", gates, shape1, "head_outputs")
    elif gates is not None:
        warn_ignored("gates", gates, f"activation={activation!r} has no gates")
    return _outputs(X, W1, W2, head, activation, gates)


def _outputs(X: torch.Tensor, W1: torch.Tensor, W2: torch.Tensor, head: str,
             activation: str, gates: torch.Tensor | None) -> torch.Tensor:
    """:func:`head_outputs` without the input checks (the module's forward path)."""
    if head == "self_attention":
        pre = torch.einsum("nta,kae,nue->nktu", X, W1, X)  # (b, m, s, s)
        gp = torch.einsum("nta,kae,nue->nktu", X, gates, X) if activation == "gated_relu" else None
        A = _act(pre, gp, activation)  # (b, m, s, s)
        return torch.einsum("nktu,nue,kec->ntc", A, X, W2)  # (b, s, c)
    if head == "mixer":
        pre = torch.einsum("ktu,bue->bkte", W1, X)  # (b, m, s, d)
        gp = torch.einsum("ktu,bue->bkte", gates, X) if activation == "gated_relu" else None
        A = _act(pre, gp, activation)
        return torch.einsum("bkte,kec->btc", A, W2)  # (b, s, c)
    if head in ("fno", "bfno"):
        pre = circ(X, W1)  # (b, m, s)
        gp = circ(X, gates) if activation == "gated_relu" else None
        A = _act(pre, gp, activation)
        return torch.einsum("bkt,kc->btc", A, W2)  # (b, s, c)
    xbar = X.mean(dim=1)  # (b, d)
    pre = xbar @ W1.T  # (b, m)
    gp = xbar @ gates.T if activation == "gated_relu" else None
    return (_act(pre, gp, activation) @ W2)[:, None, :]  # (b, 1, c)


class ConvexHead(nn.Module):
    """A head with ``n_heads`` parallel units whose token-mean-pooled output feeds the loss.

    Parameters live in float64 by default (theory code). ``gates`` (one per unit) is a buffer;
    ``group_mask`` (n_heads, d) restricts block-FNO filters to their channel group.
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "head": [Options(*HEADS)],
        "activation": [Options(*ACTIVATIONS)],
        "n_heads": [Interval(Integral, 1, None)],
        "n_tokens": [Interval(Integral, 1, None)],
        "n_features": [Interval(Integral, 1, None)],
        "n_outputs": [Interval(Integral, 1, None)],
        "gates": [None, Tensor(ndim=(2, 3))],
        "group_mask": [None, Tensor(ndim=2)],
        "dtype": [InstanceOf(torch.dtype)],
        "generator": [None, InstanceOf(torch.Generator)],
        "init_scale": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, head: str, activation: str, n_heads: int, n_tokens: int,
                 n_features: int, n_outputs: int, *, gates: torch.Tensor | None = None,
                 group_mask: torch.Tensor | None = None, dtype: torch.dtype = torch.float64,
                 generator: torch.Generator | None = None, init_scale: float = 0.1):
        super().__init__()
        validate(self._parameter_constraints, locals(), "ConvexHead")
        self.head, self.activation = head, activation
        m, s, d, c = n_heads, n_tokens, n_features, n_outputs
        shapes = _weight_shapes(head, m, s, d, c)
        self.W1 = nn.Parameter(init_scale * torch.randn(shapes[0], dtype=dtype,
                                                        generator=generator))
        self.W2 = nn.Parameter(init_scale * torch.randn(shapes[1], dtype=dtype,
                                                        generator=generator))
        if activation == "gated_relu":
            if gates is None:
                gates = torch.randn(shapes[0], dtype=dtype, generator=generator)
            _check_shape("gates", gates, shapes[0], "ConvexHead")
            self.register_buffer("gates", gates.to(dtype))
        else:
            if gates is not None:
                warn_ignored("gates", gates, f"activation={activation!r} has no gates")
            self.register_buffer("gates", None)
        if group_mask is None:
            group_mask = torch.ones(m, d, dtype=dtype)
        _check_shape("group_mask", group_mask, (m, d), "ConvexHead")
        self.register_buffer("group_mask", group_mask.to(dtype))

    def _w1(self) -> torch.Tensor:
        if self.head in ("fno", "bfno"):
            return self.W1 * self.group_mask[:, None, :]  # (m, s, d)
        return self.W1

    def token_outputs(self, X: torch.Tensor) -> torch.Tensor:
        """(b, s, d) -> (b, s, c) per-token outputs."""
        return _outputs(X, self._w1(), self.W2, self.head, self.activation, self.gates)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """(b, s, d) -> (b, c): token-mean-pooled outputs."""
        return self.token_outputs(X).mean(dim=1)

    def penalty(self) -> torch.Tensor:
        """``(1/2) sum_k (||W1_k||^2 + ||W2_k||^2)`` (multiply by beta)."""
        return 0.5 * (self._w1().pow(2).sum() + self.W2.pow(2).sum())
