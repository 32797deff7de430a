"""Log-probabilities (and entropies) of chosen tokens from logits, without full-vocabulary fp32 tensors for the batch.

PPO only needs ``log softmax(logits / T)`` at the sampled token of every position (and, for a metric, the entropy).
Upcasting the ``(B, L, V)`` logits to float32, dividing by T and taking ``log_softmax`` would make three more
``(B, L, V)`` float32 tensors (SmolLM2: V = 49,152, so 32 x 25 positions take 157 MB each) and keep them for the
backward pass. Here the rows are processed in chunks: each chunk is upcast, reduced to its ``logsumexp`` and its
chosen logit, and dropped; under autograd each chunk is recomputed in the backward pass (activation checkpointing)
instead of being kept, so the only full-vocabulary tensor alive is the model's own (bf16 under autocast) logits.

    log p(y_t) = z_t[y_t] / T - logsumexp(z_t / T)
    H_t        = logsumexp(z_t / T) - sum_v softmax(z_t / T)_v * z_t[v] / T
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from ..core.rollout import position_ids

__all__ = ["token_logprobs", "last_positions", "forward_last", "DEFAULT_CHUNK_ROWS"]

#: Rows (positions) per chunk: 64 x 49,152 float32 = 12.6 MB per temporary.
DEFAULT_CHUNK_ROWS = 64


def last_positions(length: int, k: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The indices ``length - k .. length - 1``, for transformers' ``logits_to_keep`` (the LM head on the last ``k``
    positions only).

    Passed as this index tensor rather than the int ``k``: transformers then gathers ``hidden[:, idx]``, a contiguous
    ``(B, k, d)`` tensor, before the LM head, where the int takes a strided slice of ``(B, L, d)``. For a strided 3-D
    bf16 input, torch's matmul (2.13, CPU) cannot fold the batch into one matrix product: it expands the ``(V, d)``
    head to ``(B, d, V)``, copies it and runs a batched product — SmolLM2's 49,152 x 576 head, 32 rows: a 1.8 GB
    copy and ~14x the time, also in the backward pass. Same logits either way.
    """
    return torch.arange(length - k, length, device=device)


def forward_last(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int, **kwargs: Any) -> Any:
    """``model(...)`` on left-padded ``(B, L)`` tokens with the LM head on the last ``k`` positions only (``logits``
    ``(B, k, V)``, asked for by :func:`last_positions`) and position ids counted from each row's first real token;
    ``kwargs`` go to the model (e.g. ``use_cache``)."""
    keep = last_positions(input_ids.shape[1], k, input_ids.device)
    return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                 logits_to_keep=keep, **kwargs)


def _chunk(logits: torch.Tensor, targets: torch.Tensor, temperature: float, with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor]:
    z = logits.float() / temperature  # (n, V)
    lse = torch.logsumexp(z, dim=-1)  # (n,)
    chosen = z.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse  # (n,)
    if not with_entropy:
        return chosen, torch.zeros_like(chosen)
    entropy = lse - (torch.softmax(z, dim=-1) * z).sum(-1)  # (n,)
    return chosen, entropy


def token_logprobs(
    logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(logprobs, entropy)`` ``(B, L)`` float32 of ``targets`` ``(B, L)`` under ``softmax(logits / T)``, ``logits``
    ``(B, L, V)`` in any float dtype; ``entropy`` is None unless ``with_entropy``. Chunks of ``chunk_rows`` positions;
    differentiable (each chunk recomputed in backward when gradients are needed)."""
    b, length, vocab = logits.shape
    flat_logits, flat_targets = logits.reshape(-1, vocab), targets.reshape(-1)
    out_lp, out_h = [], []
    needs_grad = torch.is_grad_enabled() and logits.requires_grad
    for start in range(0, flat_logits.shape[0], chunk_rows):
        part = (flat_logits[start : start + chunk_rows], flat_targets[start : start + chunk_rows], temperature, with_entropy)
        lp, h = checkpoint(_chunk, *part, use_reentrant=False) if needs_grad else _chunk(*part)
        out_lp.append(lp)
        out_h.append(h)
    logprobs = torch.cat(out_lp).reshape(b, length)
    return logprobs, (torch.cat(out_h).reshape(b, length) if with_entropy else None)
