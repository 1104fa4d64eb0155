"""Figures of the inspect report (matplotlib, returned as Figure objects)."""

from __future__ import annotations

import numpy as np

#: token tick labels are drawn up to this many tokens
MAX_LABELLED = 48


def token_map(matrix: np.ndarray, tokens: list[str], title: str, rows: list[int] | None = None):
    """Heatmap of an (outputs, inputs) map over the tokens."""
    import matplotlib.pyplot as plt

    rows = list(range(matrix.shape[0])) if rows is None else rows
    n = matrix.shape[1]
    size = min(9.0, 2.5 + 0.16 * n)
    fig, ax = plt.subplots(figsize=(size, max(2.2, min(size, 1.2 + 0.16 * len(rows)))))
    im = ax.imshow(matrix, cmap="viridis", aspect="auto")
    if n <= MAX_LABELLED:
        ax.set_xticks(range(n), tokens, rotation=90, fontsize=7)
    if len(rows) <= MAX_LABELLED:
        ax.set_yticks(range(len(rows)), [tokens[r] for r in rows], fontsize=7)
    ax.set(title=title, xlabel="input token", ylabel="output position (last layer)")
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    return fig


def head_grid(values: np.ndarray, title: str, cmap: str = "magma", fmt: str = ".2f",
              vmin: float | None = None, vmax: float | None = None):
    """Layer x head heatmap with the values written in the cells (NaN = not available)."""
    import matplotlib.pyplot as plt

    L, H = values.shape
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * H, 0.9 + 0.45 * L))
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    for i in range(L):
        for j in range(H):
            if np.isfinite(values[i, j]):
                ax.text(j, i, format(values[i, j], fmt), ha="center", va="center", fontsize=6,
                        color="white" if im.norm(values[i, j]) < 0.6 else "black")
    ax.set(title=title, xlabel="head", ylabel="layer", xticks=range(H), yticks=range(L))
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    return fig


def spectra_plot(curves: dict[str, np.ndarray], levels: tuple[float, ...]):
    """Mean cumulative singular values per layer; one panel per source (name -> (L, H, n))."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.6 * len(curves), 3.4), squeeze=False)
    for ax, (name, c) in zip(axes[0], curves.items(), strict=True):
        k = np.arange(1, c.shape[-1] + 1)
        colors = plt.cm.viridis(np.linspace(0, 0.9, c.shape[0]))
        for layer in range(c.shape[0]):
            ax.plot(k, c[layer].mean(0), color=colors[layer], label=f"layer {layer}")
        for lv in levels:
            ax.axhline(lv, ls=":", color="gray", lw=0.8)
        ax.set(title=name, xlabel="k", ylabel="normalized cumulative singular values",
               xscale="log", ylim=(0, 1.02))
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def causal_graph(adjacency: np.ndarray, tokens: list[str], explanation: tuple[int, ...],
                 title: str):
    """The causal skeleton drawn over the tokens on a circle; explanation tokens in red."""
    import matplotlib.pyplot as plt

    n = len(tokens)
    angle = np.pi / 2 - 2 * np.pi * np.arange(n) / n
    xy = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    fig, ax = plt.subplots(figsize=(5.2, 5.2))
    for i in range(n):
        for j in range(i + 1, n):
            if adjacency[i, j]:
                ax.plot(*xy[[i, j]].T, color="#888", lw=0.8, zorder=1)
    colors = ["#c0392b" if i in explanation else "#2c7fb8" for i in range(n)]
    ax.scatter(*xy.T, s=60, c=colors, zorder=2)
    for i, tok in enumerate(tokens):
        ax.text(*(1.13 * xy[i]), tok, ha="center", va="center", fontsize=7)
    ax.set(title=title, xlim=(-1.35, 1.35), ylim=(-1.35, 1.35))
    ax.axis("off")
    fig.tight_layout()
    return fig
