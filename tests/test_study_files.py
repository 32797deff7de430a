"""Committed files name queries by digest: label files round-trip without the query text, a file written for another
query set is refused naming its row, and eval.json / cache keys keep pairing without the text."""

from __future__ import annotations

import gzip
import hashlib
import json

import pytest
from datasets import Dataset

from hf_prefs.analysis.study_files import (
    eval_without_query_text,
    query_digests,
    read_label_file,
    text_digest,
    texts_digest,
    write_label_file,
)

QUERIES = ["It is a truth universally acknowledged", "She was the youngest of the two daughters", "third", "fourth"]


def _labels(indices: list[int]) -> Dataset:
    return Dataset.from_dict({
        "query": [QUERIES[i] for i in indices],
        "samples": [[f" s{i}a", f" s{i}b"] for i in indices],
        "best": [i % 2 for i in indices],
        "query_index": indices,
    })


def test_text_digest_is_sha256s_first_16_hex_digits():
    assert text_digest("") == "e3b0c44298fc1c14"  # SHA-256 of the empty string begins e3b0c442 98fc1c14
    assert text_digest("abc") == hashlib.sha256(b"abc").hexdigest()[:16] == "ba7816bf8f01cfea"
    assert texts_digest(["a", "b"]) == text_digest('["a", "b"]') != texts_digest(["b", "a"])


def test_label_file_holds_no_query_text_and_reads_back_the_same_labels(tmp_path):
    labels = _labels([2, 0, 1])
    path = str(tmp_path / "labels.jsonl.gz")
    write_label_file(labels, path)
    text = gzip.decompress(open(path, "rb").read()).decode()
    assert "truth universally" not in text and "youngest" not in text and text_digest(QUERIES[2]) in text
    back = read_label_file(path, QUERIES)
    assert sorted(back.column_names) == sorted(labels.column_names)
    assert back.to_list() == labels.to_list()  # each row's query restored from its query_index


def test_label_file_written_for_other_queries_names_the_row(tmp_path):
    path = str(tmp_path / "labels.jsonl.gz")
    write_label_file(_labels([0, 1, 3]), path)
    other = QUERIES[:3] + ["a different fourth query"]
    with pytest.raises(ValueError, match=r"labels.jsonl.gz: row 2: query_index 3 names another query"):
        read_label_file(path, other)
    with pytest.raises(ValueError, match=r"row 2: query_index 3 is outside this task's 3 queries"):
        read_label_file(path, QUERIES[:3])


def test_label_file_with_the_query_text_still_reads_and_is_checked(tmp_path):
    """Files written before the digests hold the text: read back the same, and checked against the query set."""
    path = str(tmp_path / "old.jsonl.gz")
    _labels([1, 0]).to_json(path, compression="gzip")
    assert read_label_file(path, QUERIES).to_list() == _labels([1, 0]).to_list()
    with pytest.raises(ValueError, match="row 0: query_index 1 names another query"):
        read_label_file(path, [QUERIES[0], "changed"] + QUERIES[2:])


def test_label_file_needs_query_index(tmp_path):
    with pytest.raises(ValueError, match="query_index"):
        write_label_file(_labels([0]).remove_columns("query_index"), str(tmp_path / "x.jsonl.gz"))


def test_eval_json_without_query_text_keeps_pairing():
    ev = {"before": {"queries": QUERIES[:2], "known_rewards": [0.1, 0.2]},
          "after": {"queries": QUERIES[:2], "known_rewards": [0.3, 0.5]}}
    stripped = eval_without_query_text(ev)
    assert "truth" not in json.dumps(stripped)
    assert stripped["after"] == {"query_sha256": [text_digest(q) for q in QUERIES[:2]], "known_rewards": [0.3, 0.5]}
    assert query_digests(stripped["before"]) == query_digests(ev["before"])  # an old file pairs with a new one
    assert eval_without_query_text(stripped) == stripped and ev["before"]["queries"] == QUERIES[:2]  # input untouched
