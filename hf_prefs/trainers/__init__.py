"""Layer 4: the trainers, each wiring the equations of :mod:`hf_prefs.core` into TRL / transformers.

- :class:`PreferenceRewardTrainer` / :class:`PreferenceRewardConfig`: ``trl.RewardTrainer`` on best-of-K labels;
- :class:`PPOTrainer` / :class:`PPOConfig`: the paper's PPO on TRL's trainer base, TRL 1.12's config names;
- :class:`OnlinePreferenceLoop`: online label rounds as a callback on one PPO run.
"""

from .online import OnlinePreferenceLoop
from .ppo_config import PPOConfig
from .ppo_data import NonFiniteError, Rollout
from .ppo_trainer import PPOTrainer
from .reward_config import PreferenceRewardConfig
from .reward_trainer import DataCollatorForKWayPreference, PreferenceRewardTrainer

__all__ = [
    "OnlinePreferenceLoop",
    "PPOConfig",
    "NonFiniteError",
    "Rollout",
    "PPOTrainer",
    "PreferenceRewardConfig",
    "DataCollatorForKWayPreference",
    "PreferenceRewardTrainer",
]
