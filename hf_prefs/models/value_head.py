"""The PPO policy: a causal LM with a value function.

Paper (Section 2.2 and its code): the value function is a scalar head **on the policy's trunk**, reading the
trunk's last hidden state (after the final layer norm) next to the LM head, initialised to **zero**. PPO trains
both with ``loss = pg_loss + vf_coef * vf_loss``.

TRL's last PPOTrainer used a **separate** value model (a copy of the reward model, trunk and head); that stays
available: :func:`value_model_from_reward_model` and ``PolicyWithValueHead(policy, value_model=...)``.
:func:`value_model_from_policy` builds a separate value model from the policy itself (its trunk, a zero head), for
a reward that is not a model (a known reward, a callable).

Works with any ``AutoModelForCausalLM`` (GPT-2, Llama/SmolLM2, ...) and with PEFT/LoRA policies (then the
reference policy is the same model with its adapters disabled, see :mod:`hf_prefs.trainers.ppo_trainer`).

Saved layout (``save_pretrained``): the policy exactly as ``policy.save_pretrained`` writes it (loadable on its own
with ``AutoModelForCausalLM`` / ``PeftModel``), plus ``value_head.safetensors`` (shared trunk) or a
``value_model/`` folder (separate value model), and ``value_head_config.json`` saying which.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import safetensors.torch
import torch
from peft import PeftConfig, PeftModel
from peft.utils import load_peft_weights
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
from transformers.trainer_utils import load_sharded_checkpoint

from .generation import embedding_rows, ensure_pad_token_id
from .loading import is_adapter_folder
from .reward_model import per_token_scores, score_head
from .sharding import copy_module, is_partitioned, whole_weights_at_load
from .wrappers import text_config

__all__ = [
    "VALUE_HEAD_FILE",
    "VALUE_MODEL_DIR",
    "VALUE_CONFIG_FILE",
    "ValueHead",
    "PolicyValueOutput",
    "PolicyWithValueHead",
    "value_model_from_reward_model",
    "value_model_from_policy",
    "quantized_weights",
]

VALUE_HEAD_FILE = "value_head.safetensors"
VALUE_MODEL_DIR = "value_model"
VALUE_CONFIG_FILE = "value_head_config.json"


def _hidden_size(model: Any) -> int:
    config = text_config(model.config)
    for name in ("hidden_size", "n_embd", "d_model"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise ValueError(f"cannot find the hidden size in {type(config).__name__}; pass a model with config.hidden_size")


class ValueHead(nn.Module):
    """``V(h) = w·h + b`` on the trunk's last hidden state, ``w = 0, b = 0`` at initialisation (paper). Kept in fp32."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.summary.weight)
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``(B, L, H)`` hidden states -> ``(B, L)`` float32 values."""
        return self.summary(hidden_states.to(self.summary.weight.dtype)).squeeze(-1).float()


def _adapter_weight_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """The shape of each weight saved in a local PEFT adapter folder, read from the safetensors header (nothing
    loaded), or from ``adapter_model.bin`` (loaded)."""
    file = os.path.join(path, "adapter_model.safetensors")
    if os.path.isfile(file):
        with safetensors.safe_open(file, framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    return {key: tuple(t.shape) for key, t in load_peft_weights(path, device="cpu").items()}


def saved_embedding_rows(shapes: dict[str, tuple[int, ...]], base: nn.Module) -> int | None:
    """How many token rows an adapter's saved weights (name -> shape) give ``base``'s input or output embedding: the
    rows of a saved embedding or LM head (``save_embedding_layers``, ``modules_to_save``, a LoRA layer's
    ``base_layer``) or the columns of a LoRA embedding's ``lora_embedding_A`` (r × rows), the largest found; None
    when the adapter holds none (the base's own rows are kept)."""
    modules = {m: n for n, m in base.named_modules()}
    names = [modules[m] + "." for m in (base.get_input_embeddings(), base.get_output_embeddings()) if m in modules]
    rows = []
    for key, shape in shapes.items():
        key = key.removeprefix("base_model.model.")
        if len(shape) != 2 or not any(key.startswith(name) for name in names):
            continue
        if key.endswith("lora_embedding_A"):
            rows.append(shape[1])
        elif key.endswith("weight"):
            rows.append(shape[0])
    return max(rows) if rows else None


def load_policy_adapter(path: str, is_trainable: bool | None = None, **kwargs: Any) -> nn.Module:
    """A local PEFT causal-LM adapter folder on its base model (at the adapter's ``revision``), whose token rows are
    grown only to what the adapter saved. ``is_trainable=None``: trainable (PPO resumes from it; peft's default is
    frozen), but a prompt-learning adapter (prefix tuning) frozen: peft loads a saved one only so (``True`` there is
    peft's error).

    peft's ``AutoPeftModelForCausalLM`` grows the embedding to the folder's tokenizer: a pad token added to the
    tokenizer only (``[PAD]``, as TRL's scripts do) gets a new row drawn at random, which the trained policy never
    had and the reloaded one could sample. ``kwargs`` go to the base model's ``from_pretrained``."""
    config = PeftConfig.from_pretrained(path)
    if config.task_type not in (None, "CAUSAL_LM"):
        raise ValueError(f"{path} holds a {config.task_type} adapter; a policy is a CAUSAL_LM one")
    if config.revision is not None:
        kwargs.setdefault("revision", config.revision)
    base = AutoModelForCausalLM.from_pretrained(config.base_model_name_or_path, **kwargs)
    rows = saved_embedding_rows(_adapter_weight_shapes(path), base)
    if rows is not None and rows != embedding_rows(base):
        base.resize_token_embeddings(rows, mean_resizing=False)  # the rows are then loaded from the adapter
    if is_trainable is None:
        is_trainable = not config.is_prompt_learning
    model = PeftModel.from_pretrained(base, path, is_trainable=is_trainable)
    if not is_trainable:  # peft's inference mode leaves a prompt-learning adapter's encoder requiring gradients
        model.requires_grad_(False)
    return model


def _policy_adapter_folder(path: str) -> str | None:
    """The folder of the policy's adapter in a folder :meth:`PolicyWithValueHead.save_pretrained` wrote: the folder
    itself, or the one sub-folder holding an adapter (peft saves an adapter not named ``"default"`` under its name);
    None for a full model."""
    if is_adapter_folder(path):
        return path
    if not os.path.isdir(path):
        return None
    named = [os.path.join(path, d) for d in sorted(os.listdir(path)) if d != VALUE_MODEL_DIR and is_adapter_folder(os.path.join(path, d))]
    return named[0] if len(named) == 1 else None


def load_policy(path: str, **kwargs: Any) -> nn.Module:
    """A causal LM from a folder or Hub id: a local PEFT adapter folder on its base, trainable
    (:func:`load_policy_adapter`; transformers' own loading of one freezes the adapter: PPO then trained nothing), else
    ``AutoModelForCausalLM.from_pretrained``."""
    return load_policy_adapter(path, **kwargs) if is_adapter_folder(path) else AutoModelForCausalLM.from_pretrained(path, **kwargs)


def load_value_model(path: str, is_trainable: bool = True, **kwargs: Any) -> nn.Module:
    """A one-output sequence classifier (a value model) from a folder or Hub id: a local PEFT adapter folder on its
    base built with ``num_labels=1`` (trainable unless ``is_trainable=False``), else
    ``AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)``. transformers' own loading of an
    adapter folder built the base with 2 labels (a saved value adapter did not load) and froze the adapter."""
    kwargs.setdefault("num_labels", 1)
    if not is_adapter_folder(path):
        return AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    config = PeftConfig.from_pretrained(path)
    if config.revision is not None:
        kwargs.setdefault("revision", config.revision)
    base = AutoModelForSequenceClassification.from_pretrained(config.base_model_name_or_path, **kwargs)
    return PeftModel.from_pretrained(base, path, is_trainable=is_trainable)


@dataclass
class PolicyValueOutput:
    """``logits``: ``(B, K, V)`` for the last K positions (``logits_to_keep``; all if 0); ``values``: ``(B, L)``."""

    logits: torch.Tensor
    values: torch.Tensor


def _merged_copy(model: nn.Module) -> nn.Module:
    """A plain copy of ``model`` (whole weights also when ZeRO-3 partitioned it at load) with a PEFT model's adapters
    merged into the copy; ``model`` itself is left as it is."""
    copied = copy_module(model)
    return copied.merge_and_unload() if hasattr(copied, "merge_and_unload") else copied


def value_model_from_reward_model(reward_model: nn.Module) -> nn.Module:
    """A trainable copy of a sequence-classification reward model (trunk + score head) to use as value model.

    This is how TRL's last PPOTrainer initialised its value model. A PEFT reward model is merged into a plain
    model first. The copy's per-token head output (before the reward normalization gain/bias) is the value.
    """
    value_model = _merged_copy(reward_model)
    score_head(value_model)  # raises a clear error if this is not a *ForSequenceClassification model
    ensure_pad_token_id(value_model)
    for p in value_model.parameters():
        p.requires_grad_(True)
    return value_model


def value_model_from_policy(policy: nn.Module) -> nn.Module:
    """A trainable ``*ForSequenceClassification`` model with the policy's trunk (a PEFT policy's adapters merged into
    a copy) and a zero-initialised scalar head, to use as value model: V(x, y<t) = w·h_t(x, y<t) + b with w = b = 0 at
    the start, as the paper's head on the shared trunk, but on layers of its own that it trains in full.

    The sequence-classification model is built on the meta device and takes the copy's trunk module itself, so the
    only weights made are the copy's and the head's (no second, randomly initialised trunk). Needs a model whose class
    has a sequence-classification twin with a trunk of the same class under ``base_model_prefix`` (GPT-2, Llama, ...;
    transformers' ``AutoModelForSequenceClassification``), and a policy that is not quantized (its trunk could not be
    trained in full): see :func:`quantized_weights`. Under ZeRO-3 the value model is returned on the CPU, whole (the
    engine shards it), as a copied reward model is."""
    quantized = quantized_weights(policy)
    if quantized:
        raise ValueError(f"value_model 'policy' trains a full copy of the policy's trunk, but the policy is quantized "
                         f"({quantized}): use value_model='shared' (a head on the policy's trunk) or pass a value_model")
    lm = _merged_copy(policy)
    try:
        value_model = _with_trunk_of(lm)
    except (ValueError, AttributeError, RuntimeError, TypeError) as err:
        raise ValueError(f"value_model 'policy': cannot build a sequence-classification model with the trunk of "
                         f"{type(lm).__name__}: {err}") from err
    head = score_head(value_model)
    head.to_empty(device=next(lm.parameters()).device)
    with torch.no_grad():
        head.weight.zero_()
        if getattr(head, "bias", None) is not None:
            head.bias.zero_()
    for p in value_model.parameters():
        p.requires_grad_(True)
    if is_partitioned(policy):  # the gathered copy is whole on this rank's device until the engine shards it
        value_model.to("cpu")
    return value_model.train()


def quantized_weights(model: nn.Module) -> str:
    """What makes ``model`` quantized, in words, or ``""``: a weight that is not floating point (bitsandbytes' 4/8-bit
    parameters) or a transformers quantizer other than GGUF's (GPTQ/AWQ/HQQ keep integer weights in buffers, FP8 and
    torchao in floating-point tensor types; GGUF weights are dequantized to plain floats at load)."""
    integer = next((name for name, p in model.named_parameters() if not p.is_floating_point()), None)
    if integer is not None:
        return f"{integer!r} is {model.get_parameter(integer).dtype}"
    quantizer = getattr(model, "hf_quantizer", None)
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    method = str(getattr(method, "value", method)).lower() if method is not None else None
    if quantizer is not None and method != "gguf":
        return f"transformers quantizer {type(quantizer).__name__} ({method})"
    return ""


def _with_trunk_of(lm: nn.Module) -> nn.Module:
    """``AutoModelForSequenceClassification`` of ``lm``'s config (``num_labels = 1``) built on the meta device, its
    trunk replaced by ``lm``'s trunk module (the same object: weights, buffers and config shared with ``lm``); only
    the head is left on the meta device."""
    trunk = getattr(lm, lm.base_model_prefix)
    config = trunk.config
    config.num_labels = 1
    with torch.device("meta"), whole_weights_at_load():  # plain modules; the engine shards them later
        value_model = AutoModelForSequenceClassification.from_config(config, dtype=next(lm.parameters()).dtype)
    built = getattr(value_model, value_model.base_model_prefix)
    if type(built) is not type(trunk):
        raise TypeError(f"its trunk is a {type(trunk).__name__}, the sequence-classification model's a {type(built).__name__}")
    setattr(value_model, value_model.base_model_prefix, trunk)
    value_model.config = config
    head = _head_prefix(value_model)
    left = [name for name, t in [*value_model.named_parameters(), *value_model.named_buffers()]
            if t.is_meta and not name.startswith(head)]
    if left:
        raise RuntimeError(f"weights outside the trunk and the score head: {left}")
    return value_model


def _head_prefix(model: nn.Module) -> str:
    """The name of ``score_head(model)`` inside ``model`` followed by a dot."""
    head = score_head(model)
    return next(name for name, module in model.named_modules() if module is head) + "."


class PolicyWithValueHead(nn.Module):
    """A causal-LM policy plus a value function (shared trunk by default).

    Args:
        policy: any ``AutoModelForCausalLM`` model, or a ``peft.PeftModel`` around one.
        value_model: ``None`` (paper: a zero-initialised :class:`ValueHead` on the policy trunk) or a separate
            ``*ForSequenceClassification`` model whose per-token head output is the value (TRL's way; see
            :func:`value_model_from_reward_model`, or :func:`value_model_from_policy` for one with the policy's trunk).
            Saved in ``value_model/`` and recorded as ``"separate"`` in ``value_head_config.json`` either way.
    """

    def __init__(self, policy: nn.Module, value_model: nn.Module | None = None) -> None:
        super().__init__()
        self.policy = policy
        self.value_model = value_model
        self.v_head = ValueHead(_hidden_size(policy)) if value_model is None else None
        if value_model is not None:
            ensure_pad_token_id(value_model)

    # --- what Trainer / TRL read from `model` -------------------------------------------------------------------
    @property
    def config(self) -> Any:
        """The policy's config (TRL's model card and telemetry read ``trainer.model.config``)."""
        return self.policy.config

    @property
    def is_peft_model(self) -> bool:
        return hasattr(self.policy, "disable_adapter") and hasattr(self.policy, "peft_config")

    @property
    def shares_trunk(self) -> bool:
        return self.value_model is None

    def value_parameters(self) -> list[nn.Parameter]:
        """The value function's own parameters: the head on the trunk, or the separate value model's."""
        return list((self.v_head if self.shares_trunk else self.value_model).parameters())

    def add_model_tags(self, tags: list[str] | str) -> None:
        if hasattr(self.policy, "add_model_tags"):
            self.policy.add_model_tags(tags)

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: dict | None = None, **layers: Any) -> None:
        """Activation (gradient) checkpointing on the policy trunk and the value model, if any.
        ``activation_checkpointing_kwargs`` go to ``torch.utils.checkpoint.checkpoint``; ``layers`` (transformers'
        ``every_n_layers``, ``offload``: which layers, where their activations live) to the models' own method."""
        for model in (self.policy, self.value_model):
            if model is None:
                continue
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.23
                model.activation_checkpointing_enable(activation_checkpointing_kwargs=activation_checkpointing_kwargs, **layers)
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=activation_checkpointing_kwargs, **layers)
        if self.is_peft_model and hasattr(self.policy, "enable_input_require_grads"):
            self.policy.enable_input_require_grads()

    gradient_checkpointing_enable = activation_checkpointing_enable  # the older name

    # --- forward ----------------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
    ) -> PolicyValueOutput:
        """Policy logits and values on ``(B, L)`` tokens.

        The value at position i is the value of the state "tokens 0..i seen", i.e. before token i+1 is sampled
        (read at the same positions as the logits that predict token i+1).
        """
        keep_all = isinstance(logits_to_keep, int) and logits_to_keep == 0
        kwargs: dict[str, Any] = {} if keep_all else {"logits_to_keep": logits_to_keep}
        out = self.policy(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=self.shares_trunk,
            use_cache=False,
            **kwargs,
        )
        if self.shares_trunk:
            values = self.v_head(out.hidden_states[-1])  # (B, L)
        else:
            values = per_token_scores(
                self.value_model, input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
            ).float()
        return PolicyValueOutput(logits=out.logits, values=values)

    # --- saving / loading -------------------------------------------------------------------------------------
    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        state_dict: dict[str, torch.Tensor] | None = None,
        is_main_process: bool = True,
        **kwargs: Any,
    ) -> None:
        """Save the policy (``policy.save_pretrained``: full weights or the PEFT adapter) and the value function.

        ``state_dict`` (a state dict of this whole module, e.g. gathered by FSDP/DeepSpeed) is split by prefix.
        """
        if not is_main_process:
            return
        os.makedirs(save_directory, exist_ok=True)
        parts: dict[str, dict[str, torch.Tensor] | None] = {"policy": None, "v_head": None, "value_model": None}
        if state_dict is not None:
            for prefix in parts:
                parts[prefix] = {k[len(prefix) + 1 :]: v for k, v in state_dict.items() if k.startswith(prefix + ".")}
        self.policy.save_pretrained(save_directory, state_dict=parts["policy"], **kwargs)
        if self.shares_trunk:
            head = parts["v_head"] or self.v_head.state_dict()
            safetensors.torch.save_file(
                {k: v.detach().contiguous().cpu() for k, v in head.items()},
                os.path.join(save_directory, VALUE_HEAD_FILE),
                metadata={"format": "pt"},
            )
        else:
            self.value_model.save_pretrained(
                os.path.join(save_directory, VALUE_MODEL_DIR), state_dict=parts["value_model"], **kwargs
            )
        with open(os.path.join(save_directory, VALUE_CONFIG_FILE), "w", encoding="utf-8") as f:
            json.dump({"value_model": "shared" if self.shares_trunk else "separate"}, f, indent=2)

    def load_value_weights(self, directory: str | os.PathLike) -> None:
        """Load the value head (or separate value model) weights saved by :meth:`save_pretrained` in ``directory``."""
        if self.shares_trunk:
            path = os.path.join(directory, VALUE_HEAD_FILE)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"no {VALUE_HEAD_FILE} in {directory}: it was not saved by hf_prefs PPO")
            self.v_head.load_state_dict(safetensors.torch.load_file(path, device="cpu"))
        else:
            folder = os.path.join(directory, VALUE_MODEL_DIR)
            single = os.path.join(folder, "model.safetensors")
            if os.path.isfile(single):
                missing, unexpected = self.value_model.load_state_dict(
                    safetensors.torch.load_file(single, device="cpu"), strict=False
                )
                if unexpected or [k for k in missing if "score" in k]:
                    raise ValueError(f"value model weights in {folder} do not match: missing {missing}, unexpected {unexpected}")
            elif os.path.isdir(folder):
                load_sharded_checkpoint(self.value_model, folder, strict=False)
            else:
                raise FileNotFoundError(f"no {VALUE_MODEL_DIR}/ folder in {directory}: it was not saved by hf_prefs PPO")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, is_trainable: bool | None = None,
                        **kwargs: Any) -> "PolicyWithValueHead":
        """Load a policy saved by :meth:`save_pretrained` (full model or PEFT adapter) with its value function.
        ``is_trainable``: for an adapter, as :func:`load_policy_adapter` (None: trainable, a prefix-tuning one frozen).

        A folder without saved value weights (e.g. a plain pretrained LM) gets a fresh zero value head.
        ``kwargs`` go to ``from_pretrained`` of the policy (and of the value model).
        """
        path = os.fspath(path)
        adapter = _policy_adapter_folder(path)
        if adapter is not None:
            policy = load_policy_adapter(adapter, is_trainable=is_trainable, **kwargs)
        else:
            policy = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        value_model = None
        if os.path.isdir(os.path.join(path, VALUE_MODEL_DIR)):
            value_model = load_value_model(os.path.join(path, VALUE_MODEL_DIR), is_trainable=is_trainable is not False,
                                           **kwargs)
        model = cls(policy, value_model=value_model)
        if value_model is None and os.path.isfile(os.path.join(path, VALUE_HEAD_FILE)):
            model.load_value_weights(path)
        return model
