"""Evaluating a policy against the reference: known reward, reward-model score and KL on held-out queries.

For queries x_1..x_n, one response y_i ~ pi(.|x_i) each (fixed length, temperature T, the paper's truncation):

    known reward   mean_i r_s(x_i, cut(y_i))      (cut = truncated text; penalised rows reported apart)
    RM score       mean_i r(x_i, cut(y_i))         with the truncation penalty, as PPO sees it
    KL(pi, rho)    mean_i sum_t [log pi(y_it | .) - log rho(y_it | .)]   both at temperature T

Evaluating rho itself (``policy is ref_model``) gives KL = 0 and the "before" numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from hf_prefs.rollout import (
    apply_truncation_penalty,
    left_pad,
    response_logprobs,
    sample_responses,
    truncate_responses,
    truncated_lengths,
)

__all__ = ["PolicyEvaluation", "evaluate_policy"]


@dataclass
class PolicyEvaluation:
    """Per-sample results (lists) and their means."""

    queries: list[str]
    responses: list[str]
    known_rewards: list[float] = field(default_factory=list)
    rm_scores: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    penalized: list[bool] = field(default_factory=list)

    @staticmethod
    def _mean(xs: Sequence[float]) -> float | None:
        return float(sum(xs) / len(xs)) if xs else None

    def summary(self) -> dict[str, float | None]:
        return {
            "known_reward": self._mean(self.known_rewards),
            "rm_score": self._mean(self.rm_scores),
            "kl": self._mean(self.kl),
            "penalized_frac": self._mean([float(p) for p in self.penalized]),
            "n": len(self.queries),
        }

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary()}


def _sequence_logprob(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, response: torch.Tensor, t: float) -> torch.Tensor:
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    return response_logprobs(logits, response, t).sum(1)  # (B,)


@torch.no_grad()
def evaluate_policy(
    policy: torch.nn.Module,
    tokenizer: Any,
    queries: Sequence[str],
    *,
    ref_model: torch.nn.Module | None = None,
    response_length: int = 24,
    temperature: float = 0.7,
    truncate_token_id: int | None = None,
    truncate_after: int = 0,
    penalty_reward_value: float = -1.0,
    known_reward: Callable[[list[str]], Sequence[float]] | None = None,
    reward_fn: Callable[[list[str], list[str]], torch.Tensor] | None = None,
    batch_size: int = 16,
    seed: int = 0,
) -> PolicyEvaluation:
    """Sample one response per query from ``policy`` and measure known reward, RM score and KL to ``ref_model``.

    ``ref_model=None`` with a PEFT policy uses the policy with its adapters disabled as rho; with a plain policy it
    skips the KL. ``reward_fn(queries, responses)`` is the learned reward (e.g. a partial of
    :func:`hf_prefs.reward_model.score_texts`); ``known_reward(texts)`` scores the truncated responses alone.
    """
    device = next(policy.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = policy.training
    policy.eval()
    out = PolicyEvaluation(queries=list(queries), responses=[])
    for start in range(0, len(queries), batch_size):
        chunk = list(queries[start : start + batch_size])
        q_ids, q_mask = left_pad([tokenizer(q, add_special_tokens=False)["input_ids"] for q in chunk], pad_id)
        q_ids, q_mask = q_ids.to(device), q_mask.to(device)
        resp = sample_responses(policy, q_ids, q_mask, response_length, temperature, generator)  # (B, Lr)
        _, valid = truncate_responses(resp, truncate_token_id, truncate_after, pad_id)
        lengths = truncated_lengths(resp, truncate_token_id, truncate_after)
        texts = tokenizer.batch_decode([row[:n].tolist() for row, n in zip(resp, lengths.tolist())], skip_special_tokens=True)
        out.responses += texts
        out.penalized += (~valid).tolist()
        if known_reward is not None:
            out.known_rewards += [float(r) for r in known_reward(texts)]
        if reward_fn is not None:
            scores = torch.as_tensor(reward_fn(chunk, texts), dtype=torch.float32).cpu()
            out.rm_scores += apply_truncation_penalty(scores, valid.cpu(), penalty_reward_value).tolist()
        ids = torch.cat([q_ids, resp], 1)
        mask = torch.cat([q_mask, torch.ones_like(resp)], 1)
        ref_ctx: Any = contextlib.nullcontext()
        ref = ref_model
        if ref is None and hasattr(policy, "disable_adapter"):
            ref, ref_ctx = policy, policy.disable_adapter()
        if ref is not None:
            logp = _sequence_logprob(policy, ids, mask, resp, temperature)
            with ref_ctx:
                ref_logp = _sequence_logprob(ref, ids, mask, resp, temperature)
            out.kl += (logp - ref_logp).float().cpu().tolist()
    policy.train(was_training)
    return out
