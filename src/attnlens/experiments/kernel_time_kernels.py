"""Experiment ``time-kernels``: what temporal kernel do Bochner / Mercer encoders learn?

Xu et al., "Self-attention with Functional Time Representation Learning", NeurIPS 2019.
Synthetic task with a known temporal pattern: events at irregular times ``t_j`` carry values
``v_j ~ N(0, 1)``; the target at event i is ``y_i = (1/N) sum_j k*(t_i - t_j) v_j + noise``
with ``k*(dt) = 0.7 cos(2 pi dt / 7) + 0.3 cos(2 pi dt / 2.5)``. The model is one time-only
attention read-out ``y_i = a (1/N) sum_j <Phi(t_i), Phi(t_j)> v_j + b`` (score
``score_ij = x_i^T W z_j`` with ``x = Phi(t_i)``, ``z = Phi(t_j)``, ``W = I``), so the learned
``psi(dt) = <Phi(t + dt), Phi(t)>`` should match ``k*`` up to scale. Reported: correlation of
``a * psi`` with ``k*`` on dt in [0, 30], and test R^2, per encoder, over seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from attnlens.experiments import register
from attnlens.report import RunFolder, markdown_table

ENCODERS = ("bochner-free", "bochner-gaussian", "bochner-inverse_cdf", "mercer")


def true_kernel(dt: np.ndarray) -> np.ndarray:
    return 0.7 * np.cos(2 * np.pi * dt / 7.0) + 0.3 * np.cos(2 * np.pi * dt / 2.5)


def make_batch(rng: np.random.Generator, batch: int, n: int, horizon: float, noise: float):
    t = np.sort(rng.uniform(0, horizon, size=(batch, n)), axis=1)
    v = rng.standard_normal((batch, n))
    k = true_kernel(t[:, :, None] - t[:, None, :])  # (B, N, N)
    y = np.einsum("bij,bj->bi", k, v) / n + noise * rng.standard_normal((batch, n))
    return t, v, y


def build_encoder(name: str, dim: int, seed: int):
    from attnlens.kernel.time_encoding import BochnerTimeEncoder, MercerTimeEncoder

    if name == "mercer":
        return MercerTimeEncoder(periods=(1.0, 10.0, 100.0), harmonics=dim)
    return BochnerTimeEncoder(dim, name.split("-", 1)[1], scale=1.0, seed=seed)


def train_unit(name: str, seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    enc = build_encoder(name, cfg["dim"], seed).double()
    a = torch.nn.Parameter(torch.ones((), dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
    opt = torch.optim.Adam([*enc.parameters(), a, b], lr=cfg["lr"])

    def predict(t, v):
        phi = enc(t)  # (B, N, D)
        gram = phi @ phi.transpose(1, 2)  # (B, N, N) psi(t_i - t_j)
        return a * torch.einsum("bij,bj->bi", gram, v) / t.shape[1] + b

    losses = []
    for _ in range(cfg["steps"]):
        t, v, y = (torch.from_numpy(z) for z in make_batch(rng, cfg["batch"], cfg["n"],
                                                          cfg["horizon"], cfg["noise"]))
        loss = torch.mean((predict(t, v) - y) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    test_rng = np.random.default_rng(10_000 + seed)
    t, v, y = (torch.from_numpy(z) for z in make_batch(test_rng, 256, cfg["n"], cfg["horizon"],
                                                      cfg["noise"]))
    with torch.no_grad():
        pred = predict(t, v)
        r2 = 1 - float(torch.mean((pred - y) ** 2) / torch.var(y))
        dt = torch.linspace(0, 30, 601, dtype=torch.float64)
        psi = (a * enc.kernel(dt)).numpy()
    k = true_kernel(dt.numpy())
    corr = float(np.corrcoef(psi, k)[0, 1])
    return {"encoder": name, "seed": seed, "test_r2": r2, "kernel_corr": corr,
            "final_loss": losses[-1], "loss": losses[:: max(1, len(losses) // 100)],
            "dt": dt.numpy().tolist(), "psi": psi.tolist()}


@register("kernel", "time-kernels")
def run(out: str | Path, *, seeds: int = 5, overwrite: bool = False, steps: int = 600,
        epochs: int | None = None, dim: int = 16, n: int = 24, batch: int = 32,
        horizon: float = 60.0, noise: float = 0.01, lr: float = 0.02,
        progress: bool = True, threads: int = 1) -> dict[str, Any]:
    """``epochs`` is accepted as an alias of ``steps`` (the CLI's --epochs)."""
    import torch

    torch.set_num_threads(threads)
    steps = epochs or steps
    cfg = dict(seeds=seeds, steps=steps, dim=dim, n=n, batch=batch, horizon=horizon,
               noise=noise, lr=lr)
    folder = RunFolder(out, cfg, overwrite=overwrite)
    from attnlens.execution import Unit, run_units

    run_units(folder, [Unit(f"{e}.seed={s}", train_unit, {"name": e, "seed": s, "cfg": cfg},
                            threads=threads)
                       for s in range(seeds) for e in ENCODERS],
              desc="time kernels", progress=progress)
    res = folder.load_units()
    rows, metrics = [], {"encoders": {}}
    for e in ENCODERS:
        rs = [r for k, r in res.items() if k.startswith(f"{e}.")]
        corr = np.array([r["kernel_corr"] for r in rs])
        r2 = np.array([r["test_r2"] for r in rs])
        metrics["encoders"][e] = {"kernel_corr_mean": float(corr.mean()),
                                  "kernel_corr_std": float(corr.std()),
                                  "test_r2_mean": float(r2.mean()), "test_r2_std": float(r2.std()),
                                  "seeds": len(rs)}
        rows.append({"encoder": e, "seeds": len(rs),
                     "corr(learned psi, true k*)": f"{corr.mean():.3f} ± {corr.std():.3f}",
                     "test R^2": f"{r2.mean():.3f} ± {r2.std():.3f}"})
    metrics["table"] = rows
    folder.write_metrics(metrics)
    folder.write_table(rows, "kernels")
    folder.write_markdown(markdown_table(rows), "report")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    dt = np.linspace(0, 30, 601)
    ax.plot(dt, true_kernel(dt), "k", lw=2.2, label="true k*(dt)")
    for e in ENCODERS:
        r = res.get(f"{e}.seed=0")
        if r:
            ax.plot(r["dt"], r["psi"], lw=1, label=f"{e} (a·psi)")
    ax.set(xlabel="dt", ylabel="kernel", title="learned time kernels (seed 0)")
    ax.legend(fontsize=7)
    folder.save_figure(fig, "time_kernels", dpi=90)
    return metrics
