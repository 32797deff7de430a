"""Which scaled-dot-product-attention kernel a differentiated forward uses on CPU.

PyTorch picks its flash-attention kernel for CPU inputs. For the short sequences of CPU-sized PPO (queries of 24-64
tokens + 24-token responses) its backward is slow: measured on a 2-core AMD EPYC (bf16, 4 rows x 9 heads x 64 dims,
padding mask), forward + backward took 6.5 ms with flash attention and 2.9 ms with the math backend (plain matmuls
and softmax, differentiated by autograd) at 72 tokens, 20.6 vs 20.0 ms at 256 tokens and 78.7 vs 121.3 ms at 512;
forward alone, flash attention is the faster one at every length. Both agree with a float32 reference to the same
bf16 rounding. So a forward that will be differentiated, on CPU, over at most :data:`MATH_ATTENTION_MAX_LENGTH`
tokens runs under the math backend; everything else keeps PyTorch's choice.

Left-padded rows (PPO's ``query + response``) also get their own SDPA mask (:func:`attention_mask_for`): in the mask
transformers builds from a 2D padding mask, a leading pad token's query row allows no key at all. PyTorch's math
kernel returns zeros there, but a kernel that does not (a fused CUDA kernel's backward reads a log-sum-exp of -inf
on such a row) gives NaN, and 0 x NaN carries it into every gradient. Here, for models whose layers all take a plain
causal padding mask (:func:`takes_plain_causal_mask`), each pad token attends to itself: the real tokens' rows are
unchanged (they never see a pad key), and no row is empty. Other models keep transformers' mask.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..core.packing import shared_prefix_allowed
from .wrappers import text_config

__all__ = ["MATH_ATTENTION_MAX_LENGTH", "training_attention", "causal_mask_without_empty_rows",
           "PLAIN_CAUSAL_MODEL_TYPES", "takes_plain_causal_mask", "attention_window", "attention_mask_for", "decode_step_mask"]

#: Longest sequence (tokens) whose differentiated CPU forward uses the math backend (measured crossover ~256).
MATH_ATTENTION_MAX_LENGTH = 128


def training_attention(device: torch.device | str, length: int) -> AbstractContextManager:
    """The context for a forward over ``length`` tokens that will be differentiated on ``device``: SDPA's math
    backend on CPU up to :data:`MATH_ATTENTION_MAX_LENGTH` tokens, else no change."""
    if torch.device(device).type == "cpu" and length <= MATH_ATTENTION_MAX_LENGTH:
        return sdpa_kernel([SDPBackend.MATH])
    return nullcontext()


def causal_mask_without_empty_rows(attention_mask: torch.Tensor) -> torch.Tensor:
    """SDPA's boolean mask ``(B, 1, L, L)`` for rows with padding mask ``attention_mask`` ``(B, L)`` (1 = token):

        allowed[b, i, j] = (j <= i and attention_mask[b, j] = 1) or j = i

    the causal padding mask transformers builds, plus the diagonal, so a pad token attends to itself and no query
    row is empty. A real token's row is the same as without the diagonal (it never attends to a pad token). The
    packing rule with the query as segment 0 and padding as -1 (:func:`hf_prefs.core.packing.shared_prefix_allowed`)."""
    segments = attention_mask.bool().long() - 1  # (B, L): 0 for a token, -1 for padding
    return shared_prefix_allowed(segments)[:, None]  # (B, 1, L, L)


#: Model types whose every layer is causal self-attention over a mask transformers builds from the 2-D padding mask
#: with ``create_causal_mask`` (or ``create_sliding_window_causal_mask``, see :func:`takes_plain_causal_mask`). A
#: custom 4-D mask replaces whatever transformers would build, so models not listed here (hybrid recurrent/conv
#: layers, chunked or bidirectional attention, or simply not checked) keep transformers' own mask.
PLAIN_CAUSAL_MODEL_TYPES = frozenset({
    "gpt2", "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma",
    "gemma3_text", "phi3", "olmo2", "gpt_neox", "smollm3",
})


def takes_plain_causal_mask(config: Any, length: int) -> bool:
    """Whether a model with ``config`` runs SDPA over ``length`` tokens with a plain causal padding mask in every
    layer, so that :func:`causal_mask_without_empty_rows` stands in for it exactly: ``sdpa`` attention, a model type
    in :data:`PLAIN_CAUSAL_MODEL_TYPES`, and every layer full attention or a sliding window of at least ``length``
    tokens (a shorter window would be replaced by plain causal attention)."""
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    if getattr(text_config(config), "model_type", None) not in PLAIN_CAUSAL_MODEL_TYPES:
        return False
    window = attention_window(config)
    return window is None or length <= window


def attention_window(config: Any) -> int | None:
    """The fewest earlier tokens (itself included) a layer of a model with ``config`` attends to: a sliding window
    (``layer_types``' ``sliding_attention``, or a ``sliding_window`` without ``layer_types``: Mistral) or GPT-Neo's
    ``local`` layers; None where every layer attends to all earlier tokens (a ``sliding_window`` the config carries
    beside only ``full_attention`` layers is unused); 0 for a layer kind not known here (chunked, hybrid)."""
    text = text_config(config)
    if "local" in set(getattr(text, "attention_layers", None) or []):  # GPT-Neo
        return int(text.window_size)
    kinds = set(getattr(text, "layer_types", None) or [])
    if not kinds <= {"full_attention", "sliding_attention"}:
        return 0
    if kinds == {"full_attention"}:
        return None
    window = getattr(text, "sliding_window", None)
    return int(window) if window else None


def attention_mask_for(configs: Iterable[Any], attention_mask: torch.Tensor) -> torch.Tensor:
    """The mask to pass for padding mask ``attention_mask`` ``(B, L)`` to a model whose forward runs through
    models with ``configs``: :func:`causal_mask_without_empty_rows` where some row starts with padding (where an empty
    row would appear) and every config :func:`takes_plain_causal_mask`; else ``attention_mask`` itself (eager
    attention adds a finite minimum and has no empty row; flash-attention and other kernels take the 2D mask; without
    leading padding no row can be empty; other models and mask patterns keep transformers' own)."""
    configs = list(configs)
    length = attention_mask.shape[1]
    if not configs or bool(attention_mask[:, 0].all()) or not all(takes_plain_causal_mask(c, length) for c in configs):
        return attention_mask
    return causal_mask_without_empty_rows(attention_mask)


def decode_step_mask(configs: Iterable[Any], attention_mask: torch.Tensor) -> torch.Tensor:
    """The mask to pass for a one-token decode step over padding mask ``attention_mask`` ``(B, L)`` (the new token
    last): on CPU, for a grouped-query model where every config :func:`takes_plain_causal_mask`, the step's SDPA mask
    itself, ``(B, 1, 1, L)`` with ``allowed[b, 0, 0, j] = attention_mask[b, j]`` (the mask transformers builds for a
    padded batch); else ``attention_mask``.

    Why: a grouped-query model's step over a batch without padding gets no mask from transformers, and SDPA then runs
    with ``enable_gqa`` (transformers 5.25's ``use_gqa_in_sdpa``), which on CPU is several times slower than the form
    it takes when a mask is present: the G query heads of each key/value head packed as G query rows (measured, bf16,
    64 rows x 9 query heads over 3 key/value heads of 64 dims: 1.72 against 0.36 ms at 40 keys, 2.59 against 0.47 ms
    at 70). With the mask, every step takes the packed form, as a padded batch's steps already do. On GPUs the
    unmasked path is the fast one: left as it is."""
    configs = list(configs)
    if (attention_mask.device.type != "cpu" or not any(_grouped_query(c) for c in configs)
            or not all(takes_plain_causal_mask(c, attention_mask.shape[1]) for c in configs)):
        return attention_mask
    return attention_mask.bool()[:, None, None, :]


def _grouped_query(config: Any) -> bool:
    """Whether a model with ``config`` has fewer key/value heads than query heads (grouped-query attention)."""
    text = text_config(config)
    kv, heads = getattr(text, "num_key_value_heads", None), getattr(text, "num_attention_heads", None)
    return kv is not None and heads is not None and kv < heads
