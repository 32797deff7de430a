"""Book-passage queries for the paper's stylistic-continuation tasks (sentiment, descriptiveness).

The paper samples 64-token queries from BookCorpus that start right after a '.' and end at a '.'.
BookCorpus is not reachable here, so :func:`austen_queries` cuts the same kind of queries from Jane
Austen's six novels (the ``austen`` offline asset); :func:`book_queries_from_texts` applies the cut to
any list of passages and :func:`load_book_queries` loads a Hub dataset when one is named.

A sentence boundary is a '.' followed by whitespace (or the end of the passage) that does not close a
title or an initial ("Mr.", "Mrs.", "J."). A query is the text between two boundaries of one passage
(leading whitespace stripped), so it always ends with '.', and its length in tokens of the given
tokenizer (no special tokens) lies in ``[min_tokens, max_tokens]``. Each window is the longest run of
whole sentences that fits ``max_tokens``; by default the windows of a passage do not overlap.
"""

from __future__ import annotations

import logging
import random
import re
import string
from typing import Any, Sequence

import datasets

from ..assets import austen_novels
from ..dataset_folders import load_text_source

logger = logging.getLogger(__name__)

#: Words whose trailing '.' is not a sentence end.
ABBREVIATIONS = frozenset(
    "mr mrs ms messrs dr st esq col capt gen lieut lt rev sir jr sr no vol ch bart hon".split()
)

_BOUNDARY = re.compile(r"\.(?=\s|$)")
_ASCII_LETTERS = frozenset(string.ascii_letters)


def paragraphs_from_lines(lines: Sequence[str]) -> list[str]:
    """Join runs of non-blank lines into paragraphs (lines joined with one space, whitespace collapsed)."""
    paragraphs, current = [], []
    for line in list(lines) + [""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(" ".join(current).split()))
            current = []
    return paragraphs


def sentence_boundaries(text: str) -> list[int]:
    """Character offsets just after each sentence-ending '.' in ``text``."""
    ends = []
    for match in _BOUNDARY.finditer(text):
        start = first = match.start()
        while first > 0 and text[first - 1] in _ASCII_LETTERS:  # the run of letters just before the '.'
            first -= 1
        word = text[first:start]
        if word and (word.lower() in ABBREVIATIONS or (len(word) == 1 and word.isupper())):
            continue
        ends.append(match.end())
    return ends


def _n_tokens(tokenizer: Any, texts: list[str]) -> list[int]:
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _windows(piece_lens: list[int], bounds: list[int], max_tokens: int, overlap: bool) -> list[tuple[int, int]]:
    """Greedy (start boundary index, end boundary index) pairs with estimated lengths ≤ max.

    Without ``overlap`` the next window starts where the previous one ended; with it, at every boundary.
    """
    out, i = [], 0
    while i < len(bounds) - 1:
        total, j = 0, i
        while j < len(bounds) - 1 and total + piece_lens[j] <= max_tokens:
            total += piece_lens[j]
            j += 1
        if j == i:  # the next sentence alone is too long
            i += 1
            continue
        out.append((i, j))
        i = i + 1 if overlap else j
    return out


def _cut_passages(texts: Sequence[str], tokenizer: Any, min_tokens: int, max_tokens: int, overlap: bool = False
                  ) -> list[list[str]]:
    """The queries of each passage (see the module docstring). Tokenizes in two batches over all passages (every
    sentence, then every window) and one text at a time only where a window's estimate was low."""
    bounds = [sentence_boundaries(text) for text in texts]
    pieces = [text[b[k] : b[k + 1]] for text, b in zip(texts, bounds) for k in range(len(b) - 1)]
    piece_lens = _n_tokens(tokenizer, pieces)  # BPE counts of space-led pieces add up (checked below)
    windows, start = [], 0  # (passage, start boundary index, end boundary index); passage p's pieces from start
    for p, b in enumerate(bounds):
        end = start + max(len(b) - 1, 0)
        windows += [(p, i, j) for i, j in _windows(piece_lens[start:end], b, max_tokens, overlap)]
        start = end
    candidates = [texts[p][bounds[p][i] : bounds[p][j]].strip() for p, i, j in windows]
    queries: list[list[str]] = [[] for _ in texts]
    for (p, i, j), query, n in zip(windows, candidates, _n_tokens(tokenizer, candidates)):
        text, b = texts[p], bounds[p]
        while n > max_tokens:  # verify the real token count; drop trailing sentences if the estimate was low
            j -= 1
            if j == i:
                break
            query = text[b[i] : b[j]].strip()
            n = _n_tokens(tokenizer, [query])[0]
        if j > i and min_tokens <= n <= max_tokens:
            queries[p].append(query)
    return queries


class TooFewQueriesError(ValueError):
    """The texts hold fewer queries than were asked for: ``asked``, ``available`` and what they had to ``fit``."""

    def __init__(self, asked: int, available: int, fit: str) -> None:
        super().__init__(f"asked for {asked} queries but only {available} fit {fit}")
        self.asked, self.available, self.fit = asked, available, fit

    def __reduce__(self) -> tuple[type, tuple[int, int, str]]:  # pickled and copied with its own arguments
        return type(self), (self.asked, self.available, self.fit)


