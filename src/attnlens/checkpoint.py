"""Solver checkpoints: a long computation's state, saved atomically, resumed by the next call.

A :class:`Checkpoint` is one file holding ``(key, state)``. The caller names the problem with
``key`` (a fingerprint of the data and settings); :meth:`Checkpoint.load` returns the state
only when the stored key matches, so a changed problem never resumes from a stale state.
:meth:`Checkpoint.save` writes at most every ``every_s`` seconds (``force=True`` always
writes), through a temporary file and a rename: a process killed mid-write leaves the previous
state. Pickle is the format; load checkpoints only from folders you wrote.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attnlens._io import atomic_write_bytes
from attnlens._validation import check_positive, raise_invalid

logger = logging.getLogger(__name__)

#: seconds between two saves of a :class:`Checkpoint` unless told otherwise
SAVE_EVERY_S = 60.0


class Checkpoint:
    """The file ``path`` holding the latest state of the computation named ``key``."""

    def __init__(self, path: str | os.PathLike, key: str, every_s: float = SAVE_EVERY_S):
        if not isinstance(key, str) or not key:
            raise_invalid("key", "a non-empty string naming the problem", repr(key),
                          "Pass a fingerprint of the data and settings.", "Checkpoint")
        self.path = Path(path)
        self.key = key
        self.every_s = float(check_positive(every_s, "every_s", strict=False, caller="Checkpoint"))
        self._last = time.monotonic()
        self.saves = 0

    def load(self) -> Any | None:
        """The stored state when the file holds this key; None otherwise (a missing file, a
        different problem, or an unreadable file -- logged)."""
        if not self.path.exists():
            return None
        try:
            key, state = pickle.loads(self.path.read_bytes())
        except Exception as exc:  # a truncated or foreign file: start over, say so
            logger.warning("checkpoint %s unreadable (%s); starting over", self.path, exc)
            return None
        if key != self.key:
            logger.warning("checkpoint %s belongs to another problem; starting over", self.path)
            return None
        logger.info("resuming from checkpoint %s", self.path)
        return state

    def save(self, state: Callable[[], Any], force: bool = False) -> bool:
        """Write ``state()`` when ``every_s`` has passed since the last write (or ``force``);
        True when written. ``state`` is a callable, so a skipped save copies nothing."""
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return False
        atomic_write_bytes(self.path, pickle.dumps((self.key, state()),
                                                   protocol=pickle.HIGHEST_PROTOCOL))
        self._last = now
        self.saves += 1
        return True

    def clear(self) -> None:
        """Remove the file (the computation finished)."""
        self.path.unlink(missing_ok=True)
