"""Every private (or unofficial) TRL / transformers / accelerate name hf_prefs uses, in one place.

TRL has no public trainer base class (``_BaseTrainer`` was made private in trl#5169) and no public PPO pieces since
1.13, and ``transformers.Trainer`` keeps its checkpoint helpers private. What hf_prefs needs of them is reached
only through this module, so an upgrade that moves a name breaks here, loudly, and nowhere else.

Tested with (CI runs the suite on the newest releases and a quick job on the oldest declared in pyproject.toml):
:data:`TESTED_VERSIONS`. Private methods that hf_prefs *overrides* (hooks the base classes call) are listed in
:data:`OVERRIDDEN_HOOKS`; ``tests/test_architecture.py`` checks that they still exist with the same parameters.
datasets' ``Dataset._fingerprint`` is read here too (:func:`dataset_fingerprint`).
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Any

import torch
from accelerate.state import AcceleratorState
from transformers import Trainer, TrainingArguments
from transformers.integrations import deepspeed as hf_deepspeed
from transformers.integrations.deepspeed import deepspeed_load_checkpoint
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers import is_wandb_available
from trl import RewardTrainer
from trl.data_utils import get_dataset_column_names
from trl.trainer.base_config import _BaseConfig
from trl.trainer.base_trainer import _BaseTrainer
from trl.trainer.utils import get_comet_experiment_url, get_trackio_space_url, print_prompt_completions_sample

__all__ = [
    "TESTED_VERSIONS",
    "OVERRIDDEN_HOOKS",
    "TrlBaseTrainer",
    "TrlBaseConfig",
    "get_dataset_column_names",
    "print_prompt_completions_sample",
    "default_world_size",
    "tied_weights_keys",
    "trainer_learning_rate",
    "unprepare_after_evaluation",
    "set_sync_gradients",
    "restore_trainer_checkpoint",
    "checkpoint_folder",
    "reward_trainer_metrics",
    "cache_kwargs",
    "output_cache",
    "count_reward_trainer_tokens",
    "cpu_bf16_supported",
    "accelerator_state_exists",
    "active_hf_deepspeed_config",
    "dataset_fingerprint",
]

#: Package -> (oldest tested, newest tested). The oldest are the floors declared in pyproject.toml.
#: The oldest are checked by ``scripts/ci_oldest.sh`` (CI), the newest by the suite on the newest releases.
TESTED_VERSIONS: dict[str, tuple[str, str]] = {
    "trl": ("1.13.0", "1.16.0"),
    "transformers": ("5.23.0", "5.25.0"),  # 5.23: TrainingArguments.activation_checkpointing
    "accelerate": ("1.7.0", "1.16.0"),
    "peft": ("0.13.0", "0.21.2"),
    "datasets": ("4.7.0", "5.2.0"),
}

#: TRL's trainer base class (private: ``trl.trainer.base_trainer._BaseTrainer``): model cards, tags, telemetry.
TrlBaseTrainer = _BaseTrainer
#: TRL's config base class (private: ``trl.trainer.base_config._BaseConfig``): TrainingArguments + TRL defaults.
TrlBaseConfig = _BaseConfig

#: Private methods of the base classes that hf_prefs' trainers override (called by the base classes' loops).
OVERRIDDEN_HOOKS: dict[type, tuple[str, ...]] = {
    Trainer: ("_save", "_load_from_checkpoint", "_save_checkpoint", "_issue_warnings_after_load",
              "_build_accelerator_args"),
    RewardTrainer: ("_prepare_dataset", "_set_signature_columns_if_needed"),
}


def default_world_size(args: Any) -> int:
    """``TrainingArguments.world_size`` (the number of processes), for a config that shadows it with TRL's field."""
    return TrainingArguments.world_size.fget(args)


def dataset_fingerprint(dataset: Any) -> str:
    """The fingerprint datasets gives a ``Dataset`` (``Dataset._fingerprint``: what its transforms' fingerprints and
    cache files are derived from)."""
    return dataset._fingerprint


def tied_weights_keys(model: Any) -> set[str]:
    """The parameter names a transformers model ties to others (``PreTrainedModel._tied_weights_keys``)."""
    keys = getattr(model, "_tied_weights_keys", None) or []
    return set(keys) if not isinstance(keys, dict) else set(keys)


def unprepare_after_evaluation(trainer: Trainer) -> None:
    """Undo what ``Trainer.evaluate``/``predict`` before ``train`` left on a multi-process (DDP) run: the evaluation
    loop prepares the bare model in accelerate's evaluation mode (no ``DistributedDataParallel``) and marks it
    prepared (accelerate's private ``_is_accelerate_prepared``); ``train``'s ``prepare`` then returns it unwrapped,
    and every process trains its own copy on its own half of each batch (transformers 5.25, accelerate 1.16). The mark,
    the autocast ``forward`` that preparing added and the model's entry in the accelerator are removed, so ``train``
    wraps it."""
    model, accelerator = trainer.model, trainer.accelerator
    if (accelerator.num_processes <= 1 or not getattr(model, "_is_accelerate_prepared", False)
            or trainer.model_wrapped is not model or trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled):
        return
    if "_original_forward" in vars(model):
        model.forward = model._original_forward
        del model._original_forward
    model._is_accelerate_prepared = False
    accelerator._models[:] = [m for m in accelerator._models if m is not model]


def trainer_learning_rate(trainer: Trainer) -> float:
    """The learning rate of the optimizer's first group now (``Trainer._get_learning_rate``)."""
    return trainer._get_learning_rate()


