"""Reward normalization: the paper's gain and bias, computed from rewards on samples of ρ.

The reward model's output is ``r(x, y) = gain · out(x, y) + bias``. Before training (``normalize_before``) and
after it (``normalize_after``) the paper resets ``gain = 1, bias = 0``, scores ``normalize_samples`` (256)
responses sampled from ρ at the task temperature, takes their mean ``m`` and *population* standard deviation
``s`` and sets

    gain = target_std / s,        bias = target_mean - gain · m

so that rewards on ρ's samples have mean ``target_mean`` and std ``target_std`` (0 and 1 for best-of-N labels;
after training always 0 and 1, "so the KL coefficient always has the same meaning").

Storage: GPT-2 / Llama score heads have no bias and a bias added at run time is lost on reload, so gain and bias
live in the model's config (``config.hf_prefs_reward_gain`` / ``config.hf_prefs_reward_bias``) and travel with
``save_pretrained`` / ``push_to_hub``. A PEFT adapter folder does not hold the base model's config, so for PEFT
models the values are also written to ``reward_normalization.json`` next to the adapter
(:func:`save_reward_normalization`); :func:`hf_prefs.reward_model.load_reward_model` reads either.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = [
    "GAIN_KEY",
    "BIAS_KEY",
    "NORMALIZATION_FILE",
    "reward_normalization",
    "get_reward_normalization",
    "set_reward_normalization",
    "save_reward_normalization",
    "load_reward_normalization",
    "normalize_reward_model",
]

#: Config attribute holding the gain.
GAIN_KEY = "hf_prefs_reward_gain"
#: Config attribute holding the bias.
BIAS_KEY = "hf_prefs_reward_bias"
#: File written next to a PEFT adapter (whose folder holds no base-model config).
NORMALIZATION_FILE = "reward_normalization.json"

#: A source of responses from ρ for given queries: ``sampler(queries) -> responses`` (one per query).
ResponseSampler = Callable[[list[str]], Sequence[str]]


def reward_normalization(
    raw_rewards: torch.Tensor | Sequence[float], target_mean: float = 0.0, target_std: float = 1.0
) -> tuple[float, float]:
    """Gain and bias that map ``raw_rewards`` to mean ``target_mean`` and population std ``target_std``.

    ``m = mean(r)``, ``s = sqrt(mean((r - m)²))`` (population std, as the paper), ``gain = target_std / s``,
    ``bias = target_mean - gain · m``.

    Raises:
        ValueError: fewer than 2 rewards, a non-finite reward, or a zero std (a constant reward cannot be
            rescaled), or ``target_std <= 0``.
    """
    r = torch.as_tensor(raw_rewards, dtype=torch.float64).flatten()
    if r.numel() < 2:
        raise ValueError(f"reward normalization needs at least 2 rewards, got {r.numel()}")
    if not torch.isfinite(r).all():
        bad = torch.nonzero(~torch.isfinite(r)).flatten()[:5].tolist()
        raise ValueError(f"reward normalization got non-finite rewards at indices {bad}")
    if not target_std > 0:
        raise ValueError(f"target_std must be > 0, got {target_std}")
    m = r.mean()
    s = r.std(unbiased=False)
    if not s > 0:
        raise ValueError(f"the {r.numel()} rewards are all equal ({m.item():.6g}); their std is 0, cannot normalize")
    gain = target_std / s.item()
    bias = target_mean - gain * m.item()
    return float(gain), float(bias)


def _config(model: Any) -> Any:
    """The (base) model's config; works for plain, PEFT and accelerate/DDP-wrapped models."""
    while hasattr(model, "module") and not hasattr(model, "config"):  # DDP / DataParallel
        model = model.module
    if hasattr(model, "get_base_model"):  # PEFT
        model = model.get_base_model()
    return model.config


def get_reward_normalization(model: Any) -> tuple[float, float]:
    """``(gain, bias)`` stored on ``model``'s config; ``(1.0, 0.0)`` if it was never normalized."""
    cfg = _config(model)
    return float(getattr(cfg, GAIN_KEY, 1.0)), float(getattr(cfg, BIAS_KEY, 0.0))


def set_reward_normalization(model: Any, gain: float, bias: float) -> None:
    """Store ``gain`` and ``bias`` on ``model``'s config (saved by ``save_pretrained`` / ``push_to_hub``)."""
    gain, bias = float(gain), float(bias)
    if not (math.isfinite(gain) and math.isfinite(bias)):
        raise ValueError(f"gain and bias must be finite, got gain={gain}, bias={bias}")
    cfg = _config(model)
    setattr(cfg, GAIN_KEY, gain)
    setattr(cfg, BIAS_KEY, bias)


def save_reward_normalization(model: Any, directory: str | os.PathLike) -> str:
    """Write the model's gain and bias to ``directory/reward_normalization.json`` (for PEFT adapter folders)."""
    gain, bias = get_reward_normalization(model)
    path = os.path.join(directory, NORMALIZATION_FILE)
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"gain": gain, "bias": bias}, f, indent=2)
    return path


def load_reward_normalization(directory: str | os.PathLike) -> tuple[float, float] | None:
    """Read ``reward_normalization.json`` from ``directory``; ``None`` if there is none."""
    path = os.path.join(directory, NORMALIZATION_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    try:
        return float(data["gain"]), float(data["bias"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path} must hold numbers 'gain' and 'bias', got {data!r}") from err


def normalize_reward_model(
    model: Any,
    tokenizer: Any,
    queries: Sequence[str],
    responses: Sequence[str] | ResponseSampler,
    target_mean: float = 0.0,
    target_std: float = 1.0,
    batch_size: int = 32,
) -> tuple[float, float]:
    """Reset gain/bias to 1/0, score ρ's samples, and store the gain/bias that normalize them.

    Args:
        model: a sequence-classification reward model (plain or PEFT).
        tokenizer: its tokenizer.
        queries: the queries x (the paper uses ``normalize_samples`` = 256 of them).
        responses: responses y ~ ρ(·|x), one per query (e.g. the ``response`` column of a dataset of ρ samples),
            or a sampler ``responses(queries) -> list[str]`` that draws them (raw, untruncated samples at the
            task temperature, as the paper).
        target_mean, target_std: the targets (paper: 0 and 1).
        batch_size: scoring batch size.

    Returns:
        The new ``(gain, bias)``, also stored on ``model.config``.
    """
    # Imported here: reward_model reads the gain/bias stored by this module.
    from .reward_model import score_texts

    queries = list(queries)
    if callable(responses):
        responses = list(responses(queries))
    else:
        responses = list(responses)
    if len(responses) != len(queries):
        raise ValueError(f"got {len(queries)} queries but {len(responses)} responses; need one response per query")
    set_reward_normalization(model, 1.0, 0.0)
    raw = score_texts(model, tokenizer, queries, responses, batch_size=batch_size)
    gain, bias = reward_normalization(raw, target_mean=target_mean, target_std=target_std)
    set_reward_normalization(model, gain, bias)
    return gain, bias
