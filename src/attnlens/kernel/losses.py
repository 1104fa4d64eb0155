r"""The KSVD regularizer of Primal-Attention: ``eta * sum_layers J^2``.

Chen, Tao, Tonin, Suykens, NeurIPS 2023 (arXiv 2305.19798), eq. 7: training minimizes
``L_task + eta * sum_l J_l^2`` because ``J_l = 0`` at a KSVD stationary point of layer ``l``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from attnlens._validation import Options, describe, raise_invalid, validate_params
from attnlens.kernel.primal import KSVDTerms, PrimalAttention, ksvd_objective


@validate_params({"model": [nn.Module]})
def primal_layers(model: nn.Module) -> list[PrimalAttention]:
    """Every :class:`PrimalAttention` inside ``model`` (itself included), in module order."""
    return [m for m in model.modules() if isinstance(m, PrimalAttention)]


@validate_params({
    "terms": [KSVDTerms, list, tuple],
    "form": [Options("sum", "mean")],
    "reduction": [Options("sum", "mean"), None],
    "aggregate": [Options("sequence", "batch_mean")],
})
def ksvd_loss(
    terms: KSVDTerms | Sequence[KSVDTerms],
    form: Literal["sum", "mean"] = "sum",
    reduction: Literal["sum", "mean"] | None = None,
    aggregate: Literal["sequence", "batch_mean"] = "sequence",
) -> torch.Tensor:
    r"""``sum_l J_l^2`` over the Primal-Attention layers of one forward pass.

    ``terms`` are the :class:`KSVDTerms` that the layers return with ``return_terms=True``
    (``model(x, mask, return_terms=True)`` collects them for the classifiers of
    :mod:`attnlens.kernel.models`).

    ``form="sum"``: the paper's ``J`` (sums over tokens and heads, eq. 4), squared and
    **summed** over layers. ``form="mean"``: the reference code's mean-form ``J`` (see
    :func:`attnlens.kernel.primal.ksvd_objective`), squared and **averaged** over layers.
    ``reduction`` overrides the layer reduction (``"sum"`` or ``"mean"``).

    ``aggregate`` says how the batch enters: ``"sequence"`` squares ``J`` per sequence and
    averages the squares, :math:`\frac1B\sum_b J_b^2` (the official TimeSeries/RL/NLP code);
    ``"batch_mean"`` squares the batch mean, :math:`(\frac1B\sum_b J_b)^2` (the official
    LRA and DeiT code).
    """
    reduction = reduction or ("sum" if form == "sum" else "mean")
    if isinstance(terms, KSVDTerms):
        layers = [terms]
    else:
        layers = list(terms) if isinstance(terms, (list, tuple)) else []
    if not layers or not all(isinstance(t, KSVDTerms) for t in layers):
        got = [type(t).__name__ for t in layers] if layers else describe(terms)
        raise_invalid(
            "terms", "the KSVDTerms of at least one PrimalAttention forward", f"got {got}",
            "Call model(x, mask, return_terms=True) (or layer(x, mask, return_terms=True)) "
            "and pass the terms it returns.", caller="ksvd_loss",
        )
    if aggregate == "sequence":
        per_layer = [ksvd_objective(t, form).pow(2).mean() for t in layers]
    else:
        per_layer = [ksvd_objective(t, form).mean().pow(2) for t in layers]
    total = sum(per_layer)
    return total / len(layers) if reduction == "mean" else total


__all__ = ["ksvd_loss", "primal_layers"]
