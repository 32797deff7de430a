"""The model cards the trainers write themselves: ``output_dir/README.md`` at each checkpoint and before
``push_to_hub`` (TRL's ``create_model_card``), and next to what ``save_model`` saves.

TRL's generic cards load the model with a ``pipeline`` (a text-classification pipeline gives sigmoid(raw), not the
normalized reward; a chat pipeline needs a chat template) and name the base model "None" when it is a local folder.
These are hf_prefs' own cards (:mod:`hf_prefs.model_cards`) filled with what the trainer knows: the base model, the
reward's gain and bias, the final KL and β, the sampling settings of the loading snippet, the last logged metrics, and
what TRL's cards had: the trackers' pages (W&B, Trackio, Comet) and the ``unsloth``/``hf_jobs``/``trackio:`` tags.
What it does not know (the task, who labeled) the card says it does not; the recipes write complete cards for their
runs (``hf_prefs.pipeline.results``).
"""

from __future__ import annotations

import math
import os
from typing import Any

from transformers.utils import logging

from .._compat import tracker_urls
from ..model_cards import render_policy_card, render_reward_model_card, write_model_card
from ..models.generation import embedding_rows
from ..models.reward_model import get_reward_normalization, has_reward_normalization, unwrap_model
from ..models.wrappers import unwrap_distributed

logger = logging.get_logger(__name__)

__all__ = ["reward_trainer_card", "ppo_trainer_card", "write_trainer_card"]

#: The task named in a card a trainer writes (the trainer is not told the task).
TASK = "preference fine-tuning"


def _base(model: Any) -> tuple[str | None, str]:
    """``(name or path, display name)`` of the pretrained model under ``model`` (PEFT and wrappers looked through)."""
    inner = unwrap_model(model)
    name = getattr(getattr(inner, "config", None), "_name_or_path", "") or None
    return name, name or f"{type(inner).__name__} built from a config"


def _last_logged(log_history: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, float]:
    """The last finite value logged for each key, in the order of ``keys``."""
    out: dict[str, float] = {}
    for key in keys:
        value = next((h[key] for h in reversed(log_history) if key in h), None)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[key] = value
    return out


def reward_trainer_card(trainer: Any, model_name: str | None = None, dataset_name: str | None = None,
                        tags: list[str] | None = None) -> str:
    """The reward model's card from a ``PreferenceRewardTrainer``: load with ``load_reward_model`` + ``score_texts``
    (the normalized reward), its gain and bias, the training set's size and K, the last eval metrics."""
    args, model, links = trainer.args, trainer.model, tracker_urls()
    name, display = _base(model)
    gain, bias = get_reward_normalization(model)
    normalization = ("after" if any("reward_gain_after" in h for h in trainer.state.log_history)
                     else "before" if has_reward_normalization(model) else "none")
    train = trainer.train_dataset
    num_labels = len(train) if hasattr(train, "__len__") and len(train) > 0 else None
    metrics = _last_logged(trainer.state.log_history, ("train_loss", "eval_loss", "eval_accuracy", "eval_margin"))
    hyper = {"learning_rate": args.learning_rate, "per_device_train_batch_size": args.per_device_train_batch_size,
             "gradient_accumulation_steps": args.gradient_accumulation_steps, "num_train_epochs": args.num_train_epochs,
             "seed": args.seed}
    return render_reward_model_card(
        base_model=name, base_model_name=display, task=TASK, num_labels=num_labels,
        samples_per_label=getattr(trainer, "num_candidates", None), labeler=None, labels_file=dataset_name,
        reward_gain=gain, reward_bias=bias, metrics=metrics, hyperparameters=hyper, model_name=model_name,
        hub_model_id=args.hub_model_id, tags=_tags(tags, model, links), tracking_links=links,
        is_peft=hasattr(unwrap_distributed(model), "peft_config"), datasets=dataset_name, normalization=normalization,
    )


def ppo_trainer_card(trainer: Any, model_name: str | None = None, dataset_name: str | None = None,
                     tags: list[str] | None = None) -> str:
    """The policy's card from a ``PPOTrainer``: load with transformers/peft and sample at the run's temperature and
    response length, the reward's gain and bias (1 and 0 for a reward function), the final KL and β."""
    args, policy, links = trainer.args, trainer.policy_model, tracker_urls()
    name, display = _base(policy)
    reward = trainer.reward_model
    is_model = hasattr(reward, "config")
    gain, bias = get_reward_normalization(reward) if is_model else (1.0, 0.0)
    reward_name = (f"`{_base(reward)[1]}`, given to the trainer" if is_model
                   else f"the reward function `{getattr(reward, '__name__', type(reward).__name__)}`, given to the trainer")
    history = trainer.state.log_history
    metrics = _last_logged(history, ("objective/kl", "objective/scores", "objective/rlhf_reward",
                                     "objective/non_score_reward", "objective/known_reward"))
    hyper = {"learning_rate": args.learning_rate, "batch_size": args.batch_size, "num_ppo_epochs": args.num_ppo_epochs,
             "num_mini_batches": args.num_mini_batches, "total_episodes": args.total_episodes, "seed": args.seed}
    is_peft = hasattr(policy, "peft_config")
    return render_policy_card(
        base_model=name, base_model_name=display, task=TASK, num_labels=None, samples_per_label=None, labeler=None,
        reward_gain=gain, reward_bias=bias, reward_normalized=is_model and has_reward_normalization(reward),
        kl_final=metrics.get("objective/kl", 0.0),
        beta_final=float(trainer.kl_ctl.value), kl_target=args.kl_target if args.adaptive_kl else None,
        beta_initial=args.kl_coef, temperature=args.temperature, response_length=args.response_length,
        metrics=metrics, hyperparameters=hyper, model_name=model_name, hub_model_id=args.hub_model_id,
        reward_model_name=reward_name, tags=_tags(tags, policy, links), tracking_links=links, is_peft=is_peft,
        embedding_rows=embedding_rows(policy) if is_peft else None,
        datasets=dataset_name,
    )


def _tags(tags: list[str] | None, model: Any, links: dict[str, str]) -> list[str]:
    """The given tags plus TRL's: ``unsloth`` for an Unsloth model, ``hf_jobs`` in a Hugging Face Job, the Trackio
    Space as ``trackio:<url>``."""
    out = list(tags or [])
    if hasattr(getattr(unwrap_model(model), "config", None), "unsloth_version"):
        out.append("unsloth")
    if "JOB_ID" in os.environ:
        out.append("hf_jobs")
    if "Trackio" in links:
        out.append(f"trackio:{links['Trackio']}")
    return out


def write_trainer_card(trainer: Any, folder: str, render: Any, tags: str | list[str] | None = None,
                       **kwargs: Any) -> None:
    """Write ``render(trainer, tags=..., **kwargs)`` to ``folder/README.md`` on the main process, the trainer's
    ``_tag_names`` before the given ``tags``; a card that cannot be rendered is warned about, never stops a save."""
    if not trainer.is_world_process_zero():
        return
    tags = [*trainer._tag_names, *([tags] if isinstance(tags, str) else tags or [])]
    try:
        write_model_card(folder, render(trainer, tags=tags, **kwargs))
    except (ValueError, TypeError) as err:  # a value the card cannot show (e.g. a non-finite metric)
        logger.warning(f"no model card written to {folder}: {err}")
