"""Dropout off in training mode, functional rates included (OPT's ``dropout``, Llama's ``attention_dropout``, Falcon's
config-read rates), for the PPO policy and the reward model."""
from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    FalconConfig,
    LlamaConfig,
    OPTConfig,
)

from hf_prefs import PPOConfig, PPOTrainer
from hf_prefs.models.dropout import DROPOUT_NAME, active_dropout, config_dropout, disable_dropout
from hf_prefs.trainers import PreferenceRewardConfig, PreferenceRewardTrainer

VOCAB = 50272  # >= the GPT-2 tokenizer's 50,257 (OPT's own vocabulary size)


def _with_dropout(config):
    """Every dropout rate of ``config`` at 0.1."""
    for key, value in list(vars(config).items()):
        if isinstance(value, float) and DROPOUT_NAME.search(key):
            setattr(config, key, 0.1)
    return config


CONFIGS = {
    "opt": lambda: OPTConfig(vocab_size=VOCAB, num_hidden_layers=2, hidden_size=32, ffn_dim=64, num_attention_heads=2,
                             word_embed_proj_dim=32, max_position_embeddings=128),
    "llama": lambda: LlamaConfig(vocab_size=VOCAB, num_hidden_layers=2, hidden_size=32, intermediate_size=64,
                                 num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128),
    "falcon": lambda: FalconConfig(vocab_size=VOCAB, num_hidden_layers=2, hidden_size=32, num_attention_heads=2),
}


def _two_train_forwards(model, ids):
    model.train()
    with torch.no_grad():
        return model(ids).logits, model(ids).logits


@pytest.mark.parametrize("arch", sorted(CONFIGS))
@pytest.mark.parametrize("head", [AutoModelForCausalLM, AutoModelForSequenceClassification])
def test_functional_dropout_is_off_in_training_mode(arch, head):
    torch.manual_seed(0)
    model = head.from_config(_with_dropout(CONFIGS[arch]()))
    model.config.pad_token_id = 0
    ids = torch.randint(1, 1000, (2, 12))
    a, b = _two_train_forwards(model, ids)
    assert not torch.equal(a, b)  # the rates are live: the test can fail
    disable_dropout(model)
    a, b = _two_train_forwards(model, ids)
    assert torch.equal(a, b)
    rates = {k: v for k, v in vars(model.config).items() if isinstance(v, float) and DROPOUT_NAME.search(k)}
    assert rates and all(v == 0.0 for v in rates.values()), rates


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_active_dropout_names_what_disable_dropout_turns_off(arch):
    """One definition of a dropout: what `active_dropout`/`config_dropout` find is what `disable_dropout` zeroes."""
    model = AutoModelForCausalLM.from_config(_with_dropout(CONFIGS[arch]()))
    found = active_dropout(model)
    assert found is not None and found.endswith("0.1)"), found
    assert config_dropout(model.config) and all(rate == 0.1 for _, rate in config_dropout(model.config))
    disable_dropout(model)
    assert active_dropout(model) is None and config_dropout(model.config) == []
    default = active_dropout(AutoModelForCausalLM.from_config(CONFIGS[arch]()))  # the config's own defaults
    assert default == ("model.decoder.dropout (0.1)" if arch == "opt" else None)


def test_active_dropout_reads_layers_rates_and_per_adapter_dicts():
    seq = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.2))
    assert active_dropout(seq) == "1 (p=0.2)"
    seq[1].p = 0.0
    assert active_dropout(seq) is None
    seq[0].lora_dropout_rates = {"default": 0.0, "other": 0.3}  # a per-adapter dict (PEFT LoHa/LoKr rank_dropout)
    assert active_dropout(seq) == "0.lora_dropout_rates (0.3)"
    assert active_dropout(seq, recurse=False) is None  # the Sequential itself keeps no rate
    seq.layerdrop = 0.1  # a rate the trunk keeps itself (OPT's decoder)
    assert active_dropout(seq, recurse=False) == "layerdrop (0.1)"


def test_ppo_ratio_is_one_at_learning_rate_zero_on_an_opt_policy(gpt2_tokenizer, tmp_path):
    """OPT drops out functionally (``config.dropout`` 0.1 in its checkpoints): with TRL's layer-only switch the
    importance ratio of an unchanged policy was not 1 (approx KL ~2e-3)."""
    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_config(_with_dropout(CONFIGS["opt"]()))
    args = PPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, total_episodes=8, num_ppo_epochs=1,
                     response_length=6, learning_rate=0.0, report_to="none", save_strategy="no", disable_tqdm=True,
                     seed=0)
    queries = Dataset.from_dict({"query": [f"Tell me about item {i}." for i in range(8)]})
    trainer = PPOTrainer(model=policy, reward_model=lambda q, r: [1.0] * len(r), args=args, train_dataset=queries,
                         processing_class=gpt2_tokenizer)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "policy/approxkl_avg" in h]
    assert len(logs) == 2
    for log in logs:
        assert log["policy/approxkl_avg"] < 1e-9 and log["policy/clipfrac_avg"] == 0.0
        assert log["val/ratio"] == pytest.approx(1.0, abs=1e-6)


def test_reward_trainer_turns_functional_dropout_off(gpt2_tokenizer, tmp_path):
    torch.manual_seed(0)
    config = _with_dropout(CONFIGS["opt"]())
    config.num_labels, config.pad_token_id = 1, gpt2_tokenizer.eos_token_id
    model = AutoModelForSequenceClassification.from_config(config)
    labels = Dataset.from_dict({"query": ["A query."] * 4, "samples": [[" a", " b", " c", " d"]] * 4, "best": [0] * 4})
    args = PreferenceRewardConfig(output_dir=str(tmp_path), report_to=[], normalize_before=False,
                                  normalize_after=False, save_strategy="no")
    trainer = PreferenceRewardTrainer(model, args, train_dataset=labels, processing_class=gpt2_tokenizer)
    ids = torch.randint(1, 1000, (2, 12))
    a, b = _two_train_forwards(trainer.model, ids)
    assert torch.equal(a, b)


def test_dropout_layer_kin_and_per_adapter_rates_are_zeroed():
    class LoHaLike(torch.nn.Module):  # PEFT's LoHa/LoKr keep their rank dropout per adapter in a dict
        def __init__(self):
            super().__init__()
            self.rank_dropout, self.scaling = {"default": 0.2}, {"default": 2.0}

    model = torch.nn.Sequential(torch.nn.Dropout2d(0.3), torch.nn.AlphaDropout(0.2), torch.nn.Dropout(0.1), LoHaLike())
    disable_dropout(model)
    assert [m.p for m in model[:3]] == [0.0, 0.0, 0.0]
    assert model[3].rank_dropout == {"default": 0.0} and model[3].scaling == {"default": 2.0}
