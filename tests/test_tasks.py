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


def test_a_repeated_summarization_query_is_kept_once(gpt2_tokenizer, caplog):
    """A repost (or two texts alike up to the cut) would be held out and trained on at once: kept once, with its
    first reference, and said."""
    long = "word " * 40
    texts = ["One.", "Two.", " One. ", long + "ending A", long + "ending B"]
    with caplog.at_level("WARNING", logger="hf_prefs.tasks.summarization"):
        ds = summarization_queries(texts, gpt2_tokenizer, max_tokens=20, references=["r1", "r2", "r1 again", "a", "b"])
    cut = format_summarization_query(long + "ending A", gpt2_tokenizer, 20, "", "\n\nTL;DR:")
    assert "ending" not in cut and cut == format_summarization_query(long + "ending B", gpt2_tokenizer, 20, "", "\n\nTL;DR:")
    assert ds["query"] == ["One.\n\nTL;DR:", "Two.\n\nTL;DR:", cut]
    assert ds["reference"] == ["r1", "r2", "a"]
    assert "2 of 5 queries repeat an earlier one; each is kept once" in caplog.text


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
    assert calls == [("trl-lib/tldr", None, "train")]
    assert ds["query"] == ["SUBREDDIT: r/x\nPOST: My cat.\n\nTL;DR:"] and ds["reference"] == ["cat is nice"]

    calls.clear()  # query_dataset_split reads another split of the Hub source (named or not)
    load_summarization_queries("tldr", gpt2_tokenizer, n=1, max_tokens=64, source="trl-lib/tldr", split="validation")
    load_summarization_queries("tldr", gpt2_tokenizer, n=1, max_tokens=64, split="test")
    assert calls == [("trl-lib/tldr", None, "validation"), ("trl-lib/tldr", None, "test")]


def test_query_dataset_split_picks_a_folders_split_and_is_refused_where_there_is_none(tmp_path, gpt2_tokenizer):
    """A saved DatasetDict's split by name (TRL's dataset_train_split); a single file has only 'train', Austen's
    novels none: both refused naming query_dataset_split."""
    from datasets import Dataset, DatasetDict

    from hf_prefs.pipeline import split_queries
    from hf_prefs.tasks.queries import load_task_queries

    def rows(tag: str, n: int) -> Dataset:
        return Dataset.from_dict({"article": [f"The {tag} story number {i} is told." for i in range(n)],
                                  "highlights": [f"{tag} {i}" for i in range(n)]})

    DatasetDict(train=rows("train", 6), validation=rows("valid", 4)).save_to_disk(str(tmp_path / "dd"))
    got = load_task_queries("cnndm", gpt2_tokenizer, query_dataset=str(tmp_path / "dd"), split="validation")
    assert sorted(got["reference"]) == [f"valid {i}" for i in range(4)]
    assert len(load_task_queries("cnndm", gpt2_tokenizer, query_dataset=str(tmp_path / "dd"))) == 6  # train
    pa = PipelineArguments(task="cnndm", query_dataset=str(tmp_path / "dd"), query_dataset_split="validation",
                           num_label_queries=1, num_eval_queries=2)
    from hf_prefs import PPOConfig

    eval_q, label_q, ppo_q, refs = split_queries(pa, PPOConfig(output_dir=str(tmp_path / "o"), use_cpu=True), gpt2_tokenizer)
    assert len(eval_q) + len(label_q) + len(ppo_q) == 4 and all(r.startswith("valid") for r in refs)
    rows("file", 3).to_json(str(tmp_path / "one.jsonl"))
    with pytest.raises(ValueError, match=r"query_dataset_split 'validation': query_dataset .*one.jsonl is a single file"):
        load_task_queries("cnndm", gpt2_tokenizer, query_dataset=str(tmp_path / "one.jsonl"), split="validation")
    for task, source in (("sentiment", None), ("tldr", "austen")):
        with pytest.raises(ValueError, match=r"query_dataset_split 'test': Austen's novels have no splits"):
            load_task_queries(task, gpt2_tokenizer, split="test", query_dataset=source)


