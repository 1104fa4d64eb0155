"""Content-addressed, atomic, resumable cache of extracted features.

An entry is addressed by the SHA-256 of its key (backbone name and weight version, layer,
dataset, split or index hash, preprocessing, ...) with the versions of attnlens, numpy,
transformers and onnxruntime added automatically. Extraction runs in chunks; each chunk and
the final entry are written atomically (temporary file, fsync, rename) and carry a checksum of
their arrays and a copy of their key. An interrupted extraction resumes from the finished
chunks; a corrupt or mismatched entry or chunk is reported (``CacheCorruptError`` logged) and
rebuilt, never used.

Layout: ``<root>/features/<digest[:2]>/<digest>/{key.json, chunk_<lo>_<hi>.npz, features.npz}``.
Default root: ``$ATTNLENS_CACHE`` or ``~/.cache/attnlens``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import zipfile
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from attnlens._io import atomic_save_npz, atomic_write_json, to_json
from attnlens._validation import check_int
from attnlens.errors import AttnLensError, CacheCorruptError

logger = logging.getLogger(__name__)


class ExtractionPaused(AttnLensError):
    """An extraction stopped at its ``deadline``; the finished chunks are on disk, so calling
    again with the same key resumes where it stopped (``done`` and ``total`` count chunks)."""

    def __init__(self, message: str, done: int, total: int):
        super().__init__(message)
        self.done, self.total = done, total

FORMAT_VERSION = 1
_META_CHECKSUM = "__checksum__"
_META_KEY = "__key__"
_VERSIONED = ("attnlens", "numpy", "transformers", "onnxruntime", "torch")


def default_root() -> Path:
    """``$ATTNLENS_CACHE`` when set, else ``~/.cache/attnlens``."""
    env = os.environ.get("ATTNLENS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "attnlens"


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose output the cached features depend on."""
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def hash_indices(indices: Any) -> str:
    """Short SHA-256 of an index array (order matters), for keys of data subsets."""
    arr = np.ascontiguousarray(np.asarray(indices, dtype=np.int64))
    return hashlib.sha256(arr.tobytes()).hexdigest()[:16]


