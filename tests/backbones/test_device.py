"""Backbones on a device: ``device="cpu"`` is the default path, a missing GPU is a named error.

On a machine with a GPU the CUDA cases run too (CPU and GPU features agree to float32
rounding); without one they check the refusal.
"""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from attnlens.backbones import load_backbone
from attnlens.backbones.capture import capture_text, load_encoder
from attnlens.errors import InvalidParameterError

GPU = torch.cuda.is_available()
TEXTS = ["the rock is destined to be the 21st century's new conan .", "bad"]


@pytest.fixture(scope="module")
def images():
    digits = load_digits()
    return np.rint(digits.images[[0, 7]] * 255 / 16).astype(np.uint8)  # (2, 8, 8) real digits


def test_minilm_on_cpu_equals_the_default():
    default = load_backbone("minilm").encode(TEXTS, attentions=True, progress=False)
    model = load_backbone("minilm", device="cpu")
    assert model.device == "cpu" and next(model.model.parameters()).device.type == "cpu"
    cpu = model.encode(TEXTS, attentions=True, progress=False)
    np.testing.assert_array_equal(cpu.tokens, default.tokens)
    np.testing.assert_array_equal(cpu.attentions, default.attentions)
    np.testing.assert_array_equal(cpu.mask, default.mask)


@pytest.mark.skipif(not GPU, reason="needs a GPU (torch.cuda.is_available())")
def test_minilm_on_the_gpu_agrees_with_the_cpu():
    cpu = load_backbone("minilm", device="cpu").encode(TEXTS, progress=False)
    gpu = load_backbone("minilm", device="cuda")
    assert next(gpu.model.parameters()).device.type == "cuda"
    got = gpu.encode(TEXTS, progress=False)
    np.testing.assert_array_equal(got.mask, cpu.mask)
    np.testing.assert_allclose(got.tokens, cpu.tokens, atol=1e-3)


@pytest.mark.skipif(GPU, reason="checks the refusal on a machine without a GPU")
def test_cuda_without_a_gpu_is_a_named_error(images, tmp_path):
    with pytest.raises(InvalidParameterError, match="MiniLM: device must be .*got 'cuda'"):
        load_backbone("minilm", device="cuda")
    with pytest.raises(InvalidParameterError, match="load_encoder: device"):
        load_encoder(device="cuda")
    with pytest.raises(InvalidParameterError, match="ViTS14: device"):
        load_backbone("vit", device="cuda", cache_root=tmp_path)


def test_capture_on_cpu_equals_the_default():
    default = capture_text(TEXTS)
    cpu = capture_text(TEXTS, device="cpu")
    assert cpu.tokens == default.tokens
    for a, b in zip(cpu.attentions, default.attentions, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(cpu.wq, default.wq)


def test_vit_on_cpu_equals_the_default(images, tmp_path):
    default = load_backbone("vit", image_size=112, num_threads=1, cache_root=tmp_path)
    cpu = load_backbone("vit", image_size=112, num_threads=1, cache_root=tmp_path, device="cpu")
    assert cpu.device == "cpu" and cpu._session.get_providers() == ["CPUExecutionProvider"]
    np.testing.assert_array_equal(cpu.encode(images, progress=False).tokens,
                                  default.encode(images, progress=False).tokens)


def test_vit_device_needs_onnxruntimes_cuda_provider(monkeypatch, tmp_path):
    """A visible GPU is not enough: onnxruntime must offer its CUDA provider (simulated)."""
    import onnxruntime as ort

    from attnlens.backbones.vit import onnx_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(InvalidParameterError, match="onnxruntime-gpu"):
        onnx_device("cuda")
    assert onnx_device(None) == "cpu"  # the default falls back to the CPU provider
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert onnx_device(None) == "cuda" and onnx_device("cuda:1") == "cuda:1"
    with pytest.raises(InvalidParameterError, match="'cpu' or 'cuda'"):
        onnx_device("meta")


@pytest.mark.skipif(GPU, reason="checks the refusal on a machine without a GPU")
def test_the_transfer_benchmark_passes_its_device_to_the_backbone(tmp_path):
    from attnlens.transfer.pipeline import run_benchmark

    with pytest.raises(InvalidParameterError, match="MiniLM: device"):
        run_benchmark(tmp_path / "run", heads=["linear"], seeds=[0], n_items=40,
                      cache_dir=tmp_path / "cache", progress=False, device="cuda")