def test_policy_query_wraps_a_raw_query_once():
    cnndm, sentiment, tldr = get_task("cnndm"), get_task("sentiment"), get_task("tldr")
    assert cnndm.policy_query(" The article. ") == "Article:\n\nThe article.\n\nTL;DR:"
    # a query that already ends with "TL;DR:" (CarperAI's and OpenAI's files; a raw CNN/DM article with it) gets the
    # task's suffix once, and its missing prefix
    carper = "SUBREDDIT: r/x\nTITLE: A title\nPOST: Second line.\nTL;DR: "
    assert tldr.policy_query(carper) == "SUBREDDIT: r/x\nTITLE: A title\nPOST: Second line.\n\nTL;DR:"
    assert cnndm.policy_query("(CNN) Some text.\n\nTL;DR:") == "Article:\n\n(CNN) Some text.\n\nTL;DR:"
    assert tldr.raw_query(carper) == "SUBREDDIT: r/x\nTITLE: A title\nPOST: Second line."
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


def test_summarization_queries_from_local_files_as_users_have_them(tmp_path, gpt2_tokenizer):
    """TL;DR and CNN/DM read a local file or folder by its columns: OpenAI's TL;DR JSONL (subreddit, title, post,
    summary) gives trl-lib/tldr's prompt — the same queries as its prompt/completion rows saved with save_to_disk —
    with the summaries as references; a CNN/DM CSV (article, highlights) gets the task's prefix and suffix; a post
    left blank is dropped with its reference."""
    from datasets import Dataset

    from hf_prefs.tasks import load_task_queries

    posts = [{"id": "a", "subreddit": "relationships", "title": "Moving in?", "post": "We met a year ago and now...",
              "summary": " Should we move in?"},
             {"id": "b", "subreddit": "cooking", "title": "Salt", "post": "  ", "summary": "nothing"},
             {"id": "c", "subreddit": "tifu", "title": "TIFU by baking", "post": "I used salt for sugar.",
              "summary": "salt, not sugar"}]
    openai = tmp_path / "train.jsonl"
    openai.write_text("".join(json.dumps(p) + "\n" for p in posts))
    got = load_task_queries("tldr", gpt2_tokenizer, query_dataset=str(openai))  # shuffled with seed 0
    pairs = sorted(zip(got["query"], got["reference"]))
    assert pairs == [("SUBREDDIT: r/relationships\n\nTITLE: Moving in?\n\nPOST: We met a year ago and now...\n\nTL;DR:",
                      "Should we move in?"),
                     ("SUBREDDIT: r/tifu\n\nTITLE: TIFU by baking\n\nPOST: I used salt for sugar.\n\nTL;DR:",
                      "salt, not sugar")]
    # trl-lib/tldr's rows, made from the same posts as its dataset script does
    trl_rows = {"prompt": [f"SUBREDDIT: r/{p['subreddit']}\n\nTITLE: {p['title']}\n\nPOST: {p['post']}\n\nTL;DR:"
                           for p in posts if p["post"].strip()],
                "completion": [" " + p["summary"] for p in posts if p["post"].strip()]}
    Dataset.from_dict(trl_rows).save_to_disk(str(tmp_path / "saved"))
    saved = load_task_queries("tldr", gpt2_tokenizer, query_dataset=str(tmp_path / "saved"))
    assert sorted(zip(saved["query"], saved["reference"])) == pairs
    assert load_task_queries("tldr", gpt2_tokenizer, n=1, query_dataset=str(openai))["query"] == got["query"][:1]

    cnndm = tmp_path / "cnn.csv"
    cnndm.write_text('article,highlights,id\n"(CNN) -- A long story, told ""well"".",A story.,x1\n')
    spec = get_task("cnndm")
    got = load_task_queries("cnndm", gpt2_tokenizer, query_dataset=str(cnndm))
    assert got["query"] == [f'{spec.query_prefix}(CNN) -- A long story, told "well".{spec.query_suffix}']
    assert got["reference"] == ["A story."]


