"""LoRA layers' inputs under autocast: left in the autocast dtype instead of a round trip through float32.

A PEFT LoRA layer computes ``base(x) + B(A(dropout(x))) * scaling``. Its adapter weights stay float32 (trained weights),
so before ``A`` it casts ``x`` to float32; under bf16 autocast, ``A``'s matmul then casts it back to bf16. For bf16 ``x``
the round trip bf16 -> float32 -> bf16 is exact: the two copies of every adapted layer's input (7 of them per SmolLM2
block in the offline default) change no value and cost memory bandwidth — on a 2-core Xeon with AMX a PPO micro-batch's
forward + backward is bound by such element-wise passes, not by its matmuls (benchmarks/README.md).
:func:`adapter_inputs_in_autocast_dtype` skips the cast while autocast is on (``peft.helpers.disable_input_dtype_casting``):
outputs and gradients are bit-identical when LoRA dropout is 0; with dropout > 0 the dropout runs on the bf16 input,
so the result differs by bf16 rounding. Without autocast (float32 runs) or on a PEFT without the helper, it changes
nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

try:  # public in recent PEFT; older ones always cast (pyproject's floor is 0.13)
    from peft.helpers import disable_input_dtype_casting
except ImportError:  # pragma: no cover - depends on the installed PEFT
    disable_input_dtype_casting = None

__all__ = ["adapter_inputs_in_autocast_dtype"]


@contextmanager
def adapter_inputs_in_autocast_dtype(model: nn.Module, device_type: str) -> Iterator[None]:
    """Inside: ``model``'s LoRA layers do not cast their input to the adapter's dtype, if autocast is on for
    ``device_type`` when the context is entered (every forward inside must then run under that autocast: a bf16 input
    would meet a float32 adapter weight outside it). Elsewhere a no-op."""
    if disable_input_dtype_casting is None or not torch.is_autocast_enabled(device_type):
        yield
        return
    with disable_input_dtype_casting(model):
        yield
