"""Where a dataset comes from, as a cache key may use it: package and version, never a path."""

from __future__ import annotations

from importlib import metadata

__all__ = ["package_origin"]


def package_origin(pip_name: str) -> str:
    """``"pypi:<name>==<version>"`` of an installed distribution (``"pypi:<name>"`` if unknown).

    Two checkouts or two virtual environments with the same package version give the same
    string, so features cached from one are found by the other.
    """
    try:
        return f"pypi:{pip_name}=={metadata.version(pip_name)}"
    except metadata.PackageNotFoundError:
        return f"pypi:{pip_name}"
