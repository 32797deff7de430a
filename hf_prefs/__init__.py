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

Heavy modules are imported lazily, so ``import hf_prefs`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # reward modeling
    "PreferenceRewardTrainer": "hf_prefs.reward_trainer",
    "PreferenceRewardConfig": "hf_prefs.reward_trainer",
    "kway_preference_loss": "hf_prefs.losses",
    "kway_accuracy": "hf_prefs.losses",
    "reward_normalization": "hf_prefs.normalization",
    "load_reward_model": "hf_prefs.reward_model",
    "score_texts": "hf_prefs.reward_model",
    # labels and labelers
    "LabelValidationError": "hf_prefs.labels",
    "validate_labels": "hf_prefs.labels",
    "from_pairwise": "hf_prefs.labels",
    "to_pairwise": "hf_prefs.labels",
    "from_openai_json": "hf_prefs.labels",
    "SimulatedLabeler": "hf_prefs.labelers",
    "ResponseSampler": "hf_prefs.labelers",
    "sample_label_dataset": "hf_prefs.labelers",
    "LabelQueue": "hf_prefs.label_app.store",
    "OnlineLabelSchedule": "hf_prefs.online",
    "OnlinePreferenceLoop": "hf_prefs.online",
    # policy optimisation
    "PPOTrainer": "hf_prefs.ppo_trainer",
    "PPOConfig": "hf_prefs.ppo_config",
    "NonFiniteError": "hf_prefs.ppo_trainer",
    "PolicyWithValueHead": "hf_prefs.value_head",
    "FixedKLController": "hf_prefs.kl",
    "AdaptiveKLController": "hf_prefs.kl",
    # analysis
    "optimal_frontier": "hf_prefs.analysis.frontier",
    "optimal_policy_stats": "hf_prefs.analysis.frontier",
    "evaluate_policy": "hf_prefs.analysis.evaluate",
    "run_study": "hf_prefs.analysis.study",
    "rouge": "hf_prefs.analysis.metrics",
    "win_rate": "hf_prefs.analysis.metrics",
    "paired_difference": "hf_prefs.analysis.metrics",
    "compare_policies": "hf_prefs.analysis.metrics",
    "write_report": "hf_prefs.analysis.report",
    # tasks, known rewards, pipeline, model cards, hub
    "austen_queries": "hf_prefs.tasks.books",
    "vader_log_odds": "hf_prefs.scorers",
    "PipelineArguments": "hf_prefs.pipeline",
    "run_pipeline": "hf_prefs.pipeline",
    "render_policy_card": "hf_prefs.model_cards",
    "render_reward_model_card": "hf_prefs.model_cards",
    "write_model_card": "hf_prefs.model_cards",
    "push_folder_to_hub": "hf_prefs.hub",
    "push_run_to_hub": "hf_prefs.hub",
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
