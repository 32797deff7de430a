"""Layer 1: the paper's equations and rules as small pure functions (torch/numpy only; nothing else of hf_prefs).

- :mod:`~hf_prefs.core.rollout`: :class:`RolloutSpec`, what a response is (length, temperature, the cut, the penalty);
- :mod:`~hf_prefs.core.losses`: the K-way preference loss; :mod:`~hf_prefs.core.normalization`: the reward gain/bias;
- :mod:`~hf_prefs.core.kl`: the fixed and adaptive KL controllers; :mod:`~hf_prefs.core.ppo_math`: PPO's equations;
- :mod:`~hf_prefs.core.frontier`: the optimal KL-reward frontier; :mod:`~hf_prefs.core.stats`: paired comparisons;
- :mod:`~hf_prefs.core.packing`: K responses of a query in one row; :mod:`~hf_prefs.core.online_schedule`: when the
  online label rounds happen.
"""

from .frontier import FrontierPoint, frontier_reward_at_kl, optimal_frontier, optimal_policy_stats
from .kl import AdaptiveKLController, FixedKLController, adaptive_kl_update
from .losses import kway_accuracy, kway_preference_loss
from .normalization import reward_normalization
from .online_schedule import OnlineLabelSchedule
from .rollout import Cut, RolloutSpec, apply_penalty, cut_responses
from .stats import paired_difference, win_rate

__all__ = [
    "FrontierPoint",
    "frontier_reward_at_kl",
    "optimal_frontier",
    "optimal_policy_stats",
    "AdaptiveKLController",
    "FixedKLController",
    "adaptive_kl_update",
    "kway_accuracy",
    "kway_preference_loss",
    "reward_normalization",
    "OnlineLabelSchedule",
    "Cut",
    "RolloutSpec",
    "apply_penalty",
    "cut_responses",
    "paired_difference",
    "win_rate",
]
