"""Labels as a Hub dataset: :func:`push_labels_to_hub` uploads a label set with its dataset card in one commit.

The rows are checked with :func:`~hf_prefs.labels.schema.validate_labels` first (a bad row raises
:class:`~hf_prefs.labels.schema.LabelValidationError` naming the row and field, before any request), then the dataset
repo is created if needed and one commit adds:

- ``data/train-00000-of-00001.parquet``: the rows, in the layout ``datasets.Dataset.push_to_hub`` writes, so
  ``datasets.load_dataset(repo_id, split="train")`` and the Hub's viewer read them (the parquet file carries the
  ``datasets`` features, so ``samples`` comes back as a list of strings);
- ``README.md``: the dataset card (:func:`render_label_card`): YAML front matter (``task_categories``, tags
  ``hf-prefs``/``rlhf``/..., ``configs`` and ``dataset_info`` as ``datasets`` writes them, and an ``hf_prefs``
  block with K, the number of labels, the labeler, the source and the task), then the schema table, how to load the
  labels and train a reward model on them, and the paper's citation.

Like :func:`hf_prefs.hub.push_folder_to_hub` it uses huggingface_hub's own upload (``HfApi.create_repo`` +
``HfApi.create_commit``); ``endpoint`` selects another Hub deployment and ``token=None`` uses the saved login or
``HF_TOKEN``. ``Dataset.push_to_hub`` is not used: it reads the Hub endpoint once at import and takes no
``endpoint`` argument, and it writes a card of its own.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from datasets import Dataset, DatasetInfo, Features, List, Sequence, SplitDict, SplitInfo, Value
from datasets.info import DatasetInfosDict
from huggingface_hub import CommitOperationAdd, DatasetCard, DatasetCardData, HfApi, constants
from huggingface_hub.utils import validate_repo_id

from ..citation import ZIEGLER_2019
from .schema import validate_labels

__all__ = ["LABEL_DATA_FILE", "LABEL_DATASET_TAGS", "COLUMN_MEANINGS", "render_label_card", "push_labels_to_hub"]

#: Where the rows go in the dataset repo (the path ``Dataset.push_to_hub`` uses for one shard of the train split).
LABEL_DATA_FILE = "data/train-00000-of-00001.parquet"
LABEL_DATASET_TAGS = ("hf-prefs", "rlhf", "preference", "human-feedback", "best-of-k")
#: What the label schema's columns, and the ones the label queue and the labelers add, hold (the card's schema table).
COLUMN_MEANINGS: dict[str, str] = {
    "query": "the prompt x shown to the labeler",
    "samples": "the K continuations y_0..y_{K-1} of the query",
    "best": "index b in [0, K) of the continuation the labeler picked",
    "labeler": "who gave the label",
    "item_id": "id of the labeled item (query + samples) in the label queue",
    "round": "labeling round",
    "label_id": "id of the label in the label queue",
    "repeat": "true for an agreement-check repeat of an item the labeler answered before",
    "source": "how the label arrived (the labeling page, the API, or an imported file)",
    "shown_order": "the order the samples were shown in (indices into samples)",
    "shown_at": "when the item was shown (Unix time, seconds)",
    "labeled_at": "when the label was given (Unix time, seconds)",
    "known_rewards": "the known reward of each sample (simulated labeler: best is its argmax)",
    "query_index": "index of the query in the task's query set",
    "episode": "policy episode the samples were drawn at (online labeling)",
}

_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ pretty_name }}

{{ num_labels }} best-of-{{ k }} preference labels: for each query a labeler was shown K = {{ k }} continuations and
picked the best one. This is the label format of
[Fine-Tuning Language Models from Human Preferences](https://huggingface.co/papers/1909.08593) (Ziegler et al., 2019),
written by hf_prefs, a library that implements the paper on [TRL](https://github.com/huggingface/trl).

- **Labels:** {{ num_labels }} rows, K = {{ k }} samples per row
- **Labeler:** {{ labeler }}
- **Source:** {{ source }}
{% if task %}- **Task:** {{ task }}
{% endif %}
## Schema

| column | type | meaning |
|---|---|---|
{% for name, dtype, meaning in schema %}| `{{ name }}` | {{ dtype }} | {{ meaning }} |
{% endfor %}
Every row has the same K; `samples[best]` is the continuation the labeler preferred. A best-of-K choice implies
K-1 comparisons (best > each other sample), nothing about the order of the others.

## Load the labels

```python
from datasets import load_dataset

labels = load_dataset("{{ repo_id }}", split="train")
row = labels[0]
print(row["query"], "->", row["samples"][row["best"]])
```

## Train a reward model on them

```python
from datasets import load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from hf_prefs import PreferenceRewardConfig, PreferenceRewardTrainer, validate_labels

labels = validate_labels(load_dataset("{{ repo_id }}", split="train"))
tokenizer = AutoTokenizer.from_pretrained("openai-community/gpt2")
tokenizer.pad_token = tokenizer.eos_token  # padding is masked; rewards are read at the last real token
model = AutoModelForSequenceClassification.from_pretrained("openai-community/gpt2", num_labels=1)
args = PreferenceRewardConfig(output_dir="reward_model", num_candidates={{ k }},
                              normalize_before=False, normalize_after=False)
trainer = PreferenceRewardTrainer(model=model, args=args, train_dataset=labels, processing_class=tokenizer)
trainer.train()
trainer.save_model("reward_model")
```

The loss is the cross-entropy of the softmax over the K rewards against the labeler's pick,
−log(exp r(x, y_best) / Σ_i exp r(x, y_i)). With the paper's reward normalization (`normalize_before` /
`normalize_after`, on by default) also pass `normalization_samples=`, a dataset of the base model's samples
(`query`, `response`).

## Citation

```bibtex
{{ citation }}
```
"""


