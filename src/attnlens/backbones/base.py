"""The one interface of every frozen backbone: ``encode(batch) -> TokenFeatures``.

Score convention (used by :meth:`Backbone.score_matrix`): the attention logit of a query
token ``z`` on a key token ``x_t`` is ``score_t = x_t^T W z`` with ``W = K Q^T / sqrt(d_head)``
for one head (biases left out), where ``q = x Wq + bq`` and ``k = x Wk + bk`` on the block's
attention input ``x`` (for pre-LayerNorm models, the normalized hidden state).
"""

from __future__ import annotations

import abc
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attnlens._validation import check_int

logger = logging.getLogger(__name__)

_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike, block: int = 1 << 22) -> str:
    """SHA-256 of a file, memoized on (path, size, mtime) so repeated loads stay cheap."""
    path = Path(path)
    stat = path.stat()
    memo_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo_key not in _HASH_MEMO:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(block):
                digest.update(chunk)
        _HASH_MEMO[memo_key] = digest.hexdigest()
    return _HASH_MEMO[memo_key]


@dataclass
class TokenFeatures:
    """Per-token states of one layer of a frozen backbone.

    Attributes
    ----------
    tokens : (B, N, d) float32; rows where ``mask`` is False are padding and hold zeros.
    mask : (B, N) bool, True for a real token.
    layer : the hidden-state index that was read (0 = embeddings, ``n_layers`` = last block).
    attentions : (L, B, H, N, N) float32 attention probabilities of every block, or None.
        Rows of real query tokens sum to 1 over the real key tokens.
    """

    tokens: np.ndarray
    mask: np.ndarray
    layer: int
    attentions: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def pooled(self) -> np.ndarray:
        """Masked mean over real tokens: (B, d) float32."""
        weights = self.mask.astype(np.float64)  # (B, N)
        counts = np.maximum(weights.sum(axis=1, keepdims=True), 1.0)  # (B, 1)
        summed = np.einsum("bn,bnd->bd", weights, self.tokens.astype(np.float64))  # (B, d)
        return (summed / counts).astype(np.float32)


class Backbone(abc.ABC):
    """A frozen pretrained transformer that runs offline.

    Attributes: ``name``, ``n_layers``, ``n_heads``, ``dim``, ``version`` (the SHA-256 of the
    weight file, so a cache keyed on it changes when the weights change).
    """

    name: str
    n_layers: int
    n_heads: int
    dim: int
    version: str

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def _layer_index(self, layer: int) -> int:
        """Hidden-state index in [0, n_layers]; negative counts from the end (-1 = last)."""
        layer = check_int(layer, "layer", low=-(self.n_layers + 1), high=self.n_layers)
        return layer % (self.n_layers + 1)

    def _block_index(self, layer: int) -> int:
        """Block index in [0, n_layers - 1]; negative counts from the end."""
        layer = check_int(layer, "layer", low=-self.n_layers, high=self.n_layers - 1)
        return layer % self.n_layers

    @abc.abstractmethod
    def encode(self, batch, layer: int = -1, attentions: bool = False, batch_size: int = 32,
               progress: bool = True, **kw) -> TokenFeatures:
        """Token states of hidden-state ``layer`` (0 = embeddings, -1 = last block)."""

    @abc.abstractmethod
    def qkv_weights(self, layer: int) -> tuple[np.ndarray, ...]:
        """``(Wq, Wk, Wv, bq, bk, bv)`` of block ``layer`` as float32 numpy arrays.

        Weights are (d, d) in the ``x @ W + b`` orientation (input rows, output columns);
        output column ``h * head_dim + j`` belongs to head ``h``. Block ``l`` reads hidden
        state ``l`` and writes hidden state ``l + 1``.
        """

    def score_matrix(self, layer: int, head: int) -> np.ndarray:
        """``W = K_h Q_h^T / sqrt(d_head)`` (d, d) float64 so that ``score_t = x_t^T W z``.

        ``x_t`` is the key token and ``z`` the query token, both the block's attention input;
        the query/key biases are left out (they add terms linear in ``x_t`` and ``z``).
        """
        head = check_int(head, "head", low=0, high=self.n_heads - 1)
        wq, wk = (w.astype(np.float64) for w in self.qkv_weights(layer)[:2])
        cols = slice(head * self.head_dim, (head + 1) * self.head_dim)
        return wk[:, cols] @ wq[:, cols].T / np.sqrt(self.head_dim)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, n_layers={self.n_layers}, "
            f"n_heads={self.n_heads}, dim={self.dim}, version={self.version[:12]!r})"
        )
