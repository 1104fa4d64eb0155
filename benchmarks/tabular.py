"""attnlens.tabular on tables that install offline: NPT, the OT dummy-Gaussian classifier and a
small tabular transformer against scikit-learn baselines; the OT lens trajectories; where NPT's
time goes on breast cancer.

Data (offline): scikit-learn's breast_cancer (569 x 30, 2 classes; the NPT paper's "Breast
Cancer"), wine (178 x 13, 3 classes), Palmer penguins (333 x 6 with 2 categorical columns,
3 classes; PyPI palmerpenguins) and diabetes (442 x 10, regression). digits is left out of the
NPT grid: 65 columns make the ABD row 65 x 16 = 1040 wide, about 4x breast cancer's cost per row
with 3x the rows (it stays available through ``attnlens.datasets.tabular``).

Protocol: 5 seeds; each seed a stratified 80/20 split (random split for regression); features
standardized inside each model that needs it (pipelines); default hyper-parameters for every
model (no tuning, stated). Metrics: accuracy (classification) or RMSE (regression) on the 20 %,
mean rank per dataset over the seeds (rank 1 = best, ties averaged), training time per model
(wall clock, 1 torch thread; the machine is shared, so times are noisy; models run one after
the other on the same split).

OT lens: the small tabular transformer with :class:`OTLensCallback` on a two-class and a
three-class synthetic task (``make_classification``, 8 informative features) and on breast
cancer; per-epoch optimality, Monge gap, Wasserstein distance and the path efficiency.

NPT timing: one training step split into forward/backward of the ABD blocks, the ABA blocks,
and the rest (embeddings, masking, loss, optimizer), on breast cancer at the default size.

    python benchmarks/tabular.py [--quick] [--seeds N] [--parts ot_lens,npt_fit_time,...]

NPT fit time: the settings before the speed-up (attention dropout 0.1, all 300 steps) and the
current defaults (no attention dropout, early stopping on a validation split), same split, same
seed, same process, 2 torch threads.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, machine  # noqa: E402

from attnlens._io import atomic_write_json  # noqa: E402

NAME = "tabular"
CLASSIFICATION = ("breast_cancer", "wine", "penguins")
REGRESSION = ("diabetes",)
TORCH_THREADS = 1  # one thread: on a shared, loaded machine OpenMP spin-waits cost more than they give
TEST_SIZE = 0.2
#: NPT paper, breast cancer: 10-fold CV with a 10 % test split (official scripts); see README
PAPER_NOTE = ("NPT paper (Kossen et al. 2021, arXiv 2106.02584v2, Appendix B.7), Breast Cancer: "
              "test accuracy 94.73 +- 0.69 % (Table 8, mean +- standard error over 10 CV "
              "splits), AUROC 0.997 +- 0.001 (Table 10); baselines in Table 8: random forest "
              "94.20 +- 0.70, gradient boosting 94.03 +- 0.90, XGBoost 94.91 +- 0.68, CatBoost "
              "95.61 +- 0.75, LightGBM 95.26 +- 0.82, MLP 94.73 +- 0.89, k-NN 95.26 +- 0.79, "
              "TabNet 94.91 +- 0.76. Official protocol (scripts/uci_class_reg.sh): 10 % test, "
              "20 % val, 20,000 steps, lr 5e-4, E=32, depth 8, label mask 0.1")


def classifiers(seed: int, categorical: tuple[int, ...]) -> dict:
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from attnlens.tabular import NPTClassifier, OTDummyClassifier, TabularTransformerClassifier

    return {
        "NPT": NPTClassifier(random_state=seed, categorical_features=list(categorical)),
        "OT dummy": OTDummyClassifier(random_state=seed),
        "tab. transformer": TabularTransformerClassifier(random_state=seed),
        "HistGB": HistGradientBoostingClassifier(random_state=seed),
        "random forest": RandomForestClassifier(random_state=seed),
        "logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "MLP": make_pipeline(StandardScaler(), MLPClassifier(max_iter=1000, random_state=seed)),
        "kNN": make_pipeline(StandardScaler(), KNeighborsClassifier()),
    }


def regressors(seed: int) -> dict:
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
    from sklearn.linear_model import Ridge
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from attnlens.tabular import NPTRegressor

    return {
        "NPT": NPTRegressor(random_state=seed),
        "HistGB": HistGradientBoostingRegressor(random_state=seed),
        "random forest": RandomForestRegressor(random_state=seed),
        "ridge": make_pipeline(StandardScaler(), Ridge()),
        "MLP": make_pipeline(StandardScaler(), MLPRegressor(max_iter=2000, random_state=seed)),
        "kNN": make_pipeline(StandardScaler(), KNeighborsRegressor()),
    }


def run_grid(seeds: int, quick: bool, names: tuple[str, ...]) -> dict:
    from scipy.stats import rankdata
    from sklearn.model_selection import train_test_split

    from attnlens.datasets.tabular import load_tabular

    out: dict = {}
    for name in names:
        data = load_tabular(name)
        reg = data.task == "regression"
        scores: dict[str, list[float]] = {}
        times: dict[str, list[float]] = {}
        for seed in range(seeds):
            Xtr, Xte, ytr, yte = train_test_split(data.X, data.y, test_size=TEST_SIZE,
                                                  random_state=seed,
                                                  stratify=None if reg else data.y)
            models = regressors(seed) if reg else classifiers(seed, data.categorical)
            for label, model in models.items():
                if quick and label == "NPT":
                    model.set_params(n_steps=20)
                t0 = time.perf_counter()
                model.fit(Xtr, ytr)
                times.setdefault(label, []).append(time.perf_counter() - t0)
                pred = model.predict(Xte)
                s = (float(np.sqrt(np.mean((pred - yte) ** 2))) if reg
                     else float(np.mean(pred == yte)))
                scores.setdefault(label, []).append(s)
                print(f"{name} seed {seed} {label}: {s:.4f} ({times[label][-1]:.1f}s)",
                      flush=True)
        labels = list(scores)
        S = np.array([scores[m] for m in labels])  # (models, seeds)
        ranks = np.stack([rankdata(S[:, k] if reg else -S[:, k]) for k in range(S.shape[1])], 1)
        out[name] = {
            "task": data.task, "metric": "rmse" if reg else "accuracy",
            "n_rows": int(len(data.X)), "n_features": int(data.X.shape[1]), "notes": data.notes,
            "models": {m: {"mean": float(np.mean(scores[m])), "std": float(np.std(scores[m])),
                           "per_seed": scores[m], "mean_rank": float(ranks[i].mean()),
                           "train_seconds": float(np.mean(times[m]))}
                       for i, m in enumerate(labels)},
        }
    return out


def ot_lens(quick: bool) -> dict:
    from sklearn.datasets import make_classification

    from attnlens.datasets.tabular import load_tabular
    from attnlens.tabular import OTLensCallback, TabularTransformerClassifier

    tasks = {}
    for k in (2, 3):
        X, y = make_classification(n_samples=600, n_features=10, n_informative=8,
                                   n_redundant=0, n_classes=k, n_clusters_per_class=1,
                                   class_sep=1.5, random_state=0)
        tasks[f"synthetic {k}-class"] = (X, y)
    bc = load_tabular("breast_cancer")
    tasks["breast cancer"] = (bc.X, bc.y)
    out = {}
    for name, (X, y) in tasks.items():
        cb = OTLensCallback(X, max_rows=32)
        clf = TabularTransformerClassifier(epochs=10 if quick else 60, callbacks=[cb],
                                           random_state=0)
        clf.fit(X, y)
        traj = cb.trajectory().as_dict()
        traj["train_accuracy"] = float(clf.score(X, y))
        out[name] = traj
        print(f"OT lens {name}: optimality {traj['optimality'][0]:.3f} -> "
              f"{traj['optimality'][-1]:.3f}, path efficiency {traj['path_efficiency']:.3f}",
              flush=True)
    return out


def lookup(seeds: int, quick: bool) -> dict:
    """The lookup probe (attnlens.tabular.lookup) on breast-cancer rows, one run per seed."""
    from attnlens.datasets.tabular import load_tabular
    from attnlens.tabular import lookup_probe, make_lookup_table
    from attnlens.tabular.lookup import PROBE_NPT, PROBE_TABLE, LookupNPTClassifier

    data = load_tabular("breast_cancer")
    runs = []
    for seed in range(seeds):
        table = make_lookup_table(data.X[:, : PROBE_TABLE["n_features"]],
                                  n_pairs=PROBE_TABLE["n_pairs"], n_query=PROBE_TABLE["n_query"],
                                  random_state=seed)
        cfg = dict(PROBE_NPT, n_steps=50) if quick else PROBE_NPT
        t0, c0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]
        res = lookup_probe(table, LookupNPTClassifier(random_state=seed, **cfg),
                           random_state=seed).as_dict()
        res.update(seconds=time.perf_counter() - t0, cpu_s=time.process_time() - c0,
                   load_avg_before=load0, load_avg_after=os.getloadavg()[0])
        runs.append(res)
        print(f"lookup seed {seed}: {res}", flush=True)
    params = {k: v for k, v in LookupNPTClassifier().get_params().items()
              if k in ("dim", "depth", "n_heads", "n_steps", "lr", "optimizer", "pairs_per_step",
                       "curriculum_steps", "warmup_steps")}
    return {"table": PROBE_TABLE, "npt": {**params, **PROBE_NPT}, "runs": runs}


#: the NPT settings before the speed-up (the previous defaults): attention dropout 0.1 (the
#: official value; forces the materialized attention path), all 300 steps, no validation split
NPT_BEFORE = {"attention_dropout": 0.1, "early_stopping": False}
#: torch threads for the fit-time comparison (the issue's "2 cores")
TIMING_THREADS = 2


def npt_fit_time(quick: bool, with_before: bool = False, previous: dict | None = None) -> dict:
    """NPT on breast cancer (seed-0 stratified 80/20 split) with the current defaults: wall and
    CPU seconds of ``fit`` (2 torch threads, the issue's "2 cores"), steps run, test accuracy,
    the 1-minute load average before and after. ``with_before`` also fits the settings before
    the speed-up (about 9 CPU-minutes), one after the other in the same process; without it the
    stored "before" record is carried over with its date. The machine is shared: the process CPU
    time (both threads summed) is the steadier number, the load average says how busy it was."""
    import torch
    from sklearn.model_selection import train_test_split

    from attnlens.datasets.tabular import load_tabular
    from attnlens.tabular import NPTClassifier

    torch.set_num_threads(TIMING_THREADS)
    data = load_tabular("breast_cancer")
    Xtr, Xte, ytr, yte = train_test_split(data.X, data.y, test_size=TEST_SIZE, random_state=0,
                                          stratify=data.y)
    out = {"rows": int(len(Xtr)), "columns": int(Xtr.shape[1] + 1), "threads": TIMING_THREADS,
           "load_avg_before": os.getloadavg()[0]}
    runs = (("before", NPT_BEFORE), ("after", {})) if with_before else (("after", {}),)
    for label, params in runs:
        clf = NPTClassifier(random_state=0, **params)
        if quick:
            clf.set_params(n_steps=20)
        load0 = os.getloadavg()
        t0, c0 = time.perf_counter(), time.process_time()
        clf.fit(Xtr, ytr)
        out[label] = {"params": params, "wall_s": time.perf_counter() - t0,
                      "cpu_s": time.process_time() - c0, "steps": int(clf.n_iter_),
                      "best_step": int(clf.best_step_), "test_accuracy": float(clf.score(Xte, yte)),
                      "load_avg_1_5_15_before": list(load0),
                      "load_avg_1_5_15_after": list(os.getloadavg())}
        print(f"NPT fit {label}: {out[label]}", flush=True)
    out["load_avg_after"] = os.getloadavg()[0]
    if not with_before and previous and "before" in previous:
        out["before"] = {**previous["before"], "carried_over": "an earlier run (machine_by_part "
                         "date of that run: 2026-12-05 17:25 UTC, load 2.6 -> 8.4), not re-fitted"}
    torch.set_num_threads(TORCH_THREADS)
    return out


#: the parts of an NPT fit the profile separates
PROFILE_PARTS = ("forward ABD", "forward ABA", "forward embeddings + de-embeddings",
                 "backward ABD", "backward ABA", "backward embeddings + de-embeddings",
                 "optimizer (LAMB + Lookahead)", "masking", "loss", "evaluation (validation)",
                 "other (batching, gradient clamp, schedule, checkpoint)")


def npt_profile(quick: bool) -> dict:
    """Where the time of one default NPT fit on breast cancer goes (seed-0 split, 1 torch
    thread): forward and backward of the ABD and ABA blocks (module hooks; backward through
    full-backward pre/post hooks), embeddings and de-embeddings (the network's forward/backward
    minus the blocks), the optimizer step, BERT masking, the loss, the validation passes, and
    the rest of the loop. Timers wrap the estimator's own methods; nothing in the library
    changes. Seconds are wall clock on one thread (close to CPU time on an idle core)."""
    from collections import defaultdict

    import torch
    from sklearn.model_selection import train_test_split

    from attnlens.datasets.tabular import load_tabular
    from attnlens.tabular import NPTClassifier
    from attnlens.tabular.npt import _NPTBase
    from attnlens.tabular.optim import Lookahead

    torch.set_num_threads(1)
    data = load_tabular("breast_cancer")
    Xtr, _, ytr, _ = train_test_split(data.X, data.y, test_size=TEST_SIZE, random_state=0,
                                      stratify=data.y)
    acc: dict = defaultdict(float)
    state = {"eval": False}
    marks: dict = {}

    def timed(name, fn, flag=None):
        def wrapper(*args, **kwargs):
            if flag:
                state[flag] = True
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                acc[name] += time.perf_counter() - t
                if flag:
                    state[flag] = False
        return wrapper

    def span(key, name, start):
        def hook(*_):
            if state["eval"]:
                return
            if start:
                marks[key] = time.perf_counter()
            else:
                acc[name] += time.perf_counter() - marks.pop(key)
        return hook

    orig = {"_mask": _NPTBase._mask, "_losses": _NPTBase._losses,
            "_validation_loss": _NPTBase._validation_loss, "_train": _NPTBase._train,
            "step": Lookahead.step, "backward": torch.Tensor.backward}

    def train_with_hooks(self, *args, **kwargs):
        model = self.model_
        model.register_forward_pre_hook(span("net", "forward network", True))
        model.register_forward_hook(span("net", "forward network", False))
        for i, block in enumerate(model.blocks):
            kind = "ABD" if i % 2 == 0 else "ABA"
            block.register_forward_pre_hook(span(("f", i), f"forward {kind}", True))
            block.register_forward_hook(span(("f", i), f"forward {kind}", False))
            block.register_full_backward_pre_hook(span(("b", i), f"backward {kind}", True))
            block.register_full_backward_hook(span(("b", i), f"backward {kind}", False))
        return orig["_train"](self, *args, **kwargs)

    _NPTBase._mask = staticmethod(timed("masking", orig["_mask"]))
    _NPTBase._losses = timed("loss", orig["_losses"])
    _NPTBase._validation_loss = timed("evaluation (validation)", orig["_validation_loss"], "eval")
    _NPTBase._train = train_with_hooks
    Lookahead.step = timed("optimizer (LAMB + Lookahead)", orig["step"])
    torch.Tensor.backward = timed("backward network", orig["backward"])
    try:
        clf = NPTClassifier(random_state=0, n_steps=20 if quick else 300)
        t0, c0 = time.perf_counter(), time.process_time()
        clf.fit(Xtr, ytr)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        _NPTBase._mask = staticmethod(orig["_mask"])
        for name in ("_losses", "_validation_loss", "_train"):
            setattr(_NPTBase, name, orig[name])
        Lookahead.step = orig["step"]
        torch.Tensor.backward = orig["backward"]
        torch.set_num_threads(TORCH_THREADS)
    parts = {
        "forward ABD": acc["forward ABD"], "forward ABA": acc["forward ABA"],
        "forward embeddings + de-embeddings":
            acc["forward network"] - acc["forward ABD"] - acc["forward ABA"],
        "backward ABD": acc["backward ABD"], "backward ABA": acc["backward ABA"],
        "backward embeddings + de-embeddings":
            acc["backward network"] - acc["backward ABD"] - acc["backward ABA"],
        "optimizer (LAMB + Lookahead)": acc["optimizer (LAMB + Lookahead)"],
        "masking": acc["masking"], "loss": acc["loss"],
        "evaluation (validation)": acc["evaluation (validation)"]}
    parts["other (batching, gradient clamp, schedule, checkpoint)"] = (
        clf.fit_seconds_ - sum(parts.values()))
    out = {"rows": int(len(Xtr)), "columns": int(Xtr.shape[1] + 1), "threads": 1,
           "steps": int(clf.n_iter_), "evaluations": len(clf.validation_loss_curve_),
           "fit_wall_s": wall, "fit_cpu_s": cpu, "load_avg_1_5_15": list(os.getloadavg()),
           "seconds": {k: parts[k] for k in PROFILE_PARTS},
           "share": {k: parts[k] / clf.fit_seconds_ for k in PROFILE_PARTS}}
    print(f"NPT profile: {out}", flush=True)
    return out


def npt_timing(steps: int = 5) -> dict:
    """Split NPT's training step on breast cancer (80 % of the rows) by block type."""
    from sklearn.model_selection import train_test_split

    from attnlens.datasets.tabular import load_tabular
    from attnlens.tabular import NPTClassifier

    data = load_tabular("breast_cancer")
    Xtr, _, ytr, _ = train_test_split(data.X, data.y, test_size=TEST_SIZE, random_state=0,
                                      stratify=data.y)
    clf = NPTClassifier(n_steps=steps, early_stopping=False, random_state=0)
    acc = {"abd": 0.0, "aba": 0.0}
    marks: dict = {}

    def pre(kind):
        def hook(module, args):
            marks[id(module)] = time.perf_counter()
        return hook

    def post(kind):
        def hook(module, args, output):
            acc[kind] += time.perf_counter() - marks[id(module)]
        return hook

    t0 = time.perf_counter()
    clf.fit(Xtr, ytr)  # builds the model (not timed per block: hooks attach after)
    for i, block in enumerate(clf.model_.blocks):
        kind = "abd" if i % 2 == 0 else "aba"
        block.register_forward_pre_hook(pre(kind))
        block.register_forward_hook(post(kind))
    acc.update(abd=0.0, aba=0.0)
    model = clf.model_
    model.train()
    params = list(model.parameters())
    cols = None
    from attnlens.tabular._encoding import column_tensors

    Z = clf.encoder_.codes(Xtr, "bench")
    cols = column_tensors(Z, clf.encoder_.is_cat, clf.encoder_.out_dims)
    cols.append(clf._target_column(clf.t_train_))
    fwd = bwd = 0.0
    for _ in range(steps):
        t = time.perf_counter()
        out = model(cols)
        loss = sum(o.pow(2).mean() for o in out)
        t1 = time.perf_counter()
        loss.backward()
        for p in params:
            p.grad = None
        fwd += t1 - t
        bwd += time.perf_counter() - t1
    return {"rows": int(len(Xtr)), "columns": int(Xtr.shape[1] + 1),
            "params": int(sum(p.numel() for p in params)),
            "warm_fit_seconds": time.perf_counter() - t0,
            "per_step_forward_s": fwd / steps, "per_step_backward_s": bwd / steps,
            "forward_abd_s": acc["abd"] / steps, "forward_aba_s": acc["aba"] / steps}


def plot(result: dict, path) -> None:
    import matplotlib.pyplot as plt

    lens = result.get("ot_lens")
    if lens:
        fig, axes = plt.subplots(1, 3, figsize=(14, 4))
        for name, traj in lens.items():
            axes[0].plot(traj["epochs"], traj["optimality"], label=name)
            axes[1].plot(traj["epochs"], traj["monge_gap"], label=name)
            axes[2].plot(traj["epochs"], traj["wasserstein"], label=name)
        axes[0].set_title("optimality W / cost of the SA map")
        axes[1].set_title("Monge gap")
        axes[2].set_title("W_2^2(tokens, SA output)")
        for ax in axes:
            ax.set_xlabel("epoch")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
    grid = result.get("grid")
    if not grid:
        return
    fig, axes = plt.subplots(1, len(grid), figsize=(4 * len(grid), 4))
    for ax, (name, res) in zip(np.atleast_1d(axes), grid.items(), strict=False):
        labels = list(res["models"])
        means = [res["models"][m]["mean"] for m in labels]
        stds = [res["models"][m]["std"] for m in labels]
        ax.barh(labels, means, xerr=stds)
        ax.set_title(f"{name} ({res['metric']})", fontsize=9)
        if res["metric"] == "accuracy":
            ax.set_xlim(min(means) - 0.05, 1.0)
    fig.tight_layout()
    fig.savefig(str(path).replace(".png", "_grid.png"), dpi=110)
    plt.close(fig)


PARTS = ("ot_lens", "npt_fit_time", "npt_profile", "npt_timing", "grid", "lookup")


def main(argv: list[str]) -> int:
    import json

    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--parts", default="ot_lens,npt_fit_time,npt_timing,grid",
                        help=f"comma list of {PARTS}; parts not run keep their stored result")
    parser.add_argument("--datasets", default=",".join(CLASSIFICATION + REGRESSION),
                        help="comma list of the grid's datasets")
    parser.add_argument("--with-before", action="store_true",
                        help="npt_fit_time: also fit the settings before the speed-up (~9 CPU-min)")
    args = parser.parse_args(argv)
    torch.set_num_threads(TORCH_THREADS)
    warnings.filterwarnings("ignore", category=UserWarning)
    seeds = 1 if args.quick else args.seeds
    out_dir = RESULTS if not args.quick else RESULTS.parent / "results_quick"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"{NAME}.json"

    def stored_part(part: str):
        return json.loads(path.read_text()).get(part) if path.exists() else None

    def save(part: str, value) -> None:  # re-read before writing: parts may run in parallel
        stored = json.loads(path.read_text()) if path.exists() else {}
        stored.update({"benchmark": NAME, "paper": PAPER_NOTE, part: value})
        stored.setdefault("machine_by_part", {})[part] = machine()
        if part == "grid":
            stored["seeds"] = seeds
        atomic_write_json(path, stored)

    runners = {"ot_lens": lambda: ot_lens(args.quick),
               "npt_fit_time": lambda: npt_fit_time(args.quick, args.with_before, stored_part(
                   "npt_fit_time")),
               "npt_profile": lambda: npt_profile(args.quick),
               "npt_timing": npt_timing,
               "grid": lambda: run_grid(seeds, args.quick, tuple(args.datasets.split(","))),
               "lookup": lambda: lookup(seeds, args.quick)}
    for part in args.parts.split(","):
        save(part, runners[part]())
    plot(json.loads(path.read_text()), out_dir / f"{NAME}.png")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