def test_a_summarization_file_it_cannot_read_is_named(tmp_path, gpt2_tokenizer):
    """No known column layout: the columns it has; a cell that is not text: its row and column; a missing path: the
    field and the path (not the Hub's "Couldn't reach")."""
    from hf_prefs.tasks import load_task_queries

    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"body": "x", "tl_dr": "y"}) + "\n")
    with pytest.raises(ValueError, match=r"query_dataset .*other.jsonl: no column layout .*subreddit \+ title \+ post; "
                                         r"article; prompt; text\); it has \['body', 'tl_dr'\]"):
        load_task_queries("tldr", gpt2_tokenizer, query_dataset=str(other))
    bad = tmp_path / "bad.jsonl"  # the bad cell in the file's row 3 of 10 (named so whatever the shuffle's seed)
    bad.write_text("".join(json.dumps({"article": 7 if i == 3 else f"Story {i}.", "highlights": "h"}) + "\n"
                           for i in range(10)))
    for seed in (0, 1):
        with pytest.raises(ValueError, match=r"bad.jsonl: row 3 of the 'article' column holds a"):
            load_task_queries("cnndm", gpt2_tokenizer, seed=seed, query_dataset=str(bad))
    with pytest.raises(FileNotFoundError, match="query_dataset ./missing.jsonl: no such file or folder"):
        load_task_queries("cnndm", gpt2_tokenizer, query_dataset="./missing.jsonl")



def test_a_cut_query_keeps_whole_characters_and_a_fitting_one_its_text(gpt2_tokenizer):
    """The cut falls inside a multi-byte character (emoji, CJK) for some prefixes: no U+FFFD is left at the end; an
    article that fits is kept as written."""
    for k in range(12):
        q = format_summarization_query("a" * k + "日本語のテキスト😀🎉" * 40, gpt2_tokenizer, 50, "", "\n\nTL;DR:")
        assert "\ufffd" not in q and q.endswith("\n\nTL;DR:") and len(gpt2_tokenizer(q)["input_ids"]) <= 50, (k, q)
    assert format_summarization_query("  Two  spaces kept.\nA line. ", gpt2_tokenizer, 50, "", "\n\nTL;DR:") == \
        "Two  spaces kept.\nA line.\n\nTL;DR:"


def test_summarization_queries_are_shuffled_by_seed_and_n_counts_distinct_queries(tmp_path, gpt2_tokenizer):
    """The split's order is a seeded shuffle of the file (a file sorted by source would give a one-sided held-out
    set); n is the number of distinct, non-empty queries (every post reposted, some blank), read further as needed."""
    from hf_prefs.tasks import load_task_queries

    rows = [{"article": "" if i % 7 == 3 else f"Story number {i // 2} happened.", "highlights": f"h{i // 2}"}
            for i in range(60)]  # each story twice in a row, every 7th article blank
    path = tmp_path / "cnn.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stories = {f"Article:\n\nStory number {j} happened.\n\nTL;DR:" for j in range(30) if any(
        r["article"] for r in rows[2 * j : 2 * j + 2])}
    a = load_task_queries("cnndm", gpt2_tokenizer, seed=0, query_dataset=str(path))
    b = load_task_queries("cnndm", gpt2_tokenizer, seed=1, query_dataset=str(path))
    assert set(a["query"]) == set(b["query"]) == stories and len(a) == len(stories)
    assert a["query"] != b["query"]
    assert all(q.split("number ")[1].split(" ")[0] == ref[1:] for q, ref in zip(a["query"], a["reference"]))
    some = load_task_queries("cnndm", gpt2_tokenizer, n=20, seed=0, query_dataset=str(path))
    assert len(set(some["query"])) == 20 and some["query"] == a["query"][:20]
    assert len(load_task_queries("cnndm", gpt2_tokenizer, n=500, seed=0, query_dataset=str(path))) == len(stories)


