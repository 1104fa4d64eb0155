"""PrimalAttention: shapes, masks, causality, KSVD stationarity, gradcheck, bad input."""

import pytest
import torch
import torch.nn.functional as F

from attnlens.kernel import (
    PrimalAttention,
    kernel_svd,
    ksvd_loss,
    primal_attention,
    primal_scores,
)
from attnlens.kernel.ksvd import ksvd_objective_dual
from attnlens.kernel.primal import KSVDTerms, ksvd_objective, sample_indices


def _layer(seed=0, **kw):
    torch.manual_seed(seed)
    opts = dict(rank=3, rank_multi=2)
    opts.update(kw)
    return PrimalAttention(8, 2, **opts).double()


def test_shapes_and_terms():
    layer = _layer()
    x = torch.randn(3, 7, 8, dtype=torch.float64)
    y, t = layer(x, return_terms=True)
    assert y.shape == (3, 7, 8)
    assert t.e_sq.shape == (3, 2, 3) and t.we.shape == (3, 2, 4, 3)
    assert layer.ksvd_objective(t).shape == (3,)
    torch.testing.assert_close(layer(x), y)  # the plain call returns the same output
    assert not hasattr(layer, "last_terms")  # no per-batch state on the module


def test_padding_does_not_change_real_tokens():
    layer = _layer(rank=2, rank_multi=2)  # n = 4 sampled tokens
    x = torch.randn(1, 6, 8, dtype=torch.float64)
    ref, t_ref = layer(x, return_terms=True)
    j_ref = layer.ksvd_objective(t_ref)
    pad = torch.cat([x, 100 * torch.randn(1, 5, 8, dtype=torch.float64)], dim=1)
    mask = torch.tensor([[True] * 6 + [False] * 5])
    out, t_pad = layer(pad, mask, return_terms=True)
    torch.testing.assert_close(out[:, :6], ref)
    torch.testing.assert_close(layer.ksvd_objective(t_pad), j_ref)
    # padding in front of the sequence as well
    pad2 = torch.cat([torch.randn(1, 2, 8, dtype=torch.float64), x], dim=1)
    mask2 = torch.tensor([[False, False] + [True] * 6])
    torch.testing.assert_close(layer(pad2, mask2)[:, 2:], ref)


def test_short_sequence_uses_all_tokens():
    idx, w = sample_indices(torch.tensor([[True, True, True, False, False]]), 4)
    assert idx[0, :3].tolist() == [0, 1, 2] and w[0].tolist() == [1, 1, 1, 0]
    idx, w = sample_indices(torch.ones(1, 10, dtype=torch.bool), 4)
    assert idx[0].tolist() == [0, 3, 6, 9] and w[0].tolist() == [1, 1, 1, 1]
    layer = _layer(rank=3, rank_multi=10)  # n = 30 > N
    assert layer(torch.randn(2, 5, 8, dtype=torch.float64)).shape == (2, 5, 8)


def test_causal_outputs_ignore_later_tokens():
    layer = _layer(causal=True, data_dependent=False)
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    y = layer(x)
    x2 = x.clone()
    x2[:, 5:] = torch.randn(2, 4, 8, dtype=torch.float64)
    y2 = layer(x2)
    torch.testing.assert_close(y[:, :5], y2[:, :5])
    assert not torch.allclose(y[:, 5:], y2[:, 5:])
    # prefix means computed independently: token t from the mean of tokens <= t, and the
    # whole layer written out with them
    y, terms = layer(x, return_terms=True)
    q = layer.q_proj(x).view(2, 9, 2, 4).transpose(1, 2)  # (B, H, N, p)
    k = layer.k_proj(x).view(2, 9, 2, 4).transpose(1, 2)
    qm = torch.stack([q[:, :, : t + 1].mean(2) for t in range(9)], dim=2)
    km = torch.stack([k[:, :, : t + 1].mean(2) for t in range(9)], dim=2)
    e_ref = F.normalize(qm, dim=-1) @ layer.we.unsqueeze(0)  # (B, H, N, s)
    r_ref = F.normalize(km, dim=-1) @ layer.wr.unsqueeze(0)
    heads = layer.concat(torch.cat([e_ref, r_ref], dim=-1))  # (B, H, N, p)
    y_ref = layer.out_proj(heads.transpose(1, 2).reshape(2, 9, 8))
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(terms.e_sq, (e_ref**2).sum(2))
    torch.testing.assert_close(terms.r_sq, (r_ref**2).sum(2))


