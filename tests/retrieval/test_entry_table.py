"""Every public entry point of attnlens.retrieval has a row in tests/entry_points.py."""

from __future__ import annotations

import inspect
import sys
from dataclasses import is_dataclass
from pathlib import Path

import torch

import attnlens.retrieval as R

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from entry_points import retrieval_entries  # noqa: E402


def test_the_table_covers_the_retrieval_entry_points():
    rows = {e.target for e in retrieval_entries()}
    public = [getattr(R, n) for n in R.__all__]
    entry = [o for o in public if (inspect.isfunction(o) or (
        inspect.isclass(o) and not is_dataclass(o)
        and (hasattr(o, "fit") or issubclass(o, torch.nn.Module))))]
    assert [o.__name__ for o in entry if o not in rows] == []
