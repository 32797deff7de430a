"""Model cards for the policy and the reward model (README.md with YAML front matter), rendered like TRL's.

TRL renders its cards with ``huggingface_hub.ModelCard.from_template(card_data, template_path, **fields)``: a
``ModelCardData`` becomes the YAML front matter (``{{ card_data }}``) and the remaining fields fill a Jinja template.
This module does the same with the two templates shipped in ``hf_prefs/templates/`` (``policy.md``,
``reward_model.md``; ``model_cards/`` at the repository root holds identical copies for reading on GitHub, a test
keeps them in sync). The templates live inside the package so that an installed wheel can render cards.

Each card states what a reader needs to trust or reuse the model: the task, the base model, the labels (count, K,
and who labelled: a simulated labeler with which known reward, a label file, or humans), the reward normalization
gain/bias, for the policy the KL controller (target, β initial/final, final KL), a table of final metrics, how to
load it, and the citations of Ziegler et al. (2019) and TRL.

TRL pitfall avoided: TRL drops a base model given as a local folder and renders "fine-tuned version of [None]". Here
a local path shows as its folder name (or ``base_model_name``), and only a Hub id goes into the front matter's
``base_model`` (the Hub rejects anything else there).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

__all__ = [
    "POLICY_TEMPLATE",
    "REWARD_MODEL_TEMPLATE",
    "POLICY_TAGS",
    "REWARD_MODEL_TAGS",
    "LABELERS",
    "template_path",
    "resolve_base_model",
    "render_policy_card",
    "render_reward_model_card",
    "write_model_card",
]

POLICY_TEMPLATE = "policy.md"
REWARD_MODEL_TEMPLATE = "reward_model.md"
POLICY_TAGS = ("hf-prefs", "trl", "ppo", "rlhf")
REWARD_MODEL_TAGS = ("hf-prefs", "trl", "reward-model", "rlhf")
#: Who produced the labels: a simulated labeler (picks the sample with the highest known reward), a label file, humans.
LABELERS = ("simulated", "file", "human")
#: What chose a reward model's gain and bias (:func:`render_reward_model_card`'s ``normalization``).
NORMALIZATION_STAGES = ("after", "before", "none")

_FRAMEWORKS = (("hf_prefs", "hf-prefs"), ("TRL", "trl"), ("Transformers", "transformers"), ("PyTorch", "torch"),
               ("Datasets", "datasets"), ("Tokenizers", "tokenizers"))


def template_path(name: str) -> Path:
    """Path of a template shipped in the package (``hf_prefs/templates/<name>``), working from a wheel too."""
    path = Path(str(resources.files("hf_prefs").joinpath("templates", name)))
    if not path.is_file():
        raise FileNotFoundError(f"model card template {name!r} not found at {path} (is hf_prefs installed with its templates?)")
    return path


def resolve_base_model(base_model: str | os.PathLike | None, base_model_name: str | None = None) -> tuple[str | None, str]:
    """``(hub_id, display)`` for a base model given as a Hub id or a local folder.

    ``hub_id`` is ``base_model`` when it is a valid Hub repo id that is not an existing local folder, else ``None``
    (a local path must not go into the front matter). ``display`` is ``base_model_name`` if given, else the Hub id,
    else the local folder's name — never "None".
    """
    if base_model is None and not base_model_name:
        raise ValueError("base_model: give the base model's Hub id or local path (or at least base_model_name)")
    hub_id = None
    local_name = None
    if base_model is not None:
        text = os.fspath(base_model)
        if not text.strip():
            raise ValueError("base_model: got an empty string")
        if os.path.isdir(text):
            local_name = os.path.basename(os.path.normpath(text))
        else:
            try:
                validate_repo_id(text)
                hub_id = text
            except HFValidationError:  # a path that does not exist here (e.g. on the training machine)
                local_name = os.path.basename(os.path.normpath(text))
    display = base_model_name or hub_id or local_name
    return hub_id, str(display)


def _link(hub_id: str | None, display: str) -> str:
    return f"[{display}](https://huggingface.co/{hub_id})" if hub_id else f"`{display}` (local model)"


def _number(field: str, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{field}: expected a finite number, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{field}: expected a number > 0, got {value!r}")
    return float(value)


def _positive_int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{field}: expected an int >= 1, got {value!r}")
    return value


def _fmt(value: Any) -> str:
    """Numbers with 6 significant digits (ints as ints), anything else as text."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format(value, ".6g")
    return str(value)


