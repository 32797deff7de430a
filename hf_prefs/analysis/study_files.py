"""Files committed under ``docs/`` name the task's queries by digest, never by text.

The study's label files and caches and the fidelity benchmark's ``eval.json`` are committed so that a long study can be
carried on on another machine; the queries are Jane Austen's sentences (a fetched asset), which the repository must not
hold. So a file stores ``query_sha256`` (:func:`text_digest`) where it would store a query, and a label file stores the
row's ``query_index`` into the task's query set, from which the reader rebuilds the text and checks it against the
digest: a file written for another query set is an error naming the file and row, not labels silently attached to other
queries.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

from datasets import Dataset

DIGEST_HEX = 16  # 64 bits: two of 10^5 distinct queries share a digest with probability ~3e-10


def text_digest(text: str) -> str:
    """The first ``DIGEST_HEX`` hex digits of SHA-256 of ``text`` in UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:DIGEST_HEX]


def texts_digest(texts: Sequence[str]) -> str:
    """One digest of a list of texts in order (:func:`text_digest` of its JSON): a cache key for a query set."""
    return text_digest(json.dumps(list(texts)))


def write_label_file(labels: Dataset, path: str) -> None:
    """``labels`` as gzipped JSON lines at ``path``, each row's ``query`` replaced by its ``query_sha256`` (the row's
    ``query_index`` names the query); the file exists only whole (written aside, then renamed)."""
    if "query_index" not in labels.column_names:
        raise ValueError(f"{path}: labels need a query_index column to be written without their query text")
    if "query" in labels.column_names:
        labels = labels.add_column("query_sha256", [text_digest(q) for q in labels["query"]]).remove_columns("query")
    labels.to_json(path + ".tmp", compression="gzip")
    os.replace(path + ".tmp", path)


def read_label_file(path: str, queries: Sequence[str]) -> Dataset:
    """The labels of :func:`write_label_file` at ``path`` with ``query = queries[query_index]`` restored. Each row is
    checked: its index must lie in ``queries`` and the query there must have the row's digest (files written before
    the digests hold the text itself, compared as such). Raises ``ValueError`` naming the file and the first bad row."""
    labels = Dataset.from_json(path)
    stored = labels["query_sha256"] if "query_sha256" in labels.column_names else None
    texts = labels["query"] if stored is None and "query" in labels.column_names else None
    if stored is None and texts is None:
        raise ValueError(f"{path}: no query_sha256 (or query) column")
    restored = []
    for row, index in enumerate(labels["query_index"]):
        if not 0 <= index < len(queries):
            raise ValueError(f"{path}: row {row}: query_index {index} is outside this task's {len(queries)} queries")
        query = queries[index]
        if (stored is not None and stored[row] != text_digest(query)) or (texts is not None and texts[row] != query):
            raise ValueError(f"{path}: row {row}: query_index {index} names another query than the one labeled "
                             "(the file was written for another query set)")
        restored.append(query)
    labels = labels.remove_columns([c for c in ("query", "query_sha256") if c in labels.column_names])
    return labels.add_column("query", restored)


def eval_without_query_text(evaluation: dict[str, Any]) -> dict[str, Any]:
    """An ``eval.json`` dict (``{"before": {...}, "after": {...}}``, each side with a ``queries`` list) with each side's
    ``queries`` replaced by ``query_sha256``: the digests still pair two runs' evaluations query by query."""
    out = {}
    for side, record in evaluation.items():
        if isinstance(record, dict) and "queries" in record:
            record = {("query_sha256" if k == "queries" else k): ([text_digest(q) for q in v] if k == "queries" else v)
                      for k, v in record.items()}
        out[side] = record
    return out


def query_digests(record: dict[str, Any]) -> list[str]:
    """One side of an ``eval.json`` as its queries' digests, whether it holds ``query_sha256`` or the ``queries``."""
    if "query_sha256" in record:
        return list(record["query_sha256"])
    return [text_digest(q) for q in record["queries"]]
