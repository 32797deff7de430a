"""Summarization queries (paper: TL;DR and CNN/DM).

A query is the article cut to fit ``max_tokens`` tokens *including* the task's prefix ("Article:\\n\\n" for
CNN/DM) and suffix ("\\n\\nTL;DR:"); the cut drops tokens from the end of the article so the suffix always
survives. Hub paths: TL;DR posts from ``trl-lib/tldr`` (column ``prompt`` already holds subreddit, title and
post) and CNN/DM from ``abisee/cnn_dailymail`` (config ``3.0.0``, column ``article``); their reference summaries
(``completion``, ``highlights``) are kept in a ``reference`` column for ROUGE. Any dataset with a text column works
through :func:`summarization_queries`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
from datasets import Dataset

__all__ = ["format_summarization_query", "summarization_queries", "load_summarization_queries", "HUB_SOURCES"]

#: task -> (dataset id, config, split, text column, text already ends with "TL;DR:", reference-summary column)
HUB_SOURCES: dict[str, tuple[str, str | None, str, str, bool, str]] = {
    "tldr": ("trl-lib/tldr", None, "train", "prompt", True, "completion"),
    "cnndm": ("abisee/cnn_dailymail", "3.0.0", "train", "article", False, "highlights"),
}


def format_summarization_query(text: str, tokenizer: Any, max_tokens: int, prefix: str = "", suffix: str = "") -> str:
    """``prefix + article + suffix`` with the article cut so the whole query has at most ``max_tokens`` tokens."""
    fixed = len(tokenizer(prefix + suffix, add_special_tokens=False)["input_ids"])
    budget = max_tokens - fixed
    if budget <= 0:
        raise ValueError(f"query_length={max_tokens} leaves no room for the prefix and suffix ({fixed} tokens)")
    ids = tokenizer(text.strip(), add_special_tokens=False)["input_ids"][:budget]
    query = prefix + tokenizer.decode(ids).strip() + suffix
    # Re-tokenising a decoded cut can merge tokens differently; trim until it fits.
    while len(tokenizer(query, add_special_tokens=False)["input_ids"]) > max_tokens and ids:
        ids = ids[:-1]
        query = prefix + tokenizer.decode(ids).strip() + suffix
    return query


def summarization_queries(
    texts: Sequence[str],
    tokenizer: Any,
    max_tokens: int = 500,
    prefix: str = "",
    suffix: str = "\n\nTL;DR:",
    references: Sequence[str] | None = None,
) -> Dataset:
    """A ``query`` dataset from raw article texts (empty texts are dropped), with a ``reference`` column when
    ``references`` (one reference summary per text) is given."""
    if references is not None and len(references) != len(texts):
        raise ValueError(f"references: {len(references)} references for {len(texts)} texts")
    keep = [i for i, t in enumerate(texts) if t and t.strip()]
    columns = {"query": [format_summarization_query(texts[i], tokenizer, max_tokens, prefix, suffix) for i in keep]}
    if references is not None:
        columns["reference"] = [str(references[i]).strip() for i in keep]
    return Dataset.from_dict(columns)


def load_summarization_queries(
    task: str, tokenizer: Any, n: int | None = None, max_tokens: int = 500, prefix: str = "", suffix: str = "\n\nTL;DR:"
) -> Dataset:
    """Queries for ``task`` ("tldr" or "cnndm") from the Hugging Face Hub (needs network access)."""
    if task not in HUB_SOURCES:
        raise ValueError(f"task: no summarization source for {task!r}; known: {sorted(HUB_SOURCES)}")
    name, config, split, column, has_suffix, ref_column = HUB_SOURCES[task]
    ds = datasets.load_dataset(name, config, split=split if n is None else f"{split}[:{n}]")
    texts = ds[column]
    if has_suffix:  # trl-lib/tldr prompts already end with "\n\nTL;DR:"
        texts = [t.rsplit("TL;DR:", 1)[0] for t in texts]
    references = ds[ref_column] if ref_column in ds.column_names else None
    return summarization_queries(texts, tokenizer, max_tokens, prefix, suffix, references=references)
