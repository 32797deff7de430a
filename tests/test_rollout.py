"""Rollout rules: fixed-length sampling at temperature T, the cut after the truncate token, the penalty
(:class:`hf_prefs.core.rollout.RolloutSpec`, one owner for PPO, labelers, evaluation, online loop, normalization)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from conftest import ForceToken
from hf_prefs.core.rollout import RolloutSpec, apply_penalty, cut_responses, left_pad
from hf_prefs.models.generation import response_logprobs, sample_categorical, sample_responses, sample_texts

DOT = 13  # GPT-2 id of "."
P = 99  # pad id used in these hand cases


def _spec(truncate_token_id, truncate_after, length=6):
    """The paper's rule: cut after the first token at index >= truncate_after; rows without one are invalid."""
    return RolloutSpec(response_length=length, truncate_token_id=truncate_token_id, truncate_after=truncate_after,
                       penalty_token_id=truncate_token_id, pad_token_id=P)


def truncate_responses(ids, tid, truncate_after, pad_token_id):
    """The cut ids and the valid mask of the spec's rule (what the old truncate_responses returned)."""
    spec = _spec(tid, truncate_after, ids.shape[1])
    lengths, valid = cut_responses(ids, spec)
    return spec.cut_ids(ids, lengths), valid


def truncated_lengths(ids, tid, truncate_after):
    return cut_responses(ids, _spec(tid, truncate_after, ids.shape[1])).lengths


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One thread: as fast for these tiny models and immune to oversubscription when the cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_left_pad_by_hand():
    ids, mask = left_pad([[5, 6, 7], [8], []], pad_token_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]


def test_truncation_rules_by_hand():
    responses = torch.tensor(
        [
            [5, DOT, 7, DOT, 9, DOT],  # '.' at 1 is before truncate_after=2; first one at >= 2 is index 3
            [5, 6, DOT, 8, 9, 10],  # '.' exactly at index 2: cut right after it
            [DOT, DOT, 7, 8, 9, 10],  # only '.'s before index 2: no valid cut -> whole row kept, invalid
            [1, 2, 3, 4, 5, 6],  # no '.': invalid
            [1, 2, 3, 4, 5, DOT],  # '.' at the last index: nothing to cut, valid
        ]
    )
    truncated, valid = truncate_responses(responses, DOT, truncate_after=2, pad_token_id=P)
    assert truncated.tolist() == [
        [5, DOT, 7, DOT, P, P],
        [5, 6, DOT, P, P, P],
        [DOT, DOT, 7, 8, 9, 10],
        [1, 2, 3, 4, 5, 6],
        [1, 2, 3, 4, 5, DOT],
    ]
    assert valid.tolist() == [True, True, False, False, True]
    assert truncated_lengths(responses, DOT, truncate_after=2).tolist() == [4, 3, 6, 6, 6]
    # a sampled token equal to the pad id still counts: lengths come from positions, not from padding
    assert truncated_lengths(torch.tensor([[P, P, DOT, P]]), DOT, truncate_after=0).tolist() == [3]
    assert truncated_lengths(responses, None, truncate_after=0).tolist() == [6] * 5
    # the input is not modified
    assert responses[0].tolist() == [5, DOT, 7, DOT, 9, DOT]


def test_no_truncate_token_keeps_everything_valid():
    responses = torch.tensor([[1, 2, 3], [DOT, 5, 6]])
    truncated, valid = truncate_responses(responses, None, truncate_after=0, pad_token_id=P)
    assert torch.equal(truncated, responses)
    assert valid.tolist() == [True, True]


