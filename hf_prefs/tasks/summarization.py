"""Summarization queries (paper: TL;DR and CNN/DM).

A query is the article cut to fit ``max_tokens`` tokens *including* the task's prefix ("Article:\\n\\n" for
CNN/DM) and suffix ("\\n\\nTL;DR:"); the cut drops tokens from the end of the article so the suffix always
survives. Hub paths: TL;DR posts from ``trl-lib/tldr`` (column ``prompt`` already holds subreddit, title and
post) and CNN/DM from ``abisee/cnn_dailymail`` (config ``3.0.0``, column ``article``); their reference summaries
(``completion``, ``highlights``) are kept in a ``reference`` column for ROUGE. A local file or folder, or another Hub
dataset, is read by its columns (:func:`summarization_texts`): OpenAI's TL;DR files (``subreddit``, ``title``,
``post``, ``summary``), CNN/DM's (``article``, ``highlights``), prompt/completion rows (trl-lib/tldr) or ``text`` (with
``summary``). Any list of texts works through :func:`summarization_queries`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

import datasets
from datasets import Dataset

from ..dataset_folders import load_text_source
from ..hub_loading import named_hub_errors
from .specs import TASKS

logger = logging.getLogger(__name__)

__all__ = ["format_summarization_query", "summarization_queries", "summarization_texts", "load_summarization_queries",
           "HUB_SOURCES", "TLDR_POST_FORMAT"]

#: task -> (dataset id, config, split); read by their columns (:data:`LAYOUTS`: prompt + completion, article +
#: highlights)
HUB_SOURCES: dict[str, tuple[str, str | None, str]] = {
    "tldr": ("trl-lib/tldr", None, "train"),
    "cnndm": ("abisee/cnn_dailymail", "3.0.0", "train"),
}

#: A Reddit post as trl-lib/tldr's prompts hold it (before their "\n\nTL;DR:"), from OpenAI's TL;DR fields.
TLDR_POST_FORMAT = "SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}"

#: The column layouts :func:`summarization_texts` reads, in the order it tries them: (columns it needs, reference
#: columns it takes the first of).
LAYOUTS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("subreddit", "title", "post"), ("summary", "reference")),  # OpenAI's TL;DR
    (("article",), ("highlights", "summary", "reference")),  # CNN/DM
    (("prompt",), ("completion", "label", "summary", "reference")),  # trl-lib/tldr, CarperAI/openai_summarize_tldr
    (("text",), ("summary", "reference")),
)


def format_summarization_query(text: str, tokenizer: Any, max_tokens: int, prefix: str = "", suffix: str = "") -> str:
    """``prefix + article + suffix`` with the article cut so the whole query has at most ``max_tokens`` tokens.

    An article that fits is kept verbatim (not re-decoded: some tokenizers do not give their text back exactly); a cut
    one is the decoded first tokens, without a character the cut split in two (a trailing U+FFFD)."""
    fixed = len(tokenizer(prefix + suffix, add_special_tokens=False)["input_ids"])
    budget = max_tokens - fixed
    if budget <= 0:
        raise ValueError(f"query_length={max_tokens} leaves no room for the prefix and suffix ({fixed} tokens)")
    article = text.strip()
    all_ids = tokenizer(article, add_special_tokens=False)["input_ids"]
    query = prefix + article + suffix
    if len(all_ids) <= budget and len(tokenizer(query, add_special_tokens=False)["input_ids"]) <= max_tokens:
        return query
    ids = all_ids[:budget]
    while ids and tokenizer.decode(ids).endswith("\ufffd"):  # a multi-byte character cut in two
        ids = ids[:-1]
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
    """A ``query`` dataset from raw article texts, with a ``reference`` column when ``references`` (one reference
    summary per text) is given. Empty texts are dropped; a query that repeats an earlier one (a repost, or two texts
    alike in their first ``max_tokens``) is kept once, with its first reference and a warning — else a held-out query
    could also be trained on."""
    if references is not None and len(references) != len(texts):
        raise ValueError(f"references: {len(references)} references for {len(texts)} texts")
    keep = [i for i, t in enumerate(texts) if t and t.strip()]
    queries = [format_summarization_query(texts[i], tokenizer, max_tokens, prefix, suffix) for i in keep]
    seen: set[str] = set()
    first = [k for k, q in enumerate(queries) if not (q in seen or seen.add(q))]
    if len(first) < len(queries):
        logger.warning("summarization queries: %d of %d queries repeat an earlier one; each is kept once",
                       len(queries) - len(first), len(queries))
    columns = {"query": [queries[k] for k in first]}
    if references is not None:
        columns["reference"] = [str(references[keep[k]]).strip() for k in first]
    return Dataset.from_dict(columns)


def _text_cells(ds: Dataset, column: str, source: str) -> list[str]:
    """The column's cells, a missing one as ""; a cell that is not text is named by row."""
    values = ds[column]
    for row, value in enumerate(values):
        if value is not None and not isinstance(value, str):
            if isinstance(value, list) and value and isinstance(value[0], dict) and "content" in value[0]:
                hint = " (conversational messages: give the text itself)"
            elif isinstance(value, (list, dict)):
                hint = (" (a JSON file written by columns, as pandas' to_json by default? write one object per line: "
                        "to_json(orient='records', lines=True))")
            else:
                hint = ""
            raise ValueError(f"{source}: row {row} of the {column!r} column holds a {type(value).__name__}, not "
                             f"text{hint}")
    return ["" if v is None else v for v in values]