def book_queries_from_texts(
    texts: Sequence[str],
    tokenizer: Any,
    n: int | None = None,
    min_tokens: int = 32,
    max_tokens: int = 64,
    seed: int = 0,
    sources: Sequence[str] | str = "text",
    overlap: bool = False,
) -> datasets.Dataset:
    """Cut paper-style queries from passages and return a shuffled ``Dataset(query, source)``.

    Args:
        texts: passages (paragraphs); queries never cross a passage.
        tokenizer: a Hugging Face tokenizer; lengths are measured without special tokens.
        n: keep the first ``n`` queries after a seeded shuffle (``None``: all). Raises :class:`TooFewQueriesError`
            (a ``ValueError``) if fewer than ``n`` exist.
        min_tokens, max_tokens: token-length window of a query (the paper used 64-token queries).
        seed: shuffle seed; the result is a deterministic function of the inputs.
        sources: one source name for all passages, or one per passage.
        overlap: start a window at every sentence boundary (about 5x more, overlapping, queries)
            instead of tiling each passage with non-overlapping windows.
    """
    if not 0 < min_tokens <= max_tokens:
        raise ValueError(f"need 0 < min_tokens <= max_tokens, got {min_tokens}, {max_tokens}")
    names = [sources] * len(texts) if isinstance(sources, str) else list(sources)
    if len(names) != len(texts):
        raise ValueError("sources must be a string or have one entry per text")
    cut = _cut_passages(texts, tokenizer, min_tokens, max_tokens, overlap)
    rows = [(q, src) for queries, src in zip(cut, names) for q in queries]
    seen: set[str] = set()
    distinct = [(q, src) for q, src in rows if not (q in seen or seen.add(q))]  # each text once, where it first came
    if len(distinct) < len(rows):  # a repeated passage: its query would be held out and trained on at once
        logger.warning("book queries: %d of %d queries repeat an earlier one (repeated passages); each is kept once",
                       len(rows) - len(distinct), len(rows))
        rows = distinct
    random.Random(seed).shuffle(rows)
    if n is not None:
        if n > len(rows):
            ends = sum(1 for text in texts if sentence_boundaries(text))
            fit = f"{min_tokens}-{max_tokens} tokens from one sentence end to another"
            if ends < len(texts):  # a text in another script ("。") or without punctuation: the cause, said
                fit += (f" (a sentence end is a '.' followed by whitespace: {len(texts) - ends} of {len(texts)} "
                        "passages have none)")
            raise TooFewQueriesError(n, len(rows), fit)
        rows = rows[:n]
    return datasets.Dataset.from_dict({"query": [q for q, _ in rows], "source": [s for _, s in rows]})


def austen_paragraphs() -> tuple[list[str], list[str]]:
    """Paragraphs of the six Austen novels (italic underscores removed) and their novel names."""
    texts, sources = [], []
    for name, lines in austen_novels().items():
        for paragraph in paragraphs_from_lines([line.replace("_", "") for line in lines]):
            texts.append(paragraph)
            sources.append(name)
    return texts, sources


def austen_queries(
    tokenizer: Any,
    n: int | None = None,
    min_tokens: int = 32,
    max_tokens: int = 64,
    seed: int = 0,
    overlap: bool = False,
) -> datasets.Dataset:
    """Paper-style book queries from Jane Austen's novels (needs ``hf-prefs assets fetch --only austen``).

    Returns a ``Dataset`` with columns ``query`` (text ending with '.') and ``source`` (novel name).
    """
    texts, sources = austen_paragraphs()
    return book_queries_from_texts(texts, tokenizer, n, min_tokens, max_tokens, seed, sources, overlap)


def load_book_queries(
    dataset_name: str | None,
    tokenizer: Any,
    n: int | None = None,
    min_tokens: int = 32,
    max_tokens: int = 64,
    seed: int = 0,
    split: str = "train",
    text_column: str = "text",
    lines_per_passage: int = 1,
    max_rows: int | None = None,
) -> datasets.Dataset:
    """Book queries from a Hub dataset (e.g. ``"bookcorpus"``) or, with ``dataset_name=None``, from Austen.

    For a Hub dataset, rows of ``text_column`` (the first ``max_rows`` if given) are grouped by
    ``lines_per_passage`` consecutive rows into passages (BookCorpus has one sentence per row, so use
    e.g. 8), then cut like :func:`book_queries_from_texts`.
    """
    if dataset_name is None:
        return austen_queries(tokenizer, n, min_tokens, max_tokens, seed)
    ds = load_text_source(dataset_name, split)
    if text_column not in ds.column_names:
        raise ValueError(f"query_dataset {dataset_name}: no {text_column!r} column (it has {ds.column_names})")
    if max_rows is not None:
        ds = ds.select(range(min(max_rows, len(ds))))
    values = ds[text_column]
    if (bad := next(((i, t) for i, t in enumerate(values) if t is not None and not isinstance(t, str)), None)):
        hint = (" (a JSON file written by columns, {\"text\": [...]}? write one object per line, {\"text\": \"...\"}, "
                "or a list of such objects)" if isinstance(bad[1], list) else "")
        raise ValueError(f"query_dataset {dataset_name}: row {bad[0]} of the {text_column!r} column holds a "
                         f"{type(bad[1]).__name__}, not text{hint}")
    rows = [" ".join(t.split()) for t in values if isinstance(t, str) and t.strip()]  # blank cells: None, ""
    passages = [" ".join(rows[k : k + lines_per_passage]) for k in range(0, len(rows), lines_per_passage)]
    return book_queries_from_texts(passages, tokenizer, n, min_tokens, max_tokens, seed, dataset_name)
