"""A decoding key/value cache that grows in place.

transformers' ``DynamicLayer`` appends each decode step's keys and values by ``torch.cat``: every step copies the
whole cache of every layer into a new, one-position-longer tensor (and leaves the old one for the allocator). When
the number of positions a decode will reach is known (query + response length), :func:`preallocate` gives each
layer a buffer of that many positions up front: a step writes its one position and the layer's ``keys``/``values``
are views of the filled part — the same tensors, values and shapes the model's attention saw before, so sampled
tokens are identical (test), without the copies.

Measured (SmolLM2-135M bf16, 16 left-padded queries × 4 samples, 24 tokens, AVX512-BF16 2-vCPU VM): 4.4 s → 3.9 s
per batch (the per-step heap release, needed while the cache grew by copies, is dropped with it).

Only a ``DynamicCache`` whose layers are all plain ``DynamicLayer`` is converted (no sliding windows, offloading,
quantized or hybrid caches); any other cache is left as it is and decodes as before.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

__all__ = ["PreallocatedLayer", "preallocate"]


class PreallocatedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys/values live in a buffer of ``capacity`` positions (doubled if a step overflows
    it); ``keys``/``values`` are views of the first ``length`` positions."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        super().__init__()
        self.device, self.dtype, self.is_initialized = keys.device, keys.dtype, True
        self._allocate(keys, values, max(capacity, keys.shape[-2]))

    def _allocate(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        """Buffers of ``capacity`` positions holding ``keys``/``values`` ``(B, H, L, D)`` at their start."""
        length = keys.shape[-2]
        self._key_buffer = keys.new_empty((*keys.shape[:-2], capacity, keys.shape[-1]))
        self._value_buffer = values.new_empty((*values.shape[:-2], capacity, values.shape[-1]))
        self._key_buffer[..., :length, :] = keys
        self._value_buffer[..., :length, :] = values
        self._set_length(length)

    def _set_length(self, length: int) -> None:
        self._length = length
        self.keys = self._key_buffer[..., :length, :]
        self.values = self._value_buffer[..., :length, :]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new positions after the stored ones; return all stored keys and values (views)."""
        if not (_same_view(self.keys, self._key_buffer, self._length)
                and _same_view(self.values, self._value_buffer, self._length)):
            # something reassigned keys/values (crop, batch_select_indices, reorder_cache): start from them
            self._allocate(self.keys, self.values, self._key_buffer.shape[-2])
        new = key_states.shape[-2]
        end = self._length + new
        if end > self._key_buffer.shape[-2]:
            self._allocate(self.keys, self.values, max(end, 2 * self._key_buffer.shape[-2]))
        self._key_buffer[..., self._length : end, :] = key_states
        self._value_buffer[..., self._length : end, :] = value_states
        self._set_length(end)
        return self.keys, self.values


def _same_view(view: torch.Tensor, buffer: torch.Tensor, length: int) -> bool:
    """Whether ``view`` is still the first ``length`` positions of ``buffer`` (the layer's own ``keys``)."""
    return (view.data_ptr() == buffer.data_ptr() and view.shape[-2] == length and view.shape[:-2] == buffer.shape[:-2]
            and view.stride() == buffer.stride())


def preallocate(cache: Any, capacity: int) -> bool:
    """Give each layer of ``cache`` a buffer of ``capacity`` positions (:class:`PreallocatedLayer`), in place.

    Returns whether it did: only a ``DynamicCache`` of plain ``DynamicLayer`` layers, all filled, is converted. Layer
    by layer, each layer's prefill keys/values released once copied: converting all layers before releasing any held
    the prefill cache and the new buffers at once (measured, SmolLM2 bf16, 160 queries sampled 128 rows at a time: the
    sampling's peak over the loaded model +0.567 GiB at once, +0.465 GiB layer by layer; 64 rows: +0.296, +0.167)."""
    if type(cache) is not DynamicCache or not getattr(cache, "layers", None):
        return False
    if any(type(layer) is not DynamicLayer or not layer.is_initialized or layer.keys is None for layer in cache.layers):
        return False
    for i, layer in enumerate(cache.layers):  # one layer at a time: its prefill tensors freed before the next buffer
        cache.layers[i] = PreallocatedLayer(layer.keys, layer.values, capacity)
    return True
