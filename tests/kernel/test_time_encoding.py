"""Bochner / Mercer time encoders: the exposed kernel equals the features' inner product."""

import pytest
import torch

from attnlens.kernel.time_encoding import BochnerTimeEncoder, MercerTimeEncoder

ENCODERS = [
    lambda: BochnerTimeEncoder(6, "free"),
    lambda: BochnerTimeEncoder(6, "gaussian"),
    lambda: BochnerTimeEncoder(6, "inverse_cdf"),
    lambda: MercerTimeEncoder((2.0, 5.0), harmonics=3),
]


@pytest.mark.parametrize("make", ENCODERS)
def test_kernel_is_feature_inner_product_and_shift_invariant(make):
    torch.manual_seed(0)
    enc = make().double()
    t = 10 * torch.rand(7, dtype=torch.float64)
    dt = 3 * torch.rand(7, dtype=torch.float64)
    inner = (enc(t + dt) * enc(t)).sum(-1)
    torch.testing.assert_close(inner, enc.kernel(dt))
    inner2 = (enc(t + 5.0 + dt) * enc(t + 5.0)).sum(-1)
    torch.testing.assert_close(inner, inner2)
    assert enc(torch.zeros(2, 3, dtype=torch.float64)).shape[:2] == (2, 3)


def test_bochner_kernel_closed_form():
    enc = BochnerTimeEncoder(4, "free").double()
    w = enc.frequencies().detach()
    dt = torch.tensor([0.0, 0.3, 2.0], dtype=torch.float64)
    ref = torch.stack([torch.cos(w * d).mean() for d in dt])
    torch.testing.assert_close(enc.kernel(dt).detach(), ref)
    assert float(enc.kernel(torch.zeros((), dtype=torch.float64)).detach()) == pytest.approx(1.0)


def test_mercer_coefficients_nonnegative_and_periodic():
    enc = MercerTimeEncoder((4.0,), harmonics=2).double()
    with torch.no_grad():
        enc.raw_c.copy_(torch.tensor([[-1.0, 0.5, 2.0]]))
    assert bool((enc.coefficients() >= 0).all())
    dt = torch.tensor([0.7], dtype=torch.float64)
    torch.testing.assert_close(enc.kernel(dt), enc.kernel(dt + 4.0))


def test_bad_input():
    with pytest.raises(ValueError, match="method"):
        BochnerTimeEncoder(4, "laplace")
    with pytest.raises(ValueError, match="dim"):
        BochnerTimeEncoder(0)
    with pytest.raises(ValueError, match="periods"):
        MercerTimeEncoder((1.0, -2.0))
    with pytest.raises(ValueError, match="NaN"):
        BochnerTimeEncoder(2)(torch.tensor([float("nan")]))
