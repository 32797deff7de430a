"""The queries of each task, cut like the paper's: book passages (sentiment, descriptiveness) and articles with the
task's prefix/suffix (TL;DR, CNN/DM)."""

from __future__ import annotations

from typing import Any

from datasets import Dataset

from .books import austen_queries, load_book_queries
from .specs import get_task
from .summarization import load_summarization_queries, summarization_queries

__all__ = ["load_task_queries", "HUB_LINES_PER_PASSAGE"]

#: Rows of a Hub book dataset joined into one passage before queries are cut from it (BookCorpus has a sentence per
#: row: a query spans sentences, so one row alone would hold none)
HUB_LINES_PER_PASSAGE = 8


def load_task_queries(
    task: str, tokenizer: Any, n: int | None = None, seed: int = 0, query_dataset: str | None = None, min_tokens: int = 32,
    split: str | None = None,
) -> Dataset:
    """The task's queries (``query`` column; ``reference`` summaries when the source has them).

    Books tasks: passages that start after a '.' and end at a '.', ``min_tokens``..64 tokens, from
    ``query_dataset`` (a BookCorpus-style Hub id, :data:`HUB_LINES_PER_PASSAGE` rows to a passage) or, unset /
    ``"austen"``, the offline Austen novels; none found raises naming ``query_dataset``. TL;DR and
    CNN/DM: articles cut to fit ``query_length`` with the task's prefix/suffix, from ``query_dataset`` (a local
    file or folder, or a Hub id, read by its columns: :func:`~hf_prefs.tasks.summarization.summarization_texts`) or,
    unset, the task's Hub source, shuffled with ``seed``; ``query_dataset="austen"`` uses Austen passages as offline
    stand-in articles. ``split``: the split of ``query_dataset`` (a folder's or a Hub dataset's, or the task's Hub
    source's; None: ``train``); a single file has one, ``train``, and Austen's novels none.
    """
    spec = get_task(task)
    if task in ("sentiment", "descriptiveness"):
        name = None if query_dataset in (None, "austen") else query_dataset
        _check_split_of(name, split)
        queries = load_book_queries(name, tokenizer, n=n, min_tokens=min_tokens, max_tokens=spec.query_length, seed=seed,
                                    split=split or "train", lines_per_passage=HUB_LINES_PER_PASSAGE)
        if len(queries) == 0:
            raise ValueError(f"query_dataset: no passage of {name or 'austen'} holds a query of {min_tokens}.."
                             f"{spec.query_length} tokens between two '.' (query_min_tokens, the task's query length)")
        return queries
    if query_dataset == "austen":
        _check_split_of(None, split)
        texts = austen_queries(tokenizer, n=n, min_tokens=min_tokens, max_tokens=spec.query_length, seed=seed)["query"]
        return summarization_queries(texts, tokenizer, spec.query_length, spec.query_prefix, spec.query_suffix)
    return load_summarization_queries(
        task, tokenizer, n=n, max_tokens=spec.query_length, prefix=spec.query_prefix, suffix=spec.query_suffix,
        source=query_dataset, seed=seed, split=split,
    )


def _check_split_of(source: str | None, split: str | None) -> None:
    """Austen's novels (``source`` None) are read whole: a split other than ``train`` is refused by name."""
    if source is None and split not in (None, "train"):
        raise ValueError(f"query_dataset_split {split!r}: Austen's novels have no splits (give a query_dataset)")
