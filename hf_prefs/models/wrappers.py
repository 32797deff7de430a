"""What sits inside the wrappers a model is run through (DDP, accelerate, DeepSpeed; PEFT stays a model)."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

__all__ = ["unwrap_distributed", "model_configs", "mask_configs"]


def unwrap_distributed(model: Any) -> Any:
    """The module inside DDP/accelerate/DeepSpeed wrappers (a PEFT model stays one). A DeepSpeed engine has a
    ``config`` of its own (DeepSpeed's): only a transformers config marks the model."""
    while hasattr(model, "module") and not isinstance(getattr(model, "config", None), PretrainedConfig):
        model = model.module
    return model


def model_configs(model: Any) -> list[PretrainedConfig]:
    """The transformers configs a forward of ``model`` runs through: the model's own and, for a policy with a
    separate value model (``value_model``), that model's."""
    inner = unwrap_distributed(model)
    configs = [getattr(inner, "config", None), getattr(getattr(inner, "value_model", None), "config", None)]
    return [c for c in configs if isinstance(c, PretrainedConfig)]


def mask_configs(model: Any) -> list[PretrainedConfig]:
    """The configs by which hf_prefs may pass ``model`` a 4-D attention mask of its own (``models.attention``):
    :func:`model_configs`, or none where a PEFT prompt-learning method (prompt, prefix, p-tuning) wraps the model or
    its policy: PEFT joins its virtual tokens' mask to the 2-D mask it is given (a 4-D one fails there)."""
    inner = unwrap_distributed(model)
    for part in (inner, getattr(inner, "policy", None), getattr(inner, "value_model", None)):
        if getattr(getattr(part, "active_peft_config", None), "is_prompt_learning", False):
            return []
    return model_configs(model)
