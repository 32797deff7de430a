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
from accelerate import PartialState
from accelerate.utils import gather_object

from ..core.rollout import RolloutSpec, left_pad, pad_token_id_of
from ..core.stats import win_rate
from ..memory import release_free_memory
from ..models.generation import input_pad_id, model_device, sample_responses, sample_texts
from ..models.logprobs import forward_last, token_logprobs
from ..models.value_head import PolicyWithValueHead
from ..models.wrappers import unwrap_distributed
from ..trainers.launch import marks_failure

__all__ = ["PolicyEvaluation", "evaluate_policy", "compare_policies", "sequence_logprobs", "sample_with_logprobs"]


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


#: Rows per forward pass of the log-probability passes: the ``(rows, Lr + 1, V)`` logits of one pass are the largest
#: tensor of an evaluation (SmolLM2, 32 rows x 25 positions: 79 MB in bf16), whatever the sampling batch size.
FORWARD_ROWS = 32


def _sequence_logprob(
    model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, response: torch.Tensor, token_mask: torch.Tensor, t: float
) -> torch.Tensor:
    """``(B,)`` ``sum_t log model(response_t | .)`` over ``token_mask``, in passes of :data:`FORWARD_ROWS` rows."""
    lr = response.shape[1]  # only the positions that predict the response: logits_to_keep
    out = []
    for start in range(0, ids.shape[0], FORWARD_ROWS):
        rows = slice(start, start + FORWARD_ROWS)
        logits = forward_last(model, ids[rows], mask[rows], lr, skip_last=1).logits  # the Lr positions predicting the response
        out.append((token_logprobs(logits, response[rows], t)[0] * token_mask[rows]).sum(1))
        del logits
        release_free_memory(collect_garbage=False)  # the next pass starts from what is live (hf_prefs.memory)
    return torch.cat(out)


def causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The causal LM a policy argument holds: the model itself, or the policy inside a :class:`PolicyWithValueHead`
    (``PolicyWithValueHead.from_pretrained``, ``trainer.model``) and inside DDP/accelerate wrappers."""
    inner = unwrap_distributed(model)
    return inner.policy if isinstance(inner, PolicyWithValueHead) else model


@marks_failure
@torch.no_grad()
def evaluate_policy(
    policy: torch.nn.Module,
    tokenizer: Any,
    queries: Sequence[str],
    spec: RolloutSpec | None = None,
    *,
    ref_model: torch.nn.Module | None = None,
    known_reward: Callable[[list[str]], Sequence[float]] | None = None,
    reward_fn: Callable[[list[str], list[str]], torch.Tensor] | None = None,
    batch_size: int = 16,
    seed: int = 0,
    response_length: int = 24,
    temperature: float = 0.7,
    truncate_token_id: int | None = None,
    truncate_after: int = 0,
    penalty_reward_value: float = -1.0,
) -> PolicyEvaluation:
    """Sample one response per query from ``policy`` and measure known reward, RM score and KL to ``ref_model``.

    Responses are sampled and cut by ``spec`` (:class:`~hf_prefs.core.rollout.RolloutSpec`, the run's rule, as PPO
    and the labelers apply it); without one, a spec is built from the keyword arguments ``response_length`` ..
    ``penalty_reward_value`` (the paper's replace penalty). ``policy`` (and ``ref_model``): a causal LM, or a
    :class:`~hf_prefs.models.value_head.PolicyWithValueHead` whose policy is evaluated (:func:`causal_lm`).
    ``ref_model=None`` with a PEFT policy uses the policy
    with its adapters disabled as rho; with a plain policy it skips the KL. ``reward_fn(queries, responses)`` is the
    learned reward (e.g. a partial of :func:`hf_prefs.score_texts`); ``known_reward(texts)`` scores the cut
    responses alone. On N processes each evaluates every N-th query (its own sampling seed) and all get the whole
    evaluation, in query order.
    """
    policy = causal_lm(policy)
    ref_model = None if ref_model is None else causal_lm(ref_model)
    if spec is None:
        spec = RolloutSpec(
            response_length=response_length, temperature=temperature, truncate_token_id=truncate_token_id,
            truncate_after=truncate_after, penalty_token_id=truncate_token_id, penalty_value=penalty_reward_value,
            pad_token_id=pad_token_id_of(tokenizer),
        )
    state = PartialState()
    mine = list(range(len(queries)))[state.process_index :: state.num_processes]  # every process its share
    # the same number of forward passes on every process (a ZeRO-3 forward gathers the weights from all of them): a
    # shorter share is padded with its last query (evaluated after the real ones; dropped below)
    share = -(-len(queries) // state.num_processes)
    padded = mine + [mine[-1] if mine else 0] * (share - len(mine)) if queries else mine
    local = _evaluate(policy, tokenizer, [queries[i] for i in padded], spec, ref_model, known_reward, reward_fn,
                      batch_size, seed + 1_000_003 * state.process_index)
    if state.num_processes == 1:
        return local
    shards = gather_object([(mine, asdict(local))])  # back in query order (zip drops the padding)
    out = PolicyEvaluation(queries=list(queries), responses=[None] * len(queries))
    names = ("responses", "known_rewards", "rm_scores", "kl", "penalized")
    merged = {name: [None] * len(queries) for name in names}
    for indices, part in shards:
        for name in names:
            for i, value in zip(indices, part[name]):
                merged[name][i] = value
    for name in names:
        setattr(out, name, merged[name] if all(v is not None for v in merged[name]) else [])
    return out


@torch.no_grad()
def _evaluate(
    policy: torch.nn.Module, tokenizer: Any, queries: list[str], spec: RolloutSpec, ref_model: torch.nn.Module | None,
    known_reward: Callable | None, reward_fn: Callable | None, batch_size: int, seed: int,
) -> PolicyEvaluation:
    """:func:`evaluate_policy` on this process's queries."""
    device, pad_id = model_device(policy), input_pad_id(policy, tokenizer)
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = policy.training
    policy.eval()
    out = PolicyEvaluation(queries=list(queries), responses=[])
    for start in range(0, len(queries), batch_size):
        chunk = list(queries[start : start + batch_size])
        q_ids, q_mask = left_pad([tokenizer(q)["input_ids"] for q in chunk], pad_id)
        q_ids, q_mask = q_ids.to(device), q_mask.to(device)
        resp = sample_responses(policy, q_ids, q_mask, spec.response_length, spec.temperature, generator)  # (B, Lr)
        lengths, valid = spec.cut(resp)
        texts = spec.texts(tokenizer, resp, lengths)
        out.responses += texts
        out.penalized += (~valid).tolist()
        if known_reward is not None:
            out.known_rewards += _one_per_text(known_reward(texts), len(texts), "known_reward", torch.float64).tolist()
        if reward_fn is not None:
            scores = _one_per_text(reward_fn(chunk, texts), len(texts), "reward_fn")
            out.rm_scores += spec.penalize(scores, valid.cpu()).tolist()
        token_mask = spec.masks(lengths, resp.shape[1])[0]  # all tokens, or up to TRL's stop token
        ids, mask = torch.cat([q_ids, resp], 1), torch.cat([q_mask, torch.ones_like(resp)], 1)
        out.kl += _kl(policy, ref_model, ids, mask, resp, token_mask, spec.temperature)
        release_free_memory(collect_garbage=False)
    policy.train(was_training)
    return out


def _one_per_text(scores: Any, n: int, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(n,)`` scores on the CPU from what ``name`` returned for ``n`` texts (a list, an array, a ``(n,)`` or ``(n, 1)``
    tensor); another count is an error naming it (one value was spread over all, or half were read)."""
    scores = torch.as_tensor(scores, dtype=dtype).cpu()
    if scores.numel() != n or (scores.dim() > 1 and scores.shape[0] != n):
        raise ValueError(f"{name} returned {tuple(scores.shape)} scores for {n} texts: one per text is needed")
    return scores.reshape(n)


def _kl(
    policy: torch.nn.Module, ref_model: torch.nn.Module | None, ids: torch.Tensor, mask: torch.Tensor,
    resp: torch.Tensor, token_mask: torch.Tensor, temperature: float,
) -> list[float]:
    """Per-sample ``sum_t log pi - log rho`` over ``token_mask`` at ``temperature``; [] when there is no reference."""
    ref_ctx: Any = contextlib.nullcontext()
    ref = ref_model
    if ref is None and hasattr(policy, "disable_adapter"):
        ref, ref_ctx = policy, policy.disable_adapter()
    if ref is None:
        return []
    if ref is policy and ref_model is not None:  # rho against itself (the "before" evaluation): 0 without two forwards
        return [0.0] * ids.shape[0]
    logp = _sequence_logprob(policy, ids, mask, resp, token_mask, temperature)
    with ref_ctx:
        ref_logp = _sequence_logprob(ref, ids, mask, resp, token_mask, temperature)
    return (logp - ref_logp).float().cpu().tolist()


def compare_policies(
    policy_a: torch.nn.Module,
    policy_b: torch.nn.Module,
    tokenizer: Any,
    queries: Sequence[str],
    judge: Callable[[list[str], list[str]], Sequence[float]],
    **sampling: Any,
) -> dict[str, float]:
    """Sample one response per query from each policy (:func:`evaluate_policy`, same seed for both) and return the
    win rate of A over B under ``judge(queries, responses)`` with its SE and both policies' mean judge scores.

    ``sampling``: ``response_length``, ``temperature``, ``truncate_token_id``, ``truncate_after``, ``batch_size``,
    ``seed`` (or ``spec=``) as in :func:`evaluate_policy` (the judge sees the cut texts).
    """
    sampling.setdefault("penalty_reward_value", -1.0)
    runs = [evaluate_policy(p, tokenizer, queries, reward_fn=judge, **sampling) for p in (policy_a, policy_b)]
    rate, se = win_rate(runs[0].rm_scores, runs[1].rm_scores)
    n = len(runs[0].rm_scores)
    return {"win_rate": rate, "win_rate_se": se, "judge_a": sum(runs[0].rm_scores) / n,
            "judge_b": sum(runs[1].rm_scores) / n, "n": n}


@torch.no_grad()
def sequence_logprobs(
    model: torch.nn.Module, tokenizer: Any, queries: Sequence[str], response_ids: torch.Tensor, spec: RolloutSpec,
    batch_size: int = 32, reference: bool = False,
) -> torch.Tensor:
    """``(N,)`` ``sum_t log model(y_t | x, y_<t)`` at the spec's temperature over the tokens PPO counts
    (:meth:`RolloutSpec.masks`) of the given responses ``(N, Lr)`` to ``queries`` (N). ``reference=True`` with a
    PEFT model scores with its adapters disabled (rho)."""
    device, pad_id = model_device(model), input_pad_id(model, tokenizer)
    context = model.disable_adapter() if reference and hasattr(model, "disable_adapter") else contextlib.nullcontext()
    out = []
    with context:
        for start in range(0, len(queries), batch_size):
            q_ids, q_mask = left_pad([tokenizer(q)["input_ids"] for q in queries[start : start + batch_size]], pad_id)
            resp = response_ids[start : start + batch_size].to(device)
            token_mask = spec.masks(spec.cut(resp).lengths, resp.shape[1])[0]
            ids, mask = torch.cat([q_ids.to(device), resp], 1), torch.cat([q_mask.to(device), torch.ones_like(resp)], 1)
            out.append(_sequence_logprob(model, ids, mask, resp, token_mask, spec.temperature).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def sample_with_logprobs(
    policy: torch.nn.Module, tokenizer: Any, queries: Sequence[str], spec: RolloutSpec, n: int, seed: int,
    known_reward: Callable[[list[str]], Sequence[float]], ref_model: torch.nn.Module | None = None,
    batch_size: int = 32,
    sampling_batch_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """``n`` responses per query from ``policy`` with what importance sampling needs: ``ids`` ``(Q·n, Lr)`` (rows
    ``q·n + j``), ``known`` their known rewards, ``logp`` their log-probability under ``policy`` and ``logp_ref``
    under rho (``ref_model``; None: the policy itself, or a PEFT policy with adapters disabled), all ``(Q·n,)``.
    Rows per batch: ``sampling_batch_size`` when sampling (None: ``batch_size``), ``batch_size`` in the log-prob
    passes (whose full forward holds a batch's activations over query + response)."""
    policy = causal_lm(policy)
    ref_model = None if ref_model is None else causal_lm(ref_model)
    gen = torch.Generator(device=model_device(policy)).manual_seed(seed)
    ids = sample_texts(policy, tokenizer, list(queries), spec, n, sampling_batch_size or batch_size, gen)
    texts = spec.texts(tokenizer, ids, spec.cut(ids).lengths)
    rows = [q for q in queries for _ in range(n)]
    logp = sequence_logprobs(policy, tokenizer, rows, ids, spec, batch_size)
    if ref_model is None and not hasattr(policy, "disable_adapter"):
        logp_ref = logp
    else:
        reference = ref_model if ref_model is not None else policy
        logp_ref = sequence_logprobs(reference, tokenizer, rows, ids, spec, batch_size, reference=ref_model is None)
    return {"ids": ids, "known": torch.tensor([float(r) for r in known_reward(texts)]), "logp": logp, "logp_ref": logp_ref}
