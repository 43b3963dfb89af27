"""Recurrent Neural Tangent Kernel and RNN-NNGP kernels for GPyTorch and BoTorch."""

from .functional import recurrent_kernel, recurrent_kernel_diag
from .gram import gram_matrix
from .kernels import RNNGPKernel, RNTKKernel
from .layout import decode_sequences, decode_tokens, encode_sequences, encode_tokens

__version__ = "0.1.0"

__all__ = [
    "RNNGPKernel",
    "RNTKKernel",
    "decode_sequences",
    "decode_tokens",
    "encode_sequences",
    "encode_tokens",
    "gram_matrix",
    "recurrent_kernel",
    "recurrent_kernel_diag",
]