def test_label_file_queries_take_the_form_ppo_queries_have(tmp_path, gpt2_tokenizer, caplog):
    """TL;DR label rows as users have them: a post longer than the task's 500 tokens is cut as PPO's queries are (the
    reward model trained on the whole post, PPO scored the cut one); a query already ending with "TL;DR:" gets it
    once; a held-out query that is also the file's is counted in a warning."""
    from hf_prefs.pipeline import PipelineArguments, collect_labels

    long_post = "SUBREDDIT: r/x\nTITLE: Long\nPOST: " + " ".join(f"Sentence {i} of a long post." for i in range(300))
    rows = [{"query": long_post, "samples": ["a", "b"], "best": 0},
            {"query": "SUBREDDIT: r/y\nTITLE: Short\nPOST: Short post.\nTL;DR:", "samples": ["c", "d"], "best": 1}]
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pa = PipelineArguments(task="tldr", label_source="file", label_file=str(path), num_candidates=2)
    spec = get_task("tldr")
    held_out = ["SUBREDDIT: r/y\nTITLE: Short\nPOST: Short post.\n\nTL;DR:", "another"]
    with caplog.at_level("WARNING", logger="hf_prefs.pipeline.labels"):
        labels, info = collect_labels(pa, None, None, gpt2_tokenizer, [], held_out=held_out)
    cut = format_summarization_query(spec.raw_query(long_post), gpt2_tokenizer, 500, "", "\n\nTL;DR:")
    assert labels["query"] == [cut, held_out[0]] and info["labels"] == 2
    assert len(gpt2_tokenizer(labels["query"][0])["input_ids"]) <= 500 < len(gpt2_tokenizer(long_post)["input_ids"])
    assert "1 of the 2 held-out queries are queries of the label file" in caplog.text
    caplog.clear()  # label_mode=online: the rounds take the file's rows; the same count (was not warned)
    from hf_prefs import PPOConfig
    from hf_prefs.pipeline import Base, online_label_loop

    online = PipelineArguments(task="tldr", label_source="file", label_file=str(path), num_candidates=2,
                               label_mode="online", online_rounds=2, online_labels_per_round=[1, 1])
    cfg = PPOConfig(output_dir=str(tmp_path / "out"), report_to="none")
    with caplog.at_level("WARNING", logger="hf_prefs.pipeline.labels"):
        loop = online_label_loop(online, cfg, Base("tiny", gpt2_tokenizer, None), [], str(tmp_path / "o"), held_out=held_out)
    assert loop.source.labels["query"] == labels["query"]
    assert "1 of the 2 held-out queries are queries of the label file" in caplog.text


def test_labels_sampled_need_label_queries(tmp_path):
    """The summarization configs set num_label_queries 0 for their label file; sampling labels with it said so (was
    "all 0 queries were dropped ... lower truncate_after")."""
    from hf_prefs.pipeline import PipelineArguments
    from hf_prefs.pipeline.arguments import validate_pipeline_config
    from hf_prefs.trainers.ppo_config import PPOConfig

    cfg = PPOConfig(output_dir=str(tmp_path / "o"), use_cpu=True, report_to=[])
    with pytest.raises(ValueError, match="num_label_queries: label_source=simulated labels samples of num_label_queries"):
        validate_pipeline_config(PipelineArguments(task="tldr", num_label_queries=0), cfg)


def test_samples_markdown_quotes_every_line_of_a_query():
    from hf_prefs.pipeline.evaluate import PolicyEvaluation
    from hf_prefs.pipeline.results import samples_markdown

    ev = PolicyEvaluation(queries=["TITLE: t\n\n# not a heading\nPOST: p"], responses=["r"])
    md = samples_markdown(ev, ev)
    assert "> TITLE: t\n>\n> # not a heading\n> POST: p\n" in md
