"""Experiment ``spectrum``: singular-value decay of attention after training (Primal.+ vs
canonical) and of the real MiniLM and ViT-S heads' attention maps.

Chen, Tao, Tonin, Suykens, NeurIPS 2023 (arXiv 2305.19798), Sec. 3: trained attention matrices
are low rank, which motivates a rank-``s`` KSVD; Primal.+ (last layer primal) is reported to
concentrate the spectrum further. We compute the normalized cumulative singular values per
layer and head (:mod:`attnlens.kernel.spectrum`) of: the seed-0 Primal.+Transformer and
Transformer trained by the ``uea`` experiment on JapaneseVowels (test sequences; for the primal
layer the cosine kernel ``phi_q phi_k^T``), MiniLM (Rotten Tomatoes sentences) and ViT-S/14
(images). Canonical scores: ``score_ij = x_i^T W z_j``, ``W = K Q^T``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from attnlens.experiments import register
from attnlens.report import RunFolder, markdown_table

logger = logging.getLogger(__name__)


def _uea_models(uea_run: Path, cfg: dict[str, Any]):
    """Seed-0 Primal.+ and Transformer from the uea run folder, trained here if absent."""
    import torch

    from attnlens.datasets.timeseries import load_uea
    from attnlens.experiments.kernel_uea import train_unit

    train, test = load_uea("JapaneseVowels")
    models = {}
    for name in ("primal+trans", "transformer"):
        path = uea_run / "models" / f"JapaneseVowels.{name.replace('+', 'plus')}.pt"
        ucfg = dict(dim=64, heads=8, depth=3, ff_dim=256, dropout=0.1, rank=30, rank_multi=5,
                    eta=0.2, lr=1e-3, batch_size=16, ksvd_form="mean", epochs=cfg["epochs"],
                    progress=False)
        if path.exists():
            stored = uea_run / "config.json"
            if stored.exists():
                import json

                stored_cfg = json.loads(stored.read_text())
                ucfg.update({k: v for k, v in stored_cfg.items() if k in ucfg})
                ucfg.update(stored_cfg.get("model_hparams", {}).get(name, {}))
        else:
            path = Path(cfg["out"]) / "models" / path.name
            if not path.exists():
                logger.info("no trained %s in %s; training one (%d epochs)", name, uea_run,
                            cfg["epochs"])
                train_unit("JapaneseVowels", name, 0, ucfg, save_model=path)
        from attnlens.kernel.models import MODELS

        model = MODELS[name](train.n_channels, train.n_classes, train.X.shape[1],
                             dim=ucfg["dim"], heads=ucfg["heads"], depth=ucfg["depth"],
                             ff_dim=ucfg["ff_dim"], rank=ucfg["rank"],
                             rank_multi=ucfg["rank_multi"], dropout=ucfg["dropout"])
        model.load_state_dict(torch.load(path, weights_only=True))
        models[name] = (model, str(path))
    return models, test


@register("kernel", "spectrum")
def run(out: str | Path, *, seeds: int = 1, overwrite: bool = False,
        uea_run: str = "runs/kernel-uea", epochs: int = 40, n_sequences: int = 64,
        n_sentences: int = 32, n_images: int = 8, level: float = 0.9,
        backbones: tuple[str, ...] = ("minilm", "vit"), progress: bool = True,
        train_missing: bool = True) -> dict[str, Any]:
    """``seeds`` is unused (one trained model per architecture; kept for the CLI). Backbone
    spectra are stored as units first; with ``train_missing=False`` the UEA models are
    skipped when ``uea_run`` does not hold them yet (run again later to add them)."""
    import torch

    from attnlens.kernel.spectrum import attention_spectrum, model_maps, plot_spectra

    torch.set_num_threads(1)
    cfg = dict(uea_run=str(uea_run), epochs=epochs, n_sequences=n_sequences,
               n_sentences=n_sentences, n_images=n_images, level=level,
               backbones=list(backbones))
    folder = RunFolder(out, cfg, overwrite=overwrite)
    spectra, sources = {}, {}
    for bb_name in backbones:
        key = f"backbone-{bb_name}"
        if folder.has_unit(key):
            unit = folder.load_unit(key)
        else:
            unit = _backbone_unit(bb_name, n_sentences, n_images, level)
            if unit is None:
                continue
            folder.save_unit(key, unit)
        from attnlens.kernel.spectrum import Spectrum

        spectra[unit["label"]] = Spectrum(np.array(unit["curves"]), np.array(unit["ranks"]),
                                          level, unit["labels"])
        sources[bb_name] = unit["source"]
    have = all((Path(uea_run) / "models" / f"JapaneseVowels.{n}.pt").exists()
               for n in ("primalplustrans", "transformer"))
    if have or train_missing:
        models, test = _uea_models(Path(uea_run), dict(cfg, out=str(folder.path)))
        x = torch.from_numpy(test.X[:n_sequences])
        m = torch.from_numpy(test.mask[:n_sequences])
        for name, (model, path) in models.items():
            maps, labels = model_maps(model, x, m)
            spectra[f"{name} (JapaneseVowels)"] = attention_spectrum(maps, test.mask[:n_sequences],
                                                                     level=level, labels=labels)
            sources[name] = path
    rows = []
    for src, sp in spectra.items():
        for row in sp.summary():
            rows.append({"source": src, **row})
    metrics = {"table": rows, "sources": sources,
               "mean_rank": {src: float(sp.ranks.mean()) for src, sp in spectra.items()},
               "last_layer_rank": {src: float(sp.ranks[-1].mean())
                                   for src, sp in spectra.items()}}
    folder.write_metrics(metrics)
    folder.write_table(rows, "spectrum")
    folder.write_markdown(markdown_table(rows), "report")
    folder.save_figure(plot_spectra(spectra), "spectrum", dpi=80)
    return metrics


def _backbone_unit(name: str, n_sentences: int, n_images: int, level: float
                   ) -> dict[str, Any] | None:
    from attnlens.kernel.spectrum import attention_spectrum

    try:
        from attnlens.backbones import load_backbone
    except ImportError as exc:  # pragma: no cover - depends on the backbones helper
        logger.warning("attnlens.backbones unavailable (%s); skipping %s", exc, name)
        return None
    bb = load_backbone(name)
    if name == "minilm":
        from attnlens.datasets.text import load_text

        data = load_text("rotten_tomatoes")
        batch = data.texts[:n_sentences]
        label = f"MiniLM ({n_sentences} Rotten Tomatoes sentences)"
    else:
        from attnlens.datasets.vision import load_images

        data = load_images("auto")
        batch = data.images[:n_images]
        label = f"ViT-S/14 ({n_images} {data.name} images)"
    feats = bb.encode(batch, layer=-1, attentions=True, batch_size=8, progress=False)
    sp = attention_spectrum(feats.attentions.astype(np.float64), feats.mask, level=level,
                            labels=[f"layer {i}" for i in range(feats.attentions.shape[0])])
    return {"label": label, "curves": sp.curves.tolist(), "ranks": sp.ranks.tolist(),
            "labels": sp.labels, "source": repr(bb)}
