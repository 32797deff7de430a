"""Models whose weights DeepSpeed shards: copying them, placing the frozen ones, sampling with gathered weights.

Without DeepSpeed every function here is the plain operation (``copy.deepcopy``, ``.to(device)``,
``accelerator.unwrap_model``). ``deepspeed`` is imported only when a run uses it.

- :func:`whole_weights_at_load`: models loaded inside keep whole weights where ZeRO-3's ``zero3_init_flag`` would
  partition them as they load (rho samples labels before any DeepSpeed engine exists).
- :func:`copy_module`: a copy of a model, also of one that ZeRO-3 partitioned when it was loaded (``zero3_init_flag``:
  its parameters are then empty shards on each process, so ``copy.deepcopy`` would copy the shards).
- :func:`match_partitioned_dtype`: parameters created after such a load (value head, LoRA) in the shards' dtype.
- :func:`prepare_frozen`: a frozen model (reference, reward model) placed as TRL places it: under ZeRO-3 sharded like
  the policy, under other stages whole, in the engine's precision (``trl.models.prepare_deepspeed``).
- :func:`generation_model`: the unwrapped model to sample from, never a compiled one (``torch_compile``: token by
  token decoding with a growing cache would recompile the compiled blocks at every step); under ZeRO-3 with ``gather=True`` its weights are
  gathered ONCE for the whole block (then every forward inside runs unsharded and without collectives), with
  ``gather=False`` each forward gathers its layers (a collective: every process must run the same number of
  forwards, which fixed-length sampling does).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn
from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

from .._compat import active_hf_deepspeed_config

__all__ = ["zero_stage", "is_partitioned", "whole_weights_at_load", "match_partitioned_dtype", "copy_module", "prepare_frozen", "generation_model"]


def zero_stage(accelerator: Any) -> int | None:
    """The DeepSpeed ZeRO stage of the run, None without DeepSpeed."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return None if plugin is None else int(plugin.zero_stage)


def is_partitioned(module: nn.Module) -> bool:
    """Whether ZeRO-3 holds ``module``'s parameters as shards (``deepspeed.zero.Init`` or a ZeRO-3 engine)."""
    return any(hasattr(p, "ds_id") for p in module.parameters())


@contextmanager
def whole_weights_at_load() -> Iterator[None]:
    """Inside, ``from_pretrained`` loads whole weights on every process even under ZeRO-3 with ``zero3_init_flag``
    (which loads under ``deepspeed.zero.Init``: empty shards that no module can run before an engine holds them).
    For a frozen model used before any engine exists (rho samples the labels and the normalization samples; PPO's
    engine shards it later as the reference). transformers' DeepSpeed config is put back exactly as it was on exit.
    A no-op without ZeRO-3."""
    config = active_hf_deepspeed_config()
    if config is None or not config.is_zero3():
        yield
        return
    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        set_hf_deepspeed_config(config)


def match_partitioned_dtype(module: nn.Module) -> None:
    """Give parameters created after a ZeRO-3 ``zero.Init`` load (a fresh value head, LoRA adapters) the dtype of the
    partitioned ones. DeepSpeed's engine casts a model to its bf16/fp16 only when none of its parameters is
    partitioned yet, and its ZeRO-3 optimizer refuses mixed dtypes (``assert len(set(t.dtype ...)) == 1``); it keeps
    float32 master weights of all of them either way."""
    dtypes = {p.dtype for p in module.parameters() if hasattr(p, "ds_id")}
    if len(dtypes) != 1:
        return
    dtype = dtypes.pop()
    for p in module.parameters():
        if not hasattr(p, "ds_id") and p.is_floating_point() and p.dtype != dtype:
            p.data = p.data.to(dtype)


def copy_module(module: nn.Module) -> nn.Module:
    """``copy.deepcopy(module)``; for a ZeRO-3-partitioned module the full weights are gathered once (a collective:
    call it on every process) and the copy gets plain, unpartitioned parameters (shared ones stay shared)."""
    if not is_partitioned(module):
        return copy.deepcopy(module)
    params = list(module.parameters())
    import deepspeed

    with deepspeed.zero.GatheredParameters(params):
        memo = {id(p): nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad) for p in params}
    return copy.deepcopy(module, memo)


def prepare_frozen(module: nn.Module, accelerator: Any) -> tuple[nn.Module, Any]:
    """``(module to call, engine or None)`` for a frozen model: ``module.to(device)`` without DeepSpeed; with it,
    ``trl.models.prepare_deepspeed`` (ZeRO-3: sharded like the policy; else a whole copy in the engine's dtype).
    Keep the engine referenced as long as the module is used; the module keeps its attributes (config, gain/bias)."""
    if zero_stage(accelerator) is None:
        return module.to(accelerator.device), None
    from trl.models import prepare_deepspeed

    engine = prepare_deepspeed(module, accelerator)
    return engine.module, engine


@contextmanager
def generation_model(model: nn.Module, accelerator: Any, gather: bool = True) -> Iterator[nn.Module]:
    """``accelerator.unwrap_model(model)`` for sampling. Under ZeRO-3 with ``gather`` (TRL's
    ``ds3_gather_for_generation``): the weights that sample (``.policy`` of a policy-with-value-head, else all of
    them; a value head or value model stays sharded) are all-gathered once and ZeRO-3's per-module hooks of ``model``
    (the prepared engine) are off inside the block (``trl.models.utils.remove_hooks`` / ``add_hooks``, as TRL's
    ``unwrap_model_for_generation`` does); on exit the weights are sharded again and the hooks back. A model that
    ZeRO-3 partitioned at load but that is not prepared yet is always gathered."""
    unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)  # sampling runs eager (module docs)
    sampler = getattr(unwrapped, "policy", unwrapped)
    # before prepare() (model is not an engine yet) no ZeRO-3 hooks fetch the shards: gathering is the only way
    if zero_stage(accelerator) != 3 or not is_partitioned(sampler) or not (gather or model is unwrapped):
        yield unwrapped
        return
    import deepspeed
    from trl.models.utils import add_hooks, remove_hooks

    with deepspeed.zero.GatheredParameters(list(sampler.parameters())):
        remove_hooks(model)
        try:
            yield unwrapped
        finally:
            add_hooks(model)
