"""Known ("ground-truth") rewards r_s for mock-labeling experiments (paper §3.1.1).

The paper's mock sentiment reward is a classifier's log-odds that a text is positive. Offline, VADER
stands in (:func:`vader_log_odds`, :class:`VaderScorer`); with the Hub, any text-classification model
can be used (:class:`HubSentimentScorer`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from ..hub_loading import named_hub_errors

__all__ = ["VADER_CLIP", "vader_compound", "vader_log_odds", "VaderScorer", "HubSentimentScorer", "make_known_reward"]

#: VADER compound scores are clipped to ±VADER_CLIP so that 2·atanh(c) stays finite (|r| ≤ ~14.5).
VADER_CLIP = 0.999999


@functools.lru_cache(maxsize=1)
def _vader() -> Any:
    return SentimentIntensityAnalyzer()


def vader_compound(texts: Sequence[str]) -> list[float]:
    """VADER compound polarity c ∈ [−1, 1] of each text."""
    if isinstance(texts, str):  # scored character by character otherwise
        raise TypeError("texts is one string; pass a list of texts")
    texts = list(texts)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"texts[{bad}] is {type(texts[bad]).__name__}, not a string")
    analyzer = _vader()
    return [float(analyzer.polarity_scores(text)["compound"]) for text in texts]


def vader_log_odds(texts: Sequence[str]) -> list[float]:
    """VADER sentiment as log-odds of "positive": r = 2·atanh(c).

    Reading the compound score c ∈ (−1, 1) as p = (1 + c)/2, the probability that the text is positive,
    the log-odds are log(p / (1 − p)) = log((1 + c)/(1 − c)) = 2·atanh(c). c is first clipped to
    ±0.999999 so the reward is finite (|r| ≤ log(1.999999 / 0.000001) ≈ 14.5). Neutral text (c = 0)
    gets r = 0; on book prose VADER is often exactly 0, so this reward is sparse.
    """
    return [2.0 * math.atanh(min(max(c, -VADER_CLIP), VADER_CLIP)) for c in vader_compound(texts)]


class VaderScorer:
    """Callable known reward: ``scorer(texts) -> torch.FloatTensor`` of VADER log-odds (see :func:`vader_log_odds`)."""

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.tensor(vader_log_odds(list(texts)), dtype=torch.float32)

    def __repr__(self) -> str:
        return "VaderScorer()"


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class HubSentimentScorer:
    """Log-odds of the positive class from a text-classification model (Hub id or local folder).

    ``r = logit_pos − logsumexp(other logits)``, which for a 2-class head is ``logit_pos − logit_neg``,
    the log-odds of the model's softmax probability of ``positive_label``. A 1-logit head returns its
    logit. Example: ``HubSentimentScorer("distilbert/distilbert-base-uncased-finetuned-sst-2-english")``.

    Args:
        model_id: Hub id or local path, loaded with ``AutoModelForSequenceClassification``.
        positive_label: name of the positive class in ``config.id2label`` (case-insensitive).
        device: torch device (default: CUDA if available, else CPU).
        batch_size: texts per forward pass.
        max_length: truncation length in tokens (capped by the tokenizer's ``model_max_length``).
    """

    def __init__(
        self,
        model_id: str,
        positive_label: str = "POSITIVE",
        device: str | torch.device | None = None,
        batch_size: int = 32,
        max_length: int = 512,
    ) -> None:
        self.device = torch.device(device) if device is not None else _default_device()
        self.batch_size = batch_size
        with named_hub_errors("known_reward", model_id):
            self.tokenizer = AutoTokenizer.from_pretrained(model_id)
            self.model = AutoModelForSequenceClassification.from_pretrained(model_id).to(self.device).eval()
        self.max_length = min(max_length, self.tokenizer.model_max_length or max_length)
        if self.tokenizer.pad_token is None:
            # Scoring only: GPT-style tokenizers lack a pad token; padding with eos is harmless here
            # because the attention mask hides it and texts rarely contain eos.
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.positive_index = self._label_index(positive_label)

    def _label_index(self, label: str) -> int:
        id2label = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        if self.model.config.num_labels == 1:
            return 0
        for idx, name in id2label.items():
            if name.lower() == label.lower():
                return idx
        raise ValueError(f"label {label!r} not in the model's labels {sorted(id2label.values())}")

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """Log-odds of positive for each text, as a float32 CPU tensor."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            logits = self.model(**batch).logits.float()
            out.append(self.log_odds(logits, self.positive_index).cpu())
        return torch.cat(out) if out else torch.zeros(0)

    @staticmethod
    def log_odds(logits: torch.Tensor, positive_index: int) -> torch.Tensor:
        """``logits[:, pos] − logsumexp(logits[:, others])`` (the logit itself for a 1-logit head)."""
        if logits.shape[-1] == 1:
            return logits[:, 0]
        others = torch.cat([logits[:, :positive_index], logits[:, positive_index + 1 :]], dim=-1)
        return logits[:, positive_index] - torch.logsumexp(others, dim=-1)


def make_known_reward(spec: str | None, positive_label: str = "POSITIVE") -> Callable[[list[str]], list[float]] | None:
    """``'vader'``: VADER's compound c as log-odds 2·atanh(c) (offline); ``None``/``'none'``: no known reward (human
    tasks); else a text-classification model (Hub id or folder) whose ``positive_label`` class log-odds is the reward
    (the paper's mock sentiment classifier)."""
    if spec in (None, "", "none"):
        return None
    if spec == "vader":
        return vader_log_odds
    try:
        scorer = HubSentimentScorer(spec, positive_label=positive_label)
    except ValueError as err:  # e.g. a classifier without that class
        raise ValueError(f"known_reward: {spec}: {err} (the known reward is the log-odds of its {positive_label!r} "
                         "class: set known_reward_positive_label)") from None
    return lambda texts: scorer(texts).tolist()
