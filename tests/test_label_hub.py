"""Labels as a Hub dataset: ``push_labels_to_hub`` and ``hf-prefs label export --push_to_hub``, against the fake Hub
of ``tests/fake_hub.py`` (huggingface_hub's real upload code, LFS path; ``datasets.load_dataset`` reads it back)."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
import yaml
from datasets import Dataset, load_dataset
from huggingface_hub import constants
from transformers import GPT2ForSequenceClassification

from conftest import tiny_gpt2_config
from fake_hub import TOKEN
from hf_prefs import PreferenceRewardConfig, PreferenceRewardTrainer, push_labels_to_hub, validate_labels
from hf_prefs.citation import ZIEGLER_2019
from hf_prefs.label_app import cli as label_cli
from hf_prefs.labels.hub import LABEL_DATA_FILE
from hf_prefs.labels.queue import LabelQueue
from hf_prefs.labels.schema import LabelValidationError

K = 3
PUSH_REQUESTS = {
    ("POST", "/api/repos/create"),
    ("POST", "/api/validate-yaml"),
    ("POST", "/api/datasets/{repo}/preupload/main"),
    ("POST", "/datasets/{repo}.git/info/lfs/objects/batch"),
    ("PUT", "/_lfs/upload/{oid}"),
    ("POST", "/_lfs/verify"),
    ("POST", "/api/datasets/{repo}/commit/main"),
}


def toy_labels(n: int = 6) -> Dataset:
    """K=3 labels in the paper's flat layout (``sample0..sample2``) with an extra ``labeler`` column."""
    return Dataset.from_dict({
        "query": [f"Chapter {i}. She opened the letter and" for i in range(n)],
        **{f"sample{j}": [f" sample {j} of query {i} — ünïcode ✓" for i in range(n)] for j in range(K)},
        "best": [i % K for i in range(n)],
        "labeler": ["alice" if i % 2 else "bob" for i in range(n)],
    })


def push_requests(repo_id: str) -> set[tuple[str, str]]:
    return {(m, p.replace("{repo}", repo_id)) for m, p in PUSH_REQUESTS}


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def parquet_rows(data: bytes, tmp_path) -> Dataset:
    """The rows of a parquet file's bytes, read the way datasets reads a Hub dataset (features from its metadata)."""
    path = tmp_path / f"pushed-{hashlib.sha256(data).hexdigest()[:12]}.parquet"
    path.write_bytes(data)
    return Dataset.from_parquet(str(path), cache_dir=str(tmp_path / "parquet_cache"))


def test_push_commits_the_rows_and_a_dataset_card(fake_hub, tmp_path):
    labels = toy_labels()
    expected = validate_labels(labels)  # sample0..2 merged into samples

    url = push_labels_to_hub(labels, "alice/letters", token=TOKEN, private=True, labeler="human volunteers",
                             source="queries from Pride and Prejudice, samples of GPT-2", task="books",
                             commit_message="labels, round 0", endpoint=fake_hub.url)

    key = "datasets/alice/letters"
    assert url.startswith(f"{fake_hub.url}/{key}/commit/")
    repo = fake_hub.repos[key]
    assert set(repo) == {LABEL_DATA_FILE, "README.md"}
    assert fake_hub.lfs_paths[key] == {LABEL_DATA_FILE} and fake_hub.inline_paths[key] == {"README.md"}
    assert fake_hub.commits[key] == [{"summary": "labels, round 0", "description": ""}]  # one commit: data + card
    assert fake_hub.visibility[key] == "private"
    assert fake_hub.called() == push_requests("alice/letters")

    # The data file round-trips: same rows, same features (samples a list of strings, best an int).
    pushed = parquet_rows(repo[LABEL_DATA_FILE], tmp_path)
    assert pushed.to_list() == expected.to_list()
    assert pushed.features == expected.features and pushed.column_names == ["query", "best", "labeler", "samples"]

    card = repo["README.md"].decode()
    meta = front_matter(card)
    assert meta["hf_prefs"] == {"num_candidates": K, "num_labels": 6, "labeler": "human volunteers",
                                "source": "queries from Pride and Prejudice, samples of GPT-2", "task": "books"}
    assert {"hf-prefs", "rlhf", "preference"} <= set(meta["tags"])
    assert meta["task_categories"] and meta["size_categories"] == ["n<1K"] and meta["pretty_name"] == "letters"
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    assert meta["dataset_info"]["splits"] == [{"name": "train", "num_bytes": meta["dataset_info"]["dataset_size"],
                                               "num_examples": 6}]
    assert [f["name"] for f in meta["dataset_info"]["features"]] == ["query", "best", "labeler", "samples"]
    for text in ("6 best-of-3 preference labels", "K = 3 samples per row", "**Labeler:** human volunteers",
                 "**Source:** queries from Pride and Prejudice", "**Task:** books",
                 "| `query` | string |", "| `samples` | list[string] |", "| `best` | int64 |", "| `labeler` | string |",
                 'load_dataset("alice/letters", split="train")', "PreferenceRewardTrainer(", "num_candidates=3",
                 ZIEGLER_2019["citation"]):
        assert text in card, text

    # The card's loading snippet works: datasets reads the repo back through the (fake) Hub.
    fake_hub.requests.clear()
    loaded = load_dataset("alice/letters", split="train", cache_dir=str(tmp_path / "datasets_cache"))
    assert loaded.to_list() == expected.to_list()
    assert ("GET", f"/datasets/alice/letters/resolve/{fake_hub.heads[key]}/{LABEL_DATA_FILE}") in fake_hub.called()


