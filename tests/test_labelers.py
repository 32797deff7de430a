"""SimulatedLabeler and building best-of-K label datasets from ρ samples."""

from __future__ import annotations

import math
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from hf_prefs.core.rollout import left_pad, token_id_of
from hf_prefs.labels.labelers import SimulatedLabeler, sample_candidates, sample_label_dataset
from hf_prefs.labels.schema import validate_labels
from hf_prefs.models.generation import ResponseSampler, sample_responses


class ContextFreeLM(torch.nn.Module):
    """A causal-LM stand-in whose next-token distribution is fixed: lets tests control how often '.' appears."""

    def __init__(self, vocab_size: int, probs: dict[int, float]):
        super().__init__()
        logits = torch.full((vocab_size,), -1e9)
        for tok, p in probs.items():
            logits[tok] = math.log(p)
        self.logits = torch.nn.Parameter(logits)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None, **_):
        b, length = input_ids.shape
        return SimpleNamespace(logits=self.logits.expand(b, length, -1), past_key_values=None)


def _count_reward(texts):
    return [t.count(" happy") - t.count(" sad") for t in texts]


# ---------------------------------------------------------------- SimulatedLabeler
def test_labeler_picks_highest_known_reward():
    labeler = SimulatedLabeler(lambda texts: [float(len(t)) for t in texts], seed=0)
    assert labeler.label("q", ["aa", "aaaa", "a", "aaa"]) == 1
    assert labeler.label_batch(["q1", "q2"], [["x", "xyz"], ["abc", "a", "ab"]]) == [1, 0]


def test_labeler_breaks_ties_at_random_with_the_seed():
    constant = SimulatedLabeler(lambda texts: [0.0] * len(texts), seed=7)
    picks = [constant.label("q", ["a", "b", "c", "d"]) for _ in range(2000)]
    counts = Counter(picks)
    assert set(counts) == {0, 1, 2, 3}
    assert all(abs(c / 2000 - 0.25) < 0.04 for c in counts.values())
    again = SimulatedLabeler(lambda texts: [0.0] * len(texts), seed=7)
    assert [again.label("q", ["a", "b", "c", "d"]) for _ in range(2000)] == picks
    # only tied maxima are candidates
    two_way = SimulatedLabeler(lambda texts: [1.0, 3.0, 0.0, 3.0], seed=1)
    assert {two_way.label("q", ["a", "b", "c", "d"]) for _ in range(200)} == {1, 3}


