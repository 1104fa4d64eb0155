"""Registry of reproduced experiments: ``@register("svm", "local-convergence")``.

An experiment is a function ``run(out: Path, *, seeds: int, overwrite: bool, **options) -> dict``
that writes its run folder (see :class:`attnlens.report.RunFolder`) and returns its metrics.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from typing import Any

_REGISTRY: dict[tuple[str, str], Callable[..., Any]] = {}


def register(pillar: str, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        key = (pillar, name)
        if key in _REGISTRY and _REGISTRY[key] is not fn:
            raise ValueError(f"experiment {pillar}/{name} is registered twice")
        _REGISTRY[key] = fn
        return fn

    return deco


def get(pillar: str, name: str) -> Callable[..., Any]:
    if (pillar, name) not in _REGISTRY:
        names = ", ".join(sorted(n for p, n in _REGISTRY if p == pillar)) or "none"
        raise ValueError(f"unknown {pillar} experiment {name!r}; known: {names}.")
    return _REGISTRY[(pillar, name)]


def names(pillar: str) -> list[str]:
    return sorted(n for p, n in _REGISTRY if p == pillar)


def load(pillar: str) -> list[str]:
    """Import every ``attnlens.experiments.<pillar>_*`` module (registering it); return names."""
    for mod in pkgutil.iter_modules(__path__):
        if mod.name.startswith(f"{pillar}_") and mod.name != f"{pillar}_common":
            importlib.import_module(f"{__name__}.{mod.name}")
    return names(pillar)


def accepts(pillar: str, name: str, option: str) -> bool:
    """Whether experiment ``pillar/name`` takes the keyword ``option`` (read off its signature)."""
    return option in inspect.signature(get(pillar, name)).parameters
