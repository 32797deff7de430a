"""Chunked log-probabilities of chosen tokens equal the plain full-vocabulary computation, values and gradients."""

from __future__ import annotations

import pytest
import torch

from hf_prefs.models.logprobs import token_logprobs


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_logprobs_and_entropy_equal_the_plain_log_softmax(dtype):
    torch.manual_seed(0)
    logits = (3 * torch.randn(3, 7, 50)).to(dtype).requires_grad_(True)  # (B, L, V)
    targets = torch.randint(0, 50, (3, 7))
    before = logits.detach().clone()
    lp, h = token_logprobs(logits, targets, temperature=0.7, with_entropy=True, chunk_rows=4)  # 21 rows, 6 chunks
    z = logits.float() / 0.7
    plain_lp = z.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    plain_h = -(z.softmax(-1) * z.log_softmax(-1)).sum(-1)
    assert lp.dtype == torch.float32 and torch.allclose(lp, plain_lp, atol=1e-5)
    assert torch.allclose(h, plain_h, atol=1e-5)
    weights = torch.randn(3, 7)  # a different upstream gradient per position
    (grad,) = torch.autograd.grad((lp * weights).sum(), logits)  # recomputed chunk by chunk in backward
    (plain_grad,) = torch.autograd.grad((plain_lp * weights).sum(), logits)
    assert grad.dtype == dtype and not h.requires_grad  # the entropy is a metric: no gradient
    assert torch.equal(logits.detach(), before)  # the logits are read, never written (fp32: no copy by .float())
    assert torch.allclose(grad.float(), plain_grad.float(), atol=1e-2 if dtype == torch.bfloat16 else 1e-6)
    assert token_logprobs(logits.detach(), targets)[1] is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_last_positions_keeps_the_same_logits_as_the_int_and_a_contiguous_head_input(dtype):
    from transformers import GPT2Config, GPT2LMHeadModel

    from hf_prefs.models.logprobs import last_positions

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=300)).to(dtype).eval()
    ids = torch.randint(0, 300, (3, 11))
    seen = []
    model.lm_head.register_forward_pre_hook(lambda _m, args: seen.append(args[0].is_contiguous()))
    keep = last_positions(11, 4)
    assert keep.tolist() == [7, 8, 9, 10]
    with torch.no_grad():
        by_index = model(input_ids=ids, logits_to_keep=keep).logits
        by_int = model(input_ids=ids, logits_to_keep=4).logits
        full = model(input_ids=ids).logits
    assert by_index.shape == (3, 4, 300)
    assert torch.equal(by_index, by_int) and torch.equal(by_index, full[:, -4:])
    # the LM head gets a contiguous (B, k, d) input from the index (a strided slice from the int)
    assert seen == [True, False, True]