def _dtype(feature: Any) -> str:
    """A ``datasets`` feature as a short type name: ``string``, ``int64``, ``list[string]``..."""
    if isinstance(feature, Value):
        return feature.dtype
    if isinstance(feature, (List, Sequence)):
        return f"list[{_dtype(feature.feature)}]"
    if isinstance(feature, list) and len(feature) == 1:
        return f"list[{_dtype(feature[0])}]"
    return type(feature).__name__


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "n>1M"


def _labeler_text(labels: Dataset, labeler: str | None) -> str:
    if labeler:
        return labeler
    if "labeler" in labels.column_names:
        names = sorted({str(name) for name in labels["labeler"] if name is not None})
        shown = ", ".join(f"`{name}`" for name in names[:10]) + (", ..." if len(names) > 10 else "")
        return f"{len(names)} labeler{'s' if len(names) != 1 else ''} ({shown}; see the `labeler` column)"
    return "not recorded"


def _card_data(labels: Dataset, parquet_size: int, meta: Mapping[str, Any], pretty_name: str,
               license: str | None) -> DatasetCardData:
    """Front matter: Hub metadata, the ``configs``/``dataset_info`` that ``datasets`` reads, and the ``hf_prefs`` block."""
    card_data = DatasetCardData(
        pretty_name=pretty_name,
        license=license,
        task_categories=["text-generation", "reinforcement-learning"],
        tags=list(LABEL_DATASET_TAGS),
        size_categories=[_size_category(len(labels))],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}],
        hf_prefs=dict(meta),
    )
    num_bytes = labels.data.nbytes
    splits = SplitDict()
    splits.add(SplitInfo(name="train", num_bytes=num_bytes, num_examples=len(labels)))
    info = DatasetInfo(features=Features(labels.features), splits=splits, download_size=parquet_size,
                       dataset_size=num_bytes)
    DatasetInfosDict({"default": info}).to_dataset_card_data(card_data)
    return card_data


