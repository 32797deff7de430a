"""Frozen weights held once (hf_prefs.models.weight_sharing): what is shared, that outputs do not change, and that a
whole pipeline run is the same with and without sharing."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaConfig, LlamaForCausalLM

from hf_prefs.models.weight_sharing import parameter_key, share_frozen_weights
from hf_prefs.pipeline import main
from hf_prefs.models.frozen_features import freeze_bottom_layers
from test_recipe import _tiny_args

import hf_prefs.pipeline.policy as policy_stage


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> str:
    """A 2-layer Llama (nn.Linear matmuls; the GPT-2 fixtures use transformers' Conv1D) saved in float32."""
    path = tmp_path_factory.mktemp("tiny_llama")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50257, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, pad_token_id=50256)
    LlamaForCausalLM(config).save_pretrained(path)
    return str(path)


def _ptrs(model: torch.nn.Module) -> set[int]:
    return {p.data_ptr() for p in model.parameters()}


def _lora(model: torch.nn.Module, targets: list[str]) -> torch.nn.Module:
    policy = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0))
    for name, p in policy.named_parameters():
        if "lora_B" in name:  # zero at init: make the adapters change the output
            torch.nn.init.normal_(p, std=0.5)
    return policy


def test_parameter_key_drops_peft_wrappers():
    assert parameter_key("base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight") == (
        "model.layers.0.self_attn.q_proj.weight")
    assert parameter_key("model.layers.0.mlp.up_proj.weight") == "model.layers.0.mlp.up_proj.weight"


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_lora_policy_shares_its_frozen_base_with_rho(arch, tiny_base, tiny_llama):
    path, targets = (tiny_base, ["c_attn", "c_fc"]) if arch == "gpt2" else (tiny_llama, ["q_proj", "up_proj"])
    rho = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
    torch.manual_seed(1)
    policy = _lora(AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16), targets).eval()
    ids = torch.randint(0, 50000, (2, 7))
    with torch.no_grad():
        before = policy(input_ids=ids).logits
        rho_before = rho(input_ids=ids).logits
    base_bytes = sum(p.numel() * p.element_size() for p in rho.parameters())  # tied embeddings counted once

    freed = share_frozen_weights(policy, rho)

    assert freed == base_bytes
    frozen = {p.data_ptr() for p in policy.parameters() if not p.requires_grad}
    trainable = {p.data_ptr() for p in policy.parameters() if p.requires_grad}
    assert frozen == _ptrs(rho) and not trainable & _ptrs(rho)  # every base tensor is rho's; no adapter is
    with torch.no_grad():
        assert torch.equal(policy(input_ids=ids).logits, before)
        with policy.disable_adapter():
            assert torch.equal(policy(input_ids=ids).logits, rho_before)
    # training the adapters leaves rho as it was
    opt = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=1.0)
    policy.train()
    policy(input_ids=ids).logits.float().pow(2).mean().backward()
    opt.step()
    with torch.no_grad():
        assert not torch.equal(policy(input_ids=ids).logits, before)
        assert torch.equal(rho(input_ids=ids).logits, rho_before)
    assert share_frozen_weights(policy, rho) == 0  # already shared


def test_only_equal_frozen_weights_are_shared(tiny_llama):
    rho = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16)
    changed = model.model.layers[0].mlp.up_proj.weight
    with torch.no_grad():
        changed[0, 0] += 1.0
    trainable = model.model.layers[1].mlp.up_proj.weight
    for p in model.parameters():
        p.requires_grad_(False)
    trainable.requires_grad_(True)
    other = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)  # another dtype, no autocast
    assert share_frozen_weights(model, other) == 0

    freed = share_frozen_weights(model, rho)

    assert freed == sum(p.numel() * 2 for p in rho.parameters()) - 2 * changed.numel() - 2 * trainable.numel()
    assert changed.data_ptr() not in _ptrs(rho) and trainable.data_ptr() not in _ptrs(rho)
    assert model.model.layers[0].mlp.down_proj.weight.data_ptr() == rho.model.layers[0].mlp.down_proj.weight.data_ptr()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_reward_model_frozen_matmuls_share_rho_bf16_weights_under_autocast(arch, tiny_base, tiny_llama):
    """An fp32 reward model with its bottom layer frozen: under bf16 autocast its frozen matmul weights may be rho's
    bf16 tensors (autocast casts them to bf16 anyway) — the scores are bit-identical; norms and embeddings keep fp32."""
    path = tiny_base if arch == "gpt2" else tiny_llama
    rho = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
    rm = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32, pad_token_id=50256)
    freeze_bottom_layers(rm, 1)
    rm.eval()
    ids = torch.randint(0, 50000, (3, 9))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        before = rm(input_ids=ids).logits
    blocks = rm.transformer.h if arch == "gpt2" else rm.model.layers
    matmul = [m for m in blocks[0].modules() if type(m).__name__ in ("Linear", "Conv1D")]
    expected = sum(p.numel() * 4 for m in matmul for p in m.parameters(recurse=False))
    embedding = rm.get_input_embeddings().weight

    freed = share_frozen_weights(rm, rho, autocast_dtype=torch.bfloat16)

    assert freed == expected > 0
    assert all(p.dtype == torch.bfloat16 and p.data_ptr() in _ptrs(rho) for m in matmul for p in m.parameters(recurse=False))
    assert embedding.dtype == torch.float32 and embedding.data_ptr() not in _ptrs(rho)
    assert all(p.dtype == torch.float32 for p in blocks[1].parameters())  # the trained layer is the model's own
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(rm(input_ids=ids).logits, before)


def test_pipeline_run_is_the_same_with_and_without_sharing(tiny_base, tmp_path, monkeypatch):
    """The offline recipe (bf16, LoRA policy, reward model with a frozen layer) gives identical results when the
    policy's base and the reward model's frozen matmuls are rho's tensors; sharing freed the expected bytes."""
    args = ("--use_peft", "true", "--lora_target_modules", "c_attn", "c_fc", "--rm_freeze_layers", "1",
            "--total_episodes", "8", "--num_ppo_epochs", "1", "--num_label_queries", "12", "--num_eval_queries", "4",
            "--rm_normalize_samples", "4", "--cpu_bf16_fallback", "false")  # bf16 on any CPU: the path under test
    freed: list[int] = []
    share = policy_stage.share_rho_weights
    monkeypatch.setattr(policy_stage, "share_rho_weights", lambda trainer, rho: freed.append(share(trainer, rho)) or freed[-1])
    shared = main(task="sentiment", argv=_tiny_args(tiny_base, tmp_path / "shared", *args))
    monkeypatch.setattr(policy_stage, "share_rho_weights", lambda trainer, rho: 0)
    plain = main(task="sentiment", argv=_tiny_args(tiny_base, tmp_path / "plain", *args))

    rho = AutoModelForCausalLM.from_pretrained(tiny_base)
    layer0 = sum(p.numel() for n, p in rho.transformer.h[0].named_parameters() if "ln_" not in n)
    assert freed == [sum(p.numel() for p in rho.parameters()) * 2 + layer0 * 4]  # policy base (bf16) + RM layer 0 (fp32)
    for key in ("before", "after", "final_beta", "ppo_updates", "known_reward_gain"):
        assert shared[key] == plain[key], key
