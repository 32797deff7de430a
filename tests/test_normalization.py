"""Reward normalization (gain/bias from ρ samples), storage with the model, and last-token reading."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_gpt2_config
from transformers import GPT2ForSequenceClassification, LlamaConfig, LlamaForSequenceClassification

from hf_prefs.core.normalization import reward_normalization
from hf_prefs.models.generation import ResponseSampler
from hf_prefs.models.loading import load_reward_model
from hf_prefs.models.reward_model import (
    BIAS_KEY,
    GAIN_KEY,
    get_reward_normalization,
    normalize_reward_model,
    score_texts,
    set_reward_normalization,
)

QUERIES = [
    "It is a truth universally acknowledged that a single man must be in want of a wife.",
    "The family of Dashwood had long been settled in Sussex.",
    "Emma Woodhouse, handsome, clever, and rich, seemed to unite some of the best blessings of existence.",
    "No one who had ever seen Catherine Morland in her infancy would have supposed her born to be an heroine.",
]


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from hf_prefs.assets import load_smollm2_tokenizer

    return load_smollm2_tokenizer(padding_side="right")


def _tiny_rm(tokenizer, seed: int = 0) -> GPT2ForSequenceClassification:
    cfg = tiny_gpt2_config()
    cfg.num_labels = 1
    cfg.pad_token_id = tokenizer.eos_token_id
    torch.manual_seed(seed)
    return GPT2ForSequenceClassification(cfg).eval()


def test_reward_normalization_formula_uses_population_std():
    raw = torch.tensor([1.0, 2.0, 4.0, 9.0])
    m = 4.0
    s = math.sqrt(((1 - m) ** 2 + (2 - m) ** 2 + (4 - m) ** 2 + (9 - m) ** 2) / 4)  # population: / n, not n-1
    gain, bias = reward_normalization(raw, target_mean=0.5, target_std=2.0)
    assert gain == pytest.approx(2.0 / s)
    assert bias == pytest.approx(0.5 - gain * m)
    out = gain * raw + bias
    assert out.mean().item() == pytest.approx(0.5, abs=1e-6)
    assert out.std(unbiased=False).item() == pytest.approx(2.0, abs=1e-6)


def test_reward_normalization_rejects_degenerate_input():
    with pytest.raises(ValueError, match="std is 0"):
        reward_normalization([3.0, 3.0, 3.0])
    with pytest.raises(ValueError, match="non-finite"):
        reward_normalization([1.0, float("nan")])
    with pytest.raises(ValueError, match="at least 2"):
        reward_normalization([1.0])
    # one text scored in three batches by a float32 model: equal but for rounding (a gain of 7e7 was returned)
    with pytest.raises(ValueError, match=r"equal up to rounding \(mean 0\.37181265.*std 1\.4\d*e-08"):
        reward_normalization([0.3718126416, 0.3718126416, 0.3718126714])
    gain, bias = reward_normalization([1000.0, 1000.1])  # a real spread at a large offset is kept
    assert gain == pytest.approx(20.0) and bias == pytest.approx(-20001.0)


def test_gain_bias_live_in_config_and_apply_to_scores(gpt2_tokenizer):
    model = _tiny_rm(gpt2_tokenizer)
    assert get_reward_normalization(model) == (1.0, 0.0)
    responses = [" She smiled.", " It rained.", " He was angry.", " All was well."]
    raw = score_texts(model, gpt2_tokenizer, QUERIES, responses)
    set_reward_normalization(model, 3.0, -0.5)
    assert getattr(model.config, GAIN_KEY) == 3.0 and getattr(model.config, BIAS_KEY) == -0.5
    assert torch.allclose(score_texts(model, gpt2_tokenizer, QUERIES, responses), 3.0 * raw - 0.5, atol=1e-5)
    assert torch.allclose(score_texts(model, gpt2_tokenizer, QUERIES, responses, normalized=False), raw)


def test_normalization_gives_mean0_std1_on_fresh_rho_samples(gpt2_tokenizer, tiny_gpt2):
    """Fit on 256 samples of ρ (drawn by a sampler); check on 512 *other* samples within sampling error."""
    rm = _tiny_rm(gpt2_tokenizer, seed=1)
    queries = [QUERIES[i % 4] for i in range(256)]
    sampler = ResponseSampler(tiny_gpt2, gpt2_tokenizer, response_length=8, temperature=0.7, batch_size=128, seed=0)
    fit_responses: list[str] = []

    def recording_sampler(qs):
        out = sampler(qs)
        fit_responses.extend(out)
        return out

    gain, bias = normalize_reward_model(rm, gpt2_tokenizer, queries, recording_sampler, batch_size=128)
    assert len(fit_responses) == 256
    assert get_reward_normalization(rm) == (gain, bias)
    assert gain != pytest.approx(1.0)  # a random head is far from unit scale

    fresh_queries = [QUERIES[i % 4] for i in range(512)]
    fresh = ResponseSampler(tiny_gpt2, gpt2_tokenizer, response_length=8, temperature=0.7, batch_size=128, seed=123)
    fresh_responses = fresh(fresh_queries)
    assert set(fresh_responses).isdisjoint(fit_responses)  # really other samples
    r = score_texts(rm, gpt2_tokenizer, fresh_queries, fresh_responses, batch_size=128)
    # sampling error of the fitted mean/std (n=256) plus that of the check (n=512): ~0.08 each; allow ~4σ
    assert abs(r.mean().item()) < 0.3
    assert abs(r.std(unbiased=False).item() - 1.0) < 0.3
    # on the fitted samples themselves it is exact
    r_fit = score_texts(rm, gpt2_tokenizer, queries, fit_responses, batch_size=128)
    assert r_fit.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert r_fit.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    # other targets are honoured
    normalize_reward_model(rm, gpt2_tokenizer, queries, fit_responses, target_mean=2.0, target_std=0.5)
    r2 = score_texts(rm, gpt2_tokenizer, fresh_queries, fresh_responses, batch_size=128)
    assert abs(r2.mean().item() - 2.0) < 0.15
    assert abs(r2.std(unbiased=False).item() - 0.5) < 0.15


def test_normalize_resets_gain_before_measuring(gpt2_tokenizer):
    """Normalizing twice gives the same gain/bias: the raw rewards are measured with gain=1, bias=0."""
    rm = _tiny_rm(gpt2_tokenizer)
    responses = [f" word{i} and more." for i in range(16)]
    queries = [QUERIES[i % 4] for i in range(16)]
    first = normalize_reward_model(rm, gpt2_tokenizer, queries, responses)
    second = normalize_reward_model(rm, gpt2_tokenizer, queries, responses)
    assert second == pytest.approx(first)
    with pytest.raises(ValueError, match="one response per query"):
        normalize_reward_model(rm, gpt2_tokenizer, queries, responses[:3])


def test_save_load_gives_identical_normalized_scores(gpt2_tokenizer, tmp_path):
    rm = _tiny_rm(gpt2_tokenizer)
    responses = [f" sample {i} went on." for i in range(12)]
    queries = [QUERIES[i % 4] for i in range(12)]
    normalize_reward_model(rm, gpt2_tokenizer, queries, responses)
    before = score_texts(rm, gpt2_tokenizer, queries, responses)
    assert before.mean().item() == pytest.approx(0.0, abs=1e-5)
    rm.save_pretrained(tmp_path)
    gpt2_tokenizer.save_pretrained(tmp_path)
    loaded, tok = load_reward_model(tmp_path)
    assert not loaded.training
    assert get_reward_normalization(loaded) == get_reward_normalization(rm)
    after = score_texts(loaded, tok, queries, responses, batch_size=5)
    assert torch.allclose(before, after, atol=1e-6)


def _manual_last_token_score(model, ids: list[int]) -> float:
    """The score head applied to the final hidden state of the unpadded sequence (no pooling logic)."""
    with torch.no_grad():
        hidden = model.base_model(torch.tensor([ids])).last_hidden_state  # (1, L, d)
        return model.score(hidden[0, -1]).item()


def test_reward_is_read_where_the_models_own_forward_reads_it_past_an_eos(gpt2_tokenizer):
    """pad == EOS here (GPT-2 without a pad token): a response with an EOS inside is read at its last token; one that
    ends in the EOS at the token before it, where the model's own forward (the last token that is not the pad) and
    ``trl.RewardTrainer`` read it, so a saved model scores as it was trained (hf_prefs read that EOS itself, and its
    saved models scored otherwise than it had, until 2026-12-07)."""
    rm = _tiny_rm(gpt2_tokenizer)
    eos, eos_id = gpt2_tokenizer.eos_token, gpt2_tokenizer.eos_token_id
    queries = [QUERIES[0], QUERIES[1], QUERIES[2]]
    responses = [" and then" + eos, " she ran" + eos + " away", " short"]
    ours = score_texts(rm, gpt2_tokenizer, queries, responses)
    for q, r, got in zip(queries, responses, ours.tolist()):
        ids = gpt2_tokenizer(q)["input_ids"] + gpt2_tokenizer(r, add_special_tokens=False)["input_ids"]
        read = ids[:-1] if ids[-1] == eos_id else ids
        assert got == pytest.approx(_manual_last_token_score(rm, read), abs=1e-5)
        with torch.no_grad():
            assert got == pytest.approx(rm(torch.tensor([ids])).logits.item(), abs=1e-5)  # the stock pooling
    assert ours[0].item() != pytest.approx(_manual_last_token_score(rm, gpt2_tokenizer(queries[0] + responses[0])["input_ids"]),
                                           abs=1e-4)  # not at the EOS


def test_batched_scores_do_not_depend_on_padding(gpt2_tokenizer):
    rm = _tiny_rm(gpt2_tokenizer)
    queries = [QUERIES[i % 4] for i in range(6)]
    responses = [" a", " a much longer response that goes on and on.", " mid length one.", " x", " y z", " !"]
    batched = score_texts(rm, gpt2_tokenizer, queries, responses, batch_size=6)
    single = torch.cat([score_texts(rm, gpt2_tokenizer, [q], [r], batch_size=1) for q, r in zip(queries, responses)])
    assert torch.allclose(batched, single, atol=1e-5)


def test_llama_reward_model_reads_last_token(smollm2_tokenizer):
    """SmolLM2's architecture (Llama) with its real tokenizer: same reading rule, padding independent."""
    tok = smollm2_tokenizer
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_labels=1,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    rm = LlamaForSequenceClassification(cfg).eval()
    queries = QUERIES[:3]
    responses = [" and then" + tok.eos_token, " a rather longer answer here.", " ok"]
    batched = score_texts(rm, tok, queries, responses, batch_size=3)
    for q, r, got in zip(queries, responses, batched.tolist()):
        ids = tok(q)["input_ids"] + tok(r, add_special_tokens=False)["input_ids"]
        assert got == pytest.approx(_manual_last_token_score(rm, ids), abs=1e-5)


