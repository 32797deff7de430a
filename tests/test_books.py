"""Book-passage queries: '.'-to-'.' windows within a token-length range, deterministic per seed."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset

from hf_prefs.tasks.books import (
    austen_paragraphs,
    austen_queries,
    book_queries_from_texts,
    load_book_queries,
    paragraphs_from_lines,
    sentence_boundaries,
)
from hf_prefs.tasks.queries import load_task_queries

SENTENCES = [
    "The morning was grey and the road was long.",
    "Mr. Knightley walked slowly towards the village, thinking of nothing in particular.",
    "She had not expected him to call so early, nor to bring such news with him.",
    "It was, everyone agreed afterwards, the most surprising event of the whole season.",
    "Nobody spoke.",
    "The clock on the mantelpiece struck eleven, and still the letter lay unopened on the table.",
    "At last Harriet took it up, broke the seal, and read the first line aloud to the company.",
]


def _passages(k: int = 12) -> list[str]:
    return [" ".join(SENTENCES[i % 3 :] + SENTENCES[: i % 3]) for i in range(k)]


def _assert_valid(ds, texts, tokenizer, lo, hi):
    for query in ds["query"]:
        assert query.endswith(".") and query == query.strip()
        assert any((". " + query) in text for text in texts), query  # starts right after a '.'
        assert lo <= len(tokenizer(query, add_special_tokens=False)["input_ids"]) <= hi


def test_paragraphs_from_lines():
    lines = ["", "First line of", "  a paragraph.", "", "", "Second", "one.", ""]
    assert paragraphs_from_lines(lines) == ["First line of a paragraph.", "Second one."]
    assert paragraphs_from_lines(["no trailing blank"]) == ["no trailing blank"]


def test_sentence_boundaries_skip_titles_and_initials():
    text = 'Mr. Elton met J. Smith. They talked."Yes." End.'
    cut = [text[:b] for b in sentence_boundaries(text)]
    assert cut == ["Mr. Elton met J. Smith.", "Mr. Elton met J. Smith. They talked.\"Yes.\" End."]


def test_queries_from_texts_window_boundaries_and_determinism(gpt2_tokenizer):
    texts = _passages()
    ds = book_queries_from_texts(texts, gpt2_tokenizer, min_tokens=16, max_tokens=40, seed=3)
    assert ds.column_names == ["query", "source"] and len(set(ds["query"])) == len(ds) > 3  # 3 passages, repeated
    assert set(ds["source"]) == {"text"}
    _assert_valid(ds, texts, gpt2_tokenizer, 16, 40)
    again = book_queries_from_texts(texts, gpt2_tokenizer, min_tokens=16, max_tokens=40, seed=3)
    assert again["query"] == ds["query"]
    other = book_queries_from_texts(texts, gpt2_tokenizer, min_tokens=16, max_tokens=40, seed=4)
    assert sorted(other["query"]) == sorted(ds["query"]) and other["query"] != ds["query"]
    first = book_queries_from_texts(texts, gpt2_tokenizer, n=5, min_tokens=16, max_tokens=40, seed=3)
    assert first["query"] == ds["query"][:5]


class _WordsPlusOne:
    """A tokenizer whose count of a text over 3 words is one more than its words: sentences' counts add up to one
    less than their text's, so a window the estimate fits can be one token too long."""

    def __call__(self, texts, add_special_tokens=False):
        counts = [len(t.split()) + (len(t.split()) > 3) for t in texts]
        return {"input_ids": [[0] * n for n in counts]}


def test_a_window_the_estimate_fits_but_is_too_long_loses_its_last_sentence():
    text = "Start. One two. Three four. Five six. Seven eight nine ten eleven."
    ds = book_queries_from_texts([text, "No sentence end", ""], _WordsPlusOne(), min_tokens=1, max_tokens=6)
    # estimated 6 for the first three sentences, counted 7: cut to two (5); the next window starts where the
    # estimate ended it (its third sentence is in no query); the 5-word sentence alone counts 6
    assert sorted(ds["query"]) == ["One two. Three four.", "Seven eight nine ten eleven."]


def test_queries_never_start_after_a_title(gpt2_tokenizer):
    ds = book_queries_from_texts(_passages(), gpt2_tokenizer, min_tokens=8, max_tokens=64)
    assert all(not q.startswith("Knightley") for q in ds["query"])


