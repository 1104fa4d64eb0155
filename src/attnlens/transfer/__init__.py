"""The transfer benchmark: convex and non-convex attention heads on frozen pretrained features.

``run_benchmark(out, backbone="minilm", dataset="rotten_tomatoes", heads=[...], dims=[32])``
extracts (and caches) reduced token features, fits every head over seeds with validation
selection, and writes a report folder. See ``docs/transfer.md``.
"""

from attnlens.transfer.heads import HEADS, HeadSpec, get_head, head_names
from attnlens.transfer.pipeline import run_benchmark

__all__ = ["HEADS", "HeadSpec", "get_head", "head_names", "run_benchmark"]
