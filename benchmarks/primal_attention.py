"""PrimalAttention vs the same layer on torch SDPA: forward + backward, CPU, B=1, dim 128, 4 heads.

Both layers include their projections (SDPA layer: qkv and out Linear; primal layer: q, k,
the data-dependent W_e/W_r, the [e; r] map and out) and the primal layer adds its KSVD loss
term ``0.1 * ksvd_loss``. One pass = forward, then backward from the same fixed dense upstream
gradient of the layer output (as in training; a ``.sum()`` loss would hand both layers a
broadcast gradient that the linear backward copies first).

Each (layer, N) runs in a fresh subprocess with the same settings:

* torch threads: ``--threads`` (default: every core, ``os.cpu_count()``), the same for both
  layers; ``--threads=1,2`` measures several counts in one run, the targets are read at the
  largest.
* time: wall clock (``time.perf_counter``) per pass; the primary number is the median over the
  repeats (at least 5, until 3 s have passed, at most 50; one warm-up pass first); the minimum
  and process CPU time (``time.process_time``, summed over threads) are reported as well.
* memory, two measurements taken the same way for both layers, each on its own pass, in a
  second fresh subprocess (the malloc setting below would slow the timed passes by extra page
  faults, so timing runs with the default allocator):
  ``peak_alloc_mb``: high-water mark of live torch CPU allocations during the pass
  (torch.profiler ``profile_memory``, "Total Allocated"; tensors alive before the pass, i.e.
  parameters, input, upstream gradient, are excluded);
  ``peak_rss_mb``: peak resident set size during the pass minus the RSS just before it
  (``/proc/self/clear_refs`` resets the peak; glibc is started with a fixed
  ``MALLOC_MMAP_THRESHOLD_`` of 64 KiB so freed tensors go back to the OS and RSS follows live
  memory; includes non-tensor scratch memory of the kernels).

GPU column: when ``torch.cuda.is_available()`` (``_common.devices()``), every N is measured a
second time with both layers on the GPU (``gpu_rows``: median wall seconds with
``torch.cuda.synchronize()`` after each pass, peak ``torch.cuda.max_memory_allocated`` during
one pass above what was allocated before it); without a GPU ``gpu_rows`` is empty and
``gpu`` says so.

    python benchmarks/primal_attention.py [--quick] [--threads=1,2]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from _common import HERE, devices, write_result

SIZES = [1024, 2048, 4096, 8192, 16384]
DIM, HEADS, RANK, RANK_MULTI = 128, 4, 20, 10
TARGETS = {8192: 20.0, 16384: 40.0}  # wall-clock speedup of the primal layer over SDPA
MMAP_THRESHOLD = 65536

CHILD = r"""
import json, os, statistics, sys, tempfile, time
sys.path.insert(0, {src!r})
import torch
from torch import nn
import torch.nn.functional as F
from attnlens.kernel import PrimalAttention, ksvd_loss

impl, n, threads, mode, device = {impl!r}, {n}, {threads}, {mode!r}, {device!r}
torch.set_num_threads(threads)


def sync():
    if device == "cuda":
        torch.cuda.synchronize()

dim, heads = {dim}, {heads}
torch.manual_seed(0)


class SDPALayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, p)
        return self.out(y.transpose(1, 2).reshape(b, t, dim))


if impl == "sdpa":
    layer = SDPALayer()
    def step():
        torch.autograd.backward(layer(x), grad)
else:
    layer = PrimalAttention(dim, heads, {rank}, rank_multi={rank_multi})
    def step():
        out, terms = layer(x, return_terms=True)
        torch.autograd.backward([out, 0.1 * ksvd_loss(terms)], [grad, None])
layer = layer.to(device)
x = torch.randn(1, n, dim).to(device).requires_grad_(True)  # drawn on the CPU: same on every device
grad = torch.randn(1, n, dim).to(device)


def fresh():
    layer.zero_grad(set_to_none=True)
    x.grad = None