def test_a_reward_model_reads_a_special_stop_token_only_under_trls_stop_token(gpt2_tokenizer):
    """RolloutSpec.model_texts by hand: the EOS text after the rows cut at TRL's EOS stop token, for a reader whose
    pad is not EOS; nothing for a reader padding with EOS (or without a pad: TRL pads with EOS), a stop token that
    decoding keeps ("."), or the paper's truncate token."""
    import copy

    eos, dot = gpt2_tokenizer.eos_token_id, 13
    ids = torch.tensor([[464, eos, 318, 318], [464, 318, 318, 318], [464, dot, 318, 318]])
    padded = copy.deepcopy(gpt2_tokenizer)
    padded.add_special_tokens({"pad_token": "[PAD]"})
    spec = RolloutSpec.build(gpt2_tokenizer, response_length=4, stop_token="eos")
    lengths = spec.cut(ids).lengths
    texts = spec.texts(gpt2_tokenizer, ids, lengths)
    assert lengths.tolist() == [2, 4, 4] and texts[0] == "The"
    assert spec.model_texts(gpt2_tokenizer, texts, ids, lengths, padded) == ["The<|endoftext|>", texts[1], texts[2]]
    assert spec.model_texts(gpt2_tokenizer, texts, ids, lengths, gpt2_tokenizer) == texts  # no pad: EOS pads
    chatml = copy.deepcopy(padded)  # a reader without the policy's stop token as a special token: nothing appended
    chatml.add_special_tokens({"eos_token": "<|im_end|>"})
    other_eos = RolloutSpec.build(chatml, response_length=4, stop_token="eos")
    im_end = chatml.eos_token_id
    ids2 = torch.tensor([[464, im_end, 318, 318]])
    cut2 = other_eos.cut(ids2).lengths
    texts2 = other_eos.texts(chatml, ids2, cut2)
    assert other_eos.model_texts(chatml, texts2, ids2, cut2, padded) == texts2 == ["The"]
    assert other_eos.model_texts(chatml, texts2, ids2, cut2, chatml) == ["The<|im_end|>"]
    for other in (RolloutSpec.build(gpt2_tokenizer, response_length=4, stop_token_id=dot),
                  RolloutSpec.build(gpt2_tokenizer, response_length=4, truncate_token_id=eos)):
        cut = other.cut(ids).lengths
        assert other.model_texts(gpt2_tokenizer, other.texts(gpt2_tokenizer, ids, cut), ids, cut, padded) == \
            other.texts(gpt2_tokenizer, ids, cut)
    # a chat reward model trained here: the template's end of turn after the rows that ended their turn at the stop
    # token; not where the end of turn does not hold that token, nor for a stop token decoding keeps, nor the paper's
    assert spec.turn_texts(gpt2_tokenizer, texts, ids, lengths, "<|endoftext|>\n") == ["The<|endoftext|>\n", *texts[1:]]
    assert spec.turn_texts(gpt2_tokenizer, texts, ids, lengths, "\n") == texts
    for other in (RolloutSpec.build(gpt2_tokenizer, response_length=4, stop_token_id=dot),
                  RolloutSpec.build(gpt2_tokenizer, response_length=4, truncate_token_id=eos)):
        cut = other.cut(ids).lengths
        kept = other.texts(gpt2_tokenizer, ids, cut)
        assert other.turn_texts(gpt2_tokenizer, kept, ids, cut, ".<|endoftext|>\n") == kept


def test_penalty_replaces_the_score():
    scores = torch.tensor([3.0, -0.5, 2.0, -7.0])
    valid = torch.tensor([True, False, False, True])
    assert apply_penalty(scores, valid).tolist() == [3.0, -1.0, -1.0, -7.0]
    assert apply_penalty(scores, valid, "replace", -4.0).tolist() == [3.0, -4.0, -4.0, -7.0]
    # TRL's missing_eos_penalty subtracts instead
    assert apply_penalty(scores, valid, "subtract", 2.0).tolist() == [3.0, -2.5, 0.0, -7.0]


