"""attnlens.kernel: Primal-Attention (asymmetric kernel SVD, linear in N) and the kernel lens.

Chen, Tao, Tonin, Suykens, NeurIPS 2023 (arXiv 2305.19798); Xu et al., NeurIPS 2019.
"""

from attnlens.kernel.ksvd import KernelSVD, asymmetric_kernel, kernel_svd
from attnlens.kernel.losses import ksvd_loss, primal_layers
from attnlens.kernel.models import PrimalFormer, PrimalPlusTransformer, Transformer
from attnlens.kernel.primal import (
    KSVDTerms,
    PrimalAttention,
    cosine_kernel_matrix,
    ksvd_objective,
    primal_attention,
    primal_scores,
)
from attnlens.kernel.spectrum import Spectrum, attention_spectrum
from attnlens.kernel.time_encoding import BochnerTimeEncoder, MercerTimeEncoder

__all__ = [
    "BochnerTimeEncoder",
    "KSVDTerms",
    "KernelSVD",
    "MercerTimeEncoder",
    "PrimalAttention",
    "PrimalFormer",
    "PrimalPlusTransformer",
    "Spectrum",
    "Transformer",
    "asymmetric_kernel",
    "attention_spectrum",
    "cosine_kernel_matrix",
    "kernel_svd",
    "ksvd_loss",
    "ksvd_objective",
    "primal_attention",
    "primal_layers",
    "primal_scores",
]
