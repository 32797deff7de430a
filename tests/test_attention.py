"""The attention kernel of a differentiated CPU forward (the math backend for short sequences, the same gradients),
the SDPA mask of left-padded rows (no empty query row, the real tokens unchanged), and the mask of a decode step."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from transformers import LlamaConfig, LlamaForCausalLM

from hf_prefs.models.attention import (
    MATH_ATTENTION_MAX_LENGTH,
    PLAIN_CAUSAL_MODEL_TYPES,
    attention_mask_for,
    causal_mask_without_empty_rows,
    decode_step_mask,
    training_attention,
)
from hf_prefs.models.logprobs import forward_last, token_logprobs


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


# --- left padding under SDPA: no empty query row --------------------------------------------------------------------


def _tiny_llama(attn_implementation: str = "sdpa") -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2,
                                        attn_implementation=attn_implementation))


def _left_padded() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, 64, (3, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    mask[2, :1] = 0
    return ids, mask


def test_mask_without_empty_rows_by_hand():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    allowed = causal_mask_without_empty_rows(mask)
    assert allowed.shape == (2, 1, 4, 4) and allowed.dtype == torch.bool
    expected0 = torch.tensor([[1, 0, 0, 0],   # pad: itself only
                              [0, 1, 0, 0],   # pad: itself only
                              [0, 0, 1, 0],   # first token: itself
                              [0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(allowed[0, 0], expected0)
    assert torch.equal(allowed[1, 0], torch.ones(4, 4, dtype=torch.bool).tril())
    assert bool(allowed.any(-1).all())  # no empty row


def test_attention_mask_for_only_changes_left_padded_plain_causal_sdpa():
    from transformers import AutoConfig, MistralConfig, Qwen2Config

    ids, mask = _left_padded()  # 10 tokens
    sdpa, eager = _tiny_llama().config, _tiny_llama("eager").config
    assert attention_mask_for([sdpa], mask).shape == (3, 1, 10, 10)
    assert attention_mask_for([sdpa, sdpa], mask).shape == (3, 1, 10, 10)  # policy + separate value model
    for configs in ([eager], [sdpa, eager], []):
        assert attention_mask_for(configs, mask) is mask
    unpadded = torch.ones_like(mask)
    assert attention_mask_for([sdpa], unpadded) is unpadded  # transformers keeps its is_causal fast path
    # a sliding window shorter than the rows would be replaced by plain causal attention: transformers' mask stays
    for window, changed in ((16, True), (10, True), (4, False)):
        mistral = MistralConfig(sliding_window=window, attn_implementation="sdpa")
        assert (attention_mask_for([mistral], mask) is not mask) == changed, window
    qwen = Qwen2Config(use_sliding_window=False, attn_implementation="sdpa")  # all layers full attention
    assert attention_mask_for([qwen], mask) is not mask
    chunked = LlamaConfig(attn_implementation="sdpa")
    chunked.layer_types = ["full_attention", "chunked_attention"]
    assert attention_mask_for([chunked], mask) is mask
    hybrid = AutoConfig.for_model("lfm2", attn_implementation="sdpa")  # conv layers: not a listed model type
    assert attention_mask_for([hybrid], mask) is mask


def _tiny(model_type: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    sizes = {"gpt2": dict(n_embd=32, n_layer=2, n_head=4, vocab_size=64),
             "gpt_neox": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              vocab_size=64)}
    common = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8, pad_token_id=0)
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, **sizes.get(model_type, common), attn_implementation="sdpa")
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("model_type", sorted(PLAIN_CAUSAL_MODEL_TYPES))
def test_listed_model_types_get_the_same_real_token_logits(model_type):
    """For the listed model types the mask without empty rows is used, and the real tokens' logits equal those
    with transformers' own mask (float32, CPU, both SDPA kernels)."""
    model = _tiny(model_type)
    ids, mask = _left_padded()
    assert attention_mask_for([model.config], mask) is not mask
    real = mask.bool()
    for context in (nullcontext(), training_attention("cpu", 10)):
        with torch.no_grad(), context:
            ours = forward_last(model, ids, mask, 10).logits
            theirs = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
        assert torch.allclose(ours[real], theirs[real], atol=1e-6, rtol=0), model_type


def test_real_tokens_are_unchanged_by_the_diagonal():
    """forward_last's mask gives the real positions the same logits as transformers' own mask (both kernels)."""
    model = _tiny_llama()
    ids, mask = _left_padded()
    real = mask.bool()
    for context in (nullcontext(), training_attention("cpu", 10)):
        with torch.no_grad(), context:
            ours = forward_last(model, ids, mask, 10).logits
            theirs = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
        assert torch.equal(ours[real], theirs[real])