class _ConstantLogits(nn.Module):
    """A fake LM whose next-token logits are always ``logits`` (V,), with a dummy KV cache."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("fixed", logits.float())

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False, **_):
        b, length = input_ids.shape
        return SimpleNamespace(logits=self.fixed.expand(b, length, -1).clone(), past_key_values=("cache",))


def test_sampling_is_fixed_length_and_does_not_stop_at_eos(tiny_gpt2, gpt2_tokenizer):
    eos = gpt2_tokenizer.eos_token_id
    ids, mask = left_pad([gpt2_tokenizer.encode("Hello there"), gpt2_tokenizer.encode("A much longer query, it is")], eos)
    out = sample_responses(ForceToken(tiny_gpt2, eos), ids, mask, response_length=7, temperature=0.7)
    assert out.shape == (2, 7)
    assert (out == eos).all()  # EOS sampled at every step and generation went on


def test_sampling_uses_the_temperature():
    logits = torch.tensor([0.0, 1.0, -1.0])
    gen = torch.Generator().manual_seed(0)
    ids, mask = torch.zeros(4000, 1, dtype=torch.long), torch.ones(4000, 1, dtype=torch.long)
    for temperature in (0.5, 2.0):
        out = sample_responses(_ConstantLogits(logits), ids, mask, 3, temperature=temperature, generator=gen)
        freq = torch.bincount(out.flatten(), minlength=3).float() / out.numel()
        expected = torch.softmax(logits / temperature, dim=0)  # T=0.5: [.117,.867,.016]; T=2: [.307,.506,.186]
        assert torch.allclose(freq, expected, atol=0.015), (temperature, freq, expected)


def test_num_samples_shares_the_prefill_and_draws_like_repeated_queries(tiny_gpt2, gpt2_tokenizer):
    """num_samples=n encodes each query once and repeats its KV cache: the same draws (same generator state) as n
    explicit copies of every query, rows q·n + j, with queries of different lengths (left padding)."""
    eos = gpt2_tokenizer.eos_token_id
    queries = [gpt2_tokenizer.encode("Hello there"), gpt2_tokenizer.encode("A much longer query, it is said, than")]
    ids, mask = left_pad(queries, eos)
    shared = sample_responses(tiny_gpt2, ids, mask, 6, temperature=1.0, generator=torch.Generator().manual_seed(3),
                              num_samples=3)
    rep_ids, rep_mask = left_pad([q for q in queries for _ in range(3)], eos)
    repeated = sample_responses(tiny_gpt2, rep_ids, rep_mask, 6, temperature=1.0, generator=torch.Generator().manual_seed(3))
    assert shared.shape == (6, 6)
    assert torch.equal(shared, repeated)
    assert len({tuple(r) for r in shared[:3].tolist()}) > 1  # the copies of a query are independent draws
    with pytest.raises(ValueError, match="num_samples"):
        sample_responses(tiny_gpt2, ids, mask, 2, num_samples=0)


def test_sample_texts_draws_more_samples_than_the_batch_in_batches(tiny_gpt2, gpt2_tokenizer):
    """n samples per query above batch_size (a frontier's thousands) are drawn batch_size rows at a time: no forward
    sees more rows (the KV cache is what grows with them), rows stay q·n + j, and with batch_size >= n the result is
    the single-batch draw."""
    spec = RolloutSpec(response_length=4, temperature=1e-4, pad_token_id=gpt2_tokenizer.eos_token_id)  # ~argmax
    queries = ["It was a truth universally", "She said"]  # prefills of >= 2 tokens, told apart from decode steps
    rows_seen = []  # rows of each decode step (one new token per row; the prefills encode one query each)
    hook = tiny_gpt2.register_forward_pre_hook(
        lambda m, args, kw: rows_seen.append(kw["input_ids"].shape[0]) if kw["input_ids"].shape[1] == 1 else None,
        with_kwargs=True)
    try:
        out = sample_texts(tiny_gpt2, gpt2_tokenizer, queries, spec, num_samples=7, batch_size=3)
    finally:
        hook.remove()
    assert out.shape == (14, 4)
    assert rows_seen == ([3] * 3 + [3] * 3 + [1] * 3) * 2  # per query: batches of 3, 3 and 1 rows, 3 decode steps each
    for q, query in enumerate(queries):  # every row of query q is q's greedy continuation
        ids, mask = left_pad([gpt2_tokenizer.encode(query)], gpt2_tokenizer.eos_token_id)
        greedy = sample_responses(tiny_gpt2, ids, mask, 4, temperature=1e-4)[0]
        assert (out[q * 7 : (q + 1) * 7] == greedy).all()
    spec = RolloutSpec(response_length=4, temperature=1.0, pad_token_id=gpt2_tokenizer.eos_token_id)
    chunked = sample_texts(tiny_gpt2, gpt2_tokenizer, queries[:1], spec, 7, 3, torch.Generator().manual_seed(2))
    ids, mask = left_pad([gpt2_tokenizer.encode(queries[0])], gpt2_tokenizer.eos_token_id)
    gen = torch.Generator().manual_seed(2)  # the same draws as three calls of 3, 3 and 1 samples in turn
    assert torch.equal(chunked, torch.cat([sample_responses(tiny_gpt2, ids, mask, 4, 1.0, gen, n) for n in (3, 3, 1)]))
    one = sample_texts(tiny_gpt2, gpt2_tokenizer, queries[:1], spec, 5, 8, torch.Generator().manual_seed(1))
    assert torch.equal(one, sample_responses(tiny_gpt2, ids, mask, 4, 1.0, torch.Generator().manual_seed(1), 5))
    with pytest.raises(ValueError, match="batch_size"):
        sample_texts(tiny_gpt2, gpt2_tokenizer, queries, spec, num_samples=2, batch_size=0)


def test_kv_cached_sampling_matches_full_recomputation_and_padding(tiny_gpt2, gpt2_tokenizer):
    """At a tiny temperature sampling is argmax: compare with a cache-free greedy loop on the unpadded query."""
    queries = [gpt2_tokenizer.encode("It was a truth universally"), gpt2_tokenizer.encode("She")]
    ids, mask = left_pad(queries, gpt2_tokenizer.eos_token_id)
    out = sample_responses(tiny_gpt2, ids, mask, response_length=5, temperature=1e-4)
    for row, query in enumerate(queries):
        seq = torch.tensor([query])
        for _ in range(5):
            nxt = tiny_gpt2(input_ids=seq).logits[0, -1].argmax()
            seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
        assert out[row].tolist() == seq[0, len(query):].tolist()


def test_response_logprobs_apply_the_temperature():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)  # (B, Lq + Lr, V) with Lq = 2, Lr = 3
    response = torch.tensor([[1, 4, 6], [0, 0, 3]])
    for temperature in (1.0, 0.7):
        got = response_logprobs(logits, response, temperature)
        for b in range(2):
            for t in range(3):
                row = logits[b, 1 + t] / temperature  # position Lq - 1 + t predicts response token t
                expected = row[response[b, t]] - torch.logsumexp(row, dim=0)
                assert got[b, t].item() == pytest.approx(expected.item(), abs=1e-6)
    assert not torch.allclose(response_logprobs(logits, response, 1.0), response_logprobs(logits, response, 0.7))


def test_sample_categorical_matches_the_softmax_at_temperature():
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0, 0.5]]).repeat(20_000, 1)
    draws = sample_categorical(logits, 0.7, torch.Generator().manual_seed(0)).squeeze(1)
    freq = torch.bincount(draws, minlength=5).float() / draws.numel()
    expected = torch.softmax(logits[0] / 0.7, -1)
    assert torch.allclose(freq, expected, atol=0.01)  # ~3 standard errors at n=20k
    # a zero-probability token is never drawn; NaN logits raise like torch.multinomial does
    masked = torch.tensor([[0.0, float("-inf"), 0.0]]).repeat(5000, 1)
    assert (sample_categorical(masked, 1.0) != 1).all()
    for bad in (float("nan"), float("inf")):  # in the last row, not the first; a row of -inf only has no distribution
        with pytest.raises(RuntimeError, match="probability tensor contains"):
            sample_categorical(torch.tensor([[0.0, 1.0, 2.0], [0.0, bad, 1.0]]), 1.0)
    with pytest.raises(RuntimeError, match="probability tensor contains"):
        sample_categorical(torch.tensor([[0.0, 1.0], [float("-inf"), float("-inf")]]), 1.0)


def test_a_cut_token_id_outside_the_tokenizer_is_refused(gpt2_tokenizer):
    """``stop_token_id=99999`` was accepted: never sampled, so no response was ever cut; it is named now."""
    for field, token in (("stop_token_id", 99999), ("truncate_token_id", 50257), ("stop_token_id", -1)):
        with pytest.raises(ValueError, match=rf"{field}: {token} is not a token id of the tokenizer \(0 \.\. 50256\)"):
            RolloutSpec.build(gpt2_tokenizer, response_length=4, **{field: token})
    assert RolloutSpec.build(gpt2_tokenizer, response_length=4, stop_token_id=50256).truncate_token_id == 50256
