"""The label schema: one best-of-K human (or simulated) comparison per row.

Canonical columns of a label ``datasets.Dataset``:

==========  ============  ===========================================================
column      type          meaning
==========  ============  ===========================================================
query       str           the prompt x shown to the labeler
samples     list[str]     the K continuations y_0..y_{K-1} (K >= 2, same K on every row)
best        int           index b in [0, K) of the continuation the labeler picked
==========  ============  ===========================================================

Optional columns are kept as they are (``query_id``, ``labeler``, ``round``...). The paper's flat layout
``sample0..sample{K-1}`` is accepted everywhere and converted by :func:`to_canonical`.

Converters: :func:`from_pairwise` (TRL's ``prompt``/``chosen``/``rejected`` preference format, K = 2),
:func:`to_pairwise` (K-way -> the K-1 implied (best, other) pairs... see its docstring),
:func:`from_openai_json` (the paper's released ``offline_5k.json``-style files of token ids).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from datasets import Dataset, Value

__all__ = [
    "LabelValidationError",
    "to_canonical",
    "validate_labels",
    "from_pairwise",
    "to_pairwise",
    "from_openai_json",
    "OPENAI_PAD_ID",
]

#: The id the paper's label files pad queries and samples with (outside GPT-2's 50,257-token vocab).
OPENAI_PAD_ID = 50259

_SAMPLE_COLUMN = re.compile(r"^sample(\d+)$")


class LabelValidationError(ValueError):
    """A label row breaks the schema; ``row`` and ``field`` say where."""

    def __init__(self, message: str, row: int | None = None, field: str | None = None):
        self.row, self.field = row, field
        where = []
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


def _flat_sample_columns(column_names: Sequence[str]) -> list[str]:
    indexed = sorted((int(m.group(1)), c) for c in column_names if (m := _SAMPLE_COLUMN.match(c)))
    names = [c for _, c in indexed]
    if names and [i for i, _ in indexed] != list(range(len(indexed))):
        raise LabelValidationError(f"flat sample columns must be sample0..sample{{K-1}} without gaps, got {names}")
    return names


def to_canonical(dataset: Dataset) -> Dataset:
    """Return ``dataset`` with a ``samples`` list column (merging ``sample0..sample{K-1}`` if needed)."""
    cols = dataset.column_names
    if "samples" in cols:
        return dataset
    flat = _flat_sample_columns(cols)
    if not flat:
        raise LabelValidationError(
            f"a label dataset needs a 'samples' column or 'sample0..sample{{K-1}}' columns; got columns {cols}"
        )
    return dataset.map(lambda row: {"samples": [row[c] for c in flat]}, remove_columns=flat)


def _check_row(i: int, row: Mapping[str, Any], k: int | None) -> int:
    query = row.get("query")
    if not isinstance(query, str):
        raise LabelValidationError(f"query must be a string, got {type(query).__name__}", i, "query")
    samples = row.get("samples")
    if not isinstance(samples, (list, tuple)):
        raise LabelValidationError(f"samples must be a list of strings, got {type(samples).__name__}", i, "samples")
    if len(samples) < 2:
        raise LabelValidationError(f"a comparison needs at least 2 samples, got {len(samples)}", i, "samples")
    if k is not None and len(samples) != k:
        raise LabelValidationError(f"expected K={k} samples like the rows before it, got {len(samples)}", i, "samples")
    for j, s in enumerate(samples):
        if not isinstance(s, str):
            raise LabelValidationError(f"sample {j} must be a string, got {type(s).__name__}", i, f"samples[{j}]")
        if not s.strip():
            raise LabelValidationError(f"sample {j} is empty", i, f"samples[{j}]")
    best = row.get("best")
    if isinstance(best, bool) or best is None:
        raise LabelValidationError(f"best must be an integer, got {best!r}", i, "best")
    if isinstance(best, float):
        if math.isnan(best) or not best.is_integer():
            raise LabelValidationError(f"best must be an integer, got {best!r}", i, "best")
        best = int(best)
    if not isinstance(best, int):
        raise LabelValidationError(f"best must be an integer, got {type(best).__name__}", i, "best")
    if not 0 <= best < len(samples):
        raise LabelValidationError(f"best={best} is out of range [0, {len(samples) - 1}]", i, "best")
    return len(samples)


def validate_labels(dataset: Dataset, k: int | None = None) -> Dataset:
    """Check every row and return the canonical dataset (``best`` cast to int).

    Raises :class:`LabelValidationError` naming the first bad row and field: a non-string query, fewer
    than 2 samples, a row whose K differs from ``k`` (or from the first row), an empty sample, a
    missing/NaN/non-integer ``best`` or one out of ``[0, K)``.
    """
    dataset = to_canonical(dataset)
    if "best" not in dataset.column_names:
        raise LabelValidationError(f"a label dataset needs a 'best' column; got columns {dataset.column_names}")
    if "query" not in dataset.column_names:
        raise LabelValidationError(f"a label dataset needs a 'query' column; got columns {dataset.column_names}")
    if len(dataset) == 0:
        raise LabelValidationError("the label dataset is empty")
    for i, row in enumerate(dataset.select_columns(["query", "samples", "best"])):
        k = _check_row(i, row, k)
    if dataset.features["best"].dtype not in ("int64", "int32"):
        # (a map returning ints keeps a float64 column; cast the feature itself)
        dataset = dataset.cast_column("best", Value("int64"))
    return dataset


def from_pairwise(dataset: Dataset) -> Dataset:
    """TRL's preference format (``prompt``/``chosen``/``rejected``, text) -> K = 2 labels.

    Rows become ``query = prompt``, ``samples = [chosen, rejected]``, ``best = 0``. Without a ``prompt``
    column (TRL's implicit-prompt format) the longest common prefix of chosen and rejected is the query.
    Conversational rows (lists of messages) must be rendered to text with a chat template first.
    """
    for col in ("chosen", "rejected"):
        if col not in dataset.column_names:
            raise LabelValidationError(f"a pairwise dataset needs '{col}'; got columns {dataset.column_names}")

    def convert(row: dict[str, Any], idx: int) -> dict[str, Any]:
        chosen, rejected = row["chosen"], row["rejected"]
        if not isinstance(chosen, str) or not isinstance(rejected, str):
            raise LabelValidationError(
                "conversational (message list) rows are not text: apply the tokenizer's chat template first",
                idx,
                "chosen",
            )
        if "prompt" in row:
            query = row["prompt"]
        else:
            query = os.path.commonprefix([chosen, rejected])
            chosen, rejected = chosen[len(query) :], rejected[len(query) :]
        return {"query": query, "samples": [chosen, rejected], "best": 0}

    drop = [c for c in ("prompt", "chosen", "rejected") if c in dataset.column_names]
    return validate_labels(dataset.map(convert, with_indices=True, remove_columns=drop), k=2)


def to_pairwise(dataset: Dataset) -> Dataset:
    """K-way labels -> TRL pairwise rows (``prompt``, ``chosen``, ``rejected``).

    A best-of-K choice implies K-1 comparisons (best > each other sample); it says nothing about the
    order of the others. The K(K-1)/2 pairs of a label that stock pairwise trainers are often fed are
    therefore *not* all implied; this returns only the K-1 implied pairs per label.
    """
    dataset = validate_labels(dataset)

    def explode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"prompt": [], "chosen": [], "rejected": []}
        for query, samples, best in zip(batch["query"], batch["samples"], batch["best"]):
            for j, other in enumerate(samples):
                if j != best:
                    out["prompt"].append(query)
                    out["chosen"].append(samples[best])
                    out["rejected"].append(other)
        return out

    return dataset.map(explode, batched=True, remove_columns=dataset.column_names)


def _strip_pad(ids: Iterable[int], vocab_size: int, pad_id: int) -> list[int]:
    return [int(t) for t in ids if int(t) != pad_id and 0 <= int(t) < vocab_size]


def from_openai_json(
    source: str | os.PathLike | Sequence[Mapping[str, Any]],
    tokenizer: Any,
    pad_id: int = OPENAI_PAD_ID,
    limit: int | None = None,
) -> Dataset:
    """The paper's released label files (e.g. ``sentiment/offline_5k.json``) -> the label schema.

    Each record holds GPT-2 token ids: ``query`` (padded), ``sample0..sample3`` (cut at the period and
    padded with ``pad_id`` = 50259, outside GPT-2's vocab) and ``best``. Pad and out-of-vocab ids are
    dropped and the rest decoded with ``tokenizer`` (GPT-2's). ``limit`` keeps the first rows (the paper
    used the first 4,992 of 6,264).
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, encoding="utf-8") as f:
            records = json.load(f)
    else:
        records = list(source)
    if limit is not None:
        records = records[:limit]
    if not records:
        raise LabelValidationError("the label file holds no records")
    flat = _flat_sample_columns(list(records[0].keys()))
    vocab_size = len(tokenizer)
    rows: dict[str, list[Any]] = {"query": [], "samples": [], "best": []}
    for i, rec in enumerate(records):
        for field in ["query", "best", *flat]:
            if field not in rec:
                raise LabelValidationError("missing in the record", i, field)
        rows["query"].append(tokenizer.decode(_strip_pad(rec["query"], vocab_size, pad_id)))
        rows["samples"].append([tokenizer.decode(_strip_pad(rec[c], vocab_size, pad_id)) for c in flat])
        rows["best"].append(rec["best"])
    return validate_labels(Dataset.from_dict(rows), k=len(flat))


def all_pairs(k: int) -> list[tuple[int, int]]:
    """The K(K-1)/2 unordered index pairs of K samples."""
    return list(itertools.combinations(range(k), 2))