def test_a_kernel_that_gives_nan_on_empty_rows_no_longer_poisons_the_gradients(monkeypatch):
    """A stand-in for a fused kernel whose fully masked rows come out NaN: with transformers' 2D-built mask the PPO
    forward's log-probs and every gradient turn NaN (0 x NaN); with forward_last's mask they stay finite and equal
    to those of transformers' mask under the real kernel."""
    real_sdpa = torch.nn.functional.scaled_dot_product_attention

    def nan_on_empty_rows(q, k, v, attn_mask=None, *args, **kwargs):
        out = real_sdpa(q, k, v, attn_mask, *args, **kwargs)
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            empty = ~attn_mask.any(-1, keepdim=True)  # (B, 1|H, L, 1)
            out = out.masked_fill(empty.expand(-1, out.shape[1], -1, -1)[..., :1].expand_as(out), float("nan"))
        return out

    ids, mask = _left_padded()
    response = ids[:, -3:]

    def loss_and_grads(model, plain_2d_mask: bool):
        model.zero_grad()
        if plain_2d_mask:
            out = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                        logits_to_keep=torch.arange(6, 9))
        else:
            out = forward_last(model, ids, mask, 3, skip_last=1)
        logprobs, _ = token_logprobs(out.logits, response, 1.0, False)
        logprobs.sum().backward()
        return logprobs.detach(), [p.grad.clone() for p in model.parameters()]

    model = _tiny_llama()
    reference, reference_grads = loss_and_grads(model, plain_2d_mask=True)  # transformers' mask, the real kernel
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", nan_on_empty_rows)
    broken, broken_grads = loss_and_grads(model, plain_2d_mask=True)
    assert torch.isnan(broken).any() and any(bool(torch.isnan(g).any()) for g in broken_grads)
    fixed, fixed_grads = loss_and_grads(model, plain_2d_mask=False)
    assert torch.allclose(fixed, reference, atol=1e-6, rtol=0)
    for grad, ref in zip(fixed_grads, reference_grads):
        assert torch.isfinite(grad).all() and torch.allclose(grad, ref, atol=1e-6)


def test_decode_step_mask_only_for_grouped_query_plain_causal_models_on_cpu():
    """A decode step's mask (B, 1, 1, L) is the padding mask itself; MHA models, other layouts and other devices keep
    the 2-D mask."""
    from transformers import GPT2Config, MistralConfig

    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    gqa = _tiny_llama().config
    step = decode_step_mask([gqa], mask)
    assert step.shape == (2, 1, 1, 5) and step.dtype == torch.bool
    assert torch.equal(step[:, 0, 0], mask.bool())
    assert decode_step_mask([gqa], torch.ones_like(mask)).all()  # no padding: a mask all the same (SDPA's packed form)
    mha = _tiny_llama().config
    mha.num_key_value_heads = mha.num_attention_heads
    for configs in ([mha], [GPT2Config(attn_implementation="sdpa")], [_tiny_llama("eager").config], [],
                    [MistralConfig(sliding_window=4, num_key_value_heads=2, attn_implementation="sdpa")]):
        assert decode_step_mask(configs, mask) is mask
    on_meta = mask.to("meta")
    assert decode_step_mask([gqa], on_meta) is on_meta


