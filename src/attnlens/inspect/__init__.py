"""attnlens.inspect: ``attnlens inspect`` (application layer): capture a real model, run every
lens of :mod:`attnlens.lenses`, write report.md / report.html / metrics.json."""

from attnlens.inspect.pipeline import load_image, run_inspect

__all__ = ["load_image", "run_inspect"]
