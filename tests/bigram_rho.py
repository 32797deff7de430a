"""A word-bigram language model of Jane Austen's novels: a CPU-cheap stand-in for ρ in slow tests and benchmarks.

SmolLM2-135M is the paper-like ρ, but sampling it on 2 shared CPU cores runs at about 1–3 responses of 24 tokens
per second (measured), far too slow to draw thousands of best-of-4 label sets in a test. This module fits, in a
few seconds, P(next word | previous word) on the six novels (top ``vocab_size`` words and punctuation; the rest is
``[UNK]``, which is never emitted), smoothed with the unigram distribution:

    P(w_t | w_{t-1}) = (1 - s) · C(w_{t-1}, w_t) / C(w_{t-1}) + s · C(w_t) / N

and exposes it with the causal-LM call interface that :func:`hf_prefs.models.generation.sample_responses` uses
(``model(input_ids, attention_mask, position_ids, past_key_values, use_cache) -> .logits, .past_key_values``),
together with a word-level ``PreTrainedTokenizerFast``. Its samples are Austen-flavoured word salad whose
sentiment words come at their natural frequency, which is what a VADER-labelled test needs.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, UNK = "[PAD]", "[UNK]"


class BigramLM(torch.nn.Module):
    """Next-token log-probabilities ``log_probs[previous token]``.

    Returns the logits of the last position only, ``(B, 1, V)`` (like ``logits_to_keep=1`` of transformers models),
    which is all that sampling reads; no cache is needed since only the last token matters.
    """

    def __init__(self, log_probs: torch.Tensor):
        super().__init__()
        self.log_probs = torch.nn.Parameter(log_probs, requires_grad=False)  # (V, V)

    def forward(
        self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None, **kwargs
    ):
        return SimpleNamespace(logits=self.log_probs[input_ids[:, -1:]], past_key_values=None)  # (B, 1, V)


def _splitter() -> pre_tokenizers.PreTokenizer:
    """Words and single punctuation marks; whitespace dropped."""
    return pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"\w+|[^\w\s]"), behavior="isolated")]
    )


def _word_tokenizer(vocab: list[str]) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token=UNK))
    tok.normalizer = normalizers.Replace("_", "")  # Austen's italics markers
    tok.pre_tokenizer = _splitter()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins with spaces, re-attaches punctuation
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK, eos_token=PAD)


def austen_bigram(vocab_size: int = 3000, smoothing: float = 0.1) -> tuple[BigramLM, PreTrainedTokenizerFast]:
    """Fit the bigram ρ on the ``austen`` asset; returns ``(model, tokenizer)``."""
    from collections import Counter

    from hf_prefs.tasks.books import austen_paragraphs

    texts, _ = austen_paragraphs()
    splitter = _splitter()
    words = [w for text in texts for w, _ in splitter.pre_tokenize_str(text.replace("_", ""))]
    vocab = [PAD, UNK] + [w for w, _ in Counter(words).most_common(vocab_size - 2)]
    tokenizer = _word_tokenizer(vocab)
    index = {w: i for i, w in enumerate(vocab)}
    ids = torch.tensor([index.get(w, 1) for w in words])
    v = len(vocab)
    unigram = torch.bincount(ids, minlength=v).double()
    unigram[:2] = 0.0  # never emit padding or [UNK]
    unigram /= unigram.sum()
    pairs = torch.bincount(ids[:-1] * v + ids[1:], minlength=v * v).double().view(v, v)
    pairs[:, :2] = 0.0
    rows = pairs.sum(1, keepdim=True)
    bigram = torch.where(rows > 0, pairs / rows.clamp(min=1), unigram[None, :])
    probs = (1 - smoothing) * bigram + smoothing * unigram[None, :]
    return BigramLM(probs.clamp(min=1e-30).log().float()), tokenizer
