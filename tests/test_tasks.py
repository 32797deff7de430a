"""Task specs and summarization query cutting (paper: <= 500 tokens including prefix and suffix)."""

import json

import pytest

from hf_prefs.pipeline import PipelineArguments, collect_labels
from hf_prefs.tasks import TASKS, format_summarization_query, get_task, summarization_queries


def test_summarization_query_keeps_prefix_and_suffix_within_budget(gpt2_tokenizer):
    article = " ".join(f"Sentence number {i} of a long article." for i in range(200))
    spec = get_task("cnndm")
    q = format_summarization_query(article, gpt2_tokenizer, 50, spec.query_prefix, spec.query_suffix)
    assert q.startswith("Article:\n\n") and q.endswith("\n\nTL;DR:")
    assert len(gpt2_tokenizer(q)["input_ids"]) <= 50
    assert "Sentence number 0 of" in q  # the article is cut from its end
    short = format_summarization_query("A short post.", gpt2_tokenizer, 50, "", "\n\nTL;DR:")
    assert short == "A short post.\n\nTL;DR:"


def test_summarization_queries_drop_empty_texts_and_bad_budget(gpt2_tokenizer):
    ds = summarization_queries(["One.", "", "   ", "Two."], gpt2_tokenizer, max_tokens=20)
    assert ds["query"] == ["One.\n\nTL;DR:", "Two.\n\nTL;DR:"]
    with pytest.raises(ValueError, match="query_length"):
        format_summarization_query("x", gpt2_tokenizer, 3, "Article:\n\n", "\n\nTL;DR:")


def test_tasks_and_unknown_task():
    assert set(TASKS) == {"sentiment", "descriptiveness", "tldr", "cnndm"}
    assert get_task("tldr").query_length == 500 and get_task("sentiment").query_length == 64
    with pytest.raises(ValueError, match="task: unknown task 'poetry'"):
        get_task("poetry")


def test_summarization_references_stay_aligned_with_their_queries(gpt2_tokenizer):
    ds = summarization_queries(["One.", "", "Two."], gpt2_tokenizer, max_tokens=20, references=["r1", "r-empty", " r2 "])
    assert ds["query"] == ["One.\n\nTL;DR:", "Two.\n\nTL;DR:"] and ds["reference"] == ["r1", "r2"]
    with pytest.raises(ValueError, match="references"):
        summarization_queries(["One."], gpt2_tokenizer, max_tokens=20, references=[])


def test_hub_tldr_loader_keeps_the_reference_summaries(gpt2_tokenizer, monkeypatch):
    """trl-lib/tldr rows (prompt ends with "TL;DR:", completion = the reference) -> query + reference columns."""
    import datasets
    from datasets import Dataset

    from hf_prefs.tasks.summarization import load_summarization_queries

    calls = []

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        return Dataset.from_dict({"prompt": ["SUBREDDIT: r/x\nPOST: My cat.\nTL;DR:"], "completion": [" cat is nice"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ds = load_summarization_queries("tldr", gpt2_tokenizer, n=1, max_tokens=64)
    assert calls == [("trl-lib/tldr", None, "train[:1]")]
    assert ds["query"] == ["SUBREDDIT: r/x\nPOST: My cat.\n\nTL;DR:"] and ds["reference"] == ["cat is nice"]


def test_policy_query_wraps_a_raw_query_once():
    cnndm, sentiment = get_task("cnndm"), get_task("sentiment")
    assert cnndm.policy_query(" The article. ") == "Article:\n\nThe article.\n\nTL;DR:"
    assert cnndm.policy_query("Article:\n\nThe article.\n\nTL;DR:") == "Article:\n\nThe article.\n\nTL;DR:"
    assert sentiment.policy_query("A passage.") == "A passage."


def test_label_file_queries_take_the_policys_form(tmp_path):
    """The paper's files hold the raw query, while PPO scores prefix + query + suffix: the reward model must train on
    the latter (labels written by hf_prefs already are in that form and stay as they are)."""
    rows = [{"query": "My cat ate my homework.", "samples": [" a", " b", " c", " d"], "best": 1},
            {"query": "Dogs.\n\nTL;DR:", "samples": [" e", " f", " g", " h"], "best": 0}]
    path = tmp_path / "labels.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    for task, first in (("tldr", "My cat ate my homework.\n\nTL;DR:"), ("sentiment", "My cat ate my homework.")):
        pa = PipelineArguments(task=task, label_source="file", label_file=str(path))
        labels, info = collect_labels(pa, None, None, None, [])
        assert labels["query"] == [first, "Dogs.\n\nTL;DR:"] and labels["best"] == [1, 0] and info["labels"] == 2
