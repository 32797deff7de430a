"""Plain LoRA layers' inputs under autocast: left in the autocast dtype instead of a round trip through float32.

A PEFT LoRA layer computes ``base(x) + B(A(dropout(x))) * scaling``. Its adapter weights stay float32 (trained weights),
so before ``A`` it casts ``x`` to float32; under bf16 autocast, ``A``'s matmul then casts it back to bf16. For bf16 ``x``
the round trip bf16 -> float32 -> bf16 is exact: the two copies of every adapted layer's input (7 per SmolLM2 block in
the offline default) change no value and cost memory bandwidth — on a 2-core Xeon with AMX a PPO micro-batch's forward
+ backward is bound by element-wise passes, not by its matmuls (benchmarks/README.md).

:func:`adapter_inputs_in_autocast_dtype` skips that cast (PEFT's ``cast_input_dtype_enabled`` switch, the one
``peft.helpers.disable_input_dtype_casting`` sets) only where it is exact: LoRA layers whose active adapters are plain
LoRA (no variant such as DoRA, which computes its weight norm in the input's dtype) without dropout (``nn.Identity``:
dropout on bf16 instead of float32 would round differently, and activation checkpointing would recompute it in
another dtype). There, outputs and gradients are bit-identical. Other PEFT layers, and everything without autocast
(float32 runs) or on a PEFT without the switch, are left as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

__all__ = ["adapter_inputs_in_autocast_dtype", "uncastable_lora_layers"]


def uncastable_lora_layers(model: nn.Module) -> list[nn.Module]:
    """``model``'s LoRA layers whose input cast can be skipped exactly: every active adapter plain LoRA (no
    ``lora_variant``, no DoRA) with ``nn.Identity`` dropout. Empty on a PEFT whose layers always cast (no
    ``_cast_input_dtype``: PEFT < 0.15)."""
    if not hasattr(LoraLayer, "_cast_input_dtype"):
        return []
    layers = []
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        active = [a for a in module.active_adapters if a in module.lora_A]
        variants = getattr(module, "lora_variant", {})
        plain = all(a not in variants and not module.use_dora.get(a, False) for a in active)
        if active and plain and all(isinstance(module.lora_dropout[a], nn.Identity) for a in active):
            layers.append(module)
    return layers


@contextmanager
def adapter_inputs_in_autocast_dtype(model: nn.Module, device_type: str) -> Iterator[None]:
    """Inside: ``model``'s :func:`uncastable_lora_layers` do not cast their input to the adapter's dtype, if autocast
    is on for ``device_type`` when the context is entered (every forward inside must then run under that autocast: a
    bf16 input would meet a float32 adapter weight outside it). Elsewhere a no-op."""
    layers = uncastable_lora_layers(model) if torch.is_autocast_enabled(device_type) else []
    before = [getattr(m, "cast_input_dtype_enabled", True) for m in layers]
    for m in layers:
        m.cast_input_dtype_enabled = False
    try:
        yield
    finally:
        for m, value in zip(layers, before):
            m.cast_input_dtype_enabled = value
