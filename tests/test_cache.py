"""Feature cache: content addressing, atomic chunks, resume after interruption, corruption."""

import logging

import numpy as np
import pytest

from attnlens.cache import FeatureCache, arrays_checksum, hash_indices, hash_texts

DATA = np.arange(23 * 3 * 2, dtype=np.float32).reshape(23, 3, 2) / 7.0


class Recorder:
    """compute_chunk that records its calls and can fail at a given chunk start."""

    def __init__(self, fail_at=None):
        self.calls = []
        self.fail_at = fail_at

    def __call__(self, lo, hi):
        if self.fail_at is not None and lo == self.fail_at:
            raise KeyboardInterrupt("simulated interruption")
        self.calls.append((lo, hi))
        return {"x": DATA[lo:hi], "y": np.arange(lo, hi)}


KEY = {"backbone": "toy", "version": "v1", "layer": -1, "dataset": "d", "indices": "all"}


def test_computes_then_hits(tmp_path):
    cache = FeatureCache(tmp_path)
    rec = Recorder()
    out = cache.get_or_compute(KEY, 23, rec, chunk_size=5, progress=False)
    np.testing.assert_array_equal(out["x"], DATA)
    np.testing.assert_array_equal(out["y"], np.arange(23))
    assert rec.calls == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 23)]
    assert cache.contains({**KEY, "_n_items": 23})
    assert not list(cache.path_for({**KEY, "_n_items": 23}).glob("chunk_*"))  # cleaned up
    rec2 = Recorder()
    again = cache.get_or_compute(KEY, 23, rec2, chunk_size=5, progress=False)
    assert rec2.calls == []
    np.testing.assert_array_equal(again["x"], DATA)


def test_key_is_content_addressed(tmp_path):
    cache = FeatureCache(tmp_path)
    same = dict(reversed(list(KEY.items())))  # order of the dict does not matter
    assert cache.digest(KEY) == cache.digest(same)
    for field, value in [("version", "v2"), ("layer", 3), ("indices", "abc")]:
        assert cache.digest({**KEY, field: value}) != cache.digest(KEY), field
    # library versions are part of the address unless switched off
    assert "_versions" in cache.full_key(KEY)
    assert cache.digest(KEY) != FeatureCache(tmp_path, versioned=False).digest(KEY)


def test_hash_helpers_distinguish_order_and_content():
    assert hash_indices([1, 2, 3]) != hash_indices([3, 2, 1])
    assert hash_indices(np.array([1, 2, 3], dtype=np.int32)) == hash_indices([1, 2, 3])
    assert hash_texts(["ab", "c"]) != hash_texts(["a", "bc"])
    a = {"x": np.zeros(3)}
    assert arrays_checksum(a) != arrays_checksum({"x": np.zeros(3, dtype=np.float32)})


def test_resume_after_interruption(tmp_path):
    cache = FeatureCache(tmp_path)
    first = Recorder(fail_at=10)
    with pytest.raises(KeyboardInterrupt):
        cache.get_or_compute(KEY, 23, first, chunk_size=5, progress=False)
    assert first.calls == [(0, 5), (5, 10)]
    folder = cache.path_for({**KEY, "_n_items": 23})
    assert sorted(p.name for p in folder.glob("chunk_*.npz")) == [
        "chunk_000000000_000000005.npz",
        "chunk_000000005_000000010.npz",
    ]
    assert not (folder / "features.npz").exists()
    assert not list(folder.glob(".*.tmp"))  # no half-written temporaries left behind
    second = Recorder()
    out = cache.get_or_compute(KEY, 23, second, chunk_size=5, progress=False)
    assert second.calls == [(10, 15), (15, 20), (20, 23)]  # finished chunks are not redone
    np.testing.assert_array_equal(out["x"], DATA)


def test_corrupt_entry_is_detected_and_rebuilt(tmp_path, caplog):
    cache = FeatureCache(tmp_path)
    cache.get_or_compute(KEY, 23, Recorder(), chunk_size=5, progress=False)
    path = cache.path_for({**KEY, "_n_items": 23}) / "features.npz"
    raw = bytearray(path.read_bytes())
    # flip bytes inside the stored x array (past the zip/npy headers)
    pos = raw.find(DATA[3].tobytes())
    assert pos > 0
    raw[pos:pos + 4] = b"\x00\x01\x02\x03"
    path.write_bytes(bytes(raw))
    rec = Recorder()
    with caplog.at_level(logging.WARNING, logger="attnlens.cache"):
        out = cache.get_or_compute(KEY, 23, rec, chunk_size=5, progress=False)
    assert "CacheCorruptError" in caplog.text
    assert len(rec.calls) == 5  # rebuilt from scratch, the damaged file was not used
    np.testing.assert_array_equal(out["x"], DATA)