def test_stationary_point_j_zero_and_primal_equals_dual():
    torch.manual_seed(1)
    n, p, s = 6, 5, 3
    q, k = torch.randn(1, n, 1, p, dtype=torch.float64), torch.randn(1, n, 1, p, dtype=torch.float64)
    fq, fk = F.normalize(q[0, :, 0], dim=-1), F.normalize(k[0, :, 0], dim=-1)
    svd = kernel_svd(fq, fk, s)
    # dual side, computed with numpy's SVD as an independent path
    import numpy as np

    u, sig, vt = np.linalg.svd(fq.numpy() @ fk.numpy().T)
    np.testing.assert_allclose(svd.singular_values.numpy(), sig[:s], rtol=1e-10)
    w_c = torch.randn(4, 2 * s, dtype=torch.float64)
    out, e_sq, r_sq = primal_attention(q, k, svd.we[None], svd.wr[None], w_c)
    e, r = primal_scores(q, k, svd.we[None], svd.wr[None])
    torch.testing.assert_close(e_sq, (e**2).sum(1))
    torch.testing.assert_close(out, F.linear(torch.cat([e, r], dim=-1), w_c))
    # primal scores equal the dual scores sigma * singular vectors (up to sign per direction)
    np.testing.assert_allclose(np.abs(e[0, :, 0].numpy()), np.abs(u[:, :s] * sig[:s]), atol=1e-10)
    np.testing.assert_allclose(np.abs(r[0, :, 0].numpy()), np.abs(vt[:s].T * sig[:s]), atol=1e-10)
    terms = KSVDTerms.from_scores(e, r, svd.we[None, None], svd.wr[None, None], svd.we[None],
                                  svd.wr[None], svd.lam[None], torch.ones(1, n, dtype=torch.bool))
    j = ksvd_objective(terms, "sum")
    assert abs(float(j)) < 1e-10
    assert abs(float(ksvd_objective_dual(svd))) < 1e-10
    # away from the stationary point J != 0
    terms.lam = 2 * terms.lam
    assert abs(float(ksvd_objective(terms, "sum"))) > 1e-3


def test_module_at_stationary_point():
    """The module (dual-consistent weights, n = N) has J = 0 at W_e = H_r, W_r = H_e."""
    layer = _layer(rank=2, rank_multi=4, weight_source="features")  # n = 8 = N
    x = torch.randn(1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        layer(x)
        q = layer.q_proj(x).view(1, 8, 2, 4).transpose(1, 2)  # (B, H, N, p)
        k = layer.k_proj(x).view(1, 8, 2, 4).transpose(1, 2)
        for h in range(2):
            svd = kernel_svd(F.normalize(q[0, h], dim=-1), F.normalize(k[0, h], dim=-1), 2)
            layer.we[h] = svd.right
            layer.wr[h] = svd.left
            layer.lam[h] = svd.lam
        _, terms = layer(x, return_terms=True)
    assert abs(float(layer.ksvd_objective(terms, "sum").detach())) < 1e-9
    assert float(ksvd_loss(terms).detach()) < 1e-15


def test_eta_zero_equals_plain_forward():
    layer = _layer()
    x = torch.randn(2, 7, 8, dtype=torch.float64)
    y = torch.randn(2, 7, 8, dtype=torch.float64)
    plain = F.mse_loss(layer(x), y)
    g_plain = torch.autograd.grad(plain, list(layer.parameters()), allow_unused=True)
    out, terms = layer(x, return_terms=True)
    total = F.mse_loss(out, y) + 0.0 * ksvd_loss(terms)
    g_total = torch.autograd.grad(total, list(layer.parameters()), allow_unused=True)
    assert torch.equal(plain, total)
    for a, b in zip(g_plain, g_total, strict=True):
        if a is None:
            assert b is None or torch.count_nonzero(b) == 0
        else:
            torch.testing.assert_close(a, b)


def test_ksvd_loss_forms():
    layer = _layer()
    x = torch.randn(2, 7, 8, dtype=torch.float64)
    _, t = layer(x, return_terms=True)
    # the scores, written out from the projections (the module keeps only their token sums)
    q = F.normalize(layer.q_proj(x).view(2, 7, 2, 4), dim=-1)  # (B, N, H, p)
    k = F.normalize(layer.k_proj(x).view(2, 7, 2, 4), dim=-1)
    e = torch.stack([q[:, :, h] @ t.we[:, h] for h in range(2)], dim=2)  # (B, N, H, s)
    r = torch.stack([k[:, :, h] @ t.wr[:, h] for h in range(2)], dim=2)
    # sum form, written out token by token
    j = torch.zeros(2, dtype=torch.float64)
    for b in range(2):
        for h in range(2):
            for i in range(7):
                j[b] += 0.5 * (e[b, i, h] ** 2 * t.lam[h]).sum()
                j[b] += 0.5 * (r[b, i, h] ** 2 * t.lam[h]).sum()
            j[b] -= torch.trace(t.we[b, h].T @ t.wr[b, h])
    torch.testing.assert_close(layer.ksvd_objective(t, "sum"), j)
    torch.testing.assert_close(ksvd_loss(t, "sum"), (j**2).mean())
    # the official LRA/DeiT aggregation squares the batch mean of J instead
    torch.testing.assert_close(ksvd_loss(t, "sum", aggregate="batch_mean"), j.mean() ** 2)
    torch.testing.assert_close(ksvd_loss([t, t], "sum"), 2 * (j**2).mean())  # sum over layers
    # mean form (reference code): Lambda^2, means over heads and tokens, parameter trace
    lam_d = torch.diag_embed(t.lam)  # (H, s, s)
    qe = ((e.unsqueeze(-2) @ lam_d).norm(dim=-1) ** 2).mean(dim=(1, 2, 3)) / 2
    qr = ((r.unsqueeze(-2) @ lam_d).norm(dim=-1) ** 2).mean(dim=(1, 2, 3)) / 2
    tr = torch.einsum("hps,hpd->hsd", t.we_param, t.wr_param).mean(0).trace()
    torch.testing.assert_close(layer.ksvd_objective(t, "mean"), qe + qr - tr)
    jm = qe + qr - tr
    torch.testing.assert_close(ksvd_loss([t, t], "mean", aggregate="batch_mean"),
                               jm.mean() ** 2)  # averaged over layers in the mean form


def test_gradcheck_float64():
    layer = _layer(rank=2, rank_multi=2)
    x = torch.randn(1, 5, 8, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, True, True, False]])

    def fn(inp):
        out, terms = layer(inp, mask, return_terms=True)
        return out.sum() + layer.ksvd_objective(terms).sum()

    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-5)
    causal = _layer(rank=2, causal=True, data_dependent=False)
    assert torch.autograd.gradcheck(lambda inp: causal(inp), (x,), eps=1e-6, atol=1e-5)


