"""The reward model's frozen bottom blocks served from stored outputs (cache_frozen_features): same rewards, loss,
gradients and trained parameters as the plain forward; the frozen blocks run once per distinct label."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_gpt2_config
from test_reward_trainer import make_args, toy_labels
from transformers import GPT2ForSequenceClassification, LlamaConfig, LlamaForSequenceClassification

from hf_prefs.models.frozen_features import (
    FrozenFeatureCache,
    freeze_bottom_layers,
    frozen_prefix_length,
    transformer_blocks,
)
from hf_prefs.trainers import DataCollatorForKWayPreference, PreferenceRewardTrainer
from hf_prefs.trainers.reward_trainer import _batch_rewards


def tiny_llama_rm(tokenizer, layers: int = 4, seed: int = 0) -> LlamaForSequenceClassification:
    cfg = LlamaConfig(vocab_size=50257, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, num_labels=1,
                      pad_token_id=tokenizer.eos_token_id, attn_implementation="sdpa")
    torch.manual_seed(seed)
    return LlamaForSequenceClassification(cfg)


def tiny_gpt2_rm(tokenizer, seed: int = 0, **overrides) -> GPT2ForSequenceClassification:
    cfg = tiny_gpt2_config(n_layer=3, **overrides)
    cfg.num_labels, cfg.pad_token_id = 1, tokenizer.eos_token_id
    torch.manual_seed(seed)
    return GPT2ForSequenceClassification(cfg)


def _batches(trainer, tokenizer, packed: bool):
    collator = DataCollatorForKWayPreference(pad_token_id=tokenizer.eos_token_id, share_query_prefix=packed)
    rows = [trainer.train_dataset[i] for i in range(6)]
    return collator(rows[:4]), collator(rows[2:6])  # the second batch repeats two labels of the first


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("packed", [True, False])
def test_stored_outputs_give_the_same_rewards_and_gradients(gpt2_tokenizer, tmp_path, arch, packed):
    model = tiny_llama_rm(gpt2_tokenizer) if arch == "llama" else tiny_gpt2_rm(gpt2_tokenizer)
    freeze_bottom_layers(model, 2)
    assert frozen_prefix_length(model) == (2, "")
    trainer = PreferenceRewardTrainer(model, make_args(tmp_path), train_dataset=toy_labels(8),
                                      processing_class=gpt2_tokenizer)
    _, _, blocks = transformer_blocks(model)
    calls = {"bottom": 0, "top": 0}
    blocks[0].register_forward_hook(lambda *a: calls.__setitem__("bottom", calls["bottom"] + 1))
    blocks[2].register_forward_hook(lambda *a: calls.__setitem__("top", calls["top"] + 1))
    trainable = [p for p in model.parameters() if p.requires_grad]
    cache = FrozenFeatureCache(model, 2, directory=str(tmp_path))
    model.train()
    for batch in _batches(trainer, gpt2_tokenizer, packed):
        results = []
        for cached in (False, True):
            model.zero_grad()
            rewards = cache.forward(model, _batch_rewards, batch) if cached else _batch_rewards(model, batch)
            rewards.square().sum().backward()
            results.append((rewards.detach(), [p.grad.clone() for p in trainable]))
        (r0, g0), (r1, g1) = results
        assert r0.shape == (4 * 4,)
        torch.testing.assert_close(r1, r0, rtol=1e-5, atol=1e-5)
        for a, b in zip(g1, g0):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    rows = 4 if packed else 16  # rows per batch: one packed row per label, or K rows per label
    # plain forwards: 2 batches through all blocks; cached: batch 1 computed (bottom once), batch 2 only its 2 new
    # labels' rows (a third bottom call), then the top blocks on stored outputs
    assert calls == {"bottom": 2 + 2, "top": 2 + 2}
    keys = [set(FrozenFeatureCache.row_keys(b)[0]) for b in _batches(trainer, gpt2_tokenizer, packed)]
    assert cache.rows_computed == len(keys[0] | keys[1])  # each distinct row once (a label may repeat a sample)
    if packed:
        assert cache.rows_computed == 6  # 6 distinct labels
    assert cache.rows_read == 2 * rows
    assert transformer_blocks(model)[2] is blocks and len(blocks) == (3 if arch == "gpt2" else 4)  # restored
    cache.close()


def test_what_cannot_be_served_from_stored_outputs(gpt2_tokenizer):
    model = tiny_gpt2_rm(gpt2_tokenizer)
    assert frozen_prefix_length(model) == (0, "the first block has trainable parameters")
    for p in model.transformer.h[0].parameters():
        p.requires_grad_(False)
    n, why = frozen_prefix_length(model)
    assert n == 0 and why == "wte.weight is trainable and runs before the blocks"  # named
    freeze_bottom_layers(model, 3)
    assert frozen_prefix_length(model) == (0, "every block is frozen (nothing to train on top of the stored outputs)")
    dropout = tiny_gpt2_rm(gpt2_tokenizer, resid_pdrop=0.1)
    freeze_bottom_layers(dropout, 2)
    n, why = frozen_prefix_length(dropout)
    assert n == 0 and "dropout is active in the frozen part" in why and "p=0.1" in why
    llama = tiny_llama_rm(gpt2_tokenizer)
    llama.config.layer_types = ["sliding_attention", "full_attention"] * 2
    freeze_bottom_layers(llama, 2)
    n, why = frozen_prefix_length(llama)
    assert n == 0 and "attention types" in why
    with pytest.raises(ValueError, match="n_frozen must be in"):
        FrozenFeatureCache(llama, 4)
    llama.config.layer_types = None
    assert frozen_prefix_length(llama) == (2, "")
    llama.config.hidden_dropout = 0.1  # applied functionally (BLOOM/Falcon style): no module shows it
    assert frozen_prefix_length(llama) == (0, "dropout is active in the frozen part: config.hidden_dropout = 0.1")
    llama.config.hidden_dropout = 0.0
    llama.model.layerdrop = 0.1  # a rate the trunk keeps itself (as OPT's decoder keeps its layerdrop)
    assert frozen_prefix_length(llama) == (0, "dropout is active in the frozen part: layerdrop (0.1)")
    llama.model.layerdrop = 0.0
    llama.config.classifier_dropout = 0.1  # a head's rate: the head runs after the blocks
    assert frozen_prefix_length(llama) == (2, "")
    llama.gradient_checkpointing_enable()
    n, why = frozen_prefix_length(llama)
    assert n == 0 and why.startswith("activation checkpointing is on")
    assert frozen_prefix_length(torch.nn.Linear(2, 2)) == (0, "cannot find the transformer blocks of Linear (no `layers` "
                                                            "or `h` module list)")


def test_block_list_and_hook_are_restored_when_the_forward_fails(gpt2_tokenizer, tmp_path):
    model = tiny_llama_rm(gpt2_tokenizer)
    freeze_bottom_layers(model, 2)
    trainer = PreferenceRewardTrainer(model, make_args(tmp_path), train_dataset=toy_labels(8),
                                      processing_class=gpt2_tokenizer)
    batch = _batches(trainer, gpt2_tokenizer, True)[0]
    cache = FrozenFeatureCache(model, 2, directory=str(tmp_path))
    blocks = transformer_blocks(model)[2]

    def fails_in_the_top(m, b):
        if len(transformer_blocks(m)[2]) == 2 and cache.rows_computed:  # the top pass
            raise KeyError("boom")
        return _batch_rewards(m, b)

    with pytest.raises(KeyError, match="boom"):
        cache.forward(model, fails_in_the_top, batch)
    assert transformer_blocks(model)[2] is blocks and not blocks[2]._forward_pre_hooks
    torch.testing.assert_close(cache.forward(model, _batch_rewards, batch), _batch_rewards(model, batch))
    model.gradient_checkpointing_enable()
    model.train()
    with pytest.raises(RuntimeError, match="activation checkpointing is on"):
        cache.forward(model, _batch_rewards, batch)
    cache.close()


def test_trainer_with_cache_trains_the_same_parameters(gpt2_tokenizer, tmp_path):
    """Two epochs with and without the cache: the same trained top; the bottom runs once per label."""
    labels = toy_labels(24)
    trained, logs = [], []
    for cache in (False, True):
        model = tiny_llama_rm(gpt2_tokenizer)
        freeze_bottom_layers(model, 3)
        args = make_args(tmp_path / str(cache), num_train_epochs=2, per_device_train_batch_size=8,
                         share_query_prefix=True, cache_frozen_features=cache, learning_rate=1e-2)
        trainer = PreferenceRewardTrainer(model, args, train_dataset=labels, processing_class=gpt2_tokenizer)
        trainer.train()
        trained.append({k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad})
        logs.append({k: v for log in trainer.state.log_history for k, v in log.items()})
        assert trainer._frozen_cache is None  # closed: the file is gone
    assert "frozen_features_rows_computed" not in logs[0]
    assert (logs[1]["frozen_features_layers"], logs[1]["frozen_features_rows_computed"],
            logs[1]["frozen_features_rows_read"]) == (3, 24, 48)
    assert logs[0]["train_loss"] == pytest.approx(logs[1]["train_loss"], rel=1e-5)
    # the top block (7 projections, 2 norms), the final norm and the score head
    assert sorted(trained[0]) == sorted(trained[1]) and len(trained[0]) == 9 + 1 + 1
    for name, before in trained[0].items():
        torch.testing.assert_close(trained[1][name], before, rtol=1e-4, atol=1e-5)


def test_cache_is_not_used_where_nothing_is_frozen_or_with_activation_checkpointing(gpt2_tokenizer, tmp_path):
    model = tiny_llama_rm(gpt2_tokenizer)
    args = make_args(tmp_path, max_steps=1, cache_frozen_features=True)
    trainer = PreferenceRewardTrainer(model, args, train_dataset=toy_labels(8), processing_class=gpt2_tokenizer)
    with pytest.warns(UserWarning, match="cache_frozen_features is not used: the first block has trainable"):
        trainer.train()
    freeze_bottom_layers(model, 2)  # TRL's default: activation checkpointing, which would recompute without the store
    args = make_args(tmp_path, max_steps=1, cache_frozen_features=True, gradient_checkpointing=True)
    trainer = PreferenceRewardTrainer(model, args, train_dataset=toy_labels(8), processing_class=gpt2_tokenizer)
    with pytest.warns(UserWarning, match="cache_frozen_features is not used: activation checkpointing is on"):
        trainer.train()


def test_rows_must_be_right_padded_with_a_2d_mask():
    ids = torch.tensor([[5, 6, 7], [8, 9, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    keys, lengths = FrozenFeatureCache.row_keys({"input_ids": ids, "attention_mask": mask})
    assert lengths == [3, 2] and keys[1] == torch.tensor([8, 9]).numpy().tobytes()
    with pytest.raises(ValueError, match="right-padded rows .* row 1 is not"):
        FrozenFeatureCache.row_keys({"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 1], [0, 1, 1]])})
    with pytest.raises(ValueError, match="2D 0/1 attention_mask"):
        FrozenFeatureCache.row_keys({"input_ids": ids, "attention_mask": torch.ones(2, 1, 3, 3)})
