"""Log-probabilities (and entropies) of chosen tokens from logits, without full-vocabulary fp32 tensors for the batch.

PPO only needs ``log softmax(logits / T)`` at the sampled token of every position (and, for a metric, the entropy).
Upcasting the ``(B, L, V)`` logits to float32, dividing by T and taking ``log_softmax`` would make three more
``(B, L, V)`` float32 tensors (SmolLM2: V = 49,152, so 32 x 25 positions take 157 MB each) and keep them for the
backward pass. Here the rows are processed in chunks: each chunk is upcast, reduced to its ``logsumexp`` and its
chosen logit, and dropped; under autograd the backward recomputes each chunk's softmax from the saved ``logsumexp``
(:class:`_ChosenLogprob`) instead of keeping it, so the only full-vocabulary tensor alive is the model's own (bf16
under autocast) logits and their gradient.

    log p(y_t) = z_t[y_t] / T - logsumexp(z_t / T)
    H_t        = logsumexp(z_t / T) - sum_v softmax(z_t / T)_v * z_t[v] / T
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.rollout import position_ids
from .attention import attention_mask_for
from .wrappers import mask_configs, reject_virtual_input_tokens

__all__ = ["token_logprobs", "last_positions", "forward_last", "DEFAULT_CHUNK_ROWS"]

#: Rows (positions) per chunk: 64 x 49,152 float32 = 12.6 MB per temporary.
DEFAULT_CHUNK_ROWS = 64


def last_positions(length: int, k: int, device: torch.device | str | None = None, skip_last: int = 0) -> torch.Tensor:
    """The indices ``length - skip_last - k .. length - skip_last - 1`` (``k`` positions, the last ``skip_last`` left
    out), for transformers' ``logits_to_keep`` (the LM head on those positions only).

    Passed as this index tensor rather than the int ``k``: transformers then gathers ``hidden[:, idx]``, a contiguous
    ``(B, k, d)`` tensor, before the LM head, where the int takes a strided slice of ``(B, L, d)``. For a strided 3-D
    bf16 input, torch's matmul (2.13, CPU) cannot fold the batch into one matrix product: it expands the ``(V, d)``
    head to ``(B, d, V)``, copies it and runs a batched product — SmolLM2's 49,152 x 576 head, 32 rows: a 1.8 GB
    copy and ~14x the time, also in the backward pass. Same logits either way. ``skip_last=1`` keeps exactly the
    positions that predict a response's tokens, so the logits need no slicing (whose backward would zero-fill a
    gradient of the full ``(B, k + 1, V)`` shape).
    """
    end = length - skip_last
    return torch.arange(end - k, end, device=device)


def forward_last(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int, skip_last: int = 0, **kwargs: Any
) -> Any:
    """``model(...)`` on left-padded ``(B, L)`` tokens with the LM head on ``k`` positions only — the last ones, or
    those before the last ``skip_last`` (``logits`` ``(B, k, V)``, asked for by :func:`last_positions`) — and position
    ids counted from each row's first real token; ``kwargs`` go to the model (e.g. ``use_cache``). Under SDPA the
    padding becomes a mask without empty rows (:func:`hf_prefs.models.attention.attention_mask_for`). A model with
    virtual tokens before its input (PEFT prompt tuning) is refused
    (:func:`~hf_prefs.models.wrappers.reject_virtual_input_tokens`)."""
    reject_virtual_input_tokens(model)
    keep = last_positions(input_ids.shape[1], k, input_ids.device, skip_last)
    mask = attention_mask_for(mask_configs(model), attention_mask)
    return model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids(attention_mask),
                 logits_to_keep=keep, **kwargs)


def _chunk(logits: torch.Tensor, targets: torch.Tensor, temperature: float, with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(log p(target), logsumexp(z), entropy or None)`` of one chunk of rows, ``z = logits / T`` in float32; one
    float32 ``(n, V)`` copy and one exponential, shared by the log-sum-exp and the entropy."""
    z = logits.to(torch.float32, copy=True).mul_(1.0 / temperature)  # (n, V), a fresh float32 copy (never the input)
    top = z.amax(dim=-1, keepdim=True)  # (n, 1)
    e = (z - top).exp_()  # (n, V)
    total = e.sum(-1)  # (n,)
    lse = top.squeeze(-1) + total.log()  # (n,)
    chosen = z.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse  # (n,)
    entropy = lse - (e.mul_(z)).sum(-1) / total if with_entropy else None  # H = lse - E_p[z]
    return chosen, lse, entropy


