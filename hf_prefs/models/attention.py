"""Which scaled-dot-product-attention kernel a differentiated forward uses on CPU.

PyTorch picks its flash-attention kernel for CPU inputs. For the short sequences of CPU-sized PPO (queries of 24-64
tokens + 24-token responses) its backward is slow: measured on a 2-core AMD EPYC (bf16, 4 rows x 9 heads x 64 dims,
padding mask), forward + backward took 6.5 ms with flash attention and 2.9 ms with the math backend (plain matmuls
and softmax, differentiated by autograd) at 72 tokens, 20.6 vs 20.0 ms at 256 tokens and 78.7 vs 121.3 ms at 512;
forward alone, flash attention is the faster one at every length. Both agree with a float32 reference to the same
bf16 rounding. So a forward that will be differentiated, on CPU, over at most :data:`MATH_ATTENTION_MAX_LENGTH`
tokens runs under the math backend; everything else keeps PyTorch's choice.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["MATH_ATTENTION_MAX_LENGTH", "training_attention"]

#: Longest sequence (tokens) whose differentiated CPU forward uses the math backend (measured crossover ~256).
MATH_ATTENTION_MAX_LENGTH = 128


def training_attention(device: torch.device | str, length: int) -> AbstractContextManager:
    """The context for a forward over ``length`` tokens that will be differentiated on ``device``: SDPA's math
    backend on CPU up to :data:`MATH_ATTENTION_MAX_LENGTH` tokens, else no change."""
    if torch.device(device).type == "cpu" and length <= MATH_ATTENTION_MAX_LENGTH:
        return sdpa_kernel([SDPBackend.MATH])
    return nullcontext()
