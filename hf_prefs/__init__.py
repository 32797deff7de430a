"""hf_prefs: fine-tuning language models from human preferences (Ziegler et al., 2019) on TRL.

Public API (import from ``hf_prefs``):

- reward modeling: :class:`PreferenceRewardTrainer`, :class:`PreferenceRewardConfig`, :func:`kway_preference_loss`,
  :func:`kway_accuracy`, :func:`reward_normalization`, :func:`load_reward_model`, :func:`score_texts`;
- labels: :func:`validate_labels`, :func:`from_pairwise`, :func:`to_pairwise`, :func:`from_openai_json`,
  :class:`SimulatedLabeler`, :func:`sample_label_dataset`, :class:`LabelQueue`, :class:`OnlinePreferenceLoop`;
- policy optimisation: :class:`PPOTrainer`, :class:`PPOConfig`, :class:`PolicyWithValueHead`,
  :class:`FixedKLController`, :class:`AdaptiveKLController`;
- analysis: :func:`optimal_frontier`, :func:`evaluate_policy`, :func:`run_study`, :func:`write_report`,
  :func:`rouge`, :func:`win_rate`, :func:`paired_difference`, :func:`compare_policies`;
- tasks and assets: :func:`austen_queries`, :func:`vader_log_odds`, :mod:`hf_prefs.assets`.

Heavy modules are imported lazily, so ``import hf_prefs`` stays cheap. The package is layered; each layer imports
only from the layers before it (``tests/test_architecture.py`` checks it):

0. ``assets``, ``citation``, ``model_cards``, ``hub``, ``memory``, ``_compat`` (every private TRL/transformers/accelerate name)
1. ``core``: equations and rules (rollout spec, losses, KL control, PPO math, normalization, frontier, stats)
2. ``models``: sampling, reward model, value head
3. ``labels``: label schema, labelers, the label queue (event log + labeling policy), label sources
4. ``trainers``: reward trainer, PPO trainer, online loop
5. ``tasks``: queries, known rewards, ROUGE
6. ``pipeline``: stage functions used by the recipes and the study
7. ``analysis``, ``cli``, ``label_app``: study, report, metrics; the command line; the labeling page
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_EXPORTS: dict[str, str] = {
    # reward modeling
    "PreferenceRewardTrainer": "hf_prefs.trainers.reward_trainer",
    "PreferenceRewardConfig": "hf_prefs.trainers.reward_config",
    "kway_preference_loss": "hf_prefs.core.losses",
    "kway_accuracy": "hf_prefs.core.losses",
    "reward_normalization": "hf_prefs.core.normalization",
    "normalize_reward_model": "hf_prefs.models.reward_model",
    "load_reward_model": "hf_prefs.models.loading",
    "score_texts": "hf_prefs.models.reward_model",
    # rollouts: what a response is
    "RolloutSpec": "hf_prefs.core.rollout",
    "cut_responses": "hf_prefs.core.rollout",
    # labels and labelers
    "LabelValidationError": "hf_prefs.labels.schema",
    "validate_labels": "hf_prefs.labels.schema",
    "load_label_file": "hf_prefs.labels.schema",
    "from_pairwise": "hf_prefs.labels.schema",
    "to_pairwise": "hf_prefs.labels.schema",
    "from_openai_json": "hf_prefs.labels.schema",
    "SimulatedLabeler": "hf_prefs.labels.labelers",
    "ResponseSampler": "hf_prefs.models.generation",
    "sample_label_dataset": "hf_prefs.labels.labelers",
    "LabelQueue": "hf_prefs.labels.queue",
    "push_labels_to_hub": "hf_prefs.labels.hub",
    "OnlineLabelSchedule": "hf_prefs.core.online_schedule",
    "OnlinePreferenceLoop": "hf_prefs.trainers.online",
    # policy optimisation
    "PPOTrainer": "hf_prefs.trainers.ppo_trainer",
    "PPOConfig": "hf_prefs.trainers.ppo_config",
    "NonFiniteError": "hf_prefs.trainers.ppo_data",
    "PolicyWithValueHead": "hf_prefs.models.value_head",
    "FixedKLController": "hf_prefs.core.kl",
    "AdaptiveKLController": "hf_prefs.core.kl",
    # analysis
    "optimal_frontier": "hf_prefs.core.frontier",
    "optimal_policy_stats": "hf_prefs.core.frontier",
    "best_of_n_reward": "hf_prefs.core.frontier",
    "best_of_n_kl_bound": "hf_prefs.core.frontier",
    "best_of_n_kl": "hf_prefs.core.frontier",
    "evaluate_policy": "hf_prefs.pipeline.evaluate",
    "run_study": "hf_prefs.analysis.study",
    "rouge": "hf_prefs.tasks.rouge",
    "win_rate": "hf_prefs.core.stats",
    "paired_difference": "hf_prefs.core.stats",
    "compare_policies": "hf_prefs.pipeline.evaluate",
    "write_report": "hf_prefs.analysis.report",
    # tasks, known rewards, pipeline, model cards, hub
    "austen_queries": "hf_prefs.tasks.books",
    "vader_log_odds": "hf_prefs.tasks.known_rewards",
    "PipelineArguments": "hf_prefs.pipeline.arguments",
    "run_pipeline": "hf_prefs.pipeline.run",
    "render_policy_card": "hf_prefs.model_cards",
    "render_reward_model_card": "hf_prefs.model_cards",
    "write_model_card": "hf_prefs.model_cards",
    "push_folder_to_hub": "hf_prefs.hub",
    "push_run_to_hub": "hf_prefs.hub",
    "release_free_memory": "hf_prefs.memory",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hf_prefs' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
