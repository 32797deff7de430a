"""Layer 2: models. Sampling (:mod:`~hf_prefs.models.generation`), the reward model read at the last token with its
normalization (:mod:`~hf_prefs.models.reward_model`, :mod:`~hf_prefs.models.loading`), its frozen bottom blocks and
their stored outputs (:mod:`~hf_prefs.models.frozen_features`) and the policy with its value head
(:mod:`~hf_prefs.models.value_head`)."""

from .frozen_features import FrozenFeatureCache, freeze_bottom_layers
from .generation import ResponseSampler, response_logprobs, sample_categorical, sample_responses, sample_texts
from .loading import load_reward_model, load_reward_normalization, save_reward_normalization
from .reward_model import (
    get_reward_normalization,
    last_token_rewards,
    normalize_reward_model,
    score_texts,
    score_token_ids,
    set_reward_normalization,
)
from .value_head import PolicyWithValueHead, ValueHead, value_model_from_policy, value_model_from_reward_model

__all__ = [
    "FrozenFeatureCache",
    "freeze_bottom_layers",
    "ResponseSampler",
    "response_logprobs",
    "sample_categorical",
    "sample_responses",
    "sample_texts",
    "load_reward_model",
    "load_reward_normalization",
    "save_reward_normalization",
    "get_reward_normalization",
    "last_token_rewards",
    "normalize_reward_model",
    "score_texts",
    "score_token_ids",
    "set_reward_normalization",
    "PolicyWithValueHead",
    "ValueHead",
    "value_model_from_reward_model",
    "value_model_from_policy",
]
