"""Saving and loading reward models with their normalization.

A full model carries its gain/bias in ``config.json`` (:mod:`hf_prefs.models.reward_model`). A PEFT adapter folder
does not hold the base model's config, so for PEFT reward models the values are also written to
``reward_normalization.json`` next to the adapter (:func:`save_reward_normalization`); :func:`load_reward_model`
reads either, from a folder or the Hub.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from typing import Any

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from peft import PeftConfig, PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from .generation import ensure_pad_token_id
from .reward_model import (get_response_suffix, get_reward_normalization, get_turn_end, reads_as_trained_here,
                           set_response_suffix, set_reward_normalization, set_turn_end)

__all__ = [
    "NORMALIZATION_FILE", "TOKENIZER_FILES", "save_reward_normalization", "load_reward_normalization", "load_reward_model",
    "check_local_path", "has_tokenizer_files", "load_response_suffix", "is_adapter_folder",
]

logger = logging.getLogger(__name__)

#: File written next to a PEFT adapter (whose folder holds no base-model config).
NORMALIZATION_FILE = "reward_normalization.json"


def save_reward_normalization(model: Any, directory: str | os.PathLike) -> str:
    """Write the model's gain and bias to ``directory/reward_normalization.json`` (for PEFT adapter folders)."""
    gain, bias = get_reward_normalization(model)
    path = os.path.join(directory, NORMALIZATION_FILE)
    os.makedirs(directory, exist_ok=True)
    stored: dict[str, Any] = {"gain": gain, "bias": bias}
    if reads_as_trained_here(model):  # the base model's config, where it lives, is not in an adapter folder
        stored["response_suffix"] = get_response_suffix(model)
        if get_turn_end(model):
            stored["turn_end"] = get_turn_end(model)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(stored, f, indent=2)
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


def _adapter_normalization_folder(path_or_hub_id: str, revision: str | None) -> str | None:
    """The local folder holding an adapter's ``reward_normalization.json`` (downloaded from the Hub), or None."""
    if os.path.isdir(path_or_hub_id):
        return path_or_hub_id
    try:
        local = hf_hub_download(path_or_hub_id, NORMALIZATION_FILE, revision=revision)
    except EntryNotFoundError:
        return None
    return os.path.dirname(local)


def load_response_suffix(directory: str | os.PathLike, key: str = "response_suffix") -> str | None:
    """The ``response_suffix`` (or another text ``key``: ``turn_end``) of ``directory/reward_normalization.json``
    (:func:`save_reward_normalization`), or None."""
    path = os.path.join(directory, NORMALIZATION_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        suffix = json.load(f).get(key)
    if suffix is not None and not isinstance(suffix, str):
        raise ValueError(f"{path}: {key!r} must be text, got {suffix!r}")
    return suffix


def is_adapter_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a local folder holding a PEFT adapter (``adapter_config.json``; no network lookup)."""
    return os.path.isfile(os.path.join(path, "adapter_config.json"))


def check_local_path(path_or_hub_id: str | os.PathLike, role: str) -> str:
    """``path_or_hub_id`` as a string, ``~`` expanded. Raises FileNotFoundError naming ``role`` when it is written as a
    local path (absolute, or starting with ``.`` or ``~``) and nothing is there: transformers would look it up on the
    Hub instead and fail with an error about repository ids or the network."""
    path = os.fspath(path_or_hub_id)
    local = os.path.expanduser(path)
    if (os.path.isabs(local) or path.startswith(".")) and not os.path.exists(local):
        raise FileNotFoundError(f"{role}: no file or folder at {path!r}")
    return local


def _warn_untrained_head(path: str, model: Any, missing: Any) -> None:
    """Warn when weights a reward model reads were not in its checkpoint (a causal LM's folder loaded as a reward
    model: its score head starts random, so PPO would optimize noise). Warned, not refused: TRL's own PPO demos use
    a base LM's random head as a stand-in reward."""
    head = [key for key in missing if key.split(".")[0] in ("score", "classifier")]  # the scalar head's weights
    if head:
        saved_as = ", ".join(getattr(model.config, "architectures", None) or ["?"])
        warnings.warn(f"reward model: {path} holds {saved_as}, whose reward head {sorted(head)} was not in it and "
                      "starts random, so its scores are noise (a reward model is a trained *ForSequenceClassification "
                      "checkpoint, e.g. saved by PreferenceRewardTrainer)", stacklevel=3)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model",
                   "spiece.model", "sentencepiece.bpe.model")


