"""Markdown tables of the recorded transfer benchmarks (for docs/transfer.md).

Reads ``benchmarks/results/transfer_{minilm_rt,minilm_imdb,vit}[_full].json`` (written by the
``transfer_*.py`` scripts, ``--full`` for the full-size runs) and prints, per run: test accuracy (mean ± std over seeds) of every
head at every d, then the convex heads' objectives, certificates and times next to their
non-convex twins at the same beta, and the verdict on the paper's finding (for a full-size
run also next to its subset run's).
Run: ``python benchmarks/transfer_tables.py [names...]``.
"""

from __future__ import annotations

import json
import sys

from _common import RESULTS

from attnlens.transfer.heads import HEADS
from attnlens.transfer.summary import compare_heads

RUNS = {
    "transfer_minilm_rt": "MiniLM / Rotten Tomatoes",
    "transfer_minilm_imdb": "MiniLM / IMDB (128 tokens)",
    "transfer_vit": "ViT-S/14 / Fashion-MNIST",
    "transfer_minilm_imdb_full": "MiniLM / IMDB (128 tokens), all 25,000 reviews",
    "transfer_vit_full": "ViT-S/14 / Fashion-MNIST, all 70,000 images, official split",
}
#: full-size run -> the subset run it replaces (issue 16.4: where the verdicts change)
FULL_OF = {"transfer_minilm_imdb_full": "transfer_minilm_imdb", "transfer_vit_full": "transfer_vit"}


def _acc(r: dict) -> str:
    if r.get("test_acc_mean") is None:
        status = str(r.get("status") or "not run")
        return "n/a (memory)" if "MemoryError" in status else f"n/a ({status[:40]})"
    return f"{100 * r['test_acc_mean']:.1f} ± {100 * r['test_acc_std']:.1f}"


def _num(v: float | None, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def _ordered(heads) -> list[str]:
    """Head names in registry order (merged runs append their rows at the end)."""
    order = list(HEADS)
    return sorted(heads, key=lambda h: order.index(h) if h in order else len(order))


def accuracy_table(payload: dict) -> str:
    dims = list(payload["per_d"])
    rows: dict[str, dict[str, dict]] = {}
    for d in dims:
        for r in payload["per_d"][d]["rows"]:
            rows.setdefault(r["head"], {})[d] = r
    head = ["head", *[f"d={d}" for d in dims], "params (" + "/".join(dims) + ")",
            "train s, selected value (" + "/".join(dims) + ")"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in _ordered(rows):
        per = {d: rows[name].get(d, {"status": "not run"}) for d in dims}
        params = "/".join(_num(per[d].get("n_params"), ",.0f") or "–" for d in dims)
        secs = "/".join(_num(per[d].get("train_seconds"), ".1f") or "–" for d in dims)
        out.append("| " + " | ".join([name, *[_acc(per[d]) for d in dims], params, secs]) + " |")
    return "\n".join(out)


def convex_table(payload: dict) -> str:
    head = ["convex head", "d", "beta (per seed)", "convex objective", "non-convex objective",
            "excess", "convex <= non-convex", "max certificate", "status", "train s convex",
            "train s non-convex"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d, part in payload["per_d"].items():
        by = {r["head"]: r for r in part["rows"]}
        for r in (by[h] for h in _ordered(by)):
            if r["kind"] != "convex" or r.get("test_acc_mean") is None:
                continue
            twin = by.get(HEADS[r["head"]].counterpart or "", {})
            excess = r.get("nonconvex_excess")
            out.append("| " + " | ".join([
                r["head"], d, ",".join(f"{b:g}" for b in r.get("selected", [])),
                _num(r.get("objective"), ".4f"), _num(r.get("nonconvex_objective"), ".4f"),
                "" if excess is None else f"{100 * excess:+.1f}%",
                str(r.get("convex_le_nonconvex") or ""), _num(r.get("certificate_max"), ".1e"),
                str(r.get("status")), _num(r.get("train_seconds"), ".1f"),
                _num(twin.get("train_seconds"), ".1f"),
            ]) + " |")
    return "\n".join(out)


def _verdict_key(rows: list[dict]) -> str:
    """'held' / 'did not hold', the two best heads and the difference in points."""
    cmp = compare_heads(rows)
    if cmp is None:
        return "n/a"
    held = "held" if cmp["diff"] > 0 else "did not hold"
    return (f"{held} ({cmp['attention']['head']} vs {cmp['baseline']['head']}, "
            f"{100 * cmp['diff']:+.1f})")


def verdict_changes(subset: dict, full: dict) -> str:
    """Per d: the subset run's verdict next to the full-size run's, and whether it changed."""
    out = ["| d | subset (10,000 items) | full size | changed |", "|---|---|---|---|"]
    for d, part in full["per_d"].items():
        a = _verdict_key(subset["per_d"].get(d, {}).get("rows", []))
        b = _verdict_key(part["rows"])
        out.append(f"| {d} | {a} | {b} | {'yes' if a.split(' (')[0] != b.split(' (')[0] else 'no'} |")
    return "\n".join(out)


def main(names: list[str]) -> None:
    for name in names or list(RUNS):
        path = RESULTS / f"{name}.json"
        if not path.is_file():
            print(f"## {RUNS.get(name, name)}: no results yet ({path})\n")
            continue
        payload = json.loads(path.read_text())
        feats = payload.get("features", {})
        first = next(iter(payload["per_d"].values()))["rows"][0]
        print(f"## {RUNS.get(name, name)}\n")
        print(f"{feats.get('n_items')} of {feats.get('n_items_available')} items "
              f"({feats.get('dataset')}, {feats.get('source')}); train n={first.get('n_train')}, "
              f"test n={first.get('n_test')}; seeds {payload['settings'].get('seeds')}; "
              f"complete: {payload.get('complete')}; feature extraction "
              f"{payload.get('feature_seconds', 0):.0f} s in the last call; fitting "
              f"{payload.get('fit_seconds_total', 0) / 60:.0f} min in all (every head, seed, d "
              "and grid value).\n")
        print(accuracy_table(payload) + "\n")
        print(convex_table(payload) + "\n")
        for d, part in payload["per_d"].items():
            print(f"- d={d}: {part['verdict']}")
        print()
        subset = RESULTS / f"{FULL_OF.get(name, '')}.json"
        if name in FULL_OF and subset.is_file():
            print("Verdicts, subset run vs full size:\n")
            print(verdict_changes(json.loads(subset.read_text()), payload) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
