"""ListOps generator: labels checked by an independent stack evaluator, lengths, seeding."""

import statistics

import numpy as np
import pytest

from attnlens.datasets.listops import VOCAB, generate_listops


def evaluate(text):
    """Stack-based evaluation of the token string (independent of the generator's tree)."""
    ops = {
        "[MIN": min,
        "[MAX": max,
        "[MED": lambda v: int(statistics.median(v)),
        "[SM": lambda v: sum(v) % 10,
    }
    stack = []
    for tok in text.split():
        if tok in ops:
            stack.append([tok])
        elif tok == "]":
            frame = stack.pop()
            value = ops[frame[0]](frame[1:])
            if not stack:
                return value
            stack[-1].append(value)
        else:
            stack[-1].append(int(tok))
    raise AssertionError("unbalanced expression")


def test_labels_lengths_and_depth():
    data = generate_listops(300, min_len=20, max_len=120, seed=1, max_depth=6)
    assert len(data) == 300
    lengths = data.lengths()
    assert lengths.min() >= 20 and lengths.max() <= 120
    for text, label in zip(data.texts, data.labels, strict=True):
        assert evaluate(text) == label
        depth = peak = 0
        for tok in text.split():
            depth += tok.startswith("[")
            depth -= tok == "]"
            peak = max(peak, depth)
        assert peak <= 6
    counts = np.bincount(data.labels, minlength=10)
    assert counts.min() > 0  # every answer 0..9 occurs


def test_lra_setting_and_seeding():
    a = generate_listops(5, seed=3)  # LRA lengths 500..2000
    b = generate_listops(5, seed=3)
    c = generate_listops(5, seed=4)
    assert a.texts == b.texts and np.array_equal(a.labels, b.labels)
    assert a.texts != c.texts
    assert a.lengths().min() >= 500 and a.lengths().max() <= 2000
    assert all(evaluate(t) == y for t, y in zip(a.texts, a.labels, strict=True))


def test_encode_ids_and_mask():
    data = generate_listops(4, min_len=5, max_len=30, seed=0)
    ids, mask = data.encode()
    assert ids.shape == (4, data.lengths().max())
    np.testing.assert_array_equal(mask.sum(1), data.lengths())
    first = " ".join(VOCAB[i] for i in ids[0][mask[0]])
    assert first == data.texts[0]
    ids8, mask8 = data.encode(max_len=5)
    assert ids8.shape == (4, 5) and mask8.all()


def test_bad_input():
    with pytest.raises(ValueError, match="max_len must be an int >= 50"):
        generate_listops(3, min_len=50, max_len=10)
    with pytest.raises(ValueError, match="generated only 0 of n=2"):
        generate_listops(2, min_len=1000, max_len=1001, operator_prob=0.0, max_tries=50)