def hash_texts(texts: list[str]) -> str:
    """Short SHA-256 of a list of texts (order matters)."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:16]


def arrays_checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of the arrays (sorted by name)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def _canonical(key: Mapping[str, Any]) -> str:
    return json.dumps(json.loads(to_json(dict(key))), sort_keys=True, separators=(",", ":"))


class FeatureCache:
    """A folder of cached feature arrays, addressed by the content of their key.

    Parameters
    ----------
    root : folder of the cache (created on first write); None for :func:`default_root`.
    versioned : add the versions of attnlens/numpy/transformers/onnxruntime/torch to every
        key (default True), so an upgrade never serves stale features.

    Example
    -------
    >>> cache = FeatureCache("/tmp/feats")                                   # doctest: +SKIP
    >>> feats = cache.get_or_compute(                                        # doctest: +SKIP
    ...     {"backbone": bb.name, "version": bb.version, "layer": -1, "dataset": "rt",
    ...      "indices": hash_indices(idx)},
    ...     n_items=len(idx), compute_chunk=lambda lo, hi: {"x": f(idx[lo:hi])},
    ...     chunk_size=512)
    """

    def __init__(self, root: str | os.PathLike | None = None, versioned: bool = True):
        self.root = default_root() if root is None else Path(root).expanduser()
        self.versioned = versioned

    # ------------------------------------------------------------------ addressing
    def full_key(self, key: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(key, Mapping):
            raise TypeError(f"key must be a dict, got {type(key).__name__}.")
        full = {"_format": FORMAT_VERSION, **dict(key)}
        if self.versioned:
            full["_versions"] = library_versions()
        return json.loads(_canonical(full))

    def digest(self, key: Mapping[str, Any]) -> str:
        return hashlib.sha256(_canonical(self.full_key(key)).encode()).hexdigest()

    def path_for(self, key: Mapping[str, Any]) -> Path:
        digest = self.digest(key)
        return self.root / "features" / digest[:2] / digest

    def contains(self, key: Mapping[str, Any]) -> bool:
        """True when a complete entry exists (its integrity is checked on load)."""
        return (self.path_for(key) / "features.npz").is_file()

    def remove(self, key: Mapping[str, Any]) -> bool:
        path = self.path_for(key)
        if path.exists():
            shutil.rmtree(path)
            return True
        return False

    # ------------------------------------------------------------------ reading
    def _read(self, path: Path, full_key: dict[str, Any]) -> dict[str, np.ndarray]:
        """Load an npz written by this cache; raise CacheCorruptError on any inconsistency."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise CacheCorruptError(f"{path} cannot be read ({type(exc).__name__}: {exc}).") from exc
        stored_sum = arrays.pop(_META_CHECKSUM, None)
        stored_key = arrays.pop(_META_KEY, None)
        if stored_sum is None or stored_key is None:
            raise CacheCorruptError(f"{path} lacks its checksum or key record.")
        if str(stored_key) != _canonical(full_key):
            raise CacheCorruptError(f"{path} holds features of a different key (mismatch).")
        if str(stored_sum) != arrays_checksum(arrays):
            raise CacheCorruptError(f"{path} fails its checksum (the file was altered).")
        return arrays

    def load(self, key: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
        """The verified entry for ``key``, or None when absent; a corrupt entry is deleted."""
        full = self.full_key(key)
        path = self.path_for(key) / "features.npz"
        if not path.is_file():
            return None
        try:
            return self._read(path, full)
        except CacheCorruptError as exc:
            logger.warning("CacheCorruptError: %s Rebuilding it.", exc)
            path.unlink(missing_ok=True)
            return None

    # ------------------------------------------------------------------ writing
    def _write(self, path: Path, arrays: Mapping[str, np.ndarray], full_key: dict) -> None:
        payload = dict(arrays)
        payload[_META_CHECKSUM] = np.array(arrays_checksum(arrays))
        payload[_META_KEY] = np.array(_canonical(full_key))
        atomic_save_npz(path, **payload)

    def get_or_compute(
        self,
        key: Mapping[str, Any],
        n_items: int,
        compute_chunk: Callable[[int, int], Mapping[str, np.ndarray]],
        chunk_size: int = 512,
        progress: bool = True,
        deadline: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Return the arrays cached under ``key``, computing the missing chunks first.

        ``compute_chunk(lo, hi)`` returns a dict of arrays whose first axis has ``hi - lo``
        rows (items ``lo..hi-1``); the entry concatenates them along that axis (trailing
        axes that differ between chunks, such as token axes padded per batch, are zero-padded
        to the largest, so keep a mask among the arrays). Finished
        chunks are kept on disk, so an interrupted call resumes where it stopped; chunks
        from a different ``chunk_size`` are ignored. ``n_items`` is part of the key.

        ``deadline`` (a :func:`time.monotonic` value) bounds the time spent computing: once it
        has passed, no new chunk is started and :class:`ExtractionPaused` is raised (the
        finished chunks stay on disk; call again to resume). Long extractions are thus run in
        bounded pieces.
        """
        from tqdm.auto import tqdm

        n_items = check_int(n_items, "n_items", low=1)
        chunk_size = check_int(chunk_size, "chunk_size", low=1)
        if not callable(compute_chunk):
            raise TypeError(f"compute_chunk must be callable, got {type(compute_chunk).__name__}.")
        key = {**dict(key), "_n_items": n_items}
        cached = self.load(key)
        if cached is not None:
            logger.info("feature cache hit: %s", self.path_for(key))
            return cached
        full = self.full_key(key)
        folder = self.path_for(key)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / "key.json", full)
        bounds = [(lo, min(lo + chunk_size, n_items)) for lo in range(0, n_items, chunk_size)]
        parts: list[dict[str, np.ndarray]] = []
        names: list[str] | None = None
        resumed = 0
        bar = tqdm(bounds, desc="features", unit="chunk", disable=not progress)
        for lo, hi in bar:
            chunk_path = folder / f"chunk_{lo:09d}_{hi:09d}.npz"
            arrays = None
            if chunk_path.is_file():
                try:
                    arrays = self._read(chunk_path, {**full, "_chunk": [lo, hi]})
                    resumed += 1
                except CacheCorruptError as exc:
                    logger.warning("CacheCorruptError: %s Recomputing this chunk.", exc)
                    chunk_path.unlink(missing_ok=True)
            if arrays is None:
                if deadline is not None and time.monotonic() > deadline:
                    bar.close()
                    done = sum(1 for a, b in bounds
                               if (folder / f"chunk_{a:09d}_{b:09d}.npz").is_file())
                    raise ExtractionPaused(
                        f"feature extraction paused at its deadline after {done} of "
                        f"{len(bounds)} chunks (kept in {folder}); call again to resume.",
                        done, len(bounds))
                arrays = _check_chunk(compute_chunk(lo, hi), lo, hi)
                self._write(chunk_path, arrays, {**full, "_chunk": [lo, hi]})
            if names is None:
                names = sorted(arrays)
            elif sorted(arrays) != names:
                raise ValueError(
                    f"compute_chunk({lo}, {hi}) returned arrays {sorted(arrays)}, but earlier "
                    f"chunks returned {names}; return the same names for every chunk."
                )
            parts.append(arrays)
        if resumed:
            logger.info("resumed feature extraction: %d of %d chunks were on disk",
                        resumed, len(bounds))
        result = {name: _concat_padded([p[name] for p in parts]) for name in names}
        self._write(folder / "features.npz", result, full)
        for stale in folder.glob("chunk_*.npz"):
            stale.unlink(missing_ok=True)
        return result


def _check_chunk(arrays: Any, lo: int, hi: int) -> dict[str, np.ndarray]:
    if not isinstance(arrays, Mapping) or not arrays:
        raise TypeError(
            f"compute_chunk({lo}, {hi}) must return a non-empty dict of arrays, "
            f"got {type(arrays).__name__}."
        )
    out = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or name.startswith("__"):
            raise ValueError(f"compute_chunk returned an invalid array name {name!r}.")
        arr = np.asarray(value)
        if arr.dtype == object:
            raise TypeError(f"compute_chunk returned {name!r} with dtype object; use numbers.")
        if arr.ndim == 0 or arr.shape[0] != hi - lo:
            raise ValueError(
                f"compute_chunk({lo}, {hi}) returned {name!r} of shape {arr.shape}; "
                f"its first axis must have {hi - lo} rows."
            )
        out[name] = arr
    return out


def _concat_padded(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate along axis 0, zero-padding trailing axes to the largest size."""
    ndims = {p.ndim for p in parts}
    if len(ndims) != 1:
        raise ValueError(f"chunks returned arrays of different ranks {sorted(ndims)}.")
    target = tuple(max(p.shape[i] for p in parts) for i in range(1, parts[0].ndim))
    if all(p.shape[1:] == target for p in parts):
        return np.concatenate(parts, axis=0)
    out = np.zeros((sum(len(p) for p in parts), *target), dtype=np.result_type(*parts))
    row = 0
    for p in parts:
        out[(slice(row, row + len(p)), *(slice(0, s) for s in p.shape[1:]))] = p
        row += len(p)
    return out