def has_tokenizer_files(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding a tokenizer's files (:data:`TOKENIZER_FILES`). transformers builds a
    tokenizer with an empty vocabulary from a model folder that has none (a model saved without its tokenizer), which
    turns every text into no tokens; hf_prefs checks first."""
    return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES)


def _tokenizer_source(path: str, base: str | None, fallback: bool = False) -> str | None:
    """Where the reward model's tokenizer is read from: its folder (or Hub id), else an adapter's base model. When no
    local candidate holds a tokenizer: None with ``fallback`` (the caller's fallback tokenizer is used, logged), else
    a ValueError naming the folder."""
    for source in [path] + ([base] if base else []):
        if not os.path.isdir(source) or has_tokenizer_files(source):
            return source
    if fallback:
        logger.info(f"reward model: {path} holds no tokenizer; scoring with the fallback tokenizer given")
        return None
    raise ValueError(f"reward model: {path} holds no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...)"
                     + (f" and neither does its base model {base}" if base else "")
                     + ": pass the tokenizer it was trained with (load_reward_model(path, tokenizer=...), "
                       "PPOTrainer(reward_processing_class=...)) or save it there (tokenizer.save_pretrained)")


def load_reward_model(path_or_hub_id: str | os.PathLike, tokenizer: Any = None, fallback_tokenizer: Any = None,
                      **kwargs: Any) -> tuple[Any, Any]:
    """Load a saved reward model (a folder or a Hub id; full model or PEFT adapter) and its tokenizer.

    The gain/bias saved with it (``config.json`` for full models, ``reward_normalization.json`` for adapters) are
    restored, so :func:`score_texts` gives the same normalized rewards as before saving. ``tokenizer``: the one to
    use (default: the folder's, else an adapter's base model's). When no local candidate holds a tokenizer's files,
    ``fallback_tokenizer`` is used (PPO passes the policy's, as TRL 1.12 scored every model with it), else a
    ValueError names the folder.
    ``kwargs`` go to ``AutoModelForSequenceClassification.from_pretrained`` (``dtype`` defaults to float32,
    ``num_labels`` to 1). The model is returned in eval mode; a loaded tokenizer's missing pad token is set to EOS
    (a tokenizer given is returned as it is: scoring pads with :func:`~hf_prefs.models.generation.input_pad_id`).
    """
    path = check_local_path(path_or_hub_id, "reward model")
    kwargs.setdefault("dtype", torch.float32)
    revision = kwargs.get("revision")
    if os.path.isdir(path):
        peft_config = PeftConfig.from_pretrained(path) if is_adapter_folder(path) else None
    else:
        try:
            peft_config = PeftConfig.from_pretrained(path, revision=revision)
        except Exception:  # not an adapter repo (peft raises ValueError or a hub error)
            peft_config = None

    base_id = peft_config.base_model_name_or_path if peft_config is not None else None
    if peft_config is not None and base_id is None:
        raise ValueError(f"the adapter at {path} does not name its base model (base_model_name_or_path)")
    source = None
    if tokenizer is None:  # before the weights: fails fast
        source = _tokenizer_source(path, base_id, fallback_tokenizer is not None)
        if source is None:
            tokenizer = fallback_tokenizer
    if peft_config is not None:
        base_model = AutoModelForSequenceClassification.from_pretrained(
            base_id, num_labels=kwargs.pop("num_labels", 1), **kwargs
        )
        model = PeftModel.from_pretrained(base_model, path, revision=revision)
        folder = _adapter_normalization_folder(path, revision)
        stored = load_reward_normalization(folder) if folder is not None else None
        if stored is not None:
            set_reward_normalization(model, *stored)
            suffix = load_response_suffix(folder)
            if suffix is not None:  # saved by a model hf_prefs's reward trainers trained (its reading marked)
                set_response_suffix(model, suffix)
                set_turn_end(model, load_response_suffix(folder, "turn_end"))
    else:
        kwargs.pop("output_loading_info", None)  # read here; the model alone is returned
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=kwargs.pop("num_labels", 1), output_loading_info=True, **kwargs
        )
        _warn_untrained_head(path, model, info["missing_keys"])

    if source is not None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, revision=revision if source == path else None)
        except Exception:  # a Hub adapter without tokenizer files: its base model's
            if base_id is None or source == base_id:
                raise
            base_source = _tokenizer_source(base_id, None, fallback_tokenizer is not None)
            tokenizer = AutoTokenizer.from_pretrained(base_source) if base_source else fallback_tokenizer
        if tokenizer is not fallback_tokenizer and tokenizer.pad_token is None:  # on one loaded here only: a
            tokenizer.pad_token = tokenizer.eos_token  # tokenizer given (the policy's) is not changed
    ensure_pad_token_id(model, tokenizer)  # the model's own pooling (unused here) refuses batches without it
    model.eval()
    return model, tokenizer