def test_default_endpoint_token_and_namespace(fake_hub):
    """No endpoint/token: HF_ENDPOINT's Hub (the fixture's) and HF_TOKEN; a bare name goes to the token's namespace and
    the card's snippets name the full id."""
    url = push_labels_to_hub(toy_labels(2), "letters")

    assert url.startswith(f"{fake_hub.url}/datasets/fake-user/letters/commit/")
    card = fake_hub.repos["datasets/fake-user/letters"]["README.md"].decode()
    assert 'load_dataset("fake-user/letters", split="train")' in card and '"letters"' not in card
    meta = front_matter(card)
    assert meta["hf_prefs"]["labeler"] == "2 labelers (`alice`, `bob`; see the `labeler` column)"
    assert meta["hf_prefs"]["source"] == "not recorded" and "task" not in meta["hf_prefs"]
    assert fake_hub.visibility["datasets/fake-user/letters"] is None  # private=None: the Hub's default


def test_bad_row_fails_before_any_request(fake_hub, monkeypatch):
    bad_best = toy_labels().to_dict()
    bad_best["best"][4] = K  # out of [0, K)
    with pytest.raises(LabelValidationError, match=r"row 4, field 'best'") as info:
        push_labels_to_hub(Dataset.from_dict(bad_best), "alice/letters", token=TOKEN, endpoint=fake_hub.url)
    assert (info.value.row, info.value.field) == (4, "best")

    empty_sample = toy_labels().to_dict()
    empty_sample["sample1"][2] = "  "
    with pytest.raises(LabelValidationError, match=r"row 2, field 'samples\[1\]': sample 1 is empty"):
        push_labels_to_hub(Dataset.from_dict(empty_sample), "alice/letters", token=TOKEN, endpoint=fake_hub.url)

    with pytest.raises(LabelValidationError, match="'best' column"):
        push_labels_to_hub(toy_labels().remove_columns("best"), "alice/letters", token=TOKEN, endpoint=fake_hub.url)
    with pytest.raises(ValueError):
        push_labels_to_hub(toy_labels(), "not/a/valid/id", token=TOKEN, endpoint=fake_hub.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        push_labels_to_hub(toy_labels(), "alice/letters", token=TOKEN, endpoint=fake_hub.url)

    assert fake_hub.requests == [] and fake_hub.commits == {} and fake_hub.repos == {}


def _labeled_queue(qdir) -> LabelQueue:
    queue = LabelQueue(qdir, seed=0)
    items = [(f"query {i}", [f"q{i} sample {j}" for j in range(K)]) for i in range(4)]
    ids = queue.put_round(0, items)
    for n, item_id in enumerate(ids):
        queue.submit("alice" if n % 2 else "bob", item_id, n % K)
    return queue


def test_cli_export_push_to_hub_end_to_end(fake_hub, tmp_path, capsys, gpt2_tokenizer):
    qdir, out = tmp_path / "my-queue", tmp_path / "labels.jsonl"
    _labeled_queue(qdir)

    argv = ["label", "export", "--queue", str(qdir), "--out", str(out), "--push_to_hub", "alice/queue-labels",
            "--private", "--token", TOKEN, "--task", "sentiment"]
    assert label_cli.main(argv) == 0

    printed = capsys.readouterr().out
    key = "datasets/alice/queue-labels"
    assert f"wrote 4 labels to {out}" in printed
    assert f"pushed 4 labels to the dataset repo alice/queue-labels: {fake_hub.url}/{key}/commit/" in printed
    assert fake_hub.visibility[key] == "private" and fake_hub.called() == push_requests("alice/queue-labels")
    # The Hub holds exactly the rows of the exported file (all the queue's columns).
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    pushed = parquet_rows(fake_hub.repos[key][LABEL_DATA_FILE], tmp_path).to_list()
    assert pushed == exported and [r["labeler"] for r in pushed] == ["bob", "alice", "bob", "alice"]
    meta = front_matter(fake_hub.repos[key]["README.md"].decode())["hf_prefs"]
    assert meta == {"num_candidates": K, "num_labels": 4, "task": "sentiment",
                    "labeler": "2 labelers (`alice`, `bob`; see the `labeler` column)",
                    "source": "the hf-prefs label queue `my-queue`, all rounds"}

    # Again, to the now existing repo, with the token from HF_TOKEN (set by the fixture): a second commit.
    assert label_cli.main(argv[:-5] + ["--labeler", "two volunteers", "--round", "0"]) == 0
    assert len(fake_hub.commits[key]) == 2
    meta = front_matter(fake_hub.repos[key]["README.md"].decode())["hf_prefs"]
    assert (meta["labeler"], meta["source"]) == ("two volunteers", "the hf-prefs label queue `my-queue`, round 0")

    # The card's recipe: load the labels from the Hub and train a reward model on them (one step of a tiny GPT-2).
    labels = validate_labels(load_dataset("alice/queue-labels", split="train", cache_dir=str(tmp_path / "cache")))
    cfg = tiny_gpt2_config(num_labels=1, pad_token_id=gpt2_tokenizer.eos_token_id)
    torch.manual_seed(0)
    args = PreferenceRewardConfig(output_dir=str(tmp_path / "rm"), num_candidates=K, normalize_before=False,
                                  normalize_after=False, max_steps=1, per_device_train_batch_size=4, report_to=[],
                                  save_strategy="no", logging_steps=1)
    trainer = PreferenceRewardTrainer(model=GPT2ForSequenceClassification(cfg), args=args, train_dataset=labels,
                                      processing_class=gpt2_tokenizer)
    trainer.train()
    assert trainer.state.global_step == 1 and "loss" in trainer.state.log_history[0]


def test_cli_push_errors_exit_2_and_push_nothing(fake_hub, tmp_path, capsys, monkeypatch):
    empty = tmp_path / "empty-queue"
    LabelQueue(empty).put_round(0, [("q", ["a", "b"])])  # an item, but no label yet
    argv = ["label", "export", "--queue", str(empty), "--out", str(tmp_path / "x.jsonl"), "--push_to_hub", "alice/x"]
    assert label_cli.main(argv) == 2
    assert "the label dataset is empty" in capsys.readouterr().err

    _labeled_queue(tmp_path / "q")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    argv = ["label", "export", "--queue", str(tmp_path / "q"), "--out", str(tmp_path / "y.jsonl"), "--push-to-hub", "alice/y"]
    assert label_cli.main(argv) == 2
    assert "pushing to alice/y failed: cannot push to the Hub: offline mode is on" in capsys.readouterr().err
    assert fake_hub.requests == []