def test_an_unpadded_batch_decodes_grouped_query_attention_in_the_packed_form(monkeypatch):
    """Without padding, transformers gives a decode step no mask and SDPA runs it with enable_gqa (several times
    slower on CPU: benchmarks/decode_mask.py); with the step mask every step packs each key/value head's query heads
    as query rows. The draws are the same in float32 as with the unmasked step."""
    import transformers.integrations.sdpa_attention as sdpa_module

    import hf_prefs.models.generation as generation

    model = _tiny_llama().eval()
    ids, mask = torch.randint(0, 64, (3, 6), generator=torch.Generator().manual_seed(2)), torch.ones(3, 6, dtype=torch.long)
    real, calls = sdpa_module.torch.nn.functional.scaled_dot_product_attention, []

    def spy(query, key, value, *args, **kwargs):
        calls.append((tuple(query.shape), bool(kwargs.get("enable_gqa", False))))
        return real(query, key, value, *args, **kwargs)

    monkeypatch.setattr(sdpa_module.torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        masked = generation.sample_responses(model, ids, mask, 5, 1.0, torch.Generator().manual_seed(3), num_samples=2)
        steps = calls[2:]  # after the prefill's two layers
        calls.clear()
        monkeypatch.setattr(generation, "decode_step_mask", lambda configs, step_mask: step_mask)
        unmasked = generation.sample_responses(model, ids, mask, 5, 1.0, torch.Generator().manual_seed(3), num_samples=2)
    assert len(steps) == 4 * 2  # 4 tokens fed back, 2 layers
    assert set(steps) == {((6, 2, 2, 8), False)}  # 6 rows, 2 key/value heads x 2 query heads each as query rows
    assert set(calls[2:]) == {((6, 4, 1, 8), True)}  # the unmasked step: 4 query heads of one row, enable_gqa
    assert torch.equal(masked, unmasked)
    assert len({tuple(r) for r in masked.tolist()}) > 1  # real draws


def test_a_prefix_tuned_policy_keeps_the_2d_masks_and_is_read_at_its_own_positions():
    """PEFT's prompt-learning methods join their virtual tokens' mask to the 2-D mask they are given: a 4-D mask of
    ours failed there ("Tensors must have same number of dimensions"), in the left-padded prefill and log-prob pass and
    in every decode step. Prefix tuning (virtual keys and values) samples padded and unpadded queries, and the log-prob
    pass reads the logits PEFT's own forward gives at the positions that predict the response."""
    from peft import PrefixTuningConfig, get_peft_model

    import hf_prefs.models.generation as generation
    from hf_prefs.models.wrappers import mask_configs

    model = get_peft_model(_tiny_llama(), PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3)).eval()
    assert mask_configs(model) == [] and mask_configs(get_peft_model(_tiny_llama(), _lora())) != []
    ids, mask = _left_padded()
    try:  # PEFT's own forward, no hf_prefs mask: some PEFT/transformers pairs cannot run prefix tuning at all
        with torch.no_grad():
            own = model(input_ids=ids[1:2], attention_mask=torch.ones_like(ids[1:2])).logits  # an unpadded row
    except AttributeError as err:  # e.g. the oldest supported pair: its prefix cache is a tuple transformers rejects
        import peft
        import transformers

        pytest.skip(f"prefix tuning does not run with peft {peft.__version__} and transformers "
                    f"{transformers.__version__}: {err}")
    with torch.no_grad():
        assert own.shape == (1, 10, 64)  # the input's positions: the virtual tokens are a cache
        ours = forward_last(model, ids[1:2], torch.ones_like(ids[1:2]), 4, skip_last=1).logits
        torch.testing.assert_close(ours, own[:, -5:-1], rtol=1e-5, atol=1e-5)
        for m in (mask, torch.ones_like(mask)):
            drawn = generation.sample_responses(model, ids, m, 4, 1.0, torch.Generator().manual_seed(0))
            assert drawn.shape == (3, 4)
            logits = forward_last(model, torch.cat([ids, drawn], 1), torch.cat([m, torch.ones_like(drawn)], 1), 4,
                                  skip_last=1).logits  # the positions that predict the 4 response tokens
            assert logits.shape == (3, 4, 64) and torch.isfinite(logits).all()


@pytest.mark.parametrize("method", ["PROMPT_TUNING", "P_TUNING"])
def test_virtual_tokens_before_the_input_are_refused_where_they_would_shift_the_positions(method):
    """Prompt tuning and p-tuning put their virtual tokens before the input: PEFT's logits then hold 3 more positions,
    and the log-prob pass read the logits 3 positions too early (silently: the same shape), and every cached decode
    step was handed the virtual tokens again. Both now raise, naming the method."""
    from peft import PromptEncoderConfig, PromptTuningConfig, get_peft_model

    import hf_prefs.models.generation as generation

    config = (PromptTuningConfig if method == "PROMPT_TUNING" else PromptEncoderConfig)(
        task_type="CAUSAL_LM", num_virtual_tokens=3, **({} if method == "PROMPT_TUNING" else {"encoder_hidden_size": 8}))
    model = get_peft_model(_tiny_llama(), config).eval()
    ids, mask = _left_padded()
    with torch.no_grad():
        assert model(input_ids=ids, attention_mask=mask).logits.shape == (3, 13, 64)  # 3 positions before the input
        with pytest.raises(ValueError, match=f"PEFT {method} policy is not supported: it puts 3 virtual tokens"):
            forward_last(model, ids, mask, 4, skip_last=1)
        with pytest.raises(ValueError, match=method):
            generation.sample_responses(model, ids, mask, 4, 1.0, torch.Generator().manual_seed(0))


def _lora():
    from peft import LoraConfig

    return LoraConfig(r=2, target_modules=["q_proj"])