def status_kb(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


t0 = time.perf_counter()
step()
sync()
first = time.perf_counter() - t0
if mode == "time":
    wall, cpu = [], []
    start = time.perf_counter()
    while len(wall) < 50 and (len(wall) < 5 or time.perf_counter() - start < 3.0):
        fresh()
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        sync()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    print(json.dumps(dict(impl=impl, n=n, threads=torch.get_num_threads(),
                          wall_median=statistics.median(wall), wall_min=min(wall),
                          wall_all=wall, cpu_median=statistics.median(cpu), first=first)))
    sys.exit(0)

fresh()
if device == "cuda":
    sync()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    sync()
    print(json.dumps(dict(impl=impl, n=n, peak_alloc_mb=(torch.cuda.max_memory_allocated() - base)
                          / 2**20, peak_rss_mb=float("nan"))))
    sys.exit(0)
rss_ok = True
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
except OSError:
    rss_ok = False
rss_before = status_kb("VmRSS:")
step()
peak_rss = (status_kb("VmHWM:") - rss_before) / 1024 if rss_ok else float("nan")

from torch.profiler import ProfilerActivity, profile
fresh()
with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
    step()
path = tempfile.mktemp(suffix=".json")
prof.export_chrome_trace(path)
with open(path) as f:
    events = json.load(f)["traceEvents"]
os.unlink(path)
totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"]
print(json.dumps(dict(impl=impl, n=n, peak_alloc_mb=max(totals + [0]) / 2**20,
                      peak_rss_mb=peak_rss)))
"""


def run_one(impl: str, n: int, threads: int, device: str = "cpu") -> dict:
    """Timing in one fresh subprocess (default allocator), memory in another."""
    result = {}
    for mode in ("time", "memory"):
        code = CHILD.format(src=str(HERE.parent / "src"), impl=impl, n=n, threads=threads,
                            dim=DIM, heads=HEADS, rank=RANK, rank_multi=RANK_MULTI, mode=mode,
                            device=device)
        env = dict(os.environ)
        if mode == "memory":
            env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, env=env)
        result.update(json.loads(out.stdout.strip().splitlines()[-1]))
    return result


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unavailable"


def main(argv: list[str]) -> None:
    from tqdm import tqdm

    sizes = SIZES[:3] if "--quick" in argv else SIZES
    thread_counts = [os.cpu_count() or 1]
    for arg in argv:
        if arg.startswith("--threads="):
            thread_counts = sorted({int(t) for t in arg.split("=", 1)[1].split(",")})
    load = {"start": loadavg()}
    rows: list[dict] = []
    for threads, n in tqdm([(t, n) for t in thread_counts for n in sizes], desc="(threads, N)"):
        sd = run_one("sdpa", n, threads)
        pr = run_one("primal", n, threads)
        rows.append({
            "N": n, "threads": threads,
            "sdpa_s": sd["wall_median"], "primal_s": pr["wall_median"],
            "speedup": sd["wall_median"] / pr["wall_median"],
            "sdpa_min_s": sd["wall_min"], "primal_min_s": pr["wall_min"],
            "sdpa_cpu_s": sd["cpu_median"], "primal_cpu_s": pr["cpu_median"],
            "speedup_cpu": sd["cpu_median"] / pr["cpu_median"],
            "sdpa_peak_alloc_mb": sd["peak_alloc_mb"], "primal_peak_alloc_mb": pr["peak_alloc_mb"],
            "sdpa_peak_rss_mb": sd["peak_rss_mb"], "primal_peak_rss_mb": pr["peak_rss_mb"],
            "sdpa_all_s": sd["wall_all"], "primal_all_s": pr["wall_all"],
            "sdpa_first_s": sd["first"], "primal_first_s": pr["first"],
            "loadavg": loadavg(),
        })
        print(json.dumps({k: v for k, v in rows[-1].items() if not k.endswith("all_s")}),
              flush=True)
        _write(rows, thread_counts, load, done=False)
    gpu_rows: list[dict] = []
    for device in [d for d in devices() if d != "cpu"]:  # the GPU column, when one is visible
        for n in tqdm(sizes, desc=f"N on {device}"):
            sd = run_one("sdpa", n, max(thread_counts), device)
            pr = run_one("primal", n, max(thread_counts), device)
            gpu_rows.append({
                "N": n, "device": device, "sdpa_s": sd["wall_median"],
                "primal_s": pr["wall_median"], "speedup": sd["wall_median"] / pr["wall_median"],
                "sdpa_min_s": sd["wall_min"], "primal_min_s": pr["wall_min"],
                "sdpa_peak_alloc_mb": sd["peak_alloc_mb"],
                "primal_peak_alloc_mb": pr["peak_alloc_mb"], "loadavg": loadavg(),
            })
            print(json.dumps(gpu_rows[-1]), flush=True)
    load["end"] = loadavg()
    path = _write(rows, thread_counts, load, done=True, gpu_rows=gpu_rows)
    print(f"wrote {path}")


def _write(rows: list[dict], thread_counts: list[int], load: dict, done: bool,
           gpu_rows: list[dict] | None = None):
    threads = max(thread_counts)
    met = {str(n): next((r["speedup"] >= v for r in rows
                         if r["N"] == n and r["threads"] == threads), None)
           for n, v in TARGETS.items()}
    payload = {
        "config": {
            "B": 1, "dim": DIM, "heads": HEADS, "rank": RANK, "rank_multi": RANK_MULTI,
            "dtype": "float32", "threads": thread_counts, "targets_read_at_threads": threads,
            "pass": "forward + backward from a fixed dense upstream gradient of the layer "
                    "output; the primal layer adds 0.1 * ksvd_loss",
            "timing": "fresh subprocess per (layer, N, threads), default glibc malloc, one "
                      "warm-up pass, then repeats (>= 5, "
                      "until 3 s, <= 50); *_s: median wall seconds (primary), *_min_s: "
                      "fastest pass, *_cpu_s: median process CPU seconds (all threads); "
                      "rows[].loadavg: /proc/loadavg after the row",
            "memory": "same method for both layers, in a second fresh subprocess, one "
                      "warm-up pass then one pass per measurement: "
                      "*_peak_alloc_mb = high-water mark of live torch allocations during the "
                      "pass (torch.profiler profile_memory 'Total Allocated'; tensors alive "
                      "before the pass excluded); *_peak_rss_mb = peak RSS during the pass "
                      "minus RSS before it (VmHWM reset via /proc/self/clear_refs; glibc "
                      f"MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD} so freed tensors leave RSS)",
        },
        "rows": rows,
        "targets_speedup_wall": {str(k): v for k, v in TARGETS.items()},
        "targets_met": met,
        "memory_no_higher_alloc": all(r["primal_peak_alloc_mb"] <= r["sdpa_peak_alloc_mb"]
                                      for r in rows),
        "memory_no_higher_rss": all(r["primal_peak_rss_mb"] <= r["sdpa_peak_rss_mb"]
                                    for r in rows),
        "loadavg": load,
        "gpu_rows": gpu_rows or [],
        "gpu": ("measured: gpu_rows (device in machine.device)" if gpu_rows else
                "not measured: torch.cuda.is_available() was False (no GPU lent)"),
        "complete": done,
    }
    path = write_result("primal_attention", payload)
    _plot(rows, path.with_suffix(".png"))
    return path


def _plot(rows: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9.5, 3.8))
    for t in sorted({r["threads"] for r in rows}):
        sub = [r for r in rows if r["threads"] == t]
        ns = [r["N"] for r in sub]
        ax[0].loglog(ns, [r["sdpa_s"] for r in sub], "o-", label=f"SDPA layer, {t} thr")
        ax[0].loglog(ns, [r["primal_s"] for r in sub], "s-", label=f"PrimalAttention, {t} thr")
    ax[0].set(xlabel="N", ylabel="fwd+bwd wall seconds (median)",
              title="time (CPU, B=1, dim 128, 4 heads)")
    ax[0].legend(fontsize=7)
    sub = [r for r in rows if r["threads"] == rows[0]["threads"]]  # memory: thread-independent
    ns = [r["N"] for r in sub]
    for key, style, lab in (("peak_alloc_mb", "-", "torch alloc"), ("peak_rss_mb", ":", "RSS")):
        ax[1].loglog(ns, [r[f"sdpa_{key}"] for r in sub], "o" + style, label=f"SDPA, {lab}")
        ax[1].loglog(ns, [r[f"primal_{key}"] for r in sub], "s" + style, label=f"Primal, {lab}")
    ax[1].set(xlabel="N", ylabel="peak MB during one pass", title="peak memory")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main(sys.argv[1:])