def _table(field: str, rows: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """``[(name, formatted value)]`` in the given order; numbers must be finite."""
    if rows is None:
        return []
    if not isinstance(rows, Mapping):
        raise ValueError(f"{field}: expected a mapping of name -> value, got {type(rows).__name__}")
    out = []
    for name, value in rows.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            _number(f"{field}[{name!r}]", value)
        out.append((str(name), _fmt(value)))
    return out


def _tracking(links: Mapping[str, str] | None) -> str:
    """``[name](url), ...`` of the runs' tracker pages (W&B, Trackio, Comet), "" without any."""
    return ", ".join(f"[{name}]({url})" for name, url in (links or {}).items() if url)


def _labels_sentence(num_labels: Any, samples_per_label: Any, labeler: str | None, known_reward: str | None,
                     labels_file: str | None) -> str:
    """The labels behind a reward model; ``labeler=None``: not known where the card is written (a trainer given a
    dataset or a reward model), ``num_labels`` and ``samples_per_label`` may then be None too."""
    if labeler is None:
        count = "" if num_labels is None else f"{_positive_int('num_labels', num_labels):,} "
        k = f"best-of-{samples_per_label} " if samples_per_label else ""
        if not (count or k or labels_file):
            return "not recorded."
        return f"{count}{k}labels of the training dataset" + (f" `{labels_file}`." if labels_file else ".")
    _positive_int("num_labels", num_labels)
    if isinstance(samples_per_label, bool) or not isinstance(samples_per_label, int) or samples_per_label < 2:
        raise ValueError(f"samples_per_label: expected an int >= 2, got {samples_per_label!r}")
    if labeler not in LABELERS:
        raise ValueError(f"labeler: expected one of {LABELERS}, got {labeler!r}")
    head = f"{num_labels:,} best-of-{samples_per_label} labels"
    if labeler == "simulated":
        if not known_reward:
            raise ValueError("known_reward: a simulated labeler needs the known reward it maximises (e.g. 'VADER log-odds')")
        text = f"{head} from a simulated labeler that always picks the sample scored highest by a known reward: {known_reward}"
    elif labeler == "file":
        if not labels_file:
            raise ValueError("labels_file: labeler='file' needs the label file's name")
        text = f"{head} read from `{labels_file}`"
    else:
        text = f"{head} from human labelers"
    if labels_file and labeler != "file":
        text += f" (stored in `{labels_file}`)"
    return text + "."


def _framework_versions() -> list[tuple[str, str]]:
    out = []
    for label, dist in _FRAMEWORKS:
        try:
            out.append((label, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            out.append((label, "not installed"))
    return out


def _tags(defaults: Sequence[str], extra: Iterable[str] | None) -> list[str]:
    tags = list(defaults)
    for tag in extra or ():
        if tag not in tags:
            tags.append(tag)
    return tags


def _as_list(datasets: str | Sequence[str] | None) -> list[str] | None:
    if datasets is None:
        return None
    return [datasets] if isinstance(datasets, str) else list(datasets)


def _render(template: str | os.PathLike, card_data: ModelCardData, **fields: Any) -> str:
    card = ModelCard.from_template(card_data, template_path=os.fspath(template), **fields)
    return str(card)

def _front_matter(
    task: str,
    model_name: str | None,
    hub_model_id: str | None,
    base_id: str | None,
    base_display: str,
    kind: str,
    datasets: str | Sequence[str] | None,
    license: str,
    pipeline_tag: str,
    default_tags: Sequence[str],
    tags: Iterable[str] | None,
    is_peft: bool = False,
) -> tuple[str, ModelCardData]:
    """The card's name (given, the Hub repo's name, or ``<base>-<task>-<kind>``) and its YAML front matter
    (``library_name: peft`` for an adapter, as the Hub lists adapters; else ``transformers``)."""
    if not task:
        raise ValueError("task: give the task's name (e.g. 'sentiment')")
    model_name = model_name or (hub_model_id.split("/")[-1] if hub_model_id else f"{base_display}-{task}-{kind}")
    card_data = ModelCardData(
        base_model=base_id,
        datasets=_as_list(datasets),
        library_name="peft" if is_peft else "transformers",
        license=license,
        model_name=model_name,
        pipeline_tag=pipeline_tag,
        tags=_tags(default_tags, tags),
    )
    return model_name, card_data



def render_policy_card(
    *,
    base_model: str | os.PathLike | None,
    task: str,
    num_labels: int | None,
    reward_gain: float,
    reward_bias: float,
    kl_final: float,
    beta_final: float,
    temperature: float,
    response_length: int,
    kl_target: float | None = None,
    beta_initial: float | None = None,
    labeler: str | None = "simulated", known_reward: str | None = None, labels_file: str | None = None,
    samples_per_label: int = 4,
    metrics: Mapping[str, Any] | None = None, hyperparameters: Mapping[str, Any] | None = None,
    base_model_name: str | None = None, model_name: str | None = None,
    hub_model_id: str | None = None, reward_model_id: str | None = None, reward_model_name: str | None = None,
    task_description: str | None = None, datasets: str | Sequence[str] | None = None, license: str = "apache-2.0",
    tags: Iterable[str] | None = None, is_peft: bool = False,
    embedding_rows: int | None = None, tracking_links: Mapping[str, str] | None = None,
    template: str | os.PathLike | None = None, reward_normalized: bool = True,
) -> str:
    """The policy's README.md (front matter + body) from a finished PPO run.

    Args:
        base_model: Hub id or local path of the pretrained LM that π and ρ start from.
        task: task name (e.g. ``"sentiment"``); ``task_description`` adds a sentence.
        num_labels, samples_per_label, labeler, known_reward, labels_file: the labels the reward model was trained
            on (``labeler`` is one of :data:`LABELERS`, or None where they are not known; ``known_reward`` is required for ``"simulated"``,
            ``labels_file`` for ``"file"``).
        reward_gain, reward_bias: the reward model's normalization, ``r = gain · out + bias``;
            ``reward_normalized=False``: none was chosen (gain 1, bias 0: a reward function, or a model never
            normalized).
        kl_final: KL(π, ρ) in nats at the end of training; ``kl_target`` the adaptive controller's target (``None``
            for a fixed β); ``beta_initial`` / ``beta_final`` the KL coefficient at the start / end.
        temperature, response_length: sampling temperature and response tokens, used in the loading snippet.
        metrics: final metrics (name -> value), rendered as a table in the given order.
        hyperparameters: optional training settings table; ``tracking_links``: name -> URL of the run's tracker pages.
        hub_model_id: the repo of the card (the snippet's); ``reward_model_id`` links the reward model's, else ``reward_model_name``.
        license: the front matter's license; set it to the base model's license.
        is_peft, embedding_rows: an adapter's card loads the base at the adapter's revision, sized to ``embedding_rows``
            (the trained policy's), then the adapter; without the rows, with peft's AutoPeftModel (sized by the tokenizer).
    Returns:
        The card's text (YAML front matter with ``library_name: transformers``, ``peft`` for an adapter, and tags
        ``hf-prefs, trl, ppo, rlhf``).
    """
    base_id, base_display = resolve_base_model(base_model, base_model_name)
    reward_gain, reward_bias, kl_final, beta_final = (
        _number(name, value) for name, value in
        (("reward_gain", reward_gain), ("reward_bias", reward_bias), ("kl_final", kl_final), ("beta_final", beta_final))
    )
    temperature = _number("temperature", temperature, positive=True)
    kl_target = None if kl_target is None else _number("kl_target", kl_target, positive=True)
    beta_initial = None if beta_initial is None else _number("beta_initial", beta_initial)
    model_name, card_data = _front_matter(
        task, model_name, hub_model_id, base_id, base_display, "ppo", datasets, license, "text-generation", POLICY_TAGS, tags,
        is_peft,
    )
    return _render(
        template or template_path(POLICY_TEMPLATE),
        card_data,
        model_name=model_name,
        task=task,
        task_description=task_description,
        base_model_link=_link(base_id, base_display),
        reward_model_link=_link(reward_model_id, reward_model_id) if reward_model_id else reward_model_name or "trained in the same run",
        labels_sentence=_labels_sentence(num_labels, samples_per_label, labeler, known_reward, labels_file),
        reward_gain=_fmt(reward_gain), reward_bias=_fmt(reward_bias), reward_normalized=reward_normalized,
        kl_controller="adaptive" if kl_target is not None else "fixed",
        kl_target=_fmt(kl_target) if kl_target is not None else "none (fixed β)",
        beta_initial=_fmt(beta_initial) if beta_initial is not None else "not recorded",
        beta_final=_fmt(beta_final), kl_final=_fmt(kl_final),
        metrics=_table("metrics", metrics), hyperparameters=_table("hyperparameters", hyperparameters),
        repo_ref=hub_model_id or f"./{model_name}", temperature=_fmt(temperature),
        response_length=_positive_int("response_length", response_length), is_peft=is_peft,
        embedding_rows=None if embedding_rows is None else _positive_int("embedding_rows", embedding_rows),
        framework_versions=_framework_versions(), tracking=_tracking(tracking_links),
    )


def render_reward_model_card(
    *,
    base_model: str | os.PathLike | None,
    task: str,
    num_labels: int | None,
    reward_gain: float,
    reward_bias: float,
    labeler: str | None = "simulated",
    known_reward: str | None = None,
    labels_file: str | None = None,
    samples_per_label: int = 4,
    metrics: Mapping[str, Any] | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    base_model_name: str | None = None,
    model_name: str | None = None,
    hub_model_id: str | None = None,
    policy_model_id: str | None = None,
    task_description: str | None = None,
    datasets: str | Sequence[str] | None = None,
    license: str = "apache-2.0",
    tags: Iterable[str] | None = None,
    is_peft: bool = False,
    tracking_links: Mapping[str, str] | None = None,
    template: str | os.PathLike | None = None,
    normalization: str = "after",
) -> str:
    """The reward model's README.md (front matter + body).

    Arguments as in :func:`render_policy_card`; ``reward_gain`` / ``reward_bias`` are the normalization stored with
    the model, ``normalization`` what chose them: ``"after"`` training (rewards on ρ's samples at mean 0, std 1),
    ``"before"`` it only, or ``"none"`` (gain 1, bias 0); ``metrics`` e.g. the final ``eval_accuracy`` /
    ``eval_loss``, ``policy_model_id`` links the policy trained with it. Tags: ``hf-prefs, trl, reward-model, rlhf``.
    """
    if normalization not in NORMALIZATION_STAGES:
        raise ValueError(f"normalization must be one of {NORMALIZATION_STAGES}, got {normalization!r}")
    base_id, base_display = resolve_base_model(base_model, base_model_name)
    reward_gain = _number("reward_gain", reward_gain)
    reward_bias = _number("reward_bias", reward_bias)
    model_name, card_data = _front_matter(
        task, model_name, hub_model_id, base_id, base_display, "reward-model", datasets, license, "text-classification",
        REWARD_MODEL_TAGS, tags, is_peft,
    )
    return _render(
        template or template_path(REWARD_MODEL_TEMPLATE),
        card_data,
        model_name=model_name,
        task=task,
        task_description=task_description,
        base_model_link=_link(base_id, base_display),
        policy_link=_link(policy_model_id, policy_model_id) if policy_model_id else None,
        labels_sentence=_labels_sentence(num_labels, samples_per_label, labeler, known_reward, labels_file),
        reward_gain=_fmt(reward_gain),
        reward_bias=_fmt(reward_bias),
        normalization=normalization,
        metrics=_table("metrics", metrics),
        hyperparameters=_table("hyperparameters", hyperparameters),
        repo_ref=hub_model_id or f"./{model_name}",
        is_peft=is_peft,
        framework_versions=_framework_versions(),
        tracking=_tracking(tracking_links),
    )


def write_model_card(folder: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``folder/README.md`` (creating the folder) after checking its YAML front matter parses.

    Returns the README's path. Raises ``ValueError`` if the text has no front matter or it is not valid YAML.
    """
    if not isinstance(text, str) or not text.startswith("---"):
        raise ValueError("the model card must start with a YAML front matter block ('---' ... '---')")
    try:
        card = ModelCard(text)
    except Exception as err:  # yaml errors, or a front matter that is not a mapping
        raise ValueError(f"the model card's YAML front matter does not parse: {err}") from err
    if not card.data.to_dict():
        raise ValueError("the model card's YAML front matter is empty")
    path = Path(folder) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
