"""LoRA inputs left in the autocast dtype (hf_prefs.models.adapter_inputs): the casts are gone, nothing else changes —
outputs, gradients and a whole PPO run are bit-identical."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from torch.profiler import profile
from transformers import LlamaConfig, LlamaForCausalLM

import hf_prefs.trainers.ppo_trainer as ppo_trainer_module
from hf_prefs import PPOTrainer
from hf_prefs.models.adapter_inputs import adapter_inputs_in_autocast_dtype, uncastable_lora_layers
from test_ppo_trainer import QUERIES, length_reward, make_config, make_policy

needs_helper = pytest.mark.skipif(not hasattr(LoraLayer, "_cast_input_dtype"), reason="this PEFT always casts")


def _casting(model: torch.nn.Module) -> list[bool]:
    return [getattr(m, "cast_input_dtype_enabled", True) for m in model.modules() if isinstance(m, LoraLayer)]


def _lora_llama(**lora) -> torch.nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50257, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    policy = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, **{"lora_dropout": 0.0, **lora}))
    for name, p in policy.named_parameters():
        if "lora_B" in name:  # zero at init: make the adapters change the output
            torch.nn.init.normal_(p, std=0.5)
    return policy


def _forward_backward(policy: torch.nn.Module, ids: torch.Tensor, uncast: bool) -> tuple[torch.Tensor, dict, int]:
    """Logits, LoRA gradients and the number of dtype conversions of one bf16-autocast forward + backward."""
    policy.zero_grad(set_to_none=True)
    with profile() as prof:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with adapter_inputs_in_autocast_dtype(policy, "cpu") if uncast else nullcontext():
                logits = policy(input_ids=ids).logits
        logits.float().logsumexp(-1).mean().backward()
    casts = sum(e.count for e in prof.key_averages() if e.key == "aten::_to_copy")
    grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
    return logits.detach(), grads, casts


@needs_helper
def test_lora_outputs_and_gradients_are_bit_identical_without_the_casts():
    policy = _lora_llama()
    ids = torch.randint(0, 50000, (3, 9))
    logits, grads, casts = _forward_backward(policy, ids, uncast=False)
    logits_u, grads_u, casts_u = _forward_backward(policy, ids, uncast=True)
    assert torch.equal(logits, logits_u)
    assert grads.keys() == grads_u.keys() and len(grads) == 2 * 7 * 2  # A and B of 7 layers x 2 blocks
    assert all(grads[n].dtype == torch.float32 and torch.equal(grads[n], grads_u[n]) for n in grads)
    # each adapted layer cast its input bf16 -> float32 (and autograd its gradient back): 14 layers, 2 each way
    assert casts - casts_u >= 2 * 14, (casts, casts_u)
    assert all(_casting(policy))


@needs_helper
def test_only_under_autocast_and_only_where_exact():
    """Float32 runs (no autocast) keep the cast; so do DoRA (its weight norm is taken in the input's dtype) and LoRA
    with dropout (bf16 dropout rounds differently; checkpointing would recompute it in float32)."""
    policy = _lora_llama().float()
    with adapter_inputs_in_autocast_dtype(policy, "cpu"):
        assert all(_casting(policy))
    with torch.autocast("cpu", dtype=torch.bfloat16), adapter_inputs_in_autocast_dtype(policy, "cpu"):
        assert len(_casting(policy)) == 14 and not any(_casting(policy))
    assert all(_casting(policy))
    for other in (_lora_llama(use_dora=True), _lora_llama(lora_dropout=0.1)):
        assert uncastable_lora_layers(other) == []
        with torch.autocast("cpu", dtype=torch.bfloat16), adapter_inputs_in_autocast_dtype(other, "cpu"):
            assert len(_casting(other)) == 14 and all(_casting(other))


def _bf16_lora_run(tmp_path, tokenizer) -> tuple[list[dict], dict[str, torch.Tensor]]:
    trainer = PPOTrainer(
        model=make_policy().to(torch.bfloat16),
        reward_model=length_reward,
        args=make_config(tmp_path, bf16=True, use_cpu=True),
        train_dataset=Dataset.from_dict({"query": QUERIES * 2}),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"], lora_dropout=0.0, task_type="CAUSAL_LM"),
    )
    trainer.train()
    history = [{k: v for k, v in h.items() if k != "eps" and not k.startswith(("time/", "memory/", "objective/tokens_per"))}
               for h in trainer.state.log_history if "objective/kl" in h]
    return history, {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


@needs_helper
def test_a_bf16_lora_ppo_run_is_the_same_with_and_without_the_casts(tmp_path, gpt2_tokenizer, monkeypatch):
    """Sampling, the rollout's log-prob pass and the PPO epochs all run uncast; the run's metrics (losses, KL, beta,
    rewards) and its trained weights equal those of the plain path exactly."""
    entered = []

    @contextmanager
    def spy(model, device_type):
        with adapter_inputs_in_autocast_dtype(model, device_type):
            entered.append(torch.is_autocast_enabled(device_type) and len(_casting(model)) > 0 and not any(_casting(model)))
            yield

    monkeypatch.setattr(ppo_trainer_module, "adapter_inputs_in_autocast_dtype", spy)
    fast, fast_weights = _bf16_lora_run(tmp_path / "fast", gpt2_tokenizer)
    # 2 updates: sampling, the log-prob pass and the PPO epochs (all their micro-batches) once each; each under autocast
    # with every adapted layer uncast
    assert len(entered) == 2 * 3 and all(entered)
    monkeypatch.setattr(ppo_trainer_module, "adapter_inputs_in_autocast_dtype", lambda model, device_type: nullcontext())
    plain, plain_weights = _bf16_lora_run(tmp_path / "plain", gpt2_tokenizer)
    assert len(fast) == len(plain) >= 2 and fast == plain
    assert any(h["objective/kl"] != 0 for h in fast)  # the policy moved: later updates sampled from a changed pi
    assert fast_weights.keys() == plain_weights.keys()
    assert all(torch.equal(fast_weights[n], plain_weights[n]) for n in fast_weights)