def render_label_card(
    labels: Dataset,
    repo_id: str,
    *,
    labeler: str | None = None,
    source: str | None = None,
    task: str | None = None,
    pretty_name: str | None = None,
    license: str | None = None,
    parquet_size: int | None = None,
) -> str:
    """The dataset card (README.md) of a label set pushed to ``repo_id``; ``labels`` must already be validated.

    ``labeler`` says who labeled (e.g. ``"human"``, ``"simulated (VADER log-odds)"``; default: the names in a
    ``labeler`` column, else "not recorded"), ``source`` where the queries and samples came from (e.g. the label
    queue's folder, the policy that sampled them), ``task`` the task's name. ``parquet_size``: bytes of the data file.
    """
    k, n = len(labels[0]["samples"]), len(labels)
    labeler_text, source_text = _labeler_text(labels, labeler), source or "not recorded"
    meta = {"num_candidates": k, "num_labels": n, "labeler": labeler_text, "source": source_text}
    if task:
        meta["task"] = task
    pretty_name = pretty_name or repo_id.split("/")[-1]
    card_data = _card_data(labels, parquet_size or 0, meta, pretty_name, license)
    schema = [(name, _dtype(feature), COLUMN_MEANINGS.get(name, ""))
              for name, feature in labels.features.items()]
    card = DatasetCard.from_template(
        card_data, template_str=_CARD_TEMPLATE, pretty_name=pretty_name, num_labels=f"{n:,}", k=k,
        labeler=labeler_text, source=source_text, task=task, schema=schema, repo_id=repo_id,
        citation=ZIEGLER_2019["citation"],
    )
    return str(card)


def push_labels_to_hub(
    labels: Dataset,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    labeler: str | None = None,
    source: str | None = None,
    task: str | None = None,
    pretty_name: str | None = None,
    license: str | None = None,
    commit_message: str = "Upload preference labels with hf_prefs",
    endpoint: str | None = None,
) -> str:
    """Push ``labels`` to the dataset repo ``repo_id`` with a dataset card, in one commit; return the commit's URL.

    Args:
        labels: a label dataset (``query``, ``samples`` or ``sample0..``, ``best``; extra columns are kept).
        repo_id: ``"namespace/name"`` (or ``"name"`` for the token's own namespace).
        token: a Hub token with write access; ``None`` uses the saved login / ``HF_TOKEN``.
        private: visibility of a newly created repo (``None``: the Hub's default); an existing repo keeps its own.
        labeler, source, task, pretty_name, license: shown in the card (see :func:`render_label_card`).
        endpoint: Hub URL (default: ``HF_ENDPOINT`` as read at import, else https://huggingface.co).
    Raises:
        LabelValidationError: a bad row (naming the row and field); ``ValueError``: invalid ``repo_id``;
        RuntimeError: offline mode is on. All before any request. Hub errors propagate as ``HfHubHTTPError``.
    """
    labels = validate_labels(labels)
    validate_repo_id(repo_id)
    if constants.is_offline_mode():
        raise RuntimeError("cannot push to the Hub: offline mode is on (HF_HUB_OFFLINE=1); unset HF_HUB_OFFLINE to push")
    buffer = io.BytesIO()
    labels.to_parquet(buffer)
    data = buffer.getvalue()
    card_fields = dict(labeler=labeler, source=source, task=task, pretty_name=pretty_name, license=license,
                       parquet_size=len(data))
    card = render_label_card(labels, repo_id, **card_fields)
    api = HfApi(endpoint=endpoint, token=token)
    repo_url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    if repo_url.repo_id != repo_id:  # "name" resolved to the token's namespace: the loading snippet needs the full id
        card = render_label_card(labels, repo_url.repo_id, **card_fields)
    commit = api.create_commit(
        repo_id=repo_url.repo_id,
        repo_type="dataset",
        operations=[
            CommitOperationAdd(path_in_repo=LABEL_DATA_FILE, path_or_fileobj=data),
            CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8")),
        ],
        commit_message=commit_message,
    )
    return commit.commit_url