class _ChosenLogprob(torch.autograd.Function):
    """``log softmax(logits / T)[target]`` over ``(n, V)`` rows, chunk by chunk, with its own backward:

        d log p(y) / d logits_v = (1[v = y] - softmax(logits / T)_v) / T

    recomputed per chunk from the saved ``logsumexp`` (one exp, no second reduction) and written into one gradient
    tensor of the logits' shape and dtype: no float32 ``(n, V)`` tensor outlives its chunk, and nothing is zero-filled
    or concatenated (autograd through slices of the logits would zero-fill a full-size gradient per chunk). The
    entropy (a metric) is returned without a gradient."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor, temperature: float, chunk_rows: int,
                with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor]:
        n = logits.shape[0]
        logprobs = logits.new_empty(n, dtype=torch.float32)
        lse = torch.empty_like(logprobs)
        entropy = torch.empty_like(logprobs) if with_entropy else logprobs.new_empty(0)
        for start in range(0, n, chunk_rows):
            end = min(start + chunk_rows, n)
            lp, chunk_lse, h = _chunk(logits[start:end], targets[start:end], temperature, with_entropy)
            logprobs[start:end], lse[start:end] = lp, chunk_lse
            if h is not None:
                entropy[start:end] = h
        ctx.save_for_backward(logits, targets, lse)
        ctx.temperature, ctx.chunk_rows = temperature, chunk_rows
        ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    def backward(ctx: Any, grad_logprobs: torch.Tensor, _grad_entropy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        logits, targets, lse = ctx.saved_tensors
        t = ctx.temperature
        grad = torch.empty_like(logits)
        for start in range(0, logits.shape[0], ctx.chunk_rows):
            end = min(start + ctx.chunk_rows, logits.shape[0])
            g = grad_logprobs[start:end].float().unsqueeze(-1).div(t)  # (n, 1): dL/dlogp / T
            # float32 logits: the gradient's own rows are the workspace; others: a float32 copy, cast on the way out
            work = grad[start:end].copy_(logits[start:end]) if logits.dtype == torch.float32 else logits[start:end].float()
            work.mul_(1.0 / t).sub_(lse[start:end].unsqueeze(-1)).exp_()  # softmax(z)
            work.mul_(-g).scatter_add_(-1, targets[start:end].unsqueeze(-1), g)  # (1[v = y] - p) * g / T
            if work.data_ptr() != grad[start:end].data_ptr():
                grad[start:end] = work
        return grad, None, None, None, None


def token_logprobs(
    logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(logprobs, entropy)`` ``(B, L)`` float32 of ``targets`` ``(B, L)`` under ``softmax(logits / T)``, ``logits``
    ``(B, L, V)`` in any float dtype; ``entropy`` is None unless ``with_entropy`` (never differentiated: a metric).
    Chunks of ``chunk_rows`` positions; differentiable in ``logits`` (:class:`_ChosenLogprob`'s chunked backward)."""
    b, length, vocab = logits.shape
    flat_logits, flat_targets = logits.reshape(-1, vocab), targets.reshape(-1)
    if torch.is_grad_enabled() and logits.requires_grad:
        logprobs, entropy = _ChosenLogprob.apply(flat_logits, flat_targets, temperature, chunk_rows, with_entropy)
        return logprobs.reshape(b, length), (entropy.reshape(b, length) if with_entropy else None)
    out_lp, out_h = [], []
    for start in range(0, flat_logits.shape[0], chunk_rows):
        lp, _, h = _chunk(flat_logits[start : start + chunk_rows], flat_targets[start : start + chunk_rows], temperature,
                          with_entropy)
        out_lp.append(lp)
        out_h.append(h)
    logprobs = torch.cat(out_lp).reshape(b, length)
    return logprobs, (torch.cat(out_h).reshape(b, length) if with_entropy else None)
