r"""Non-Parametric Transformers as scikit-learn estimators: :class:`NPTClassifier`,
:class:`NPTRegressor`.

Kossen, Band, Lyle, Gomez, Rainforth, Gal, "Self-Attention Between Datapoints: Going Beyond
Individual Input-Output Pairs in Deep Learning", NeurIPS 2021 (arXiv 2106.02584); official code
OATML/non-parametric-transformers (read for the settings below).

Training objective (per step, on a batch of training rows, the target as one more column): each
feature entry is selected with probability ``feature_mask_prob`` and each target with
``target_mask_prob``; of the selected entries 90 % are zeroed and flagged by the mask bit, 10 %
get a random value without the flag (BERT-style); the loss is
:math:`\lambda_t\,\mathcal L_{features} + (1-\lambda_t)\,\mathcal L_{targets}` over the selected
entries (MSE on standardized numbers, cross-entropy on categories), with :math:`\lambda_t`
annealed from ``tradeoff`` to 0 by a half cosine over the run. Prediction: the whole training
table with its targets visible and the query rows with masked targets, in one forward pass
(rows are processed in batches of at most ``batch_size`` rows: a random subset of the training
rows stays in context when the table is larger).

Settings against the official breast-cancer run (scripts/uci_class_reg.sh): same LAMB + Lookahead
(k=6, alpha=0.5), flat-then-cosine learning rate (flat half), element-wise gradient clipping at
1, 8 heads, feature mask 0.15, tradeoff 1 annealed by cosine, dropout 0.1 on hidden units, and
the best checkpoint on a validation split (the official code keeps it over all steps; here
training also stops early: a random ``validation_fraction`` of
the training rows is held out of the training steps, its masked-target loss is evaluated every
``eval_every`` steps with the other rows in context, training stops after ``n_iter_no_change``
evaluations without improvement and the best weights are restored; the held-out rows stay in
the context at prediction time).
Different here, for a 2-core CPU budget: embedding width ``dim=16`` (official 32), ``depth=4``
(2 ABD + 2 ABA; official 8), at most ``n_steps=300`` (official 20,000) at lr 5e-3 (official 5e-4;
LAMB steps are relative to the weight norm, fewer steps need a larger rate),
``attention_dropout=0`` (official 0.1: dropout on the attention weights forces torch to form
the attention maps, (N, h, 31, 31) per ABA block on breast cancer, and costs a third of the
step; without it ``scaled_dot_product_attention`` runs its fused kernel),
``target_mask_prob=0.5`` (official ``configs.py`` default 1.0, no training label ever visible;
the official breast-cancer run masks 10 % of the training labels; 0.5 is the official choice
on Boston, concrete, kick, poker-hand and forest-cover), fused Q/K/V projection (the same
function class), and proper 10 % BERT randomization (the official ``1 - int(0.9 n)`` slice randomizes about 10 % + 1 entries). Early stopping needs at least
``MIN_VALIDATION_ROWS`` rows on both sides of the split; smaller tables train all ``n_steps``.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from attnlens._validation import (
    Boolean,
    Integral,
    Interval,
    Options,
    ParamsValidatedMixin,
    RandomState,
    Real,
    raise_invalid,
)
from attnlens.errors import MemoryBudgetError
from attnlens.tabular._checks import (
    check_class_labels,
    check_regression_target,
    check_X_finite,
)
from attnlens.tabular._encoding import TableEncoder, column_tensors
from attnlens.tabular.npt_model import RFF_EXPANSION, NPTNet
from attnlens.tabular.optim import Lamb, Lookahead, cosine_tradeoff, flat_and_anneal

logger = logging.getLogger(__name__)

#: share of selected entries that are zeroed and flagged (the rest are randomized), BERT's 0.9
BERT_MASK_SHARE = 0.9
#: bytes per float32
FLOAT_BYTES = 4
#: parameter copies held during training: weights, gradients, two LAMB moments, Lookahead slow
PARAM_COPIES = 5
#: activations kept per ABD block and row, in units of the row width D*E (q,k,v,mix,res,LN,rFF)
ACTIVATIONS_PER_ROW = 12 + 2 * RFF_EXPANSION
#: early stopping needs at least this many rows in both the training and the validation part
MIN_VALIDATION_ROWS = 20


def estimate_memory_bytes(n_rows: int, n_columns: int, dim: int, depth: int,
                          n_heads: int) -> int:
    """Rough training memory of NPT: parameters (x5 copies), activations, attention maps."""
    W = n_columns * dim
    n_abd, n_aba = (depth + 1) // 2, depth // 2
    per_block = (5 + 2 * RFF_EXPANSION) * W * W
    params = n_abd * per_block + n_aba * (5 + 2 * RFF_EXPANSION) * dim * dim
    acts = (n_abd + n_aba) * n_rows * W * ACTIVATIONS_PER_ROW
    att = n_abd * n_heads * n_rows * n_rows + n_aba * n_heads * n_rows * n_columns**2
    return int(FLOAT_BYTES * (PARAM_COPIES * params + 2 * (acts + att)))


class _NPTBase(ParamsValidatedMixin, BaseEstimator):
    """Shared fit/predict machinery; subclasses define the target column."""

    _parameter_constraints = {
        "dim": [Interval(Integral, 1, None)],
        "depth": [Interval(Integral, 2, None)],
        "n_heads": [Interval(Integral, 1, None)],
        "n_steps": [Interval(Integral, 1, None)],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 2, None)],
        "feature_mask_prob": [Interval(Real, 0, 1, closed="left")],
        "target_mask_prob": [Interval(Real, 0, 1, closed="right")],
        "tradeoff": [Interval(Real, 0, 1)],
        "flat_fraction": [Interval(Real, 0, 1)],
        "optimizer": [Options("lamb_lookahead", "adamw")],
        "lookahead_k": [Interval(Integral, 1, None)],
        "lookahead_alpha": [Interval(Real, 0, 1)],
        "clip": [None, Interval(Real, 0, None, closed="neither")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "attention_dropout": [Interval(Real, 0, 1, closed="left")],
        "early_stopping": [Boolean()],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None)],
        "eval_every": [Interval(Integral, 1, None)],
        "categorical_features": [None, list, tuple],
        "memory_budget_gb": [Interval(Real, 0, None, closed="neither")],
        "random_state": [RandomState()],
        "verbose": [Boolean()],
    }

    def __init__(self, dim=16, depth=4, n_heads=8, n_steps=300, lr=5e-3, batch_size=1024,
                 feature_mask_prob=0.15, target_mask_prob=0.5, tradeoff=1.0, flat_fraction=0.5,
                 optimizer="lamb_lookahead", lookahead_k=6, lookahead_alpha=0.5, clip=1.0,
                 dropout=0.1, attention_dropout=0.0, early_stopping=True,
                 validation_fraction=0.1, n_iter_no_change=5, eval_every=10,
                 categorical_features=None, memory_budget_gb=4.0, random_state=None,
                 verbose=False):
        self.dim = dim
        self.depth = depth
        self.n_heads = n_heads
        self.n_steps = n_steps
        self.lr = lr
        self.batch_size = batch_size
        self.feature_mask_prob = feature_mask_prob
        self.target_mask_prob = target_mask_prob
        self.tradeoff = tradeoff
        self.flat_fraction = flat_fraction
        self.optimizer = optimizer
        self.lookahead_k = lookahead_k
        self.lookahead_alpha = lookahead_alpha
        self.clip = clip
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.eval_every = eval_every
        self.categorical_features = categorical_features
        self.memory_budget_gb = memory_budget_gb
        self.random_state = random_state
        self.verbose = verbose

    # -- target column (subclasses) ------------------------------------------------------------
    def _fit_target(self, y, X):  # -> (codes or standardized values, out_dim)
        raise NotImplementedError

    def _step_targets(self, rows: torch.Tensor, targets: torch.Tensor,
                      gen: torch.Generator) -> torch.Tensor:
        """The targets of one training step (identity; a probe may redraw them per step, as the
        official protein-duplicate mode rebuilds its batch at every step)."""
        return targets

    # -- helpers ----------------------------------------------------------------------------
    def _seed(self) -> int:
        rs = self.random_state
        if isinstance(rs, np.random.Generator):
            return int(rs.integers(0, 2**31 - 1))
        return int(np.random.SeedSequence(rs).generate_state(1)[0]) if rs is None else int(rs)

    def _target_column(self, t: np.ndarray) -> torch.Tensor:
        if self._is_classifier:
            c = torch.zeros(len(t), self.target_dim_ + 1)
            c[torch.arange(len(t)), torch.as_tensor(t, dtype=torch.long)] = 1.0
            return c
        return torch.stack([torch.as_tensor(t, dtype=torch.float32), torch.zeros(len(t))], 1)

    def _check_memory(self, n_rows: int, n_columns: int) -> None:
        need = estimate_memory_bytes(n_rows, n_columns, self.dim, self.depth, self.n_heads)
        budget = float(self.memory_budget_gb) * 2**30
        if need > budget:
            raise MemoryBudgetError(
                f"{type(self).__name__}: training needs about {need / 2**30:.2f} GiB for "
                f"{n_rows} rows per batch x {n_columns} columns (row width {n_columns * self.dim}"
                f", depth {self.depth}) but memory_budget_gb={self.memory_budget_gb}. ABD weights "
                f"grow with (columns x dim)^2 and attention with rows^2: lower dim, reduce the "
                f"attributes (feature selection or PCA), lower batch_size, or raise "
                f"memory_budget_gb if the machine has the memory.")

    @staticmethod
    def _mask(cols: list[torch.Tensor], select: torch.Tensor, is_cat: list[bool],
              gen: torch.Generator) -> list[torch.Tensor]:
        """BERT-style masking of the entries ``select`` (n, len(cols)); returns new columns."""
        out = []
        rand = torch.rand(select.shape, generator=gen) >= BERT_MASK_SHARE
        for j, c in enumerate(cols):
            sel = select[:, j]
            if not sel.any():
                out.append(c)
                continue
            c = c.clone()
            flag, rnd = sel & ~rand[:, j], sel & rand[:, j]
            c[sel] = 0.0
            c[flag, -1] = 1.0
            if rnd.any():
                if is_cat[j]:
                    k = torch.randint(0, c.shape[1] - 1, (int(rnd.sum()),), generator=gen)
                    c[rnd.nonzero()[:, 0], k] = 1.0
                else:
                    c[rnd, 0] = torch.randn(int(rnd.sum()), generator=gen)
            out.append(c)
        return out

    def _losses(self, outs, cols_true, targets, select, n_feat):
        """Mean feature loss over selected feature entries, mean target loss over selected rows."""
        feat_terms, n_sel = [], 0
        for j in range(n_feat):
            sel = select[:, j]
            if not sel.any():
                continue
            n_sel += int(sel.sum())
            if self.encoder_.is_cat[j]:
                tgt = cols_true[j][sel, :-1].argmax(1)
                feat_terms.append(torch.nn.functional.cross_entropy(
                    outs[j][sel], tgt, reduction="sum"))
            else:
                feat_terms.append(((outs[j][sel, 0] - cols_true[j][sel, 0]) ** 2).sum())
        feat = torch.stack(feat_terms).sum() / n_sel if feat_terms else torch.zeros(())
        sel = select[:, n_feat]
        if self._is_classifier:
            lab = torch.nn.functional.cross_entropy(outs[n_feat][sel], targets[sel])
        else:
            lab = ((outs[n_feat][sel, 0] - targets[sel]) ** 2).mean()
        return feat, lab

    # -- fit ------------------------------------------------------------------------------------
    def fit(self, X, y):
        self._check_params()
        caller = type(self).__name__
        X = check_X_finite(X, caller)
        t, out_dim = self._fit_target(y, X)
        n, d = X.shape
        if self.dim * (d + 1) % self.n_heads or self.dim % self.n_heads:
            raise_invalid("n_heads", f"a divisor of dim={self.dim}", self.n_heads,
                          "Pick n_heads dividing dim (the ABA width).", caller)
        rows = min(n, self.batch_size)
        self._check_memory(rows, d + 1)
        cats = tuple(int(j) for j in (self.categorical_features or ()))
        self.encoder_ = TableEncoder(categorical=cats).fit(X, caller)
        self.n_features_in_ = d
        self.target_dim_ = out_dim
        is_cat = self.encoder_.is_cat + [self._is_classifier]
        seed = self._seed()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            self.model_ = NPTNet(self.encoder_.in_dims + [out_dim + 1],
                                 self.encoder_.out_dims + [out_dim], is_cat, self.dim,
                                 self.depth, self.n_heads, self.dropout,
                                 self.attention_dropout)
            self._train(X, t, is_cat, gen)
        self.X_train_ = X
        self.t_train_ = t
        return self

    def _split_validation(self, n: int, gen: torch.Generator):
        """(training rows, validation rows or None): a random ``validation_fraction`` of the rows
        when early stopping is on and both parts keep at least ``MIN_VALIDATION_ROWS`` rows."""
        n_val = int(round(float(self.validation_fraction) * n))
        if not self.early_stopping or min(n_val, n - n_val) < MIN_VALIDATION_ROWS:
            return torch.arange(n), None
        perm = torch.randperm(n, generator=gen)
        return perm[n_val:].sort().values, perm[:n_val].sort().values

    def _validation_loss(self, ctx_cols, val_cols, val_targets, gen) -> float:
        """Target loss on the validation rows (targets masked), training rows in context."""
        out = self._query_outputs(ctx_cols, val_cols, gen)  # (n_val, out)
        if self._is_classifier:
            return float(torch.nn.functional.cross_entropy(out, val_targets))
        return float(((out[:, 0] - val_targets) ** 2).mean())

    def _optimizers(self):
        """(optimizer the scheduler drives, optimizer that steps): AdamW, or LAMB wrapped in
        Lookahead as in the official code."""
        params = list(self.model_.parameters())
        if self.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=self.lr)
            return opt, opt
        opt = Lamb(params, lr=self.lr)
        return opt, Lookahead(opt, k=self.lookahead_k, alpha=self.lookahead_alpha)

    def _train(self, X, t, is_cat, gen) -> None:
        model = self.model_
        params = list(model.parameters())
        opt, step_opt = self._optimizers()
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: flat_and_anneal(s, self.n_steps, self.flat_fraction))
        Z = self.encoder_.codes(X, type(self).__name__)
        n, d = X.shape
        cols_all = column_tensors(Z, self.encoder_.is_cat, self.encoder_.out_dims)
        cols_all.append(self._target_column(t))
        targets_all = torch.as_tensor(t, dtype=torch.long if self._is_classifier
                                      else torch.float32)
        train_rows, val_rows = self._split_validation(n, gen)
        self.validation_rows_ = None if val_rows is None else val_rows.numpy()
        if val_rows is not None:
            ctx_cols = [c[train_rows] for c in cols_all]
            val_cols = [c[val_rows] for c in cols_all[:-1]] + [
                self._masked_target_column(len(val_rows), cols_all[-1].shape[1])]
            val_targets = targets_all[val_rows]
        n_train = len(train_rows)
        probs = torch.tensor([self.feature_mask_prob] * d + [self.target_mask_prob])
        model.train()
        self.loss_curve_, self.validation_loss_curve_ = [], []
        best, best_state, since_best = np.inf, None, 0
        self.best_step_ = self.n_steps
        start = time.perf_counter()
        step = 0
        for step in tqdm(range(self.n_steps), disable=not self.verbose, desc="NPT fit"):
            idx = train_rows[torch.randperm(n_train, generator=gen)[: self.batch_size]
                             if n_train > self.batch_size else slice(None)]
            cols = [c[idx] for c in cols_all]
            targets = self._step_targets(idx, targets_all[idx], gen)
            if targets is not targets_all:
                cols[-1] = self._target_column(targets.numpy())
            rows = cols[0].shape[0]
            select = torch.rand(rows, d + 1, generator=gen) < probs
            if not select[:, d].any():  # at least one target to predict
                select[torch.randint(0, rows, (1,), generator=gen), d] = True
            inputs = self._mask(cols, select, is_cat, gen)
            outs = model(inputs)
            feat, lab = self._losses(outs, cols, targets, select, d)
            lam = cosine_tradeoff(step, self.n_steps, float(self.tradeoff))
            loss = lam * feat + (1 - lam) * lab
            step_opt.zero_grad()
            loss.backward()
            if self.clip is not None:  # official: element-wise clamp of every gradient
                for p in params:
                    if p.grad is not None:
                        p.grad.clamp_(-self.clip, self.clip)
            step_opt.step()
            sched.step()
            self.loss_curve_.append(float(lab.detach()))
            if val_rows is not None and ((step + 1) % self.eval_every == 0
                                         or step + 1 == self.n_steps):
                v = self._validation_loss(ctx_cols, val_cols, val_targets, gen)
                model.train()
                self.validation_loss_curve_.append(v)
                if v < best:
                    best, since_best, self.best_step_ = v, 0, step + 1
                    best_state = {k: x.detach().clone() for k, x in model.state_dict().items()}
                else:
                    since_best += 1
                    if since_best >= self.n_iter_no_change:
                        break
        if best_state is not None:  # the official code also keeps the best checkpoint on val
            model.load_state_dict(best_state)
        self.fit_seconds_ = time.perf_counter() - start
        self.n_iter_ = step + 1
        logger.info("NPT fit: %d steps (best %d) in %.1fs", self.n_iter_, self.best_step_,
                    self.fit_seconds_)

    @staticmethod
    def _masked_target_column(n: int, width: int) -> torch.Tensor:
        """Target column of query rows: zeros with the mask bit set."""
        c = torch.zeros(n, width)
        c[:, -1] = 1.0
        return c

    def _query_outputs(self, ctx_cols, q_cols, gen) -> torch.Tensor:
        """Target-column outputs (n_query, out) of the query rows, context rows visible.

        At most ``batch_size`` rows per forward pass: queries in chunks; a random subset of the
        context rows when the context does not fit beside a chunk.
        """
        n_ctx, bs = ctx_cols[0].shape[0], int(self.batch_size)
        n_q = q_cols[0].shape[0]
        chunk = max(bs - n_ctx, bs // 4, 1)
        outs = []
        self.model_.eval()
        with torch.no_grad():
            for s in range(0, n_q, chunk):
                q = [c[s:s + chunk] for c in q_cols]
                room = bs - q[0].shape[0]
                ctx = ctx_cols
                if n_ctx > room:  # bounded memory: a random subset of the context rows
                    keep = torch.randperm(n_ctx, generator=gen)[:max(room, 1)]
                    ctx = [c[keep] for c in ctx_cols]
                cols = [torch.cat([a, b]) for a, b in zip(ctx, q, strict=True)]
                outs.append(self.model_(cols)[-1][-q[0].shape[0]:])
        return torch.cat(outs)

    # -- predict --------------------------------------------------------------------------------
    def _context_table(self) -> tuple[np.ndarray, np.ndarray]:
        """The labelled rows kept in context at prediction (the whole training table)."""
        return self.X_train_, self.t_train_

    def _forward_queries(self, X, context=None) -> np.ndarray:
        """Raw outputs of the target column for query rows, training rows (+ ``context``) visible.

        context: optional (X_ctx, y_ctx) labelled rows added to the training rows at inference.
        """
        check_is_fitted(self, "model_")
        caller = type(self).__name__
        X = check_X_finite(X, caller, n_features=self.n_features_in_)
        Xc, tc = self._context_table()
        if context is not None:
            X_extra = check_X_finite(context[0], caller, n_features=self.n_features_in_)
            t_extra, _ = self._encode_target(context[1], X_extra)
            Xc, tc = np.vstack([Xc, X_extra]), np.concatenate([tc, t_extra])
        Zc = self.encoder_.codes(Xc, caller)
        Zq = self.encoder_.codes(X, caller)
        is_cat = self.encoder_.is_cat
        ctx_cols = column_tensors(Zc, is_cat, self.encoder_.out_dims) + [self._target_column(tc)]
        q_cols = column_tensors(Zq, is_cat, self.encoder_.out_dims)
        q_cols.append(self._masked_target_column(len(X), ctx_cols[-1].shape[1]))
        gen = torch.Generator().manual_seed(self._seed())
        out = self._query_outputs(ctx_cols, q_cols, gen)
        return out.numpy().astype(np.float64)


class NPTClassifier(ClassifierMixin, _NPTBase):
    """Non-Parametric Transformer classifier (see the module docstring).

    Parameters: dim (embedding width E per attribute), depth (number of blocks, ABD and ABA
    alternating, ABD first), n_heads, n_steps (optimizer steps), lr, batch_size (rows per
    forward pass, training and inference), feature_mask_prob, target_mask_prob, tradeoff
    (initial weight of the feature loss), flat_fraction (share of steps at constant lr),
    optimizer ("lamb_lookahead" or "adamw"), lookahead_k, lookahead_alpha, clip (element-wise
    gradient clamp or None), dropout (hidden units), attention_dropout (attention weights),
    early_stopping, validation_fraction, n_iter_no_change (evaluations without improvement),
    eval_every (steps between validation evaluations), categorical_features (column indices),
    memory_budget_gb, random_state, verbose.

    Fitted attributes: ``classes_``, ``model_`` (the torch network), ``encoder_``,
    ``loss_curve_`` (target loss per step), ``validation_loss_curve_`` (per evaluation),
    ``validation_rows_`` (held-out row indices or None), ``best_step_``, ``n_iter_`` (steps
    run), ``fit_seconds_``, ``n_features_in_``.
    ``predict(X, context=(X_ctx, y_ctx))`` adds labelled rows to the context.
    """

    _is_classifier = True

    def _fit_target(self, y, X):
        classes, codes = check_class_labels(y, X, type(self).__name__)
        self.classes_ = classes
        return codes, len(classes)

    def _encode_target(self, y, X):
        y = np.asarray(y).ravel()
        if len(y) != len(X):
            raise_invalid("context", "a pair (X_ctx, y_ctx) of equal lengths",
                          f"got {len(X)} rows and {len(y)} labels", "Pass one label per row.",
                          type(self).__name__)
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        if np.any(self.classes_[idx] != y):
            raise_invalid("context", "labels among classes_", y, "Use the labels of fit.",
                          type(self).__name__)
        return idx, len(self.classes_)

    def predict_proba(self, X, context=None) -> np.ndarray:
        logits = self._forward_queries(X, context)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X, context=None) -> np.ndarray:
        out = self._forward_queries(X, context)  # checks fitted before classes_ is read
        return self.classes_[np.argmax(out, axis=1)]


class NPTRegressor(RegressorMixin, _NPTBase):
    """Non-Parametric Transformer regressor (parameters as :class:`NPTClassifier`).

    The target is standardized with the training mean/std; predictions are mapped back.
    """

    _is_classifier = False

    def _fit_target(self, y, X):
        y = check_regression_target(y, X, type(self).__name__)
        self.y_mean_ = float(y.mean())
        std = float(y.std())
        self.y_std_ = std if std > 0 else 1.0
        return (y - self.y_mean_) / self.y_std_, 1

    def _encode_target(self, y, X):
        y = check_regression_target(y, X, type(self).__name__)
        return (y - self.y_mean_) / self.y_std_, 1

    def predict(self, X, context=None) -> np.ndarray:
        out = self._forward_queries(X, context)[:, 0]
        return out * self.y_std_ + self.y_mean_
