"""The fused Primal-Attention core (custom autograd Function) against plain autograd."""

import pytest
import torch
import torch.nn.functional as F

from attnlens.kernel import primal_attention, primal_scores
from attnlens.kernel._primal_core import PrimalCore
from attnlens.kernel.primal import _primal_core, head_output_maps


def _inputs(b=2, n=6, h=2, p=3, s=2, p_out=4, wb=1, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()

    return (rnd(b, n, h, p), rnd(b, n, h, p), rnd(wb, h, p, s), rnd(wb, h, p, s),
            rnd(p_out, 2 * s), rnd(p_out))


def _mask(b, n):
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[0, n - 2:] = False  # padding at the back
    mask[-1, 0] = False  # and in front
    return mask


def _reference(q, k, we, wr, wc, bc, mask, causal):
    """Written out with loops and F.normalize: a path independent of the fused core."""
    if causal:  # mean of the real tokens <= t, token by token
        m = torch.ones(q.shape[:2], dtype=q.dtype) if mask is None else mask.to(q.dtype)

        def pm(x):
            rows = [(x[:, : t + 1] * m[:, : t + 1, None, None]).sum(1)
                    / m[:, : t + 1].sum(1).clamp_min(1)[:, None, None]
                    for t in range(x.shape[1])]
            return torch.stack(rows, dim=1)

        q, k = pm(q), pm(k)
    we = we.expand(q.shape[0], -1, -1, -1)
    wr = wr.expand(q.shape[0], -1, -1, -1)
    fq, fk = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    e = torch.stack([fq[:, :, h] @ we[:, h] for h in range(q.shape[2])], dim=2)  # (B,N,H,s)
    r = torch.stack([fk[:, :, h] @ wr[:, h] for h in range(q.shape[2])], dim=2)
    if mask is not None:
        e = e * mask[:, :, None, None]
        r = r * mask[:, :, None, None]
    out = F.linear(torch.cat([e, r], dim=-1), wc, bc)
    return out, (e**2).sum(1), (r**2).sum(1)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("wb", "save"), [(1, True), (2, True), (2, False)])
def test_fused_equals_reference_values_and_gradients(masked, causal, wb, save):
    args = _inputs(wb=wb, seed=wb + 2 * causal + 4 * masked)
    mask = _mask(2, 6) if masked else None
    got = primal_attention(*args, mask=mask, causal=causal, save_scores=save)
    ref = _reference(*args, mask, causal)
    g = torch.Generator().manual_seed(9)
    cot = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in ref]
    g_got = torch.autograd.grad(got, args, cot)
    g_ref = torch.autograd.grad(ref, args, cot)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(g_got, g_ref, strict=True):
        torch.testing.assert_close(a, b)
    if masked:  # padded tokens: zero output (bias aside) and zero gradient
        q_grad = g_got[0]
        assert torch.count_nonzero(q_grad[0, -2:]) == 0 and torch.count_nonzero(q_grad[1, 0]) == 0


def test_scores_agree_with_fused_statistics():
    q, k, we, wr, wc, bc = _inputs()
    mask = _mask(2, 6)
    e, r = primal_scores(q, k, we, wr, mask=mask)
    out, e_sq, r_sq = primal_attention(q, k, we, wr, wc, bc, mask=mask)
    torch.testing.assert_close(e_sq, (e**2).sum(1))
    torch.testing.assert_close(r_sq, (r**2).sum(1))
    torch.testing.assert_close(out, F.linear(torch.cat([e, r], -1), wc, bc))


@pytest.mark.parametrize(("masked", "causal", "wb", "save"),
                         [(True, False, 2, True), (True, True, 1, True), (False, True, 2, True),
                          (True, False, 2, False), (True, True, 1, False)])
def test_gradcheck_core_float64(masked, causal, wb, save):
    args = _inputs(b=2, n=5, wb=wb, seed=3)
    mask = _mask(2, 5) if masked else None

    def fn(*a):
        return primal_attention(*a, mask=mask, causal=causal, save_scores=save)

    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6)
    # one output at a time: the backward with the other gradients absent (None)
    assert torch.autograd.gradcheck(lambda *a: fn(*a)[0], args, eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(lambda *a: fn(*a)[1:], args, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("save", [True, False])
def test_saved_tensors_and_retained_graph(save):
    q, k, we, wr, wc, bc = _inputs(b=1, n=50, h=2, p=3, s=4)
    out, e_sq, _ = primal_attention(q, k, we, wr, wc, bc, save_scores=save)
    node = out.grad_fn
    while getattr(type(node), "_forward_cls", None) is not PrimalCore:  # past the view
        node = node.next_functions[0][0]
    big = sorted(tuple(t.shape) for t in node.saved_tensors if t.numel() >= 50 * 2 * 3)
    # q and k, plus the (1, 50, 2, 4) scores e and r only when they are saved
    assert big == [(1, 50, 2, 3)] * 2 + ([(1, 50, 2, 4)] * 2 if save else [])
    loss = out.square().sum() + e_sq.sum()
    first = torch.autograd.grad(loss, (q, we), retain_graph=True)
    second = torch.autograd.grad(loss, (q, we))  # saved scores were not modified in place
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b)


def test_output_projection_folded_into_maps():
    """The module path: [e; r] map composed with W_o equals the per-head outputs then W_o."""
    q, k, we, wr, wc, bc = _inputs(b=2, n=6, h=2, p=3, s=2, p_out=4, wb=2, seed=5)
    g = torch.Generator().manual_seed(6)
    wo = torch.randn(5, 8, generator=g, dtype=torch.float64, requires_grad=True)  # (D, H p_out)
    bo = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    mask = _mask(2, 6)
    heads, e_sq, _ = primal_attention(q, k, we, wr, wc, bc, mask=mask)
    ref = F.linear(heads.reshape(2, 6, 8), wo, bo)
    m_e, m_r, bias = head_output_maps(wc, bc, 2, wo, bo)
    y, e_sq2, _ = _primal_core(q, k, we, wr, m_e, m_r, bias, mask, False)
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(e_sq2, e_sq)
    params = (q, k, we, wr, wc, bc, wo, bo)
    cot = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(y, params, cot), torch.autograd.grad(ref, params, cot),
                    strict=True):
        torch.testing.assert_close(a, b)


def test_bad_weight_shapes():
    q, k, we, wr, wc, bc = _inputs()
    with pytest.raises(ValueError, match="we must have shape"):
        primal_attention(q, k, we[:, :, :2], wr, wc, bc)
    with pytest.raises(ValueError, match="batch size 1 or 2"):
        primal_attention(q, k, we.expand(3, -1, -1, -1), wr, wc, bc)
    with pytest.raises(ValueError, match="w_concat must have shape"):
        primal_attention(q, k, we, wr, wc[:, :3], bc)
