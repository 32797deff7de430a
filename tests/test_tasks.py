"""Task specs and summarization query cutting (paper: <= 500 tokens including prefix and suffix)."""

import pytest

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
