r"""LAMB wrapped in Lookahead, the NPT optimizer, and its learning-rate / trade-off schedules.

LAMB (You et al., ICLR 2020, arXiv 1904.00962), as in the official NPT code (after
cybertronai/pytorch-lamb): Adam moments without bias correction,
:math:`u = m / (\sqrt v + \epsilon) + \lambda p`, trust ratio
:math:`\min(\|p\|, 10) / \|u\|` (1 when either norm is 0), :math:`p \leftarrow p - \eta\,r\,u`.
Lookahead (Zhang et al., NeurIPS 2019): every ``k`` steps the slow weights move
:math:`s \leftarrow s + \alpha (p - s)` and the fast weights restart from them.
"""

from __future__ import annotations

import math

import torch

#: LAMB's clamp of the weight norm in the trust ratio (official code)
WEIGHT_NORM_CLAMP = 10.0


class Lamb(torch.optim.Optimizer):
    """LAMB without bias correction (the official NPT / pytorch-lamb variant)."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                u = m / v.sqrt().add(group["eps"])
                if group["weight_decay"]:
                    u.add_(p, alpha=group["weight_decay"])
                w_norm = p.norm().clamp(0, WEIGHT_NORM_CLAMP)
                u_norm = u.norm()
                trust = (w_norm / u_norm).item() if w_norm > 0 and u_norm > 0 else 1.0
                p.add_(u, alpha=-group["lr"] * trust)
        return loss


class Lookahead:
    """Lookahead around any optimizer: ``k`` fast steps, then a slow interpolation by ``alpha``."""

    def __init__(self, base: torch.optim.Optimizer, k: int = 6, alpha: float = 0.5) -> None:
        self.base, self.k, self.alpha = base, k, alpha
        self.param_groups = base.param_groups
        self.steps = 0
        self.slow = [[p.detach().clone() for p in g["params"]] for g in base.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        self.base.step()
        self.steps += 1
        if self.steps % self.k == 0:
            for group, slow in zip(self.param_groups, self.slow, strict=True):
                for p, s in zip(group["params"], slow, strict=True):
                    s.add_(p - s, alpha=self.alpha)
                    p.copy_(s)


def flat_and_anneal(step: int, total: int, flat_fraction: float) -> float:
    """Learning-rate factor: 1 for the first ``flat_fraction`` of the steps, then cosine to 0."""
    start = flat_fraction * total
    if step <= start:
        return 1.0
    span = max(total - start, 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * min((step - start) / span, 1.0)))


def cosine_tradeoff(step: int, total: int, initial: float) -> float:
    """Weight of the feature loss: ``initial`` annealed to 0 by a half cosine over ``total`` steps.

    The objective is ``tradeoff * feature_loss + (1 - tradeoff) * label_loss`` (official
    ``TradeoffAnnealer``, "cosine").
    """
    if step >= total:
        return 0.0
    return initial * 0.5 * (math.cos(math.pi * step / total) + 1.0)
