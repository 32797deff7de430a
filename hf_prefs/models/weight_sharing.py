"""Frozen weights held once: a model's frozen parameters pointed at the equal tensors of another model.

A run of the pipeline holds three models built from the same checkpoint: rho (frozen), the policy (with LoRA: rho's
weights frozen plus adapters) and the reward model (rho's trunk with its bottom layers frozen, plus a scalar head).
Each loads its own copy of the checkpoint, so the frozen part of the checkpoint is held three times — for
SmolLM2-135M 270 MB (policy, bf16) + 396 MB (the reward model's 28 frozen layers' matmul weights, fp32) on top of
rho's 270 MB. :func:`share_frozen_weights` points such parameters at rho's tensors:

- a frozen parameter of ``model`` whose name, shape, dtype and values equal those of a parameter of ``source`` is
  replaced by ``source``'s tensor (the same storage; the parameter object, its ``requires_grad`` and the module
  stay ``model``'s own). Nothing changes in what ``model`` computes.
- given ``autocast_dtype`` (the dtype ``model`` always runs under autocast to), the frozen weights of its matmul
  layers (``nn.Linear``, transformers' ``Conv1D``) held in another dtype are shared too with ``source`` tensors of
  that dtype that equal their cast: ``torch.equal(p.to(autocast_dtype), src)``. Under that autocast a matmul layer
  computes with its weight cast to ``autocast_dtype`` anyway, so the outputs are bit-identical — but the model must
  then only be run under it (its other layers, norms and embeddings, keep their dtype).

Names are compared after removing PEFT's wrapper segments (``base_model.model.`` in front, ``base_layer.`` inside a
LoRA layer), so a LoRA policy shares its base with a plain rho. Trainable parameters are never shared (an optimizer
step would change rho), nor ones on another device, nor models sharded by DeepSpeed ZeRO-3 or FSDP (their parameters
are views of flat buffers; the caller skips those runs).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

__all__ = ["share_frozen_weights", "parameter_key"]

_MATMUL_LAYERS = (nn.Linear, Conv1D)


def parameter_key(name: str) -> str:
    """A parameter's name without PEFT's wrapper segments: ``base_model.model.model.layers.0.q_proj.base_layer.weight``
    -> ``model.layers.0.q_proj.weight``."""
    name = name.removeprefix("base_model.model.")
    return name.replace(".base_layer.", ".")


def _matmul_parameter_names(model: nn.Module) -> set[str]:
    return {
        f"{module_name}.{param_name}" if module_name else param_name
        for module_name, module in model.named_modules()
        if isinstance(module, _MATMUL_LAYERS)
        for param_name, _ in module.named_parameters(recurse=False)
    }


@torch.no_grad()
def share_frozen_weights(model: nn.Module, source: nn.Module, autocast_dtype: torch.dtype | None = None) -> int:
    """Point the frozen parameters of ``model`` that equal ``source``'s same-named ones at ``source``'s tensors (see
    the module docstring); with ``autocast_dtype`` also frozen matmul weights whose cast to it equals ``source``'s
    tensor of that dtype (``model`` must then only run under autocast to ``autocast_dtype``). Returns the bytes of
    ``model``'s own tensors given up (freed unless something else refers to them)."""
    sources = {parameter_key(n): p for n, p in source.named_parameters(remove_duplicate=False)}
    matmul = _matmul_parameter_names(model) if autocast_dtype is not None else set()
    freed, seen = 0, set()
    for name, param in model.named_parameters(remove_duplicate=False):
        src = sources.get(parameter_key(name))
        if param.requires_grad or src is None or id(param) in seen:
            continue
        seen.add(id(param))  # tied parameters are shared once
        if src.shape != param.shape or src.device != param.device or src.data_ptr() == param.data_ptr():
            continue
        if src.dtype == param.dtype:
            equal = torch.equal(param, src)
        elif name in matmul and src.dtype == autocast_dtype and param.is_floating_point():
            equal = torch.equal(param.to(autocast_dtype), src)
        else:
            continue
        if equal:
            freed += param.numel() * param.element_size()
            param.data = src.data
    return freed