def test_deterministic():
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    a, b = _layer(seed=3)(x), _layer(seed=3)(x)
    assert torch.equal(a, b)


def test_fp32_under_autocast():
    torch.manual_seed(0)
    layer = PrimalAttention(8, 2, 3)
    x = torch.randn(2, 6, 8)
    ref = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, terms = layer(x.bfloat16(), return_terms=True)
    assert out.dtype == torch.float32 and terms.e_sq.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=0.1, rtol=0.1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(dim=10, heads=4, rank=2), r"heads must be a divisor of dim=10; got 4"),
        (dict(dim=8, heads=2, rank=0), "rank must be an int >= 1"),
        (dict(dim=8, heads=2, rank=2, causal=True), "data_dependent=False"),
        (dict(dim=8, heads=2, rank=2, weight_source="keys"), "weight_source"),
    ],
)
def test_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PrimalAttention(**kwargs)


def test_bad_input():
    layer = _layer()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="x must be finite; got NaN or inf"):
        layer(torch.full((2, 5, 8), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match=r"mask must be of shape \(batch, tokens\) = \(2, 5\)"):
        layer(x, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must have a real token in every sequence"):
        layer(x, torch.tensor([[True] * 5, [False] * 5]))
    with pytest.raises(ValueError, match="last dimension"):
        layer(torch.randn(2, 5, 6, dtype=torch.float64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        layer(x.numpy())
    with pytest.raises(ValueError, match="ksvd_loss: terms must be"):
        ksvd_loss(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="ksvd_loss: terms must be"):
        ksvd_loss([])
    _, terms = layer(x, return_terms=True)
    with pytest.raises(ValueError, match="aggregate must be one of"):
        ksvd_loss(terms, aggregate="batch")
    with pytest.raises(ValueError, match="terms must be the KSVDTerms"):
        layer.ksvd_objective(None)


def test_factory_arguments_place_and_type_the_parameters():
    layer = PrimalAttention(8, 2, 3, dtype=torch.float64, device="cpu")
    assert {p.dtype for p in layer.parameters()} == {torch.float64}
    assert {p.device.type for p in layer.parameters()} == {"cpu"}
    out = layer(torch.randn(2, 5, 8, dtype=torch.float64))
    assert out.dtype == torch.float64
    torch.manual_seed(0)
    a = PrimalAttention(8, 2, 3, dtype=torch.float32, device="cpu")
    torch.manual_seed(0)
    b = PrimalAttention(8, 2, 3)  # the factory path draws the same initial values
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_forward_does_not_sync_the_host_on_an_accelerator(monkeypatch):
    """On a non-CPU device the input checks are queued (torch._assert_async), not waited for.

    Simulated on the CPU by treating tensors as if they lived on a device: the checks must go
    through ``_assert_async`` and never read a value on the host (bool/float/int/item).
    """
    from attnlens.kernel import primal

    calls = []
    monkeypatch.setattr(primal, "_on_host", lambda t: False)
    monkeypatch.setattr(torch, "_assert_async", lambda cond, msg: calls.append(msg))
    layer = _layer()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    mask = torch.ones(2, 5, dtype=torch.bool)
    with monkeypatch.context() as m:
        for reader in ("__bool__", "__float__", "__int__", "item", "tolist"):
            m.setattr(torch.Tensor, reader,
                      lambda self, *a, _r=reader: pytest.fail(f"host sync ({_r}) in forward"))
        out = layer(x, mask)
    assert out.shape == (2, 5, 8) and len(calls) == 2  # finiteness of x, non-empty mask rows
