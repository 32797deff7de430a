"""Reading rewards at explicit indices, and query-prefix sharing (packed rows) against plain rows."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForSequenceClassification,
)

from hf_prefs.core.packing import pack_shared_prefix, pad_right, shared_prefix_attention_mask
from hf_prefs.models.reward_model import (
    get_reward_normalization,
    last_token_index,
    last_token_rewards,
    packed_rewards,
    score_head,
    set_reward_normalization,
    unwrap_model,
)


def _gpt2() -> GPT2ForSequenceClassification:
    cfg = GPT2Config(vocab_size=500, n_positions=128, n_embd=32, n_layer=2, n_head=2, num_labels=1, pad_token_id=0)
    return GPT2ForSequenceClassification(cfg)


def _llama() -> LlamaForSequenceClassification:
    cfg = LlamaConfig(
        vocab_size=500,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_labels=1,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForSequenceClassification(cfg)


def test_last_token_index_any_padding_side():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(mask).tolist() == [2, 4, 4]
    with pytest.raises(ValueError, match="no attended token"):
        last_token_index(torch.tensor([[0, 0]]))


def test_score_head_requires_a_sequence_classification_model():
    torch.manual_seed(0)
    assert score_head(_gpt2()) is not None
    with pytest.raises(TypeError, match="no `score` head"):
        score_head(GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=16, n_embd=8, n_layer=1, n_head=1)))


def test_score_texts_refuses_a_string_for_a_list(gpt2_tokenizer):
    """One pair given as two strings was scored character by character (list() of a string), with no error."""
    from hf_prefs.models.reward_model import score_texts

    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(GPT2Config(vocab_size=50257, n_positions=64, n_embd=16, n_layer=1, n_head=1,
                                                     num_labels=1))
    with pytest.raises(TypeError, match=r"queries must be a list of texts, got one string .*\[query\], \[response\]"):
        score_texts(model, gpt2_tokenizer, "abc", "xyz")
    with pytest.raises(TypeError, match="responses must be a list of texts"):
        score_texts(model, gpt2_tokenizer, ["abc"], "xyz")
    assert score_texts(model, gpt2_tokenizer, ["abc"], [" xyz"]).shape == (1,)
    # a row past the model's 64 learned positions: named (a bare IndexError from the position table before)
    with pytest.raises(ValueError, match=r"row 2 is 71 tokens \(query \+ response\), more than the reward model's 64"):
        score_texts(model, gpt2_tokenizer, ["a", "b", "c"], [" x", " y", " z" * 70], batch_size=2)
    assert score_texts(model, gpt2_tokenizer, ["a"], [" z" * 63]).shape == (1,)  # 64 tokens: the table's last position


class _EngineLike(torch.nn.Module):
    """A wrapper as DeepSpeed's engine is one: the model in ``.module`` and a ``config`` of its own (not a
    transformers config)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module
        self.config = {"zero_optimization": {"stage": 2}}


def test_gain_and_bias_go_through_a_wrapper_with_a_config_of_its_own():
    # DeepSpeed's engine has `config`: the K-way loss read gain 1, bias 0 through it during training (unnormalized
    # rewards under DeepSpeed) and the normalization was set on DeepSpeed's config, not the model's
    model = _gpt2()
    wrapped = torch.nn.parallel.DistributedDataParallel.__new__(torch.nn.parallel.DistributedDataParallel)
    torch.nn.Module.__init__(wrapped)
    wrapped.module = _EngineLike(model)  # DDP-style wrapper around an engine-style one
    assert unwrap_model(wrapped) is model and unwrap_model(_EngineLike(model)) is model
    set_reward_normalization(_EngineLike(model), 2.5, -0.5)
    assert get_reward_normalization(model) == (2.5, -0.5)
    assert get_reward_normalization(wrapped) == (2.5, -0.5)
    assert score_head(_EngineLike(model)) is model.score