def summarization_texts(ds: Dataset, source: str) -> tuple[list[str], list[str] | None]:
    """``(texts, references)`` of a summarization dataset, by its columns (:data:`LAYOUTS`): OpenAI's TL;DR posts
    (``subreddit``, ``title``, ``post``) formatted as trl-lib/tldr's prompts (:data:`TLDR_POST_FORMAT`); an
    ``article``; a ``prompt`` without its closing "TL;DR:"; a ``text``. ``references``: the first reference column
    present (``summary``, ``highlights``, ``completion``, ``label``, ``reference``), else None. ``source`` names the
    dataset in errors (no known layout: the columns it has; a cell that is not text: its row and column). A missing
    text is "" (:func:`summarization_queries` drops it), as a post without its ``post``."""
    columns = set(ds.column_names)
    layout = next(((need, refs) for need, refs in LAYOUTS if columns.issuperset(need)), None)
    if layout is None:
        known = "; ".join(" + ".join(need) for need, _ in LAYOUTS)
        raise ValueError(f"{source}: no column layout of a summarization dataset ({known}); it has {ds.column_names}")
    need, refs = layout
    if need == ("subreddit", "title", "post"):
        cells = {c: _text_cells(ds, c, source) for c in need}
        texts = [TLDR_POST_FORMAT.format(subreddit=r.strip(), title=t.strip(), post=p.strip()) if p.strip() else ""
                 for r, t, p in zip(cells["subreddit"], cells["title"], cells["post"])]
    else:
        texts = _text_cells(ds, need[0], source)
        if need == ("prompt",):  # trl-lib/tldr prompts already end with "\n\nTL;DR:"
            texts = [TASKS["tldr"].raw_query(t) for t in texts]
    ref = next((c for c in refs if c in columns), None)
    return texts, (None if ref is None else _text_cells(ds, ref, source))


def load_summarization_queries(
    task: str, tokenizer: Any, n: int | None = None, max_tokens: int = 500, prefix: str = "", suffix: str = "\n\nTL;DR:",
    source: str | None = None, seed: int | None = 0, split: str | None = None,
) -> Dataset:
    """Queries for ``task`` ("tldr" or "cnndm"): from ``source`` — a local .json/.jsonl/.csv/.parquet/.txt file, a dataset
    folder or another Hub dataset id, read by its columns (:func:`summarization_texts`) — or, None, from the task's
    Hub source (:data:`HUB_SOURCES`; needs network access); ``split`` of it (None: ``train``, or the Hub source's).
    The rows are shuffled with ``seed`` (None: file order;
    errors name a row by its place in the file);
    ``n``: the first n distinct, non-empty queries of that order (fewer only when the source has no more)."""
    if task not in HUB_SOURCES:
        raise ValueError(f"task: no summarization source for {task!r}; known: {sorted(HUB_SOURCES)}")
    name, config, hub_split = HUB_SOURCES[task]
    if source is None or source == name:
        with named_hub_errors("query_dataset", name):
            ds = datasets.load_dataset(name, config, split=split or hub_split)
    else:
        ds = load_text_source(source, split or "train")
    texts, references = summarization_texts(ds, f"query_dataset {source or name}")  # errors name the file's rows
    order = list(range(len(texts)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    texts = [texts[i] for i in order]
    references = None if references is None else [references[i] for i in order]
    rows = len(texts) if n is None else min(n, len(texts))
    while True:  # empty texts and repeats are dropped after the cut: read more rows until n queries remain
        queries = summarization_queries(texts[:rows], tokenizer, max_tokens, prefix, suffix,
                                        references=None if references is None else references[:rows])
        if n is None or len(queries) >= n or rows == len(texts):
            return queries if n is None else queries.select(range(min(n, len(queries))))
        rows = min(len(texts), max(rows + n - len(queries), 2 * rows))
