"""evaluate_policy: KL to the reference, known reward and RM score of held-out samples."""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

import hf_prefs.pipeline.evaluate as evaluate_module
from hf_prefs.pipeline.evaluate import evaluate_policy
from hf_prefs.core.rollout import RolloutSpec, cut_responses, left_pad
from hf_prefs.models.generation import response_logprobs, sample_responses

QUERIES = ["It was a truth universally acknowledged.", "She smiled.", "The rain fell on the garden all night."]


@pytest.mark.parametrize("forward_rows", [2, 32])  # 3 queries: two log-prob passes, or one
def test_kl_is_zero_for_the_reference_and_matches_a_hand_computation(tiny_gpt2, gpt2_tokenizer, monkeypatch, forward_rows):
    monkeypatch.setattr(evaluate_module, "FORWARD_ROWS", forward_rows)
    rho = tiny_gpt2
    ev0 = evaluate_policy(rho, gpt2_tokenizer, QUERIES, ref_model=rho, response_length=6, temperature=0.7, seed=3)
    assert ev0.kl == pytest.approx([0.0] * 3, abs=1e-6)
    pi = copy.deepcopy(rho)
    with torch.no_grad():
        pi.lm_head.weight.add_(0.05 * torch.randn_like(pi.lm_head.weight))
    ev = evaluate_policy(pi, gpt2_tokenizer, QUERIES, ref_model=rho, response_length=6, temperature=0.7, seed=3)
    # Recompute by hand from the same seeded draw (same generator seed -> the same sampled tokens).
    ids, mask = left_pad([gpt2_tokenizer(q)["input_ids"] for q in QUERIES], gpt2_tokenizer.eos_token_id)
    resp = sample_responses(pi, ids, mask, 6, 0.7, torch.Generator().manual_seed(3))
    full, fmask = torch.cat([ids, resp], 1), torch.cat([mask, torch.ones_like(resp)], 1)
    pos = (fmask.cumsum(-1) - 1).clamp(min=0)
    lp = response_logprobs(pi(full, attention_mask=fmask, position_ids=pos).logits, resp, 0.7).sum(1)
    lr = response_logprobs(rho(full, attention_mask=fmask, position_ids=pos).logits, resp, 0.7).sum(1)
    assert ev.kl == pytest.approx((lp - lr).tolist(), abs=1e-4)
    assert ev.summary()["kl"] == pytest.approx(sum(ev.kl) / 3)


def test_peft_reference_is_the_policy_without_adapters(tiny_gpt2, gpt2_tokenizer):
    pi = get_peft_model(tiny_gpt2, LoraConfig(r=4, target_modules=["c_attn"], init_lora_weights=True))
    ev = evaluate_policy(pi, gpt2_tokenizer, QUERIES, response_length=5, known_reward=lambda t: [float(len(x)) for x in t])
    assert ev.kl == pytest.approx([0.0] * 3, abs=1e-6)  # LoRA starts as the identity
    assert ev.known_rewards == [float(len(x)) for x in ev.responses]


def test_a_policy_with_its_value_head_is_evaluated_as_its_policy(tiny_gpt2, gpt2_tokenizer):
    """``PolicyWithValueHead`` (``from_pretrained`` of a saved policy, ``trainer.model``): the same evaluation as its
    policy (was ``forward() got an unexpected keyword argument 'use_cache'``)."""
    from hf_prefs.models.value_head import PolicyWithValueHead

    wrapped = PolicyWithValueHead(tiny_gpt2)
    kw = dict(response_length=5, known_reward=lambda t: [float(len(x)) for x in t], seed=3)
    got, want = evaluate_policy(wrapped, gpt2_tokenizer, QUERIES, **kw), evaluate_policy(tiny_gpt2, gpt2_tokenizer, QUERIES, **kw)
    assert got.responses == want.responses and got.known_rewards == want.known_rewards


def test_rm_score_gets_the_truncation_penalty(tiny_gpt2, gpt2_tokenizer):
    dot = gpt2_tokenizer.convert_tokens_to_ids(".")
    ev = evaluate_policy(
        tiny_gpt2, gpt2_tokenizer, QUERIES, ref_model=tiny_gpt2, response_length=4, truncate_token_id=dot,
        truncate_after=2, penalty_reward_value=-7.0, reward_fn=lambda q, r: torch.full((len(q),), 3.0),
    )
    assert ev.rm_scores == [(-7.0 if p else 3.0) for p in ev.penalized]


def test_truncated_lengths_counts_positions_not_pad_ids():
    resp = torch.tensor([[5, 0, 9, 7, 9, 1], [9, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 0]])
    # truncate after the first 9 at index >= 2; token 0 doubles as the pad id and must still be counted
    assert cut_responses(resp, RolloutSpec(response_length=6, truncate_token_id=9, truncate_after=2)).lengths.tolist() == [3, 6, 6]
    assert cut_responses(resp, RolloutSpec(response_length=6, truncate_token_id=None, truncate_after=2)).lengths.tolist() == [6, 6, 6]


def test_scores_one_per_text_and_queries_given_as_a_list(gpt2_tokenizer, tiny_gpt2):
    """A known reward returning one value for 3 texts was averaged as if it were 3 (and a reward function's one value
    spread over all), a ``(3, 1)`` tensor became a 3 x 3 list; ``sample_texts("Hi")`` sampled 2 queries, 'H' and 'i',
    and an empty query alone failed as an IndexError."""
    from hf_prefs.models.generation import sample_texts

    short = dict(response_length=3, batch_size=8)
    with pytest.raises(ValueError, match=r"known_reward returned \(1,\) scores for 3 texts: one per text"):
        evaluate_policy(tiny_gpt2, gpt2_tokenizer, QUERIES, known_reward=lambda t: [1.0], **short)
    with pytest.raises(ValueError, match=r"reward_fn returned \(1,\) scores for 3 texts"):
        evaluate_policy(tiny_gpt2, gpt2_tokenizer, QUERIES, reward_fn=lambda q, t: [5.0], **short)
    ev = evaluate_policy(tiny_gpt2, gpt2_tokenizer, QUERIES, reward_fn=lambda q, t: torch.arange(3.0)[:, None], **short)
    assert ev.rm_scores == [0.0, 1.0, 2.0]
    spec = RolloutSpec(response_length=3, temperature=1.0)
    with pytest.raises(TypeError, match="a list of query texts is needed, got one string"):
        sample_texts(tiny_gpt2, gpt2_tokenizer, "Hi", spec)
    with pytest.raises(ValueError, match="query 1 is empty"):
        sample_texts(tiny_gpt2, gpt2_tokenizer, ["Hi", ""], spec)
