"""What sits inside the wrappers a model is run through (DDP, accelerate, DeepSpeed; PEFT stays a model)."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

__all__ = ["unwrap_distributed", "model_configs", "mask_configs", "reject_virtual_input_tokens", "text_config"]

#: PEFT prompt-learning methods that give the model their virtual tokens as keys and values of a cache; the others
#: (prompt tuning, p-tuning, multitask prompt tuning, ...) put them before the input as embeddings.
_CACHE_PREFIX_METHODS = frozenset({"PREFIX_TUNING", "CARTRIDGE"})


def unwrap_distributed(model: Any) -> Any:
    """The module inside DDP/accelerate/DeepSpeed wrappers (a PEFT model stays one). A DeepSpeed engine has a
    ``config`` of its own (DeepSpeed's): only a transformers config marks the model."""
    while hasattr(model, "module") and not isinstance(getattr(model, "config", None), PretrainedConfig):
        model = model.module
    return model


def text_config(config: Any) -> Any:
    """The text model's config inside ``config`` (a multimodal model's), or ``config`` itself."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def model_configs(model: Any) -> list[PretrainedConfig]:
    """The transformers configs a forward of ``model`` runs through: the model's own and, for a policy with a
    separate value model (``value_model``), that model's."""
    inner = unwrap_distributed(model)
    configs = [getattr(inner, "config", None), getattr(getattr(inner, "value_model", None), "config", None)]
    return [c for c in configs if isinstance(c, PretrainedConfig)]


def _prompt_learning_configs(model: Any) -> list[Any]:
    """The active PEFT prompt-learning configs of ``model``, its policy and its value model (a PEFT model each)."""
    inner = unwrap_distributed(model)
    configs = [getattr(part, "active_peft_config", None)
               for part in (inner, getattr(inner, "policy", None), getattr(inner, "value_model", None))]
    return [c for c in configs if getattr(c, "is_prompt_learning", False)]


def reject_virtual_input_tokens(model: Any) -> None:
    """Raise a ``ValueError`` where a PEFT method puts virtual tokens before the input of ``model`` (or of its policy):
    prompt tuning, p-tuning, multitask prompt tuning. Their outputs then hold ``num_virtual_tokens`` more positions,
    so hf_prefs' log-prob passes, which keep the LM head on given positions (``logits_to_keep``), would read the
    logits that many positions too early, and its cached decode steps would be handed the virtual tokens again at
    every step. Prefix tuning gives them as a cache (keys and values): its positions are the input's, and it runs."""
    for config in _prompt_learning_configs(model):
        method = getattr(config.peft_type, "value", config.peft_type)
        if method not in _CACHE_PREFIX_METHODS:
            raise ValueError(
                f"a PEFT {method} policy is not supported: it puts {config.num_virtual_tokens} virtual tokens before "
                "the input, and hf_prefs samples and scores a policy's responses at the input's own positions (the "
                "log-probabilities would be read that many positions too early). Use LoRA or prefix tuning "
                "(peft.PrefixTuningConfig).")


def mask_configs(model: Any) -> list[PretrainedConfig]:
    """The configs by which hf_prefs may pass ``model`` a 4-D attention mask of its own (``models.attention``):
    :func:`model_configs`, or none where a PEFT prompt-learning method (prompt, prefix, p-tuning) wraps the model or
    its policy: PEFT joins its virtual tokens' mask to the 2-D mask it is given (a 4-D one fails there)."""
    return [] if _prompt_learning_configs(model) else model_configs(model)
