"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename.

A reader never sees a half-written file; an interrupted write leaves the old file (or none).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# mkstemp creates 0600 files; give the result the mode a plain ``open(path, "w")`` would.
# The umask is read once at import (reading it means setting it, which is not thread safe).
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "value") and isinstance(obj.value, str):  # enums such as Status
        return obj.value
    raise TypeError(f"cannot serialize {type(obj).__name__} to JSON")


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call ``write(fileobj)`` on a temporary file, then atomically move it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data), "wb")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), "w")


def to_json(obj: Any) -> str:
    """JSON text with numpy arrays, numpy scalars, paths and str-enums converted."""
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, to_json(obj) + "\n")


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    return atomic_write(path, lambda f: np.savez(f, **arrays), "wb")


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as handle:
        return json.load(handle)
