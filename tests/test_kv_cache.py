"""The decoding KV cache that grows in place (hf_prefs.models.kv_cache)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.cache_utils import DynamicCache, DynamicLayer, StaticCache

import hf_prefs.models.generation as generation
from hf_prefs.core.rollout import left_pad
from hf_prefs.models.kv_cache import PreallocatedLayer, preallocate


def _tiny_llama(vocab: int) -> LlamaForCausalLM:
    """Grouped-query attention (4 query heads on 2 key/value heads), rotary positions: SmolLM2's layout, tiny."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_sampling_with_the_preallocated_cache_draws_the_same_tokens(arch, tiny_gpt2, gpt2_tokenizer, monkeypatch):
    """The same generator state gives the same tokens whether each step copies the cache (transformers' DynamicLayer)
    or writes its position in place: left-padded queries of different lengths, 3 samples per query, temperature 1."""
    model = tiny_gpt2 if arch == "gpt2" else _tiny_llama(len(gpt2_tokenizer))
    queries = [gpt2_tokenizer.encode("It was a truth universally acknowledged"), gpt2_tokenizer.encode("She")]
    ids, mask = left_pad(queries, gpt2_tokenizer.eos_token_id)
    used = []
    real = generation.preallocate

    def spy(cache, capacity):
        used.append((real(cache, capacity), capacity))
        return used[-1][0]

    monkeypatch.setattr(generation, "preallocate", spy)
    in_place = generation.sample_responses(model, ids, mask, 7, 1.0, torch.Generator().manual_seed(5), num_samples=3)
    monkeypatch.setattr(generation, "preallocate", lambda cache, capacity: False)
    copied = generation.sample_responses(model, ids, mask, 7, 1.0, torch.Generator().manual_seed(5), num_samples=3)
    assert used == [(True, ids.shape[1] + 6)]  # converted, sized for the query and the 6 tokens fed back
    assert in_place.shape == (6, 7)
    assert torch.equal(in_place, copied)
    assert len({tuple(r) for r in in_place.tolist()}) > 2  # real draws, not one repeated row


def _filled_layer(length: int, seed: int = 0) -> DynamicLayer:
    gen = torch.Generator().manual_seed(seed)
    layer = DynamicLayer()
    layer.update(torch.randn(2, 3, length, 4, generator=gen), torch.randn(2, 3, length, 5, generator=gen))
    return layer


def test_a_preallocated_layer_holds_what_concatenation_holds_past_its_capacity_and_after_a_crop():
    """Step by step against DynamicLayer: equal keys/values, written into one buffer while it has room (the views
    share its storage), grown when a step overflows it, and restarted from the layer's keys when something else
    reassigned them (transformers' crop)."""
    ref, layer = _filled_layer(3), _filled_layer(3)
    pre = PreallocatedLayer(layer.keys, layer.values, capacity=5)
    gen = torch.Generator().manual_seed(1)
    buffer = pre._key_buffer.data_ptr()
    for step in range(4):  # 3 + 4 positions: the buffer of 5 overflows at the third step
        k, v = torch.randn(2, 3, 1, 4, generator=gen), torch.randn(2, 3, 1, 5, generator=gen)
        want, got = ref.update(k, v), pre.update(k, v)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert pre.get_seq_length() == ref.get_seq_length() == 4 + step
        assert (pre.keys.data_ptr() == buffer) == (step < 2)
    assert pre._key_buffer.shape[-2] == 10  # doubled
    ref.crop(-2), pre.crop(-2)
    k, v = torch.randn(2, 3, 2, 4, generator=gen), torch.randn(2, 3, 2, 5, generator=gen)
    want, got = ref.update(k, v), pre.update(k, v)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]) and pre.get_seq_length() == 7


def test_only_a_dynamic_cache_of_plain_filled_layers_is_converted():
    cache = DynamicCache()
    cache.layers = [_filled_layer(2, 0), _filled_layer(2, 1)]
    keys = [layer.keys.clone() for layer in cache.layers]
    assert preallocate(cache, 6)
    assert all(type(layer) is PreallocatedLayer for layer in cache.layers)
    assert all(torch.equal(layer.keys, k) for layer, k in zip(cache.layers, keys))
    assert preallocate(cache, 6) is False  # already converted: left as it is
    assert preallocate(None, 6) is False
    empty = DynamicCache()
    empty.layers = [DynamicLayer()]
    assert preallocate(empty, 6) is False  # a layer never filled
    config = LlamaConfig(hidden_size=16, num_attention_heads=2, num_key_value_heads=2, num_hidden_layers=1)
    static = StaticCache(config=config, max_cache_len=4)
    assert preallocate(static, 6) is False and type(static.layers[0]) is not PreallocatedLayer


def test_preallocate_releases_each_layers_prefill_cache_before_the_next_buffer(monkeypatch):
    """Layer by layer: when a layer's buffer is allocated, the layers converted before it no longer hold their prefill
    keys/values (converting all first held the whole prefill cache beside all the new buffers: the sampling's peak)."""
    import weakref

    cache = DynamicCache()
    for i in range(3):
        cache.update(torch.randn(2, 1, 4, 8), torch.randn(2, 1, 4, 8), i)
    old = [weakref.ref(layer) for layer in cache.layers]
    alive = []
    init = PreallocatedLayer.__init__

    def spy(self, keys, values, capacity):
        alive.append(sum(ref() is not None for ref in old))
        init(self, keys, values, capacity)

    monkeypatch.setattr(PreallocatedLayer, "__init__", spy)
    assert preallocate(cache, 6)
    assert alive == [3, 2, 1] and all(ref() is None for ref in old)
    assert all(isinstance(layer, PreallocatedLayer) and layer.keys.shape[-2] == 4 for layer in cache.layers)
