"""Shared benchmark helpers: timing, peak memory, machine description, result files."""

from __future__ import annotations

import gc
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent / "src"))

from attnlens._io import atomic_write_json  # noqa: E402


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import numpy
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device_name(),
        "gpu_available": torch.cuda.is_available(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def device_name() -> str:
    """``"cpu (<processor>)"``, or the GPU's name when torch sees one."""
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({platform.processor() or platform.machine()})"


def devices() -> list[str]:
    """The torch devices a benchmark measures: always ``cpu``, plus ``cuda`` (a GPU column)
    when ``torch.cuda.is_available()``."""
    import torch

    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[Any, float]:
    """Best wall time over ``repeat`` runs and the last result."""
    best = float("inf")
    out = None
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def option(name: str, default: Any = None) -> Any:
    """The value of ``--name=value`` on the command line, or ``default``."""
    prefix = f"--{name}="
    return next((a[len(prefix):] for a in sys.argv if a.startswith(prefix)), default)


def write_result(name: str, payload: dict[str, Any]) -> Path:
    payload = {"benchmark": name, "machine": machine(), **payload}
    return atomic_write_json(RESULTS / f"{name}.json", payload)