def test_noisy_labeler_follows_the_softmax():
    labeler = SimulatedLabeler(lambda texts: [0.0, 1.0, 2.0, 3.0], seed=3, noise=1.0)
    n = 4000
    counts = Counter(labeler.label("q", ["a", "b", "c", "d"]) for _ in range(n))
    expected = torch.softmax(torch.tensor([0.0, 1.0, 2.0, 3.0]), 0).tolist()
    for i, p in enumerate(expected):
        assert abs(counts[i] / n - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_label_batch_scores_all_samples_in_one_call_and_checks_output():
    calls = []

    def reward_fn(texts):
        calls.append(list(texts))
        return torch.tensor(_count_reward(texts), dtype=torch.float32)

    labeler = SimulatedLabeler(reward_fn, seed=0)
    picks = labeler.label_batch(["q1", "q2"], [[" happy day", " sad day"], [" sad", " fine", " happy happy"]])
    assert picks == [0, 2]
    assert calls == [[" happy day", " sad day", " sad", " fine", " happy happy"]]
    with_query = SimulatedLabeler(lambda texts: [float(t.startswith("Q")) for t in texts], score_with_query=True)
    assert with_query.score(["Q"], [["a", "b"]]) == [[1.0, 1.0]]
    with pytest.raises(ValueError, match="returned 1 rewards for 2 texts"):
        SimulatedLabeler(lambda texts: [0.0]).label("q", ["a", "b"])
    with pytest.raises(ValueError, match="returned nan for sample 1 of query 0"):
        SimulatedLabeler(lambda texts: [0.0, float("nan")]).label("q", ["a", "b"])
    with pytest.raises(ValueError, match="returned inf for sample 0 of query 1"):  # with noise: inf - inf = NaN weights
        SimulatedLabeler(lambda texts: [0.0, 1.0, float("inf"), 0.0], noise=1.0).label_batch(["q", "r"], [["a", "b"]] * 2)
    with pytest.raises(TypeError, match=r"samples\[0\] is a string"):  # was 4 one-character "samples"
        SimulatedLabeler(lambda texts: [0.0] * len(texts)).label("q", "abcd")
    with pytest.raises(ValueError, match="noise"):
        SimulatedLabeler(_count_reward, noise=-1.0)


# ---------------------------------------------------------------- sampling labels from ρ
def test_token_id_of_is_the_single_period_token(gpt2_tokenizer):
    assert token_id_of(gpt2_tokenizer, ".") == 13
    assert token_id_of(gpt2_tokenizer, 13) == 13
    assert token_id_of(gpt2_tokenizer, None) is None
    with pytest.raises(ValueError, match="one token"):
        token_id_of(gpt2_tokenizer, ". Then")


def _rho(tok):
    ids = {w: tok.encode(w) for w in (" the", " happy", " sad", ".", '."')}
    assert all(len(v) == 1 for v in ids.values()) and ids["."] == [13] and ids['."'] == [526]
    probs = {
        ids[" the"][0]: 0.5,
        ids[" happy"][0]: 0.1,
        ids[" sad"][0]: 0.1,
        13: 0.15,
        526: 0.1,
        tok.eos_token_id: 0.05,
    }
    return ContextFreeLM(len(tok), probs)


def test_sample_label_dataset_truncates_drops_and_labels(gpt2_tokenizer):
    tok, k, n_q, length, after = gpt2_tokenizer, 4, 24, 24, 16
    rho = _rho(tok)
    queries = [f"Query number {i} ends here." for i in range(n_q)]
    labeler = SimulatedLabeler(_count_reward, seed=0)
    ds, stats = sample_label_dataset(
        rho,
        tok,
        queries,
        labeler,
        k=k,
        response_length=length,
        temperature=1.0,
        truncate_token=".",
        truncate_after=after,
        batch_size=n_q * k,
        seed=11,
        return_stats=True,
    )

    # the same draws, recomputed independently of sample_label_dataset
    rows = [tok(q)["input_ids"] for q in queries for _ in range(k)]
    ids, mask = left_pad(rows, tok.eos_token_id)
    drawn = sample_responses(rho, ids, mask, length, 1.0, generator=torch.Generator().manual_seed(11))
    expected_q, expected_samples = [], []
    for i, q in enumerate(queries):
        texts, ok = [], True
        for row in drawn[i * k : (i + 1) * k].tolist():
            cut = next((t for t in range(after, length) if row[t] == 13), None)  # only id 13 truncates, not '."'
            ok &= cut is not None
            # the one decoding rule (RolloutSpec.texts): special tokens such as a sampled EOS are not shown
            texts.append(tok.decode(row[: cut + 1], skip_special_tokens=True) if cut is not None else None)
        if ok:
            expected_q.append(q)
            expected_samples.append(texts)
    assert 0 < len(expected_q) < n_q  # the setting drops some queries and keeps some
    assert ds["query"] == expected_q
    assert ds["samples"] == expected_samples
    assert stats.labels == len(ds) == len(expected_q)
    assert stats.dropped_no_truncation == n_q - len(expected_q) and stats.dropped == n_q - len(ds)
    assert ds["query_index"] == [queries.index(q) for q in expected_q]
    for samples, known, best in zip(ds["samples"], ds["known_rewards"], ds["best"]):
        assert known == _count_reward(samples)
        assert known[best] == max(known)
        assert all(s.endswith(".") for s in samples)
    validate_labels(ds, k=k)
    # the unlabeled candidates (for a human queue) are the same draws
    kept, samples, stats2 = sample_candidates(
        rho,
        tok,
        queries,
        k=k,
        response_length=length,
        temperature=1.0,
        truncate_after=after,
        batch_size=n_q * k,
        seed=11,
    )
    assert (kept, samples, stats2) == (expected_q, expected_samples, stats)
    # drop_untruncated=False (CPU deviation): every query is kept; samples without a truncate token stay whole
    kept_all, samples_all, stats3 = sample_candidates(
        rho, tok, queries, k=k, response_length=length, temperature=1.0, truncate_after=after, batch_size=n_q * k,
        seed=11, drop_untruncated=False,
    )
    assert kept_all == queries and stats3.dropped_no_truncation == 0
    for i, row_samples in enumerate(samples_all):
        for j, text in enumerate(row_samples):
            row = drawn[i * k + j].tolist()
            cut = next((t for t in range(after, length) if row[t] == 13), None)
            assert text == tok.decode(row[: cut + 1] if cut is not None else row, skip_special_tokens=True)


def test_sample_label_dataset_without_truncation_keeps_every_query(gpt2_tokenizer):
    tok = gpt2_tokenizer
    ds = sample_label_dataset(
        _rho(tok),
        tok,
        [f"q{i}." for i in range(6)],
        SimulatedLabeler(_count_reward, seed=0),
        k=3,
        response_length=8,
        temperature=1.0,
        truncate_token=None,
        seed=0,
    )
    assert len(ds) == 6 and all(len(s) == 3 for s in ds["samples"])


def test_sample_label_dataset_errors(gpt2_tokenizer):
    tok = gpt2_tokenizer
    never_period = ContextFreeLM(len(tok), {tok.encode(" the")[0]: 1.0})
    with pytest.raises(ValueError, match="all 3 queries were dropped"):
        sample_label_dataset(never_period, tok, ["a.", "b.", "c."], SimulatedLabeler(_count_reward), k=2, seed=0)
    with pytest.raises(ValueError, match="k must be"):
        sample_label_dataset(never_period, tok, ["a."], SimulatedLabeler(_count_reward), k=1)
    with pytest.raises(ValueError, match="truncate_after"):
        sample_label_dataset(
            never_period, tok, ["a."], SimulatedLabeler(_count_reward), response_length=8, truncate_after=8
        )


def test_response_sampler_is_seeded_and_returns_one_response_per_query(gpt2_tokenizer, tiny_gpt2):
    queries = ["It was late.", "The sun rose.", "She wrote a letter."]
    a = ResponseSampler(tiny_gpt2, gpt2_tokenizer, response_length=6, batch_size=2, seed=5)(queries)
    b = ResponseSampler(tiny_gpt2, gpt2_tokenizer, response_length=6, batch_size=2, seed=5)(queries)
    c = ResponseSampler(tiny_gpt2, gpt2_tokenizer, response_length=6, batch_size=2, seed=6)(queries)
    assert a == b and a != c and len(a) == 3
    assert all(len(gpt2_tokenizer(r, add_special_tokens=False)["input_ids"]) >= 1 for r in a)
