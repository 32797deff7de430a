"""Known rewards: VADER log-odds and a Hub-style sentiment classifier (built locally from a tiny config)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from hf_prefs.pipeline import PipelineArguments
from hf_prefs.pipeline.labels import make_labeler
from hf_prefs.tasks import known_rewards as scorers
from hf_prefs.tasks.known_rewards import (
    HubSentimentScorer,
    VaderScorer,
    make_known_reward,
    vader_compound,
    vader_log_odds,
)

POSITIVE = "I love this, wonderful!"
NEGATIVE = "terrible, awful, I hate it"


def test_vader_log_odds_sign_and_math():
    pos, neg, neutral = vader_log_odds([POSITIVE, NEGATIVE, "The table is in the room."])
    assert pos > 1.0 and neg < -1.0 and neutral == 0.0
    for c, r in zip(vader_compound([POSITIVE, NEGATIVE]), [pos, neg]):
        assert r == pytest.approx(math.log((1 + c) / (1 - c)))


def test_vader_refuses_a_bare_string_and_names_a_text_that_is_not_one():
    with pytest.raises(TypeError, match="one string"):  # was one score per character
        vader_log_odds(POSITIVE)
    with pytest.raises(TypeError, match=r"texts\[1\] is NoneType"):
        vader_compound([POSITIVE, None])


def test_vader_log_odds_clipped_finite(monkeypatch):
    monkeypatch.setattr(scorers, "vader_compound", lambda texts: [1.0, -1.0, 0.0])
    top, bottom, zero = vader_log_odds(["a", "b", "c"])
    bound = 2 * math.atanh(0.999999)
    assert math.isfinite(top) and top == pytest.approx(bound) and bound == pytest.approx(14.5087, abs=1e-3)
    assert bottom == pytest.approx(-bound) and zero == 0.0


def test_vader_scorer_tensor():
    out = VaderScorer()([POSITIVE, NEGATIVE])
    assert out.dtype == torch.float32 and out.shape == (2,)
    assert out[0] > 0 > out[1]
    assert VaderScorer()([]).shape == (0,)


@pytest.fixture
def tiny_classifier_dir(tmp_path, gpt2_tokenizer):
    """A 2-label GPT-2 classifier saved like a Hub checkpoint (random weights, real tokenizer)."""
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=50257, n_positions=64, n_embd=32, n_layer=1, n_head=2, num_labels=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1}, pad_token_id=50256,
    )
    model = GPT2ForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path / "clf")
    gpt2_tokenizer.save_pretrained(tmp_path / "clf")
    return tmp_path / "clf"


def test_hub_scorer_is_logit_difference(tiny_classifier_dir):
    scorer = HubSentimentScorer(str(tiny_classifier_dir), device="cpu", batch_size=2)
    texts = [POSITIVE, NEGATIVE, "A much longer sentence than the others, to force padding in the batch."]
    got = scorer(texts)
    assert got.shape == (3,) and got.dtype == torch.float32
    tok = scorer.tokenizer
    with torch.no_grad():  # one text at a time: no padding at all
        want = [scorer.model(**tok(t, return_tensors="pt")).logits[0] for t in texts]
    torch.testing.assert_close(got, torch.stack([w[1] - w[0] for w in want]), atol=1e-5, rtol=1e-5)
    flipped = HubSentimentScorer(str(tiny_classifier_dir), positive_label="negative", device="cpu")
    torch.testing.assert_close(flipped(texts), -got, atol=1e-5, rtol=1e-5)


def test_hub_scorer_unknown_label(tiny_classifier_dir):
    with pytest.raises(ValueError, match="not in the model's labels"):
        HubSentimentScorer(str(tiny_classifier_dir), positive_label="joy", device="cpu")
    # the recipes' known_reward: a classifier without a POSITIVE class names the field
    config = GPT2Config.from_pretrained(tiny_classifier_dir)
    config.id2label, config.label2id = {0: "sad", 1: "happy"}, {"sad": 0, "happy": 1}
    config.save_pretrained(tiny_classifier_dir)
    with pytest.raises(ValueError, match=r"known_reward: .*not in the model's labels \['happy', 'sad'\].*known_reward_positive_label"):
        make_known_reward(str(tiny_classifier_dir))
    happy = make_known_reward(str(tiny_classifier_dir), positive_label="Happy")  # the recipes' known_reward_positive_label
    sad = make_known_reward(str(tiny_classifier_dir), positive_label="sad")
    assert happy([POSITIVE, NEGATIVE]) == pytest.approx([-x for x in sad([POSITIVE, NEGATIVE])], abs=1e-5)
    pa = PipelineArguments(task="sentiment", known_reward=str(tiny_classifier_dir), known_reward_positive_label="sad")
    assert make_labeler(pa, seed=0).score([""], [[POSITIVE, NEGATIVE]])[0] == pytest.approx(sad([POSITIVE, NEGATIVE]))


def test_log_odds_multiclass_and_single_logit():
    logits = torch.tensor([[0.5, 1.5, -1.0]])
    p = logits.softmax(-1)[0, 1]
    assert HubSentimentScorer.log_odds(logits, 1).item() == pytest.approx(math.log(p / (1 - p)), abs=1e-6)
    assert HubSentimentScorer.log_odds(torch.tensor([[2.5]]), 0).item() == 2.5
