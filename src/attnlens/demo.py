"""``attnlens demo``: the main job. Placeholder wiring; each pillar plugs in its part."""

from __future__ import annotations


def run_demo(out: str) -> None:
    raise NotImplementedError("the demo is assembled once the pillars land")
