"""ListOps (Nangia & Bowman 2018), the Long Range Arena task (Tay et al. 2021), generated.

A sequence is a nested prefix expression over single digits, for example
``[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]``; its label is the value (0..9).
Operators: MIN, MAX, MED (median, rounded down as ``int(statistics.median)``) and SM (sum
modulo 10). The generator follows LRA's: a node at depth < ``max_depth`` is an operator with
probability ``operator_prob`` (else a digit), an operator takes 2..``max_args`` arguments,
and trees are drawn until their token count lies in ``[min_len, max_len]``.
LRA used min_len=500, max_len=2000, max_depth=10, max_args=10.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from attnlens._validation import check_int, check_random_state, check_scalar

logger = logging.getLogger(__name__)

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
PAD, PAD_ID = "<pad>", 0
VOCAB = (PAD, *[str(d) for d in range(10)], *OPERATORS, END)
TOKEN_ID = {tok: i for i, tok in enumerate(VOCAB)}


@dataclass
class ListOpsDataset:
    """Generated ListOps: ``texts`` (space-separated tokens), ``labels`` (0..9)."""

    texts: list[str]
    labels: np.ndarray
    name: str = "listops"
    source: str = "generated (attnlens.datasets.listops)"

    def __len__(self) -> int:
        return len(self.texts)

    def lengths(self) -> np.ndarray:
        return np.array([len(t.split()) for t in self.texts], dtype=np.int64)

    def encode(self, max_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Token ids (B, N) int64 padded with 0 and the mask (B, N) bool (True = real)."""
        n = int(self.lengths().max()) if max_len is None else check_int(max_len, "max_len",
                                                                         low=1)
        ids = np.zeros((len(self.texts), n), dtype=np.int64)  # (B, N)
        for i, text in enumerate(self.texts):
            toks = [TOKEN_ID[t] for t in text.split()][:n]
            ids[i, : len(toks)] = toks
        return ids, ids != PAD_ID


def _apply(op: str, values: list[int]) -> int:
    if op == "[MIN":
        return min(values)
    if op == "[MAX":
        return max(values)
    if op == "[MED":
        s = sorted(values)
        mid = len(s) // 2
        return s[mid] if len(s) % 2 else int((s[mid - 1] + s[mid]) / 2)
    return sum(values) % 10


def _tree(rng: np.random.Generator, depth: int, max_depth: int, max_args: int,
          operator_prob: float, budget: int) -> tuple[list[str], int, int]:
    """Tokens, value and length of a random subtree; stops growing past ``budget`` tokens."""
    if depth < max_depth and budget > 0 and rng.random() < operator_prob:
        op = OPERATORS[int(rng.integers(len(OPERATORS)))]
        n_args = int(rng.integers(2, max_args + 1))
        tokens, values = [op], []
        for _ in range(n_args):
            sub, value, _ = _tree(rng, depth + 1, max_depth, max_args, operator_prob,
                                  budget - len(tokens))
            tokens.extend(sub)
            values.append(value)
        tokens.append(END)
        return tokens, _apply(op, values), len(tokens)
    digit = int(rng.integers(10))
    return [str(digit)], digit, 1


def generate_listops(
    n: int,
    min_len: int = 500,
    max_len: int = 2000,
    seed: int = 0,
    max_depth: int = 10,
    max_args: int = 10,
    operator_prob: float = 0.25,
    max_tries: int | None = None,
) -> ListOpsDataset:
    """``n`` seeded ListOps sequences whose token counts lie in ``[min_len, max_len]``.

    The root is always an operator. Raises ``ValueError`` when ``max_tries`` draws (default
    ``2000 * n``) do not give ``n`` sequences in range (widen the range or raise
    ``operator_prob`` / ``max_args`` for longer sequences).
    """
    n = check_int(n, "n", low=1)
    min_len = check_int(min_len, "min_len", low=3)
    max_len = check_int(max_len, "max_len", low=min_len)
    max_depth = check_int(max_depth, "max_depth", low=1)
    max_args = check_int(max_args, "max_args", low=2)
    operator_prob = check_scalar(operator_prob, "operator_prob", low=0.0, high=1.0)
    max_tries = 2000 * n if max_tries is None else check_int(max_tries, "max_tries", low=1)
    rng = check_random_state(seed, "seed")
    texts, labels, tries = [], [], 0
    while len(texts) < n:
        if tries >= max_tries:
            raise ValueError(
                f"generated only {len(texts)} of n={n} ListOps sequences with lengths in "
                f"[{min_len}, {max_len}] after {tries} tries; widen the range, or raise "
                f"operator_prob (got {operator_prob}) or max_args (got {max_args})."
            )
        tries += 1
        # root: always an operator (a bare digit is not a ListOps sequence)
        op = OPERATORS[int(rng.integers(len(OPERATORS)))]
        tokens, values = [op], []
        for _ in range(int(rng.integers(2, max_args + 1))):
            sub, value, _ = _tree(rng, 1, max_depth, max_args, operator_prob,
                                  max_len - len(tokens))
            tokens.extend(sub)
            values.append(value)
        tokens.append(END)
        if min_len <= len(tokens) <= max_len:
            texts.append(" ".join(tokens))
            labels.append(_apply(op, values))
    logger.info("generated %d ListOps sequences in %d tries", n, tries)
    return ListOpsDataset(texts=texts, labels=np.array(labels, dtype=np.int64))
