"""ROUGE (via evaluate, offline through the rouge_score scorer it wraps) and the paired win rate."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import ForceToken
from hf_prefs.analysis.metrics import compare_policies, paired_difference, rouge, win_rate

pytest.importorskip("rouge_score")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_rouge_by_hand():
    # unigrams: 5 of 6 shared each way -> F1 5/6; bigrams: "the cat", "on the", "the mat" of 5 -> 3/5; LCS 5 of 6
    pred, ref = "the cat sat on the mat", "the cat is on the mat"
    scores = rouge([pred], [ref])
    assert scores["rouge1"] == pytest.approx(5 / 6)
    assert scores["rouge2"] == pytest.approx(3 / 5)
    assert scores["rougeL"] == pytest.approx(5 / 6)
    # stemming matches "cats" with "cat"; the mean is over examples
    both = rouge([pred, "cats"], [ref, "cat"], rouge_types=["rouge1"], per_example=True)
    assert both["rouge1"] == pytest.approx([5 / 6, 1.0])
    assert rouge([pred, "cats"], [ref, "cat"], rouge_types=["rouge1"])["rouge1"] == pytest.approx((5 / 6 + 1) / 2)
    assert rouge(["cats"], ["cat"], rouge_types=["rouge1"], use_stemmer=False)["rouge1"] == 0.0


def test_rouge_uses_evaluate_when_the_hub_answers_and_falls_back_when_not(monkeypatch):
    import evaluate

    calls = []

    class FakeRouge:  # what evaluate.load("rouge") returns: compute(...) -> per-example F1 lists
        def compute(self, predictions, references, rouge_types, use_stemmer, use_aggregator):
            calls.append((rouge_types, use_stemmer, use_aggregator))
            return {t: [0.25] * len(predictions) for t in rouge_types}

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(evaluate, "load", lambda name, **_: FakeRouge() if name == "rouge" else None)
    assert rouge(["a b"], ["a b"], rouge_types=["rouge1"]) == {"rouge1": 0.25}
    assert calls == [(["rouge1"], True, False)]

    def unreachable(name, **_):
        raise ConnectionError("no route to the Hub")

    monkeypatch.setattr(evaluate, "load", unreachable)
    assert rouge(["a b"], ["a b"], rouge_types=["rouge1"]) == {"rouge1": 1.0}


def test_rouge_bad_input_names_the_field():
    with pytest.raises(ValueError, match="references"):
        rouge(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="rouge_types"):
        rouge(["a"], ["a"], rouge_types=["bleu"])
    with pytest.raises(TypeError, match="predictions is one string"):  # was scored character by character
        rouge("the cat sat", "the cat sat")


def test_win_rate_by_hand():
    rate, se = win_rate([1, 2, 3, 3], [0, 2, 4, 1])  # outcomes 1, 1/2 (tie), 0, 1
    assert rate == pytest.approx(0.625)
    outcomes = torch.tensor([1, 0.5, 0, 1], dtype=torch.float64)
    assert se == pytest.approx(float(outcomes.std()) / 2)
    with pytest.raises(ValueError, match="scores_a, scores_b"):
        win_rate([1, 2], [1])
    with pytest.raises(ValueError, match="scores_a, scores_b: .* got \\(0,\\) and \\(0,\\)"):
        win_rate([], [])
    for a, b in (([float("nan"), 1.0], [0.0, 0.0]), ([1.0, 1.0], [0.0, float("nan")])):  # not counted as a loss
        assert all(math.isnan(v) for v in win_rate(a, b)) and math.isnan(paired_difference(a, b)[0])


def test_paired_difference_by_hand():
    mean, se = paired_difference([2.0, 1.0, 0.5], [1.0, 1.0, -0.5])  # differences 1, 0, 1
    assert mean == pytest.approx(2 / 3)
    assert se == pytest.approx(float(torch.tensor([1.0, 0.0, 1.0]).std()) / math.sqrt(3))
    with pytest.raises(ValueError, match="before"):
        paired_difference([1.0], [])


def test_compare_policies(tiny_gpt2, gpt2_tokenizer):
    the = gpt2_tokenizer.encode(" the")[0]
    queries = ["Once upon a time", "It was a dark night", "She said that", "In the morning"]
    judge = lambda q, r: [float(text.count(" the")) for text in r]  # noqa: E731
    kw = dict(response_length=5, temperature=1.0, batch_size=2, seed=7)
    same = compare_policies(tiny_gpt2, tiny_gpt2, gpt2_tokenizer, queries, judge, **kw)
    assert same["win_rate"] == 0.5 and same["judge_a"] == same["judge_b"]  # same seed: the same samples, all ties
    boosted = compare_policies(ForceToken(tiny_gpt2, the), tiny_gpt2, gpt2_tokenizer, queries, judge, **kw)
    assert boosted["win_rate"] == 1.0 and boosted["judge_a"] == 5.0 and boosted["n"] == 4
    assert math.isfinite(boosted["win_rate_se"])
