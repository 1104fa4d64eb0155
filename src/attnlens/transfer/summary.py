"""Aggregate transfer units per head; the results plot and markdown table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from attnlens.transfer.heads import HEADS

__all__ = ["aggregate", "compare_heads", "plot_dims", "plot_rows", "verdict"]


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def aggregate(units: Mapping[str, Mapping[str, Any]], heads: Sequence[str], d: int) -> list[dict]:
    """One row per head: test accuracy mean/std over seeds, parameters, seconds, certificates.

    For a convex head, ``nonconvex_objective`` is its non-convex counterpart's objective at the
    same seed (same training data) and the same selected ``beta`` (mean over seeds),
    ``nonconvex_excess`` the mean relative excess ``(nonconvex - convex) / convex``, and
    ``convex_le_nonconvex`` counts the seeds where the convex optimum is at most that objective.
    For linear heads the theory says it must be (up to the certificate); for gated-ReLU heads
    the convex program and the network draw their gates independently, so the inequality is
    expected but not implied.
    """
    rows = []
    for name in heads:
        spec = HEADS[name]
        mine = [u for u in units.values() if u.get("head") == name]
        done = [u for u in mine if "test_acc" in u]
        row: dict[str, Any] = {"head": name, "label": spec.label, "kind": spec.kind, "d": d}
        if not done:
            reasons = sorted({str(u.get("status")) for u in mine}) or ["not run"]
            row.update({"status": "; ".join(reasons), "seeds": 0})
            rows.append(row)
            continue
        acc = np.array([u["test_acc"] for u in done])
        row.update({
            "seeds": len(done),
            "test_acc_mean": float(acc.mean()),
            "test_acc_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
            "val_acc_mean": _mean([u["val_acc"] for u in done]),
            "n_params": _mean([u.get("n_params") for u in done]),
            "train_seconds": _mean([u["train_seconds"] for u in done]),
            "grid_seconds": _mean([u["grid_seconds"] for u in done]),
            "selected": [u["selected"] for u in done],
            "n_train": done[0].get("n_train"),
            "n_test": done[0].get("n_test"),
            "status": ",".join(sorted({str(u.get("status") or "ok") for u in done})),
        })
        if spec.kind in ("convex", "nonconvex"):
            row["objective"] = _mean([u.get("objective") for u in done])
        if spec.kind == "convex":
            certs = [u.get("certificate") for u in done if u.get("certificate") is not None]
            row["certificate_max"] = float(max(certs)) if certs else None
            if spec.counterpart is not None:
                pairs = []
                for u in done:
                    twin = units.get(f"{spec.counterpart}-seed{u['seed']}-d{u.get('d', d)}")
                    if not twin or "fits" not in twin:
                        continue
                    same = [f for f in twin["fits"] if f.get("beta") == u["selected"]]
                    if same and same[0].get("objective") is not None and u.get("objective") is not None:
                        pairs.append((u["objective"], same[0]["objective"]))
                if pairs:
                    row["nonconvex_objective"] = float(np.mean([p[1] for p in pairs]))
                    # relative excess of the network trained by Adam over the convex optimum
                    row["nonconvex_excess"] = float(np.mean([(n - c) / abs(c) for c, n in pairs]))
                    row["convex_le_nonconvex"] = (
                        f"{sum(c <= n * (1 + 1e-6) + 1e-9 for c, n in pairs)}/{len(pairs)}"
                    )
        rows.append(row)
    return rows


def table_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Human-readable rows (accuracy in %, mean +- std) for CSV, markdown and the terminal."""
    out = []
    for r in rows:
        acc = (f"{100 * r['test_acc_mean']:.1f} ± {100 * r['test_acc_std']:.1f}"
               if r.get("test_acc_mean") is not None else "—")
        out.append({
            "head": r["head"],
            "kind": r["kind"],
            "d": r.get("d"),
            "test_acc": acc,
            "n_params": None if r.get("n_params") is None else int(round(r["n_params"])),
            "train_s": None if r.get("train_seconds") is None else round(r["train_seconds"], 2),
            "selected": ",".join(f"{v:g}" for v in r.get("selected", [])) or None,
            "objective": _fmt(r.get("objective")),
            "nonconvex_objective": _fmt(r.get("nonconvex_objective")),
            "nonconvex_excess": (None if r.get("nonconvex_excess") is None
                                 else f"{100 * r['nonconvex_excess']:+.2f}%"),
            "convex<=nonconvex": r.get("convex_le_nonconvex"),
            "certificate": (None if r.get("certificate_max") is None
                            else f"{r['certificate_max']:.1e}"),
            "status": r.get("status"),
        })
    return out


