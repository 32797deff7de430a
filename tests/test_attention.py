"""The attention kernel of a differentiated CPU forward: the math backend for short sequences, the same gradients."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import LlamaConfig, LlamaForCausalLM

from hf_prefs.models.attention import MATH_ATTENTION_MAX_LENGTH, training_attention


def _attention_ops(context) -> set[str]:
    q = k = v = torch.randn(2, 3, 10, 8)
    with profile(activities=[ProfilerActivity.CPU]) as prof, context:
        torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    return {e.key for e in prof.key_averages() if "attention" in e.key or e.key in ("aten::bmm", "aten::matmul")}


def test_short_cpu_sequences_get_the_math_backend_and_others_pytorchs_choice():
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in _attention_ops(nullcontext())
    math_ops = _attention_ops(training_attention("cpu", MATH_ATTENTION_MAX_LENGTH))
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" not in math_ops and "aten::matmul" in math_ops
    assert isinstance(training_attention("cpu", MATH_ATTENTION_MAX_LENGTH + 1), nullcontext)
    assert isinstance(training_attention(torch.device("cuda", 0), 16), nullcontext)


def test_math_backend_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, attn_implementation="sdpa"))
    ids = torch.randint(0, 64, (3, 12))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding in one row

    def loss_and_grads(context):
        model.zero_grad()
        with context:
            loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    flash_loss, flash_grads = loss_and_grads(nullcontext())
    math_loss, math_grads = loss_and_grads(training_attention("cpu", 12))
    assert torch.allclose(math_loss, flash_loss, atol=1e-6)
    for name, grad in flash_grads.items():
        assert torch.allclose(math_grads[name], grad, atol=1e-5, rtol=1e-4), name