def test_shared_prefix_mask_structure():
    packed = pack_shared_prefix([[5, 6]], [[[7], [8, 9]]], pad_token_id=0, pad_to_multiple_of=8)
    assert packed["input_ids"].tolist() == [[5, 6, 7, 8, 9, 0, 0, 0]]
    assert packed["position_ids"][0, :5].tolist() == [0, 1, 2, 2, 3]
    assert packed["segment_ids"][0].tolist() == [0, 0, 1, 2, 2, -1, -1, -1]
    assert packed["last_index"].tolist() == [[2, 4]]
    allowed = (shared_prefix_attention_mask(packed["segment_ids"]) == 0)[0, 0].int()
    assert allowed[:5, :5].tolist() == [
        [1, 0, 0, 0, 0],  # query token 0
        [1, 1, 0, 0, 0],  # query token 1
        [1, 1, 1, 0, 0],  # response 0 sees the query and itself
        [1, 1, 0, 1, 0],  # response 1 does not see response 0
        [1, 1, 0, 1, 1],
    ]
    assert allowed[5:, :].sum(1).tolist() == [1, 1, 1]  # padding attends to itself only


@pytest.mark.parametrize("make", [_gpt2, _llama], ids=["gpt2", "llama"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_rows_give_the_same_rewards_as_plain_rows(make, attn):
    torch.manual_seed(0)
    model = make()
    model.set_attn_implementation(attn)
    model.eval()
    g = torch.Generator().manual_seed(1)
    queries = [torch.randint(3, 500, (n,), generator=g).tolist() for n in (5, 9, 3)]
    responses = [
        [torch.randint(3, 500, (n,), generator=g).tolist() for n in lens]
        for lens in ((4, 6, 2, 7), (3, 3, 8, 1), (5, 2, 2, 4))
    ]
    responses[1][2][-1] = 0  # a response ending in the pad id
    plain_ids, plain_mask = pad_right([q + r for q, group in zip(queries, responses) for r in group], 0)
    plain = last_token_rewards(model, plain_ids, plain_mask)
    packed = packed_rewards(model, pack_shared_prefix(queries, responses, 0))
    assert packed.shape == plain.shape == (12,)
    assert torch.allclose(packed, plain, atol=1e-5)
    with pytest.raises(ValueError, match="expected K=4"):
        pack_shared_prefix(queries, [responses[0], responses[1][:3], responses[2]], 0)


def test_loading_a_local_full_model_folder_never_asks_the_hub(tmp_path, gpt2_tokenizer, monkeypatch):
    """A local folder without adapter_config.json is a full model: no PEFT/Hub lookup (offline-safe, no retries)."""
    import peft

    from conftest import tiny_gpt2_config
    from hf_prefs.models.reward_model import set_reward_normalization
    from hf_prefs import load_reward_model, score_texts

    model = GPT2ForSequenceClassification(tiny_gpt2_config(num_labels=1, pad_token_id=50256)).eval()
    set_reward_normalization(model, 2.0, -0.5)
    model.save_pretrained(tmp_path)
    gpt2_tokenizer.save_pretrained(tmp_path)

    lookups = []

    def record_lookup(*args, **kwargs):
        lookups.append(args)
        raise ValueError("not an adapter")

    monkeypatch.setattr(peft.PeftConfig, "from_pretrained", record_lookup)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a trained reward model: no warning about its head
        loaded, tok = load_reward_model(str(tmp_path))
    assert lookups == []
    q, r = ["She opened the letter."], [" Good news!"]
    assert torch.allclose(score_texts(loaded, tok, q, r), score_texts(model, tok, q, r), atol=1e-6)


def test_a_causal_lm_folder_loaded_as_reward_model_warns_that_its_head_is_random(tmp_path, gpt2_tokenizer):
    """A policy's (causal LM's) folder given as the reward model: transformers makes a random score head; the warning
    names the folder, what it holds and the missing weights (warned, not refused: TRL's demos use such a stand-in)."""
    from conftest import tiny_gpt2_config
    from hf_prefs import load_reward_model

    GPT2LMHeadModel(tiny_gpt2_config()).save_pretrained(tmp_path)
    gpt2_tokenizer.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match=r"holds GPT2LMHeadModel, whose reward head \['score.weight'\] was not in it"):
        load_reward_model(str(tmp_path))
