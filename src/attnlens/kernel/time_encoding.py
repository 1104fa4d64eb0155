r"""Functional time representations: Bochner and Mercer time encoders and their time kernels.

Xu, Ruan, Kumar, Korpeoglu, Achan, "Self-attention with Functional Time Representation
Learning", NeurIPS 2019. A map ``Phi: t -> R^D`` makes attention between events at times
``t_1, t_2`` depend on the translation-invariant kernel ``psi(t_1 - t_2) = <Phi(t_1),
Phi(t_2)>`` (the score ``score_ij = x_i^T W z_j`` with ``W = K Q^T`` then sees
``Phi(t)`` concatenated to the event features).

* Bochner (``psi`` is the Fourier transform of a measure ``p(omega)``):
  ``Phi(t) = sqrt(1/d) [cos(omega_1 t), sin(omega_1 t), ..., cos(omega_d t), sin(omega_d t)]``,
  ``psi(dt) = (1/d) sum_i cos(omega_i dt)``, with the frequencies

  - ``"free"``: learned directly;
  - ``"gaussian"``: ``omega_i = mu + sigma z_i``, fixed ``z_i ~ N(0, 1)``, learned mu, sigma;
  - ``"inverse_cdf"``: ``omega_i = g_theta(u_i)``, fixed ``u_i ~ U(0, 1)``, g a small MLP.

* Mercer (periodic kernels on base frequencies ``omega_k = 2 pi / T_k``):
  ``Phi(t) = [sqrt(c_{k0}), sqrt(c_{kj}) cos(j omega_k t), sqrt(c_{kj}) sin(j omega_k t)]``,
  ``psi(dt) = sum_k [c_{k0} + sum_j c_{kj} cos(j omega_k dt)]``, ``c = softplus(.) >= 0``
  (one coefficient per cos/sin pair, which keeps ``psi`` translation invariant).
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from attnlens._validation import (
    Array,
    Interval,
    Options,
    Tensor,
    raise_invalid,
    validate,
)

BochnerMethod = Literal["free", "gaussian", "inverse_cdf"]


def _check_times(t: torch.Tensor) -> torch.Tensor:
    return Tensor(allow_empty=True).check(t, "t", caller="time encoder")


class BochnerTimeEncoder(nn.Module):
    """Bochner time encoder: (...,) times -> (..., 2 d) features; ``kernel(dt)`` gives psi."""

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "dim": [Interval(Integral, 1, None)],
        "method": [Options("free", "gaussian", "inverse_cdf")],
        "scale": [Interval(Real, 0.0, None, closed="neither")],
        "hidden": [Interval(Integral, 1, None)],
        "seed": [Interval(Integral, 0, None)],
    }

    def __init__(self, dim: int, method: BochnerMethod = "free", *, scale: float = 1.0,
                 hidden: int = 32, seed: int = 0) -> None:
        super().__init__()
        validate(self._parameter_constraints, locals(), "BochnerTimeEncoder")
        self.d, self.method = int(dim), method
        gen = torch.Generator().manual_seed(seed)
        if method == "free":
            self.omega_free = nn.Parameter(scale * torch.randn(self.d, generator=gen))
        elif method == "gaussian":
            self.mu = nn.Parameter(torch.zeros(1))
            self.log_sigma = nn.Parameter(torch.full((1,), math.log(scale)))
            self.register_buffer("z", torch.randn(self.d, generator=gen))
        else:
            self.register_buffer("u", (torch.arange(self.d) + 0.5) / self.d)  # fixed quantiles
            self.g = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, 1))
            self.out_scale = scale

    def frequencies(self) -> torch.Tensor:
        """(d,) the frequencies omega_i."""
        if self.method == "free":
            return self.omega_free
        if self.method == "gaussian":
            return self.mu + self.log_sigma.exp() * self.z
        return self.out_scale * self.g(self.u[:, None]).squeeze(-1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = _check_times(t)
        w = self.frequencies().to(t.dtype)  # (d,)
        arg = t[..., None] * w  # (..., d)
        feats = torch.stack((torch.cos(arg), torch.sin(arg)), dim=-1)  # (..., d, 2)
        return feats.flatten(-2) / math.sqrt(self.d)  # (..., 2d)

    def kernel(self, dt: torch.Tensor) -> torch.Tensor:
        """psi(dt) = (1/d) sum_i cos(omega_i dt): (...,) -> (...,)."""
        w = self.frequencies().to(dt.dtype)
        return torch.cos(dt[..., None] * w).mean(-1)


class MercerTimeEncoder(nn.Module):
    """Mercer time encoder on base periods ``T_k`` with ``harmonics`` harmonics each."""

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "periods": [Array(ndim=1)],
        "harmonics": [Interval(Integral, 1, None)],
    }

    def __init__(self, periods: tuple[float, ...] = (1.0, 10.0, 100.0), harmonics: int = 8
                 ) -> None:
        super().__init__()
        validate(self._parameter_constraints, locals(), "MercerTimeEncoder")
        if any(not (p > 0) for p in periods):
            raise_invalid("periods", "positive numbers", periods, caller="MercerTimeEncoder")
        self.harmonics = int(harmonics)
        self.register_buffer("omega", 2 * math.pi / torch.tensor(periods, dtype=torch.float64))
        self.raw_c = nn.Parameter(torch.zeros(len(periods), self.harmonics + 1))

    def coefficients(self) -> torch.Tensor:
        """(K, harmonics + 1) nonnegative ``c_{kj}`` (j = 0 is the constant term)."""
        return F.softplus(self.raw_c) / self.raw_c.numel()

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = _check_times(t)
        c = self.coefficients().to(t.dtype)  # (K, J+1)
        j = torch.arange(1, self.harmonics + 1, dtype=t.dtype, device=t.device)  # (J,)
        arg = t[..., None, None] * self.omega.to(t.dtype)[:, None] * j  # (..., K, J)
        amp = c[:, 1:].sqrt()  # (K, J)
        cos, sin = amp * torch.cos(arg), amp * torch.sin(arg)  # (..., K, J)
        const = c[:, :1].sqrt().expand(*t.shape, -1, 1)  # (..., K, 1)
        return torch.cat((const, cos, sin), dim=-1).flatten(-2)  # (..., K (2J + 1))

    def kernel(self, dt: torch.Tensor) -> torch.Tensor:
        """psi(dt) = sum_k [c_k0 + sum_j c_kj cos(j omega_k dt)]: (...,) -> (...,)."""
        c = self.coefficients().to(dt.dtype)
        j = torch.arange(1, self.harmonics + 1, dtype=dt.dtype, device=dt.device)
        arg = dt[..., None, None] * self.omega.to(dt.dtype)[:, None] * j  # (..., K, J)
        return c[:, 0].sum() + (c[:, 1:] * torch.cos(arg)).sum((-1, -2))


__all__ = ["BochnerTimeEncoder", "MercerTimeEncoder"]