def test_truncated_entry_and_corrupt_chunk(tmp_path, caplog):
    cache = FeatureCache(tmp_path)
    cache.get_or_compute(KEY, 23, Recorder(), chunk_size=5, progress=False)
    path = cache.path_for({**KEY, "_n_items": 23}) / "features.npz"
    path.write_bytes(path.read_bytes()[:100])  # truncated file
    with caplog.at_level(logging.WARNING, logger="attnlens.cache"):
        assert cache.load({**KEY, "_n_items": 23}) is None
    assert "CacheCorruptError" in caplog.text
    # a damaged chunk of an interrupted run is recomputed, the others are reused
    with pytest.raises(KeyboardInterrupt):
        cache.get_or_compute(KEY, 23, Recorder(fail_at=10), chunk_size=5, progress=False)
    chunk = cache.path_for({**KEY, "_n_items": 23}) / "chunk_000000005_000000010.npz"
    chunk.write_bytes(b"not a zip file")
    rec = Recorder()
    out = cache.get_or_compute(KEY, 23, rec, chunk_size=5, progress=False)
    assert rec.calls == [(5, 10), (10, 15), (15, 20), (20, 23)]
    np.testing.assert_array_equal(out["y"], np.arange(23))


def test_mismatched_entry_is_not_used(tmp_path, caplog):
    """An entry copied under another key's address (e.g. by hand) is refused."""
    cache = FeatureCache(tmp_path)
    cache.get_or_compute(KEY, 23, Recorder(), chunk_size=5, progress=False)
    other = {**KEY, "layer": 2}
    src = cache.path_for({**KEY, "_n_items": 23}) / "features.npz"
    dst = cache.path_for({**other, "_n_items": 23}) / "features.npz"
    dst.parent.mkdir(parents=True)
    dst.write_bytes(src.read_bytes())
    rec = Recorder()
    with caplog.at_level(logging.WARNING, logger="attnlens.cache"):
        cache.get_or_compute(other, 23, rec, chunk_size=5, progress=False)
    assert "different key" in caplog.text
    assert len(rec.calls) == 5


def test_ragged_token_axes_are_zero_padded(tmp_path):
    cache = FeatureCache(tmp_path)

    def chunk(lo, hi):
        width = 2 + lo // 4  # every chunk pads its tokens to its own width
        return {"tokens": np.ones((hi - lo, width), np.float32),
                "mask": np.ones((hi - lo, width), bool)}

    out = cache.get_or_compute({"k": 1}, 10, chunk, chunk_size=4, progress=False)
    assert out["tokens"].shape == (10, 4)
    np.testing.assert_array_equal(out["mask"].sum(1), [2] * 4 + [3] * 4 + [4] * 2)
    assert out["tokens"].sum() == out["mask"].sum()


def test_bad_input_is_named(tmp_path):
    cache = FeatureCache(tmp_path)
    with pytest.raises(ValueError, match="n_items"):
        cache.get_or_compute(KEY, 0, Recorder(), progress=False)
    with pytest.raises(ValueError, match="first axis must have 5 rows"):
        cache.get_or_compute(KEY, 5, lambda lo, hi: {"x": np.zeros(3)}, progress=False)
    with pytest.raises(TypeError, match="key must be a dict"):
        cache.digest(["not", "a", "dict"])


def test_default_root_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNLENS_CACHE", str(tmp_path / "c"))
    assert FeatureCache().root == tmp_path / "c"


def test_deadline_pauses_between_chunks_and_resumes(tmp_path, monkeypatch):
    import time

    import attnlens.cache as cache_mod
    from attnlens.cache import ExtractionPaused

    cache = FeatureCache(tmp_path)
    clock = iter([0.0, 0.0, 10.0])  # checked before each new chunk: passes after two chunks
    monkeypatch.setattr(cache_mod.time, "monotonic", lambda: next(clock))
    rec = Recorder()
    with pytest.raises(ExtractionPaused, match="2 of 5 chunks") as info:
        cache.get_or_compute(KEY, 23, rec, chunk_size=5, progress=False, deadline=5.0)
    assert rec.calls == [(0, 5), (5, 10)]
    assert (info.value.done, info.value.total) == (2, 5)
    monkeypatch.undo()
    rec2 = Recorder()
    out = cache.get_or_compute(KEY, 23, rec2, chunk_size=5, progress=False,
                               deadline=time.monotonic() + 3600)
    assert rec2.calls == [(10, 15), (15, 20), (20, 23)]  # resumed, nothing redone
    np.testing.assert_array_equal(out["x"], DATA)