def test_sources_overlap_and_errors(gpt2_tokenizer):
    texts = _passages(4)
    ds = book_queries_from_texts(texts, gpt2_tokenizer, min_tokens=16, max_tokens=40, sources=["a", "b", "c", "d"])
    assert set(ds["source"]) <= {"a", "b", "c", "d"}
    dense = book_queries_from_texts(texts, gpt2_tokenizer, min_tokens=16, max_tokens=40, overlap=True)
    assert len(dense) > len(ds)
    _assert_valid(dense, texts, gpt2_tokenizer, 16, 40)
    with pytest.raises(ValueError, match="only"):
        book_queries_from_texts(texts, gpt2_tokenizer, n=10_000)
    with pytest.raises(ValueError):
        book_queries_from_texts(texts, gpt2_tokenizer, min_tokens=50, max_tokens=40)
    with pytest.raises(ValueError):
        book_queries_from_texts(texts, gpt2_tokenizer, sources=["a"])


def test_austen_queries_paper_window(gpt2_tokenizer):
    ds = austen_queries(gpt2_tokenizer, n=300, seed=0)
    assert len(ds) == 300
    assert set(ds["source"]) == {"emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility"}
    texts, _ = austen_paragraphs()
    _assert_valid(ds, texts, gpt2_tokenizer, 32, 64)
    assert all("_" not in q for q in ds["query"])  # Gutenberg italics markers are removed
    assert austen_queries(gpt2_tokenizer, n=300, seed=0)["query"] == ds["query"]
    assert len(austen_queries(gpt2_tokenizer)) > 5000


def test_austen_queries_with_smollm2_tokenizer():
    from hf_prefs.assets import load_smollm2_tokenizer

    tok = load_smollm2_tokenizer()
    ds = austen_queries(tok, n=50, min_tokens=32, max_tokens=64, seed=1)
    texts, _ = austen_paragraphs()
    _assert_valid(ds, texts, tok, 32, 64)


