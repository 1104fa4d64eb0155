r"""The KSVD regularizer of Primal-Attention: ``eta * sum_layers J^2``.

Chen, Tao, Tonin, Suykens, NeurIPS 2023 (arXiv 2305.19798), eq. 7: training minimizes
``L_task + eta * sum_l J_l^2`` because ``J_l = 0`` at a KSVD stationary point of layer ``l``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from attnlens._validation import check_option
from attnlens.kernel.primal import PrimalAttention


def primal_layers(model: nn.Module) -> list[PrimalAttention]:
    """Every :class:`PrimalAttention` inside ``model`` (itself included), in module order."""
    return [m for m in model.modules() if isinstance(m, PrimalAttention)]


def ksvd_loss(
    model: nn.Module,
    form: Literal["sum", "mean"] = "sum",
    reduction: Literal["sum", "mean"] | None = None,
) -> torch.Tensor:
    r"""``sum_l J_l^2`` over the Primal-Attention layers of ``model``, from its last forward.

    ``form="sum"``: the paper's ``J`` (sums over tokens and heads, eq. 4), squared per
    sequence, averaged over the batch and **summed** over layers.
    ``form="mean"``: the reference code's loss: its mean-form ``J`` (see
    :func:`attnlens.kernel.primal.ksvd_objective`) squared per sequence, averaged over the
    batch and **averaged** over layers.
    ``reduction`` overrides the layer reduction (``"sum"`` or ``"mean"``).
    """
    check_option(form, "form", ("sum", "mean"))
    reduction = reduction or ("sum" if form == "sum" else "mean")
    check_option(reduction, "reduction", ("sum", "mean"))
    layers = primal_layers(model)
    if not layers:
        raise ValueError(
            f"model {type(model).__name__} has no PrimalAttention layer; ksvd_loss applies "
            "to PrimalFormer, PrimalPlusTransformer or models holding PrimalAttention."
        )
    total = sum(layer.ksvd_objective(form).pow(2).mean() for layer in layers)
    return total / len(layers) if reduction == "mean" else total


__all__ = ["ksvd_loss", "primal_layers"]