def restore_trainer_checkpoint(trainer: Trainer, checkpoint: str) -> None:
    """Restore callbacks' state, optimizer, scheduler and the global RNGs from a Trainer checkpoint folder. Under
    DeepSpeed the weights and optimizer come from the engine's own checkpoint (``global_step*/``), as
    ``Trainer.train`` does after ``prepare``; ``_load_optimizer_and_scheduler`` then restores only the scheduler."""
    trainer._load_callback_state()
    if trainer.is_deepspeed_enabled:
        peft = getattr(trainer.accelerator.unwrap_model(trainer.model), "is_peft_model", False)
        deepspeed_load_checkpoint(trainer.model_wrapped, checkpoint, load_module_strict=not peft)
    trainer._load_optimizer_and_scheduler(checkpoint)
    trainer._load_rng_state(checkpoint)


def checkpoint_folder(trainer: Trainer, trial: Any = None) -> str:
    """The folder ``Trainer._save_checkpoint`` writes for the current global step."""
    return os.path.join(trainer._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}")


def accelerator_state_exists() -> bool:
    """Whether an Accelerator already set up this process's ``AcceleratorState`` (accelerate keeps that state in the
    private class attribute ``AcceleratorState._shared_state``; ``AcceleratorState()`` would create it)."""
    return bool(AcceleratorState._shared_state)


def active_hf_deepspeed_config() -> Any:
    """The ``HfDeepSpeedConfig`` transformers' ZeRO-3 checks read now (``from_pretrained`` loads under
    ``deepspeed.zero.Init`` when it is ZeRO-3), or None (private: the weak reference
    ``transformers.integrations.deepspeed._hf_deepspeed_config_weak_ref``)."""
    ref = hf_deepspeed._hf_deepspeed_config_weak_ref
    return ref() if ref is not None else None


def set_sync_gradients(accelerator: Any, sync: bool, engine: Any = None) -> None:
    """Tell accelerate whether this backward ends an accumulation (``GradientState._set_sync_gradients``), as
    ``transformers.Trainer``'s own loop does; the Trainer builds its Accelerator with ``num_steps=1``, so the public
    ``accelerator.accumulate`` cannot mark PPO's micro-batch boundaries. Given DeepSpeed's ``engine``, tell it too
    (``set_gradient_accumulation_boundary``): recent accelerate passes the flag on in its DeepSpeed backward, older
    releases did not, and the engine then stepped by its own count of its config's ``gradient_accumulation_steps``,
    not at PPO's minibatch ends."""
    accelerator.gradient_state._set_sync_gradients(sync)
    if engine is not None and hasattr(engine, "set_gradient_accumulation_boundary"):
        engine.set_gradient_accumulation_boundary(sync)


def reward_trainer_metrics(trainer: RewardTrainer, mode: str) -> dict[str, list[float]]:
    """The per-mode metric lists RewardTrainer averages into each log (``RewardTrainer._metrics[mode]``)."""
    return trainer._metrics[mode]


def count_reward_trainer_tokens(trainer: RewardTrainer, n_tokens: int) -> int:
    """Add ``n_tokens`` (all processes; 0 to read) to RewardTrainer's ``num_tokens`` counter; returns the total."""
    trainer._total_train_tokens += n_tokens // trainer._tp_size
    return trainer._total_train_tokens


#: transformers renamed the KV-cache argument and output field ``past_key_values`` -> ``cache`` in 5.24.
_CACHE_NAME = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


@functools.lru_cache(maxsize=64)
def _cache_argument(forward: Any) -> str:
    """The name ``forward`` declares; a forward that takes only ``**kwargs`` (a wrapper) gets this version's name."""
    params = inspect.signature(forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in params), _CACHE_NAME)


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """The KV-cache keyword of ``model``'s forward: ``cache`` since transformers 5.24 (``past_key_values`` is
    deprecated there and removed in 5.40), ``past_key_values`` before. PEFT wrappers are looked through."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {_cache_argument(type(base).forward): cache}


def output_cache(output: Any) -> Any:
    """The KV cache a forward returned: ``output.cache`` (transformers >= 5.24) or ``output.past_key_values``."""
    for name in ("cache", "past_key_values"):
        if name in getattr(output, "__dataclass_fields__", {}) or name in getattr(output, "__dict__", {}):
            return getattr(output, name)
    return None


def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bf16 matrix products natively (oneDNN's bf16 kernels: AVX512-BF16 or AMX; private torch
    name ``torch.ops.mkldnn._is_mkldnn_bf16_supported``). Where it does not (e.g. AVX2-only CPUs), torch falls back to
    a reference bf16 GEMM: measured on a 2-vCPU AVX2 AMD EPYC VM, a 1024^2 matmul at 0.0008 TFLOP/s in bf16 against
    0.10 in float32."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(probe()) if probe is not None else True


def cpu_matmul_dtype() -> torch.dtype:
    """``torch.bfloat16`` where this CPU has bf16 matmul units (:func:`cpu_bf16_supported`), else ``torch.float32``:
    the precision the offline default runs in on this CPU (its YAML asks bf16; ``cpu_bf16_fallback`` switches a CPU
    without the units to float32) and so the one its benchmarks measure."""
    return torch.bfloat16 if cpu_bf16_supported() else torch.float32


def tracker_urls() -> dict[str, str]:
    """The pages of the run's trackers that TRL's model cards link (``trl.trainer.utils``' URL getters and the live
    W&B run): ``{"Weights & Biases": url, "Trackio": url, "Comet": url}`` for those active."""
    urls = {"Trackio": get_trackio_space_url(), "Comet": get_comet_experiment_url()}
    if is_wandb_available():
        import wandb  # optional integration, imported only where it is installed

        urls["Weights & Biases"] = wandb.run.url if wandb.run is not None else None
    return {name: url for name, url in urls.items() if url}