def test_load_book_queries_austen_and_local_dataset(gpt2_tokenizer, tmp_path):
    assert load_book_queries(None, gpt2_tokenizer, n=20)["query"] == austen_queries(gpt2_tokenizer, n=20)["query"]
    # The Hub path, exercised on a local dataset folder (one sentence per row, like BookCorpus).
    folder = tmp_path / "mini_books"
    folder.mkdir()
    rows = [s.lower().replace(".", " .") for s in SENTENCES] * 6
    (folder / "train.jsonl").write_text("\n".join(json.dumps({"text": r}) for r in rows) + "\n")
    ds = load_book_queries(str(folder), gpt2_tokenizer, min_tokens=16, max_tokens=48, lines_per_passage=7)
    assert len(ds) > 0 and set(ds["source"]) == {str(folder)}
    assert all(q.endswith(" .") for q in ds["query"])
    # a file (was: "Couldn't find any data file" although it existed), a .txt file (a row per line), a saved dataset
    for path in (folder / "train.jsonl", tmp_path / "books.txt", tmp_path / "saved"):
        if path.suffix == ".txt":
            path.write_text("\n".join(rows) + "\n")
        elif path.name == "saved":
            Dataset.from_dict({"text": rows}).save_to_disk(str(path))
        got = load_book_queries(str(path), gpt2_tokenizer, min_tokens=16, max_tokens=48, lines_per_passage=7)
        assert got["query"] == ds["query"], path
    blanks = tmp_path / "blanks.csv"  # blank cells are skipped, not read as the text "None"
    blanks.write_text("text,id\n" + "".join(f'"{r}",{i}\n,{i}\n' for i, r in enumerate(rows)))
    got = load_book_queries(str(blanks), gpt2_tokenizer, min_tokens=16, max_tokens=48, lines_per_passage=7)
    assert got["query"] == ds["query"] and not any("None" in q for q in got["query"])
    with pytest.raises(FileNotFoundError, match="query_dataset q/nonexistent.txt: no such file or folder"):
        load_book_queries("q/nonexistent.txt", gpt2_tokenizer)
    (tmp_path / "other.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"other.jsonl: no 'text' column \(it has \['body'\]\)"):
        load_book_queries(str(tmp_path / "other.jsonl"), gpt2_tokenizer)
    (tmp_path / "columns.json").write_text(json.dumps({"text": rows}))  # by columns: one row holding a list
    with pytest.raises(ValueError, match=r"columns.json: row 0 of the 'text' column holds a list, not text \(a JSON "):
        load_book_queries(str(tmp_path / "columns.json"), gpt2_tokenizer)
    # an empty file was a bare StopIteration (.jsonl) or a DatasetGenerationError naming no line (.csv); so was a bad line
    for name in ("empty.jsonl", "empty.csv"):
        (tmp_path / name).write_text("\n")
        with pytest.raises(ValueError, match=rf"query_dataset {tmp_path / name}: the file is empty"):
            load_book_queries(str(tmp_path / name), gpt2_tokenizer)
    for name, text in (("header.csv", "text\n"), ("none.json", "[]")):  # was datasets' 'Instruction "train"
        (tmp_path / name).write_text(text)                                # corresponds to no data!'
        with pytest.raises(ValueError, match=rf"query_dataset {tmp_path / name}: the file has no rows"):
            load_book_queries(str(tmp_path / name), gpt2_tokenizer)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": rows[0]}) + "\n{text: 1}\n")
    with pytest.raises(ValueError, match=r"bad.jsonl: not readable as json \(ArrowInvalid: JSON parse error: .* in row 1\)"):
        load_book_queries(str(tmp_path / "bad.jsonl"), gpt2_tokenizer)


def test_task_queries_from_a_sentence_per_row_dataset(gpt2_tokenizer, tmp_path):
    """The recipes' query_dataset on a BookCorpus-style dataset (one sentence per row): rows are joined into
    passages, so queries spanning sentences exist; a source holding none raises naming query_dataset."""
    folder = tmp_path / "mini_books"
    folder.mkdir()
    rows = [s.lower().replace(".", " .") for s in SENTENCES] * 6
    (folder / "train.jsonl").write_text("\n".join(json.dumps({"text": r}) for r in rows) + "\n")
    ds = load_task_queries("sentiment", gpt2_tokenizer, query_dataset=str(folder), min_tokens=16)
    assert len(ds) > 0 and all(q.endswith(" .") for q in ds["query"])
    plain = tmp_path / "no_periods"
    plain.mkdir()
    (plain / "train.jsonl").write_text("\n".join(json.dumps({"text": r.replace(".", "")}) for r in rows) + "\n")
    with pytest.raises(ValueError, match="query_dataset: no passage"):
        load_task_queries("sentiment", gpt2_tokenizer, query_dataset=str(plain), min_tokens=16)


def test_too_few_queries_says_how_many_fit_once(gpt2_tokenizer, monkeypatch):
    """The recipe's error for too few queries said the count twice ("= 62 queries, but asked for 62 queries but only
    5 fit"): it now reads the error's numbers."""
    from types import SimpleNamespace

    import hf_prefs.pipeline.setup as setup
    from hf_prefs.tasks.books import TooFewQueriesError

    with pytest.raises(TooFewQueriesError) as info:
        book_queries_from_texts(["One two three four five six seven. " * 3], gpt2_tokenizer, n=50, min_tokens=4, max_tokens=8)
    fit = "4-8 tokens from one sentence end to another"
    assert (info.value.asked, info.value.fit) == (50, fit) and 0 < info.value.available < 50
    assert str(info.value) == f"asked for 50 queries but only {info.value.available} fit {fit}"
    # text without an ASCII '.' sentence end (Japanese "。", no punctuation) holds no query: the cause is said
    with pytest.raises(TooFewQueriesError, match=r"only 0 fit 4-8 tokens from one sentence end to another \(a sentence "
                                                 r"end is a '\.' followed by whitespace: 2 of 2 passages have none\)"):
        book_queries_from_texts(["彼女は舞踏会の後で幸せだった。" * 20, "one two three four five six " * 20], gpt2_tokenizer,
                                n=5, min_tokens=4, max_tokens=8)
    import copy
    import pickle

    for again in (pickle.loads(pickle.dumps(info.value)), copy.copy(info.value)):
        assert str(again) == str(info.value) and again.available == info.value.available

    def too_few(*args, **kwargs):
        raise TooFewQueriesError(62, 5, "32-64 tokens")

    monkeypatch.setattr(setup, "load_task_queries", too_few)
    pa = SimpleNamespace(label_source="simulated", num_label_queries=20, num_eval_queries=10, num_ppo_queries=32, task="sentiment",
                         query_dataset=None, query_min_tokens=32, query_dataset_split=None)
    with pytest.raises(ValueError) as err:
        setup.split_queries(pa, SimpleNamespace(seed=0), gpt2_tokenizer)
    assert str(err.value) == ("num_ppo_queries: num_eval_queries 10 + num_label_queries 20 + num_ppo_queries 32 = 62 "
                              "queries, but only 5 queries fit 32-64 tokens")


def test_a_repeated_passage_gives_its_query_once(gpt2_tokenizer, caplog):
    """A user's text file concatenated twice gave each query twice, so a held-out query was also a label or PPO
    query: each query text is kept once (where it first came), said in a warning."""
    import logging

    texts = [f"Passage {i} tells of walk {i} by the river. She saw {i} ducks and the mill. It was day {i} of the fair."
             for i in range(12)]
    once = book_queries_from_texts(texts, gpt2_tokenizer, min_tokens=8, max_tokens=40, seed=3)
    with caplog.at_level(logging.WARNING, logger="hf_prefs.tasks.books"):
        twice = book_queries_from_texts(texts + texts, gpt2_tokenizer, min_tokens=8, max_tokens=40, seed=3)
    assert len(set(twice["query"])) == len(twice) == len(once) > 0
    assert sorted(twice["query"]) == sorted(once["query"])
    assert f"{len(once)} of {2 * len(once)} queries repeat an earlier one" in caplog.text