def _fmt(v: float | None) -> str | None:
    return None if v is None else f"{v:.4g}"


def compare_heads(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The best attention-style row, the best linear/MLP row and their accuracy difference
    (None when either kind has no result): what :func:`verdict` states."""
    by = {r["head"]: r for r in rows if r.get("test_acc_mean") is not None}
    attn = {h: r for h, r in by.items() if HEADS[h].inputs == "tokens" and h != "convex_mlp"}
    base = {h: by[h] for h in ("linear", "mlp", "convex_mlp") if h in by}
    if not attn or not base:
        return None
    best_attn = max(attn.values(), key=lambda r: r["test_acc_mean"])
    best_base = max(base.values(), key=lambda r: r["test_acc_mean"])
    return {"attention": best_attn, "baseline": best_base,
            "diff": best_attn["test_acc_mean"] - best_base["test_acc_mean"], "by_head": by}


def verdict(rows: Sequence[Mapping[str, Any]]) -> str:
    """Whether the paper's finding (attention-style heads beat linear and MLP heads) held."""
    cmp = compare_heads(rows)
    if cmp is None:
        return "not enough heads ran to compare attention-style heads with linear/MLP heads."
    best_attn, best_base, diff, by = cmp["attention"], cmp["baseline"], cmp["diff"], cmp["by_head"]
    held = "held" if diff > 0 else "did not hold"
    noise = max(best_attn.get("test_acc_std") or 0.0, best_base.get("test_acc_std") or 0.0)
    text = (
        f"best attention-style head {best_attn['head']} {100 * best_attn['test_acc_mean']:.1f}% vs "
        f"best linear/MLP head {best_base['head']} {100 * best_base['test_acc_mean']:.1f}% "
        f"at the same d: the paper's finding {held} here ({100 * diff:+.1f} points"
        + (f", within one seed-to-seed std of {100 * noise:.1f})" if abs(diff) <= noise
           else ")")
    )
    if "linear_full" in by:
        full = by["linear_full"]["test_acc_mean"]
        text += (f"; full-dimension logistic regression {100 * full:.1f}% "
                 f"({'above' if full > best_attn['test_acc_mean'] else 'below'} the best attention head)")
    return text + "."


def plot_rows(rows: Sequence[Mapping[str, Any]], title: str) -> Any:
    """Bar chart of test accuracy (mean +- std over seeds) per head, coloured by kind."""
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.get("test_acc_mean") is not None]
    colors = {"baseline": "#7f7f7f", "nonconvex": "#1f77b4", "convex": "#d62728"}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(done) + 2), 4.0))
    x = np.arange(len(done))
    ax.bar(x, [100 * r["test_acc_mean"] for r in done],
           yerr=[100 * r["test_acc_std"] for r in done],
           color=[colors[r["kind"]] for r in done], capsize=3)
    ax.set_xticks(x)
    ax.set_xticklabels([r["head"] for r in done], rotation=40, ha="right")
    accs = [100 * r["test_acc_mean"] for r in done] or [50.0]
    ax.set_ylim(max(0.0, min(accs) - 10), min(100.0, max(accs) + 5))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    from matplotlib.patches import Patch

    # explicit handles: empty ax.bar([], [], color=c) containers all draw the default blue
    ax.legend(handles=[Patch(facecolor=c, label=kind) for kind, c in colors.items()],
              loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_dims(per_d: Mapping[str, Mapping[str, Any]], title: str) -> Any:
    """Grouped bars: test accuracy (mean +- std over seeds) per head, one bar per d.

    ``per_d`` maps d (as a string) to ``{"rows": aggregate rows}``; heads without a result at a
    d leave a gap. The full-dimension baseline is drawn as a dashed line per d.
    """
    import matplotlib.pyplot as plt

    dims = list(per_d)
    heads: list[str] = []
    for part in per_d.values():
        for r in part["rows"]:
            if r["head"] not in heads and r["head"] != "linear_full":
                heads.append(r["head"])
    width = 0.8 / max(len(dims), 1)
    cmap = plt.get_cmap("viridis")
    fig, ax = plt.subplots(figsize=(max(7.0, 0.65 * len(heads) + 3), 4.2))
    x = np.arange(len(heads))
    lows = []
    for k, d in enumerate(dims):
        rows = {r["head"]: r for r in per_d[d]["rows"] if r.get("test_acc_mean") is not None}
        color = cmap(0.15 + 0.7 * k / max(len(dims) - 1, 1))
        acc = [100 * rows[h]["test_acc_mean"] if h in rows else np.nan for h in heads]
        err = [100 * rows[h]["test_acc_std"] if h in rows else 0.0 for h in heads]
        pos = x + (k - (len(dims) - 1) / 2) * width
        ax.bar(pos, acc, width, yerr=err, capsize=2, color=color, label=f"d={d}")
        lows += [a for a in acc if np.isfinite(a)]
        for p, a in zip(pos, acc, strict=True):
            if not np.isfinite(a):  # not run (too large for the dense program, or failed)
                ax.annotate("n/a", (p, 0), xytext=(0, 3), textcoords="offset points",
                            xycoords=("data", "axes fraction"), ha="center", fontsize=6,
                            rotation=90)
        if "linear_full" in rows:
            full = 100 * rows["linear_full"]["test_acc_mean"]
            ax.axhline(full, color="k", ls="--", lw=0.8)
            lows.append(full)
    if any(r["head"] == "linear_full" for p in per_d.values() for r in p["rows"]):
        ax.plot([], [], color="k", ls="--", lw=0.8, label="linear, full dim")
    ax.set_xticks(x)
    ax.set_xticklabels(heads, rotation=40, ha="right", fontsize=8)
    lows = lows or [50.0]
    ax.set_ylim(max(0.0, min(lows) - 8), min(100.0, max(lows) + 4))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=len(dims) + 1, loc="lower right")
    fig.tight_layout()
    return fig


#: terminal columns: (table_rows key, header, right-aligned)
_COLUMNS = (("head", "head", False), ("test_acc", "test acc %", True),
            ("n_params", "params", True), ("train_s", "train s", True),
            ("objective", "objective", True), ("nonconvex_objective", "non-convex obj.", True),
            ("certificate", "certificate", True), ("status", "status", False))


def print_rows(rows: list[dict[str, Any]], title: str) -> None:
    """Render aggregate rows as a rich table on the terminal (120 columns when not a TTY)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    table = Table(title=title, box=box.SIMPLE_HEAD, title_style="bold")
    for _key, header, right in _COLUMNS:
        table.add_column(header, justify="right" if right else "left", no_wrap=True)
    kinds = {"baseline": "dim", "nonconvex": "", "convex": "bold"}
    for r, raw in zip(table_rows(rows), rows, strict=True):
        cells = ["" if r.get(k) is None else str(r.get(k)) for k, _h, _r in _COLUMNS]
        table.add_row(*cells, style=kinds.get(raw.get("kind"), ""))
    console.print(table)
    console.print("[dim]dim: baselines; bold: convex heads (objective = certified optimum; "
                  "non-convex obj. = the Adam-trained twin at the same beta and seed)[/dim]")
