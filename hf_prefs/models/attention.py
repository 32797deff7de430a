"""Which scaled-dot-product-attention kernel a differentiated forward uses on CPU.

PyTorch picks its flash-attention kernel for CPU inputs. For the short sequences of CPU-sized PPO (queries of 24-64
tokens + 24-token responses) its backward is slow: measured on a 2-core AMD EPYC (bf16, 4 rows x 9 heads x 64 dims,
padding mask), forward + backward took 6.5 ms with flash attention and 2.9 ms with the math backend (plain matmuls
and softmax, differentiated by autograd) at 72 tokens, 20.6 vs 20.0 ms at 256 tokens and 78.7 vs 121.3 ms at 512;
forward alone, flash attention is the faster one at every length. Both agree with a float32 reference to the same
bf16 rounding. So a forward that will be differentiated, on CPU, over at most :data:`MATH_ATTENTION_MAX_LENGTH`
tokens runs under the math backend; everything else keeps PyTorch's choice.

Left-padded rows (PPO's ``query + response``) also get their own SDPA mask (:func:`attention_mask_for`): in the mask
transformers builds from a 2D padding mask, a leading pad token's query row allows no key at all. PyTorch's math
kernel returns zeros there, but a kernel that does not (a fused CUDA kernel's backward reads a log-sum-exp of -inf
on such a row) gives NaN, and 0 x NaN carries it into every gradient. Here each pad token attends to itself: the
real tokens' rows are unchanged (they never see a pad key), and no row is empty.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["MATH_ATTENTION_MAX_LENGTH", "training_attention", "causal_mask_without_empty_rows", "attention_mask_for"]

#: Longest sequence (tokens) whose differentiated CPU forward uses the math backend (measured crossover ~256).
MATH_ATTENTION_MAX_LENGTH = 128


def training_attention(device: torch.device | str, length: int) -> AbstractContextManager:
    """The context for a forward over ``length`` tokens that will be differentiated on ``device``: SDPA's math
    backend on CPU up to :data:`MATH_ATTENTION_MAX_LENGTH` tokens, else no change."""
    if torch.device(device).type == "cpu" and length <= MATH_ATTENTION_MAX_LENGTH:
        return sdpa_kernel([SDPBackend.MATH])
    return nullcontext()


def causal_mask_without_empty_rows(attention_mask: torch.Tensor) -> torch.Tensor:
    """SDPA's boolean mask ``(B, 1, L, L)`` for rows with padding mask ``attention_mask`` ``(B, L)`` (1 = token):

        allowed[b, i, j] = (j <= i and attention_mask[b, j] = 1) or j = i

    the causal padding mask transformers builds, plus the diagonal, so a pad token attends to itself and no query
    row is empty. A real token's row is the same as without the diagonal (it never attends to a pad token)."""
    width = attention_mask.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=attention_mask.device).tril()  # (L, L): j <= i
    allowed = causal & attention_mask.bool()[:, None, :]  # (B, L, L)
    allowed |= torch.eye(width, dtype=torch.bool, device=attention_mask.device)
    return allowed[:, None]  # (B, 1, L, L)


def attention_mask_for(implementations: Iterable[str | None], attention_mask: torch.Tensor) -> torch.Tensor:
    """The mask to pass for padding mask ``attention_mask`` ``(B, L)`` to a model whose forward runs through the
    attention ``implementations``: :func:`causal_mask_without_empty_rows` if all of them are ``sdpa`` and some
    row starts with padding (where an empty row would appear), else ``attention_mask`` itself (eager attention adds
    a finite minimum and has no empty row; flash-attention and other kernels take the 2D mask; without leading
    padding transformers skips the mask for SDPA's causal flag)."""
    if set(implementations) != {"sdpa"} or bool(attention_mask[:, 0].all()):
        return attention_mask
    return causal_mask_without_empty_rows(attention_mask)
