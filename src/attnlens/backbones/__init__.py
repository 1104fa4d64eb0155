"""Frozen pretrained transformers that load offline.

``load_backbone("minilm")`` (all-MiniLM-L6-v2, text) or ``load_backbone("vit")`` (ViT-S/14,
images) gives a :class:`Backbone` with one interface: ``encode(batch) -> TokenFeatures``,
``qkv_weights(layer)`` and ``score_matrix(layer, head)`` (``score_t = x_t^T W z``, W = K Q^T).
"""

from __future__ import annotations

from typing import Any

from attnlens._validation import check_option
from attnlens.backbones.base import Backbone, TokenFeatures
from attnlens.backbones.extract import extract_tokens, group_average

BACKBONES = ("minilm", "vit")


def load_backbone(name: str, **kw: Any) -> Backbone:
    """Load a frozen backbone by name ("minilm" or "vit"); keyword arguments go to its class.

    Raises :class:`attnlens.errors.BackboneNotInstalledError` with the pip command when the
    package that ships the weights is missing.
    """
    check_option(name, "name", BACKBONES)
    if name == "minilm":
        from attnlens.backbones.minilm import MiniLM

        return MiniLM(**kw)
    from attnlens.backbones.vit import ViTS14

    return ViTS14(**kw)


__all__ = [
    "BACKBONES",
    "Backbone",
    "TokenFeatures",
    "extract_tokens",
    "group_average",
    "load_backbone",
]
