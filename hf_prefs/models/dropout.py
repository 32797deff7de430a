"""Dropout off in a whole model — the paper trains the policy, value function and reward model without it.

``torch.nn.Dropout`` layers are only part of it: many transformers models drop out functionally, with a rate read
from a float attribute (``OPTAttention.dropout``, ``LlamaAttention.attention_dropout``, OPT's ``layerdrop``, ...) or
from the config in ``forward`` (Falcon's ``attention_dropout``). TRL's ``disable_dropout_in_model`` zeroes the layers
only, so a model whose config has such a rate above 0 kept dropping out in training mode (two forwards differ; PPO's
ratio pi/pi_old is not 1 at a learning rate of 0)."""

from __future__ import annotations

import logging
import re

import torch
from transformers import PretrainedConfig

__all__ = ["disable_dropout", "active_dropout", "config_dropout", "DROPOUT_NAME"]

logger = logging.getLogger(__name__)

#: names of a dropout rate, on a module or in a config: ``dropout``, ``attention_dropout``, ``resid_pdrop``,
#: ``layerdrop``, ``hidden_dropout_prob``, ``drop_path_rate``, ...
DROPOUT_NAME = re.compile(r"(dropout|pdrop|layerdrop|drop_prob|drop_rate|drop_path)", re.IGNORECASE)


def _is_dropout_layer(module: torch.nn.Module) -> bool:
    """``nn.Dropout`` and its 1d/2d/3d/alpha kin, PEFT's OFT/BOFT ``MultiplicativeDropoutLayer``: a class named
    ``*Dropout*`` with a float ``p``."""
    return "Dropout" in type(module).__name__ and isinstance(getattr(module, "p", None), float)


def _rates(obj: object) -> list[tuple[str, float]]:
    """``(name, rate)`` of every dropout rate > 0 kept on ``obj``: a float attribute named as a dropout rate, or the
    largest float of such a dict (per adapter)."""
    found = []
    for name, value in vars(obj).items():
        if not DROPOUT_NAME.search(name):
            continue
        if isinstance(value, float) and value > 0:
            found.append((name, value))
        elif isinstance(value, dict):
            rates = [v for v in value.values() if isinstance(v, float) and v > 0]
            if rates:
                found.append((name, max(rates)))
    return found


def active_dropout(module: torch.nn.Module, recurse: bool = True) -> str | None:
    """The first dropout that is active in training mode in ``module`` (and its submodules when ``recurse``): a
    dropout layer with p > 0 or a dropout rate > 0 kept on a module, as :func:`disable_dropout` sets them to 0;
    ``"<path> (p=0.1)"`` / ``"<path>.<attr> (0.1)"``, or None. Rates read from the config are
    :func:`config_dropout`'s."""
    for name, sub in module.named_modules() if recurse else [("", module)]:
        if _is_dropout_layer(sub) and sub.p > 0:
            return f"{name} (p={sub.p})"
        for attr, rate in _rates(sub):
            return f"{name}.{attr} ({rate})" if name else f"{attr} ({rate})"
    return None


def config_dropout(config: PretrainedConfig) -> list[tuple[str, float]]:
    """``(name, rate)`` of every dropout rate > 0 of ``config`` and the configs nested in it
    (``("attention_dropout", 0.1)``); [] when there is none."""
    return [found for cfg in _configs(config) for found in _rates(cfg)]


def _zero_rates(obj: object) -> list[str]:
    """Set every float attribute of ``obj`` whose name is a dropout rate to 0, and every float of such a dict (PEFT's
    LoHa/LoKr ``rank_dropout``, per adapter); the names of those that were > 0."""
    zeroed = []
    for name, _ in _rates(obj):
        value = getattr(obj, name)
        if isinstance(value, dict):
            value.update({k: 0.0 for k, v in value.items() if isinstance(v, float)})
        else:
            setattr(obj, name, 0.0)
        zeroed.append(name)
    return zeroed


def _configs(config: PretrainedConfig) -> list[PretrainedConfig]:
    """``config`` and the configs nested in it (a multimodal model's ``text_config``, ...)."""
    found = [config]
    for value in vars(config).values():
        if isinstance(value, PretrainedConfig):
            found += _configs(value)
    return found


def disable_dropout(model: torch.nn.Module) -> None:
    """No dropout in ``model``, in training mode too: the ``p`` of every dropout layer (``nn.Dropout`` and its kin,
    PEFT's multiplicative dropout), every dropout rate a module keeps as a float attribute (or a dict of them, per
    adapter), and every dropout rate of the configs its modules read (set to 0; the config saved with the model then
    says 0 — logged, with the fields changed). Not covered: randomness that is not named a dropout (a router's
    jitter)."""
    changed: set[str] = set()
    seen: set[int] = set()
    for module in model.modules():
        if _is_dropout_layer(module):
            module.p = 0.0
        changed.update(_zero_rates(module))
        config = getattr(module, "config", None)
        if isinstance(config, PretrainedConfig):
            for cfg in _configs(config):
                if id(cfg) not in seen:
                    seen.add(id(cfg))
                    changed.update(f"config.{name}" for name in _zero_rates(cfg))
    if changed:
        logger.info("dropout off (the paper trains without it): set to 0: %s", ", ".join(sorted(changed)))
