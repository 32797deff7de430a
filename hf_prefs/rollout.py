"""Sampling and the paper's rollout rules.

- Sampling is fixed-length: exactly ``response_length`` tokens drawn from softmax(logits / T) with no top-k,
  no top-p and no stop at EOS (an EOS token may be sampled and generation goes on).
- Truncation: a response is cut after the first ``truncate_token`` at index >= ``truncate_after``; what follows
  is replaced by padding. Only the reward model sees the truncated text.
- Penalty: a response with no truncate token at index >= ``truncate_after`` has its score *replaced* by
  ``penalty_reward_value`` (paper: -1).

Shapes: B = batch, Lq = query length (left padded), Lr = response length.
"""

from __future__ import annotations

import torch

__all__ = [
    "sample_categorical",
    "sample_responses",
    "response_logprobs",
    "truncate_responses",
    "apply_truncation_penalty",
    "truncated_lengths",
    "left_pad",
]


def left_pad(sequences: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token-id lists to ``(B, L)`` ids and a 0/1 attention mask."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        if s:
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = 1
    return ids, mask


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on the first real token of a left-padded row."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def sample_categorical(logits: torch.Tensor, temperature: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row from softmax(logits / T), by inverse CDF: ``u ~ U(0, 1)``, the first index whose cumulative
    probability exceeds ``u``. Exact categorical sampling with one random number per row (``torch.multinomial``
    spends most of its time drawing over the whole vocabulary).

    Args:
        logits: ``(B, V)``. Returns: ``(B, 1)`` token ids. Raises ``RuntimeError`` on NaN/inf logits.
    """
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # (B, V); -inf logits give probability 0
    if not torch.isfinite(probs).all():  # NaN or +inf logits (the same message as torch.multinomial's)
        raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
    cdf = probs.cumsum(-1)
    u = torch.rand((logits.shape[0], 1), generator=generator, device=logits.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_(max=logits.shape[-1] - 1)


@torch.no_grad()
def sample_responses(
    model: torch.nn.Module,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    response_length: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    num_samples: int = 1,
) -> torch.Tensor:
    """Draw exactly ``response_length`` tokens per row from softmax(logits / T), with a KV cache.

    Args:
        model: a causal LM (``model(input_ids, attention_mask, position_ids, past_key_values, use_cache)``
            returning ``.logits`` and ``.past_key_values``); PEFT models work too.
        query_ids, query_mask: ``(B, Lq)`` left-padded queries and their mask.
        num_samples: n responses per query. Each query is encoded once and its KV cache repeated n times, the same
            draws as sampling from n copies of each query (rows ``b·n + j``) at a fraction of the prefill cost.
    Returns:
        ``(B·n, Lr)`` sampled token ids. No early stop: EOS is an ordinary token here.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    mask = query_mask
    # Only the last position's logits are needed from the prefill (logits_to_keep skips the rest of the LM head).
    out = model(input_ids=query_ids, attention_mask=mask, position_ids=_positions(mask), use_cache=True, logits_to_keep=1)
    if num_samples > 1:
        if out.past_key_values is not None:  # None: a model without a cache (test doubles)
            out.past_key_values.batch_repeat_interleave(num_samples)
        out.logits = out.logits.repeat_interleave(num_samples, dim=0)
        mask = mask.repeat_interleave(num_samples, dim=0)
    tokens = []
    for step in range(response_length):
        nxt = sample_categorical(out.logits[:, -1, :], temperature, generator)  # (B, 1)
        tokens.append(nxt)
        if step == response_length - 1:
            break
        mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
        pos = _positions(mask)[:, -1:]
        out = model(
            input_ids=nxt,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=out.past_key_values,
            use_cache=True,
        )
    return torch.cat(tokens, dim=1)


def response_logprobs(
    logits: torch.Tensor, response_ids: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """log softmax(logits / T) of the sampled response tokens.

    Args:
        logits: ``(B, Lq + Lr, V)`` logits of the model on query+response.
        response_ids: ``(B, Lr)``.
    Returns:
        ``(B, Lr)`` log-probabilities; position t scores response token t, predicted at index Lq - 1 + t.
    """
    lr = response_ids.shape[1]
    logits = logits[:, -lr - 1 : -1, :].float() / temperature
    return torch.gather(logits.log_softmax(-1), 2, response_ids.unsqueeze(-1)).squeeze(-1)


def truncate_responses(
    response_ids: torch.Tensor,
    truncate_token_id: int | None,
    truncate_after: int,
    pad_token_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut each response after its first ``truncate_token_id`` at index >= ``truncate_after``.

    Returns:
        ``(truncated, valid)``: ``(B, Lr)`` ids with everything after the cut set to ``pad_token_id``, and a
        ``(B,)`` bool mask of rows that have such a token. Rows without one are left whole (and get the
        penalty score). With ``truncate_token_id=None`` nothing is cut and every row is valid.
    """
    if truncate_token_id is None:
        return response_ids.clone(), torch.ones(response_ids.shape[0], dtype=torch.bool, device=response_ids.device)
    lr = response_ids.shape[1]
    idx = torch.arange(lr, device=response_ids.device)
    hit = (response_ids == truncate_token_id) & (idx >= truncate_after)  # (B, Lr)
    valid = hit.any(dim=1)
    first = torch.where(valid, hit.float().argmax(dim=1), torch.full_like(valid, lr - 1, dtype=torch.long))
    keep = idx[None, :] <= first[:, None]
    return torch.where(keep, response_ids, torch.full_like(response_ids, pad_token_id)), valid


def apply_truncation_penalty(scores: torch.Tensor, valid: torch.Tensor, penalty_reward_value: float = -1.0) -> torch.Tensor:
    """Replace the score of each invalid row (no truncate token past ``truncate_after``) by the penalty."""
    return torch.where(valid, scores, torch.full_like(scores, penalty_reward_value))


def truncated_lengths(response_ids: torch.Tensor, truncate_token_id: int | None, truncate_after: int) -> torch.Tensor:
    """``(B,)`` tokens each response keeps under :func:`truncate_responses`: up to and including its first
    ``truncate_token_id`` at index >= ``truncate_after``, else all of them. Counted from positions, so a sampled
    token that equals the pad id is still counted."""
    n, lr = response_ids.shape
    if truncate_token_id is None:
        return torch.full((n,), lr, dtype=torch.long, device=response_ids.device)
    idx = torch.arange(lr, device=response_ids.device)
    hit = (response_ids == truncate_token_id) & (idx >= truncate_after)
    full = torch.full((n,), lr, dtype=torch.long, device=response_ids.device)
    return torch.where(hit.any(1), hit.float().argmax(1) + 1, full)
