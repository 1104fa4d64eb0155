"""Capture what the lenses read from one forward pass of a HuggingFace encoder.

``capture_text(texts, model="minilm")`` runs each text once through a local ``transformers``
encoder (the bundled all-MiniLM-L6-v2 by default, or any local folder with a ``config.json``:
BERT, RoBERTa, DistilBERT, ELECTRA and other encoders whose attention has linear query/key
projections named ``query``/``key``, ``q_proj``/``k_proj`` or ``q_lin``/``k_lin``) and records,
per layer and head, the attention probabilities, the hidden states entering the layer (the
input of the query/key projections) and ``W_q``, ``W_k`` with their biases.

The model runs with PyTorch's fused SDPA attention, which does not return probabilities: they
are recomputed in float64 from the captured ``q``, ``k`` as
``softmax(q_h k_h^T / sqrt(d_h))`` over the real tokens (one text per pass, so no padding
mask is needed); the tests check this equals the eager model's ``output_attentions`` to 1e-6.
Models with relative-position terms inside the logits (DeBERTa, T5) are not recomputed
exactly: use ``attn_implementation="eager"`` for those.

``capture_images(images)`` does the same for the ViT-S/14 ONNX backbone (attention maps and
residual-stream states, read from the graph's tapped outputs).

``device`` (``load_encoder``, ``capture_text``, ``capture_images``) runs the forward passes on a
torch device ("cpu" by default, "cuda" on a GPU); everything recorded comes back as numpy.

Score convention of :meth:`Capture.score_matrix`: ``score_t = x_t^T W z``, ``W = K Q^T /
sqrt(d_h)``, with ``x_t`` the key token and ``z`` the query token (attnlens.svm's convention).
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attnlens._validation import check_int, check_option, raise_invalid, resolve_device

logger = logging.getLogger(__name__)

__all__ = ["Capture", "Encoder", "capture_images", "capture_text", "load_encoder"]

#: (query, key, output projection) module names tried, in order
_QK_NAMES = (("query", "key"), ("q_proj", "k_proj"), ("q_lin", "k_lin"))
_OUT_NAMES = ("out_lin", "o_proj", "out_proj", "output.dense", "dense")
#: an upper bound above which a tokenizer's model_max_length is a placeholder ("infinite")
_NO_LIMIT = 1_000_000


@dataclass
class Capture:
    """One forward pass per input, recorded for the lenses.

    tokens : per input, the token strings (n_i,).
    attentions : per input, (L, H, n_i, n_i) float64 probabilities, rows = queries.
    hidden : per input, (L, n_i, d) float32, the attention input of each block (None for ViT).
    wq, wk : (L, d, d) float32 in the ``x @ W + b`` orientation; bq, bk : (L, d) (None for ViT
        weights not read). truncated : per input, whether it was cut at ``max_positions``.
    """

    model: str
    n_layers: int
    n_heads: int
    dim: int
    max_positions: int
    tokens: list[list[str]]
    attentions: list[np.ndarray]
    hidden: list[np.ndarray] | None = None
    wq: np.ndarray | None = None
    wk: np.ndarray | None = None
    bq: np.ndarray | None = None
    bk: np.ndarray | None = None
    truncated: list[bool] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    attn_implementation: str = "sdpa"

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def __len__(self) -> int:
        return len(self.attentions)

    def score_matrix(self, layer: int, head: int) -> np.ndarray:
        """``W = K_h Q_h^T / sqrt(d_h)`` (d, d) float64: ``score_t = x_t^T W z`` (no biases)."""
        if self.wq is None or self.wk is None:
            raise ValueError(f"this capture of {self.model!r} holds no query/key weights.")
        layer = check_int(layer, "layer", low=0, high=self.n_layers - 1)
        head = check_int(head, "head", low=0, high=self.n_heads - 1)
        cols = slice(head * self.head_dim, (head + 1) * self.head_dim)
        wq = self.wq[layer][:, cols].astype(np.float64)
        wk = self.wk[layer][:, cols].astype(np.float64)
        return wk @ wq.T / np.sqrt(self.head_dim)


class Encoder:
    """A local transformers encoder with hooks on its query/key projections and head outputs."""

    def __init__(self, name: str, path: Path, tokenizer: Any, model: Any):
        self.name, self.path, self.tokenizer, self.model = name, path, tokenizer, model
        self.attn_implementation = "sdpa"
        self.device = str(next(model.parameters()).device)
        cfg = model.config
        self.n_heads = int(getattr(cfg, "num_attention_heads", 0) or getattr(cfg, "n_heads", 0))
        self.dim = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "dim", 0))
        self.qk, self.out = _find_projections(model)
        self.n_layers = len(self.qk)
        if not self.n_heads or not self.n_layers:
            raise ValueError(
                f"model {name!r} at {path}: found {self.n_layers} attention layers with "
                f"{self.n_heads} heads; attnlens needs an encoder with linear query/key "
                f"projections named {[q for q, _ in _QK_NAMES]}."
            )
        limits = [int(getattr(cfg, "max_position_embeddings", 0) or _NO_LIMIT)]
        tok_max = int(getattr(tokenizer, "model_max_length", _NO_LIMIT) or _NO_LIMIT)
        if tok_max < _NO_LIMIT:
            limits.append(tok_max)
        self.max_positions = min(limits)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def weights(self) -> tuple[np.ndarray, ...]:
        """(wq, wk, bq, bk): (L, d, d) in the ``x @ W`` orientation and (L, d) biases."""
        def array(t: Any) -> np.ndarray:
            return t.detach().float().cpu().numpy()

        wq = np.stack([array(q.weight).T for q, _ in self.qk])
        wk = np.stack([array(k.weight).T for _, k in self.qk])
        zero = np.zeros(self.dim, dtype=np.float32)
        bq = np.stack([zero if q.bias is None else array(q.bias) for q, _ in self.qk])
        bk = np.stack([zero if k.bias is None else array(k.bias) for _, k in self.qk])
        return wq, wk, bq, bk

    def tokenize(self, text: str, truncate: bool = True) -> tuple[dict[str, Any], bool]:
        """Token ids of one text (a (1, n) batch on the model's device) and whether it was
        truncated."""
        full = self.tokenizer(text, truncation=False)["input_ids"]
        too_long = len(full) > self.max_positions
        if too_long and not truncate:
            raise_invalid("text", f"at most {self.max_positions} tokens (the model's positions)",
                   f"got {len(full)} tokens",
                   "Shorten the text, or allow truncation (drop --no-truncate).",
                   "capture_text")
        if too_long:
            warnings.warn(f"text of {len(full)} tokens truncated to the model's limit of "
                          f"{self.max_positions} positions.", UserWarning, stacklevel=3)
        enc = self.tokenizer(text, truncation=True, max_length=self.max_positions,
                             return_tensors="pt").to(self.device)
        return enc, too_long

    def head_mask_hooks(self, mask: Any) -> list[Any]:
        """Multiply head ``h`` of layer ``l``'s output by ``mask[l, h]`` (Michel et al.'s
        head mask): pre-hooks on the output projections. Returns the hook handles."""
        handles = []
        for layer, proj in enumerate(self.out):
            def hook(module, args, layer=layer):
                x = args[0]  # (b, n, H * d_h)
                shape = x.shape
                scaled = x.view(*shape[:-1], self.n_heads, self.head_dim) \
                    * mask[layer].view(self.n_heads, 1).to(x.device, x.dtype)  # (b, n, H, d_h)
                return (scaled.view(shape),) + tuple(args[1:])
            handles.append(proj.register_forward_pre_hook(hook))
        return handles


def _find_projections(model: Any) -> tuple[list[tuple[Any, Any]], list[Any]]:
    import torch

    mods = dict(model.named_modules())
    qk, out = [], []
    for name in list(mods):
        for qn, kn in _QK_NAMES:
            key = f"{name}.{kn}" if name else kn
            qname = f"{name}.{qn}" if name else qn
            if isinstance(mods.get(qname), torch.nn.Linear) and isinstance(
                    mods.get(key), torch.nn.Linear):
                qk.append((mods[qname], mods[key]))
                parent = name.rsplit(".", 1)[0] if "." in name else ""
                cands = [f"{name}.{o}" for o in _OUT_NAMES[:3]] + [f"{parent}.output.dense"]
                out.append(next((mods[c] for c in cands if isinstance(mods.get(c),
                                                                       torch.nn.Linear)), None))
                break
    return qk, out


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, attn_implementation: str, dtype: str,
                 device: str = "cpu") -> tuple[Any, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True,
                                      attn_implementation=attn_implementation)
    model.eval()
    if dtype == "float64":
        model.to(torch.float64)
    return tokenizer, model.to(device)


def load_encoder(model: str | os.PathLike = "minilm", *, attn_implementation: str = "sdpa",
                 dtype: str = "float32", device: str | None = "cpu") -> Encoder:
    """``"minilm"`` (the bundled all-MiniLM-L6-v2) or a local transformers encoder folder.

    No hub downloads: anything else than "minilm" must be a folder with a ``config.json``.
    ``attn_implementation``: "sdpa" (fused, probabilities recomputed) or "eager";
    ``dtype``: "float32" (as trained) or "float64" (the whole forward pass in double);
    ``device``: the torch device it runs on ("cpu", "cuda"; None: the GPU when one is visible).
    """
    check_option(attn_implementation, "attn_implementation", ("sdpa", "eager"), "load_encoder")
    check_option(dtype, "dtype", ("float32", "float64"), "load_encoder")
    device = resolve_device(device, "load_encoder")
    name = str(model)
    if name == "minilm":
        from attnlens.backbones.minilm import model_path

        path = model_path()
    else:
        path = Path(name).expanduser()
        if not (path / "config.json").is_file():
            raise_invalid("model", "'minilm', 'vit' or a local transformers encoder folder "
                   "(with config.json)", name,
                   "attnlens never downloads models; point --model at a saved folder "
                   "(model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR)).",
                   "load_encoder")
    try:
        tokenizer, net = _load_cached(str(path), attn_implementation, dtype, device)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"load_encoder: could not load a transformers encoder from {path}: "
                         f"{exc}") from exc
    enc = Encoder(name, Path(path), tokenizer, net)
    enc.attn_implementation = attn_implementation
    return enc


def capture_text(
    texts: list[str],
    model: str | os.PathLike | Encoder = "minilm",
    *,
    truncate: bool = True,
    dtype: str = "float32",
    device: str | None = "cpu",
) -> Capture:
    """Record attentions, attention inputs and Q/K weights of ``texts`` (one pass per text).

    Raises :class:`attnlens.errors.InvalidParameterError` for an empty text (or an empty list),
    and for a text longer than the model's positions when ``truncate`` is False (with
    ``truncate=True`` it is cut there with a warning naming the limit). ``dtype="float64"``
    runs the forward pass in double precision (then the recomputed probabilities equal the
    eager float64 model's to ~1e-12; in float32 both paths carry float32 rounding, ~1e-6).
    ``device`` is where a model named by ``model`` runs (an :class:`Encoder` keeps its own).
    """
    import torch

    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise_invalid("texts", "a non-empty list of texts", texts, "Pass at least one text.",
               "capture_text")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise_invalid(f"texts[{i}]", "a non-empty string", t,
                   "Pass text with at least one word.", "capture_text")
    enc_model = (model if isinstance(model, Encoder)
                 else load_encoder(model, dtype=dtype, device=device))
    recorded: dict[int, dict[str, Any]] = {}
    handles = []
    for layer, (q, k) in enumerate(enc_model.qk):
        def grab_q(mod, args, out, layer=layer):
            recorded.setdefault(layer, {})["x"] = args[0].detach()
            recorded[layer]["q"] = out.detach()

        def grab_k(mod, args, out, layer=layer):
            recorded.setdefault(layer, {})["k"] = out.detach()

        handles += [q.register_forward_hook(grab_q), k.register_forward_hook(grab_k)]
    h, dh = enc_model.n_heads, enc_model.head_dim
    tokens, attentions, hidden, truncated = [], [], [], []
    try:
        with torch.inference_mode():
            for text in texts:
                enc, cut = enc_model.tokenize(text, truncate)
                recorded.clear()
                enc_model.model(**enc)
                n = enc["input_ids"].shape[1]
                att = np.empty((enc_model.n_layers, h, n, n))
                states = np.empty((enc_model.n_layers, n, enc_model.dim), dtype=np.float32)
                for layer in range(enc_model.n_layers):
                    rec = recorded[layer]
                    q = rec["q"][0].double().view(n, h, dh).transpose(0, 1)  # (H, n, d_h)
                    k = rec["k"][0].double().view(n, h, dh).transpose(0, 1)  # (H, n, d_h)
                    logits = q @ k.transpose(1, 2) / np.sqrt(dh)  # (H, n, n)
                    att[layer] = torch.softmax(logits, dim=-1).cpu().numpy()
                    states[layer] = rec["x"][0].float().cpu().numpy()  # (n, d)
                tokens.append(enc_model.tokenizer.convert_ids_to_tokens(
                    enc["input_ids"][0].tolist()))
                attentions.append(att)
                hidden.append(states)
                truncated.append(cut)
    finally:
        for hd in handles:
            hd.remove()
    wq, wk, bq, bk = enc_model.weights()
    return Capture(model=enc_model.name, n_layers=enc_model.n_layers, n_heads=h,
                   dim=enc_model.dim, max_positions=enc_model.max_positions, tokens=tokens,
                   attentions=attentions, hidden=hidden, wq=wq, wk=wk, bq=bq, bk=bk,
                   truncated=truncated, texts=texts,
                   attn_implementation=enc_model.attn_implementation)


def capture_images(images: Any, *, image_size: int = 224, device: str | None = "cpu") -> Capture:
    """Attention maps (and Q/K weights) of the ViT-S/14 ONNX backbone for a batch of images.

    ``images``: (B, H, W) or (B, H, W, 3), uint8 or float in [0, 1]. Hidden states are not
    recorded (the graph's taps hold the residual stream, not the normalized attention input).
    ``device``: onnxruntime's provider, see :class:`~attnlens.backbones.vit.ViTS14`.
    """
    from attnlens.backbones.vit import ViTS14

    check_option(image_size % 14 == 0, "image_size is a multiple of 14", (True,))
    vit = ViTS14(image_size=image_size, device=device)
    feats = vit.encode(images, layer=-1, attentions=True, progress=False)
    att = feats.attentions.astype(np.float64)  # (L, B, H, N, N)
    weights = [vit.qkv_weights(layer) for layer in range(vit.n_layers)]
    n = vit.n_tokens
    side = image_size // 14
    names = ["[CLS]"] + [f"p{r},{c}" for r in range(side) for c in range(side)]
    return Capture(model="vit", n_layers=vit.n_layers, n_heads=vit.n_heads, dim=vit.dim,
                   max_positions=n, tokens=[names for _ in range(att.shape[1])],
                   attentions=[att[:, b] for b in range(att.shape[1])], hidden=None,
                   wq=np.stack([w[0] for w in weights]), wk=np.stack([w[1] for w in weights]),
                   bq=np.stack([w[3] for w in weights]), bk=np.stack([w[4] for w in weights]),
                   truncated=[False] * att.shape[1], attn_implementation="onnx")