def test_peft_wrapped_model_scores_and_reloads_with_gain(gpt2_tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    from hf_prefs.models.loading import save_reward_normalization

    base = _tiny_rm(gpt2_tokenizer)
    base_dir = tmp_path / "base"
    base.save_pretrained(base_dir)
    gpt2_tokenizer.save_pretrained(base_dir)
    base = GPT2ForSequenceClassification.from_pretrained(base_dir)
    model = get_peft_model(
        base, LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["c_attn"], init_lora_weights=False)
    )
    model.eval()
    queries = [QUERIES[i % 4] for i in range(8)]
    responses = [f" the {i}th reply." for i in range(8)]
    # the gain and bias live on the base model's config, which the adapter folder does not hold: said (a LoRA reward
    # model saved with save_pretrained alone reloaded with 1 and 0, silently)
    with pytest.warns(UserWarning, match=r"save_pretrained writes the adapter, not the gain and bias .*save_reward_norm"):
        normalize_reward_model(model, gpt2_tokenizer, queries, responses)
    before = score_texts(model, gpt2_tokenizer, queries, responses)
    assert before.mean().item() == pytest.approx(0.0, abs=1e-5)
    adapter_dir = tmp_path / "adapter"
    model.save_pretrained(adapter_dir)
    save_reward_normalization(model, adapter_dir)
    gpt2_tokenizer.save_pretrained(adapter_dir)
    loaded, tok = load_reward_model(adapter_dir)
    assert type(loaded).__name__.startswith("Peft")
    assert torch.allclose(score_texts(loaded, tok, queries, responses), before, atol=1e-5)
