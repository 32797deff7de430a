"""hf_prefs.PPOTrainer on tiny GPT-2 models with the real GPT-2 tokenizer (offline, CPU)."""

from __future__ import annotations

import inspect
import json
import math
import logging
import re
import warnings
from pathlib import Path
import os

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, GPT2ForSequenceClassification, GPT2LMHeadModel, TrainerCallback

from hf_prefs.core.rollout import pad_token_id_of
from hf_prefs.model_cards import render_policy_card
from hf_prefs.trainers.ppo_config import PPOConfig
from hf_prefs.trainers.ppo_trainer import NonFiniteError, PPOTrainer
from hf_prefs.models.reward_model import per_token_scores, score_texts, set_response_suffix, set_reward_normalization
from hf_prefs.models.generation import embedding_rows, response_logprobs
from hf_prefs.models.value_head import PolicyWithValueHead, value_model_from_policy

from conftest import tiny_gpt2_config

DOT = 13  # GPT-2 "."
THE = 262  # GPT-2 " the"
QUERIES = [
    "It is a truth universally acknowledged.",
    "She was not a young lady of many words.",
    "The weather was fine, and",
    "Mr. Darcy said",
    "Nothing could be more",
]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """PPO steps are many small ops: one thread is about as fast on an idle machine and avoids a >10x slowdown from
    thread oversubscription when the two cores are shared (measured: 1.2 s vs 41 s for the same 4 updates)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_policy(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(tiny_gpt2_config()).eval()


def boost_token(model: GPT2LMHeadModel, token: int, amount: float) -> None:
    """Add ``amount`` to one token's logit (a forward hook on the LM head) so that the tiny random model samples
    it often; the hook is copied with the model, so the reference gets it too."""

    def hook(_module, _inputs, output):
        output[..., token] += amount
        return output

    model.lm_head.register_forward_hook(hook)


def length_reward(queries: list[str], responses: list[str]) -> torch.Tensor:
    return torch.tensor([len(r) / 10.0 for r in responses])


def make_config(tmp_path, **overrides) -> PPOConfig:
    """The paper's rules (these tests were written for them; PPOConfig's own defaults are TRL 1.12's) at toy size."""
    kw = dict(
        truncate_token=".",
        kl_coef=0.15,
        adaptive_kl=True,
        kl_target=6.0,
        whiten_rewards=True,
        adam_epsilon=1e-5,
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        num_mini_batches=1,
        total_episodes=16,
        response_length=6,
        truncate_after=2,
        learning_rate=1e-3,
        report_to=[],
        save_strategy="no",
        num_sample_generations=0,
        disable_tqdm=True,
        seed=0,
    )
    kw.update(overrides)
    return PPOConfig(**kw)


def make_trainer(tmp_path, gpt2_tokenizer, model=None, reward=length_reward, **overrides) -> PPOTrainer:
    return PPOTrainer(
        model=model if model is not None else make_policy(),
        reward_model=reward,
        args=make_config(tmp_path, **overrides),
        train_dataset=Dataset.from_dict({"query": QUERIES * 2}),
        processing_class=gpt2_tokenizer,
    )


def logged(trainer: PPOTrainer, key: str) -> list[float]:
    return [h[key] for h in trainer.state.log_history if key in h]


def test_first_rollout_kl_is_exactly_zero_and_rewards_land_on_the_right_tokens(tmp_path, gpt2_tokenizer):
    policy = make_policy()
    boost_token(policy, DOT, 6.0)  # '.' is sampled often, so truncation and the penalty both happen
    trainer = make_trainer(tmp_path, gpt2_tokenizer, model=policy, total_episodes=8, kl_horizon=100)
    rollout = trainer.make_rollout(*trainer.sample_queries(0))
    lr = trainer.args.response_length
    assert rollout.response_ids.shape == (8, lr)

    # pi = rho at step 0: KL exactly 0, so every token's reward is 0 except the last one, which is the score
    assert torch.equal(rollout.logprobs, rollout.ref_logprobs)
    assert (rollout.kl == 0).all()
    assert (rollout.rewards[:, :-1] == 0).all()
    assert torch.equal(rollout.rewards[:, -1], rollout.scores)

    # log-probs are taken at the sampling temperature (paper), from the sampled tokens
    ids = torch.cat([rollout.query_ids, rollout.response_ids], 1)
    mask = torch.cat([rollout.query_mask, torch.ones_like(rollout.response_ids)], 1)
    with torch.no_grad():
        logits = policy(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits
    assert torch.allclose(rollout.logprobs, response_logprobs(logits, rollout.response_ids, 0.7), atol=1e-4)
    assert not torch.allclose(rollout.logprobs, response_logprobs(logits, rollout.response_ids, 1.0), atol=1e-2)

    # truncation by hand: cut after the first '.' at index >= 2; rows without one get the -1 penalty
    for i in range(8):
        row = rollout.response_ids[i].tolist()
        cuts = [t for t in range(2, lr) if row[t] == DOT]
        keep = cuts[0] + 1 if cuts else lr
        assert rollout.response_texts[i] == gpt2_tokenizer.decode(row[:keep], skip_special_tokens=True)
        assert bool(rollout.valid[i]) == bool(cuts)
        assert rollout.raw_scores[i].item() == pytest.approx(len(rollout.response_texts[i]) / 10.0)
        assert rollout.scores[i].item() == pytest.approx(rollout.raw_scores[i].item() if cuts else -1.0)
    assert 0 < int(rollout.valid.sum()) < 8, "the case should contain both truncated and penalised rows"

    # one full update: the logged KL is exactly 0, beta moved by the paper's rule with KL = 0 (error clipped -0.2)
    trainer.train()
    assert logged(trainer, "objective/kl") == [0.0]
    assert logged(trainer, "objective/kl_coef") == [0.15]
    assert trainer.kl_ctl.value == pytest.approx(0.15 * (1 - 0.2 * 8 / 100))


def test_a_reference_given_as_a_path_is_loaded_as_the_policy_is(tmp_path, gpt2_tokenizer, tiny_base):
    """``ref_model`` takes a path like ``model`` and ``value_model`` (it failed: "'str' object has no attribute
    'eval'"): the same weights as the policy loaded from it, so the first rollout's KL is exactly 0; a missing local
    path is named as the reference."""
    def build(ref):
        return PPOTrainer(model=tiny_base, ref_model=ref, reward_model=length_reward, args=make_config(tmp_path),
                          train_dataset=Dataset.from_dict({"query": QUERIES * 2}), processing_class=gpt2_tokenizer)

    trainer = build(tiny_base)
    assert not any(p.requires_grad for p in trainer.ref_model.parameters())
    assert (trainer.make_rollout(*trainer.sample_queries(0)).kl == 0).all()
    with pytest.raises(FileNotFoundError, match="ref_model"):
        build(str(tmp_path / "no_such_model"))


def test_lora_reference_is_the_policy_with_adapters_disabled(tmp_path, gpt2_tokenizer):
    from peft import LoraConfig

    policy = make_policy()
    base_before = {k: v.clone() for k, v in policy.state_dict().items()}
    trainer = PPOTrainer(
        model=policy,
        reward_model=length_reward,
        args=make_config(tmp_path, save_strategy="steps", save_steps=2),
        train_dataset=Dataset.from_dict({"query": QUERIES * 2}),
        processing_class=gpt2_tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], lora_dropout=0.0, task_type="CAUSAL_LM"),
    )
    assert trainer.ref_model is None and trainer.is_peft_model  # no second copy of the model
    rollout = trainer.make_rollout(*trainer.sample_queries(0))
    assert (rollout.kl == 0).all()
    trainer.train()
    kls = logged(trainer, "objective/kl")
    assert kls[0] == 0.0 and kls[1] != 0.0  # the adapters moved pi away from rho
    peft_model = trainer.model.policy
    for name, value in peft_model.get_base_model().state_dict().items():
        if "lora_" not in name:
            original = name.replace(".base_layer", "")
            assert torch.equal(value, base_before[original]), name  # the base (= the reference) is untouched
    assert any(p.abs().sum() > 0 for n, p in peft_model.named_parameters() if "lora_B" in n)
    checkpoint = tmp_path / "out" / "checkpoint-2"
    files = set(os.listdir(checkpoint))
    assert {"adapter_model.safetensors", "adapter_config.json", "value_head.safetensors", "ppo_state.json"} <= files
    assert "model.safetensors" not in files
    # the adapter and the value head load back (the tiny base model has no Hub id to reload it from, so rebuild it)
    from peft import PeftModel

    reloaded = PolicyWithValueHead(PeftModel.from_pretrained(make_policy(), checkpoint))
    reloaded.load_value_weights(checkpoint)
    assert torch.equal(reloaded.v_head.summary.weight, trainer.model.v_head.summary.weight)
    trained = dict(peft_model.named_parameters())
    for name, value in reloaded.policy.named_parameters():
        if "lora_" in name:
            assert torch.equal(value, trained[name]), name


def test_a_reference_adapter_without_model_adapter_name_returns_to_the_adapter_that_was_active(tmp_path, gpt2_tokenizer):
    """TRL's rule switched back to an adapter named "default" after each reference pass: with adapters "pol" and "ref"
    it failed (no "default"); with an SFT adapter "default" as the reference, "default" became the trained one."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], task_type="CAUSAL_LM")
    policy = get_peft_model(make_policy(), lora, adapter_name="pol")
    policy.add_adapter("ref", lora)
    policy.set_adapter("pol")
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if "lora_" in n}
    trainer = PPOTrainer(policy, length_reward, make_config(tmp_path, ref_adapter_name="ref"),
                         Dataset.from_dict({"query": QUERIES}), processing_class=gpt2_tokenizer)
    trainer.train()
    assert policy.active_adapter == "pol"
    changed = {n.split(".")[-2] for n, p in policy.named_parameters() if n in before and not torch.equal(p, before[n])}
    assert changed == {"pol"}


def test_prompt_tuning_is_refused_and_a_prefix_tuned_policy_trains_and_reloads(tmp_path, gpt2_tokenizer, tiny_base):
    """A policy with virtual tokens before its input (prompt tuning, given as ``peft_config`` or already wrapped) is
    refused when the trainer is built: its log-probs were read 4 positions too early, silently. Prefix tuning trains;
    saved, it reloads through ``PolicyWithValueHead.from_pretrained`` frozen (peft loads a saved prompt-learning
    adapter only so: the default ``is_trainable=True`` failed there), with the trained policy's logits."""
    from peft import PrefixTuningConfig, PromptTuningConfig, get_peft_model

    from hf_prefs.models.logprobs import forward_last

    def build(model, peft_config=None, **overrides):
        return PPOTrainer(model=model, reward_model=length_reward, args=make_config(tmp_path, **overrides),
                          train_dataset=Dataset.from_dict({"query": QUERIES * 2}), processing_class=gpt2_tokenizer,
                          peft_config=peft_config)

    prompt = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    for model, config in ((make_policy(), prompt), (get_peft_model(make_policy(), prompt), None)):
        with pytest.raises(ValueError, match="PEFT PROMPT_TUNING policy is not supported: it puts 4 virtual tokens"):
            build(model, config)
    prefix = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_base).eval(),  # saved: the adapter names it
                            PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    ids = torch.tensor([gpt2_tokenizer("It was a dark and stormy night")["input_ids"]])
    try:  # PEFT's own forward: some PEFT/transformers pairs cannot run prefix tuning at all
        with torch.no_grad():
            prefix(input_ids=ids, attention_mask=torch.ones_like(ids))
    except AttributeError as err:  # the oldest supported pair: its prefix cache is a tuple transformers rejects
        pytest.skip(f"prefix tuning does not run with this peft and transformers: {err}")
    before = prefix.prompt_encoder["default"].embedding.weight.detach().clone()
    trainer = build(prefix, total_episodes=8)
    trainer.train()
    trained = trainer.model.policy.eval()
    assert not torch.equal(trained.prompt_encoder["default"].embedding.weight, before)  # the prefix was trained
    trainer.save_model(str(tmp_path / "saved"))
    reloaded = PolicyWithValueHead.from_pretrained(tmp_path / "saved").eval()
    assert reloaded.policy.peft_config["default"].inference_mode  # peft's frozen load
    assert not any(p.requires_grad for p in reloaded.policy.parameters())  # its prompt encoder too
    with torch.no_grad():
        torch.testing.assert_close(forward_last(reloaded.policy, ids, torch.ones_like(ids), 3).logits,
                                   forward_last(trained, ids, torch.ones_like(ids), 3).logits)
    with pytest.raises(ValueError, match="Cannot set a prompt learning adapter to trainable"):
        PolicyWithValueHead.from_pretrained(tmp_path / "saved", is_trainable=True)


def test_lora_on_a_bf16_base_trains_fp32_adapters_under_bf16_autocast(tmp_path, gpt2_tokenizer):
    """The offline default's setting (dtype bfloat16 + bf16): the frozen base stays bf16 and unchanged, the adapters and
    the value head are fp32 and move, pi = rho exactly before the first update."""
    from peft import LoraConfig

    policy = make_policy().to(torch.bfloat16)
    base_before = {k: v.clone() for k, v in policy.state_dict().items()}
    trainer = PPOTrainer(
        model=policy,
        reward_model=length_reward,
        args=make_config(tmp_path, bf16=True, use_cpu=True),
        train_dataset=Dataset.from_dict({"query": QUERIES * 2}),
        processing_class=gpt2_tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], lora_dropout=0.0, task_type="CAUSAL_LM"),
    )
    trainable = {n: p for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all(p.dtype == torch.float32 for p in trainable.values())
    assert any("v_head" in n for n in trainable) and any("lora_B" in n for n in trainable)
    head_before = {n: p.detach().clone() for n, p in trainable.items()}
    trainer.train()
    kls = logged(trainer, "objective/kl")
    assert kls[0] == 0.0 and all(torch.isfinite(torch.tensor(kls)))
    assert any(not torch.equal(p, head_before[n]) for n, p in trainer.model.named_parameters() if n in head_before)
    for name, value in trainer.model.policy.get_base_model().state_dict().items():
        if "lora_" not in name:
            original = name.replace(".base_layer", "")
            assert value.dtype == torch.bfloat16 and torch.equal(value, base_before[original]), name
    policy, ids = trainer.model.policy, torch.tensor([gpt2_tokenizer.encode(QUERIES[0])])
    with torch.no_grad():
        trained = policy(input_ids=ids).logits
        with trainer.null_ref_context():  # TRL 1.12's name: the PEFT policy with its adapters off is rho
            rho = policy(input_ids=ids).logits
        with policy.disable_adapter():
            assert torch.equal(rho, policy(input_ids=ids).logits) and not torch.equal(rho, trained)
        assert torch.equal(policy(input_ids=ids).logits, trained)  # adapters back on after it


@pytest.mark.parametrize("value_model", ["shared", "policy"])
def test_resume_continues_step_count_beta_and_weights(tmp_path, gpt2_tokenizer, value_model):
    overrides = dict(total_episodes=32, num_mini_batches=2, save_strategy="steps", save_steps=2, kl_target=0.05,
                     kl_horizon=50, value_model=value_model)
    full = make_trainer(tmp_path / "a", gpt2_tokenizer, **overrides)
    assert full.state.episode == 0  # TRL's OnlineTrainerState, from the start
    episodes = []
    full.add_callback(type("Episodes", (TrainerCallback,), {
        "on_step_begin": lambda self, args, state, control, **kw: episodes.append(state.episode)})())
    full.train()
    assert full.state.global_step == 4 and episodes == [8, 16, 24, 32] and full.state.episode == 32  # 8 per update
    checkpoint = tmp_path / "a" / "out" / "checkpoint-2"
    with open(checkpoint / "ppo_state.json") as f:
        assert json.load(f)["kl_controller"]["value"] == pytest.approx(logged(full, "objective/kl_coef")[2])
    assert json.loads((checkpoint / "trainer_state.json").read_text())["episode"] == 16

    changed = make_trainer(tmp_path / "c", gpt2_tokenizer, **{**overrides, "kl_target": 0.1})
    with pytest.raises(ValueError, match=r"KL controller's settings changed \(kl_target 0.05 in the checkpoint, 0.1 now\)"):
        changed.train(resume_from_checkpoint=str(checkpoint))  # the checkpoint's target was kept, silently
    resumed = make_trainer(tmp_path / "b", gpt2_tokenizer, **overrides)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 4 and resumed.state.episode == 32
    assert [h["step"] for h in resumed.state.log_history if "objective/kl" in h] == [1, 2, 3, 4]
    assert resumed.kl_ctl.value == pytest.approx(full.kl_ctl.value, rel=1e-12)
    for key in ("objective/kl", "objective/kl_coef", "objective/scores", "loss/policy_avg"):
        assert logged(resumed, key) == pytest.approx(logged(full, key), rel=1e-5, abs=1e-6), key
    full_params = dict(full.model.named_parameters())
    for name, value in resumed.model.named_parameters():
        assert torch.allclose(value, full_params[name], atol=1e-6), name


def test_non_finite_reward_stops_training_and_names_the_step(tmp_path, gpt2_tokenizer):
    calls = []

    def flaky_reward(queries, responses):
        calls.append(1)
        scores = torch.ones(len(responses))
        if len(calls) == 2:
            scores[3] = float("nan")
        return scores

    trainer = make_trainer(tmp_path, gpt2_tokenizer, reward=flaky_reward)
    with pytest.raises(NonFiniteError, match=r"step 2: non-finite .*reward scores.*rows \[3\]") as err:
        trainer.train()
    assert isinstance(err.value, FloatingPointError) and err.value.step == 2
    assert trainer.state.global_step == 1
    # the run is marked failed for the exit hook (a script that catches this and exits must not wait at its barrier
    # for ranks inside a collective); a later run that finishes clears it
    from hf_prefs.trainers import launch

    assert launch._EXIT["failed"] is True
    make_trainer(tmp_path, gpt2_tokenizer, total_episodes=8).train()
    assert launch._EXIT["failed"] is False
    # so is a failure caught outside train(): generate_completions' and evaluate_policy's collectives (one rank's
    # caught error, then sys.exit(1), hung both processes at the exit barrier)
    from hf_prefs import evaluate_policy

    def broken(queries, responses):
        raise ValueError("reward service down")

    evaluating = PPOTrainer(make_policy(), broken, make_config(tmp_path), Dataset.from_dict({"query": QUERIES}),
                            processing_class=gpt2_tokenizer, eval_dataset=Dataset.from_dict({"query": QUERIES}))
    for call in (evaluating.generate_completions,
                 lambda: evaluate_policy(make_policy(), gpt2_tokenizer, QUERIES, reward_fn=broken, response_length=2)):
        with pytest.raises(ValueError, match="reward service down"):
            call()
        assert launch._EXIT["failed"] is True
        launch._EXIT["failed"] = False


def test_non_finite_logits_stop_training(tmp_path, gpt2_tokenizer):
    policy = make_policy()
    policy.lm_head.register_forward_hook(lambda _m, _i, out: out * float("nan"))
    trainer = make_trainer(tmp_path, gpt2_tokenizer, model=policy)
    with pytest.raises(NonFiniteError, match="step 1: .*logits"):
        trainer.train()


def test_non_finite_ppo_loss_names_what_went_non_finite(tmp_path, gpt2_tokenizer):
    # the shape of a failure seen on a GPU (bf16, full fine-tuning): a finite rollout, then a NaN loss in the first
    # PPO micro-batch; the error says which of the loss's inputs is non-finite
    policy = make_policy()
    policy.lm_head.register_forward_hook(lambda _m, _i, out: out * float("nan") if torch.is_grad_enabled() else out)
    trainer = make_trainer(tmp_path, gpt2_tokenizer, model=policy)
    with pytest.raises(NonFiniteError, match=r"step 1: .*the PPO loss \(non-finite: the forward's log-probabilities, "
                                             r"policy loss\)"):
        trainer.train()


@pytest.mark.parametrize("max_grad_norm", [0.0, 1.0])  # each gradient checked / the clipped norm read
def test_non_finite_gradients_stop_before_the_optimizer_step(tmp_path, gpt2_tokenizer, max_grad_norm):
    # a finite loss whose backward turns NaN (as a fused attention kernel's backward can): the step is not taken,
    # so no weight is written with NaN, and the error names the parameters
    policy = make_policy()
    policy.lm_head.weight.register_hook(lambda grad: grad * float("nan"))
    trainer = make_trainer(tmp_path, gpt2_tokenizer, model=policy, max_grad_norm=max_grad_norm)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    with pytest.raises(NonFiniteError, match=r"step 1: .*the gradients \(1 parameters, first: policy\.transformer\.wte\.weight\); "
                                             r"stopped before the optimizer step"):
        trainer.train()
    for name, p in trainer.model.named_parameters():
        assert torch.equal(p.detach(), before[name]), name


def test_deepspeed_step_check_reads_what_the_engine_did(tmp_path, gpt2_tokenizer):
    """Under DeepSpeed the engine steps inside the backward: a skipped step or an inf/NaN global norm stops PPO, except
    where DeepSpeed scales an fp16 loss (skips are its loss scaler's routine); a norm it does not report passes."""
    from types import SimpleNamespace

    trainer = make_trainer(tmp_path, gpt2_tokenizer)

    def engine(applied=True, norm=0.5, fp16=False, autocast16=False):
        return SimpleNamespace(was_step_applied=lambda: applied, get_global_grad_norm=lambda: norm,
                               fp16_enabled=lambda: fp16, torch_autocast_enabled=lambda: autocast16,
                               torch_autocast_dtype=lambda: torch.float16)

    for fine in (engine(), engine(norm=None), engine(norm=torch.tensor(2.0)), engine(applied=False, fp16=True),
                 engine(norm=float("inf"), autocast16=True)):
        trainer._check_deepspeed_step(fine)
    with pytest.raises(NonFiniteError, match=r"DeepSpeed skipped its optimizer step; global gradient norm None"):
        trainer._check_deepspeed_step(engine(applied=False, norm=None))
    with pytest.raises(NonFiniteError, match=r"DeepSpeed applied its optimizer step; global gradient norm inf"):
        trainer._check_deepspeed_step(engine(norm=torch.tensor(float("inf"))))
    with pytest.raises(NonFiniteError, match="global gradient norm -1.0"):
        trainer._check_deepspeed_step(engine(norm=-1.0))


def test_a_second_train_call_after_the_schedule_ended_is_refused_and_a_constant_schedule_trains_on(tmp_path, gpt2_tokenizer):
    """TRL 1.12 (and this trainer before) ran a second ``train()`` in full at learning rate 0: every batch sampled and
    scored, the policy unchanged, the first call's log history replaced."""
    trainer = make_trainer(tmp_path, gpt2_tokenizer, total_episodes=8)
    trainer.train()
    history = list(trainer.state.log_history)
    with pytest.raises(RuntimeError, match=r"already ran this trainer's 1 updates and its learning-rate schedule \(linear\) has reached 0"):
        trainer.train()
    assert trainer.state.log_history == history
    constant = make_trainer(tmp_path, gpt2_tokenizer, total_episodes=8, lr_scheduler_type="constant")
    constant.train()
    before = [p.detach().clone() for p in constant.model.parameters() if p.requires_grad]
    constant.train()
    after = [p.detach() for p in constant.model.parameters() if p.requires_grad]
    assert any(not torch.equal(b, a) for b, a in zip(before, after))


def test_saved_adapter_folders_given_as_paths_train_and_a_peft_value_model_reloads(tmp_path, gpt2_tokenizer, tiny_base):
    """A LoRA policy folder passed as ``model=`` was loaded by transformers' own adapter support, frozen: PPO trained
    nothing (KL 0 throughout) and save_model failed; a LoRA value model was saved but did not reload (its base was
    built with 2 labels), and one passed as a path trained only the head."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from hf_prefs.models.value_head import PolicyWithValueHead

    def lora(task: str) -> LoraConfig:
        return LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], task_type=task)

    data = Dataset.from_dict({"query": QUERIES})
    value = get_peft_model(AutoModelForSequenceClassification.from_pretrained(tiny_base, num_labels=1), lora("SEQ_CLS"))
    first = PPOTrainer(AutoModelForCausalLM.from_pretrained(tiny_base), length_reward,
                       make_config(tmp_path / "one", total_episodes=8), data, processing_class=gpt2_tokenizer,
                       peft_config=lora("CAUSAL_LM"), value_model=value)
    first.train()
    first.save_model(str(tmp_path / "saved"))
    reloaded = PolicyWithValueHead.from_pretrained(tmp_path / "saved")
    ids = torch.tensor([gpt2_tokenizer.encode("The sun rose over the hills")])
    with torch.no_grad():
        assert torch.equal(reloaded.value_model(input_ids=ids).logits, first.model.value_model(input_ids=ids).logits)
    again = PPOTrainer(str(tmp_path / "saved"), length_reward, make_config(tmp_path / "two", total_episodes=8), data,
                       processing_class=gpt2_tokenizer, value_model=str(tmp_path / "saved" / "value_model"))
    for module in (again.model.policy, again.model.value_model):
        assert any("lora_" in n and p.requires_grad for n, p in module.named_parameters())
    before = {n: p.detach().clone() for n, p in again.model.policy.named_parameters() if p.requires_grad}
    again.train()
    assert any(not torch.equal(before[n], p) for n, p in again.model.policy.named_parameters() if n in before)
    again.save_model(str(tmp_path / "saved2"))


def test_a_policy_adapter_named_otherwise_than_default_reloads_with_its_value_head(tmp_path, gpt2_tokenizer, tiny_base):
    """peft saves an adapter not named "default" in a sub-folder of that name: from_pretrained of the saved folder
    failed ("Unrecognized model"), and of the sub-folder gave a zero value head."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from hf_prefs.models.value_head import PolicyWithValueHead

    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_base),
                            LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], task_type="CAUSAL_LM"), adapter_name="pol")
    trainer = PPOTrainer(policy, length_reward, make_config(tmp_path, total_episodes=8),
                         Dataset.from_dict({"query": QUERIES}), processing_class=gpt2_tokenizer)
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    reloaded = PolicyWithValueHead.from_pretrained(tmp_path / "saved").eval()
    ids = torch.tensor([gpt2_tokenizer.encode("The sun rose over the hills")])
    trainer.model.eval()
    with torch.no_grad():
        ours, theirs = trainer.model(input_ids=ids), reloaded(input_ids=ids)
    assert torch.allclose(ours.logits, theirs.logits, atol=1e-5) and torch.equal(ours.values, theirs.values)
    assert ours.values.abs().sum() > 0


def test_save_strategy_epoch_saves_where_a_pass_over_the_queries_ends(tmp_path, gpt2_tokenizer):
    """``save_strategy="epoch"`` wrote no checkpoint (TRL 1.12's PPO never ended an epoch for its callbacks): 10
    queries, 8 episodes per update, 3 updates — passes end in updates 2 (16 episodes) and 3 (24), not in 1 (8)."""
    trainer = make_trainer(tmp_path, gpt2_tokenizer, save_strategy="epoch", total_episodes=24)
    assert len(trainer.train_dataset) == 10 and trainer.args.batch_size == 8
    trainer.train()
    assert sorted(os.listdir(tmp_path / "out")) == ["README.md", "checkpoint-2", "checkpoint-3"]


def test_saves_policy_value_head_and_model_card(tmp_path, gpt2_tokenizer):
    trainer = make_trainer(tmp_path, gpt2_tokenizer, save_strategy="steps", save_steps=2)
    trainer.train()
    head = trainer.model.v_head.summary.weight.detach().clone()
    assert head.abs().sum() > 0  # the zero-initialised value head was trained
    checkpoint = tmp_path / "out" / "checkpoint-2"
    assert {"model.safetensors", "value_head.safetensors", "optimizer.pt", "scheduler.pt", "ppo_state.json"} <= set(
        os.listdir(checkpoint)
    )
    card = (tmp_path / "out" / "README.md").read_text()
    assert "hf-prefs" in card and "ppo" in card and "ziegler2019finetuning" in card
    # hf_prefs' card, not TRL's generic one (a chat pipeline of model "None"): the run's β and sampling settings
    beta = f"| β final | {trainer.kl_ctl.value:.6g} |"
    assert "None" not in card and beta in card and "temperature=0.7, top_k=0" in card and "`length_reward`" in card
    assert "with r the reward as given: not\nnormalized" in card and "standard deviation 1" not in card  # a function

    final = tmp_path / "final"
    trainer.save_model(str(final))
    card = (final / "README.md").read_text()  # written with the saved policy; its loading code runs as written
    scope: dict = {}
    for block in card.split("## How to load", 1)[1].split("```python\n")[1:]:
        exec(block.split("```", 1)[0].replace('"./final"', repr(str(final))), scope)
    with torch.no_grad():
        ids = torch.tensor([[464, 3797, 318]])
        assert torch.allclose(scope["model"](ids).logits, trainer.model.policy(ids).logits, atol=1e-6)
    reloaded = PolicyWithValueHead.from_pretrained(final)
    assert torch.equal(reloaded.v_head.summary.weight, head)
    plain = AutoModelForCausalLM.from_pretrained(final)  # the policy alone loads as an ordinary causal LM
    for name, value in plain.state_dict().items():
        assert torch.equal(value, trainer.model.policy.state_dict()[name]), name


def test_separate_value_model_is_initialised_from_the_reward_model(tmp_path, gpt2_tokenizer):
    torch.manual_seed(1)
    reward_model = GPT2ForSequenceClassification(tiny_gpt2_config(num_labels=1, pad_token_id=50256)).eval()
    trainer = make_trainer(tmp_path, gpt2_tokenizer, reward=reward_model, value_model="separate", save_strategy="steps", save_steps=2)
    value_model = trainer.model.value_model
    assert value_model is not reward_model and trainer.model.v_head is None
    for (name, a), (_, b) in zip(value_model.named_parameters(), reward_model.named_parameters()):
        assert torch.equal(a, b), name

    rollout = trainer.make_rollout(*trainer.sample_queries(0))
    expected_scores = trl_get_reward(reward_model, rollout.query_ids, rollout.query_mask, rollout.response_ids,
                                     rollout.response_lengths, pad_token_id_of(gpt2_tokenizer))  # TRL's reading
    assert torch.allclose(rollout.raw_scores, expected_scores, atol=1e-5)
    ids = torch.cat([rollout.query_ids, rollout.response_ids], 1)
    mask = torch.cat([rollout.query_mask, torch.ones_like(rollout.response_ids)], 1)
    with torch.no_grad():
        head = per_token_scores(reward_model, input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0))
    lr = rollout.response_ids.shape[1]
    assert torch.allclose(rollout.values, head[:, -lr - 1 : -1], atol=1e-5)  # V(s_t) read before token t

    trainer.train()
    assert os.path.isdir(tmp_path / "out" / "checkpoint-2" / "value_model")
    assert any(not torch.equal(a, b) for a, b in zip(value_model.parameters(), reward_model.parameters()))


def test_policy_value_model_is_the_policy_trunk_with_a_zero_head_trained_apart(tmp_path, gpt2_tokenizer):
    policy = make_policy(3)
    start = {k: v.clone() for k, v in policy.transformer.state_dict().items()}
    trainer = make_trainer(tmp_path, gpt2_tokenizer, model=policy, value_model="policy", save_strategy="steps",
                           save_steps=2)
    value_model = trainer.model.value_model
    assert isinstance(value_model, GPT2ForSequenceClassification) and trainer.model.v_head is None
    for name, value in value_model.transformer.state_dict().items():
        assert torch.equal(value, start[name]), name
    assert not set(map(id, value_model.parameters())) & set(map(id, policy.parameters()))  # nothing shared
    assert torch.count_nonzero(value_model.score.weight) == 0

    rollout = trainer.make_rollout(*trainer.sample_queries(0))
    assert torch.count_nonzero(rollout.values) == 0  # V = 0 everywhere before the first update, as the shared head

    trainer.train()
    trained = value_model.transformer.state_dict()
    assert any(not torch.equal(trained[k], start[k]) for k in start)  # the value model trains its own trunk
    assert any(not torch.equal(trained[k], v) for k, v in policy.transformer.state_dict().items())
    assert torch.count_nonzero(value_model.score.weight) > 0
    reloaded = PolicyWithValueHead.from_pretrained(tmp_path / "out" / "checkpoint-2")
    for name, value in reloaded.value_model.state_dict().items():
        assert torch.equal(value, value_model.state_dict()[name]), name


def test_policy_value_model_of_a_lora_policy_reads_the_adapted_trunk(gpt2_tokenizer):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    policy = get_peft_model(make_policy(), LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True))
    for name, param in policy.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)  # an adapter that changes the trunk (B = 0 at init would not)
    value_model = value_model_from_policy(policy)
    ids = torch.tensor([gpt2_tokenizer.encode("It is a truth universally acknowledged")])
    with torch.no_grad():
        adapted = policy(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        with policy.disable_adapter():
            base = policy(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        own = value_model.transformer(input_ids=ids).last_hidden_state
    assert torch.allclose(own, adapted, atol=1e-5) and not torch.allclose(own, base, atol=1e-3)
    assert hasattr(policy, "peft_config") and any("lora_B" in n for n, _ in policy.named_parameters())  # unmerged


def test_policy_value_model_of_a_rotary_policy_runs_as_its_trunk(gpt2_tokenizer):
    """Llama's rotary tables are buffers outside the state dict: the value model (built on the meta device around
    the copied trunk) has them, every tensor is real, and its trunk computes the policy's hidden states."""
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    torch.manual_seed(0)
    policy = LlamaForCausalLM(LlamaConfig(vocab_size=50257, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=2, num_key_value_heads=1, eos_token_id=50256))
    value_model = value_model_from_policy(policy)
    assert isinstance(value_model, LlamaForSequenceClassification) and value_model.config.num_labels == 1
    assert not [n for n, t in [*value_model.named_parameters(), *value_model.named_buffers()] if t.is_meta]
    assert value_model.model.config is value_model.config and policy.config.num_labels == 2  # the policy's untouched
    ids = torch.tensor([gpt2_tokenizer.encode("It is a truth universally acknowledged")])
    with torch.no_grad():
        expected = policy(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        assert torch.equal(value_model.model(input_ids=ids).last_hidden_state, expected)
        assert torch.count_nonzero(value_model(input_ids=ids).logits) == 0
    assert not set(map(id, value_model.parameters())) & set(map(id, policy.parameters()))


def test_policy_value_model_refuses_a_trunk_it_cannot_find():
    policy = make_policy()
    policy.base_model_prefix = "no_such_trunk"  # the copy's trunk attribute cannot be found
    with pytest.raises(ValueError, match="value_model 'policy': cannot build .* GPT2LMHeadModel"):
        value_model_from_policy(policy)
    quantized = make_policy()
    layer = quantized.transformer.h[1].mlp.c_fc
    layer.weight = torch.nn.Parameter(layer.weight.detach().to(torch.int8), requires_grad=False)  # as a 4/8-bit base
    with pytest.raises(ValueError, match=r"the policy is quantized \('transformer.h.1.mlp.c_fc.weight' is torch.int8\).*'shared'"):
        value_model_from_policy(quantized)

    class Quantizer:  # what transformers leaves on a model loaded with a quantization_config (GPTQ, AWQ, FP8, ...)
        def __init__(self, method):
            self.quantization_config = type("Config", (), {"quant_method": method})()

    gptq = make_policy()
    gptq.hf_quantizer = Quantizer("gptq")
    with pytest.raises(ValueError, match=r"the policy is quantized \(transformers quantizer Quantizer \(gptq\)\)"):
        value_model_from_policy(gptq)
    gguf = make_policy()
    gguf.hf_quantizer = Quantizer("gguf")  # GGUF weights are plain floats once loaded: trainable
    assert isinstance(value_model_from_policy(gguf), GPT2ForSequenceClassification)


def test_bad_config_and_data_raise_clear_errors(tmp_path, gpt2_tokenizer, caplog):
    with pytest.raises(ValueError, match="needs a reward model to copy .*value_model='policy'"):
        make_trainer(tmp_path, gpt2_tokenizer, value_model="separate")  # a callable reward has no trunk to copy
    with pytest.raises(ValueError, match="value_model must be one of"):
        make_config(tmp_path, value_model="critic")
    with pytest.raises(ValueError, match=r"kl_horizon must be > 0 and > batch size / 5 = 1.6 \(episodes per update 8\)"):
        make_trainer(tmp_path, gpt2_tokenizer, kl_horizon=1)  # beta went negative after the first update's rollout
    with pytest.raises(ValueError, match="truncate_token='the end'"):
        make_trainer(tmp_path, gpt2_tokenizer, truncate_token="the end")
    with pytest.raises(ValueError, match="truncate_after"):
        make_config(tmp_path, truncate_after=6)
    with pytest.raises(ValueError, match="stop_token"):
        make_config(tmp_path, stop_token="eos", stop_token_id=5)
    with pytest.raises(ValueError, match=r"`query` .*rows \[1\]"):
        PPOTrainer(make_policy(), length_reward, make_config(tmp_path), Dataset.from_dict({"query": ["a", ""]}),
                   processing_class=gpt2_tokenizer)
    with pytest.raises(ValueError, match=r"train_dataset row 1: input_ids holds token id 50257, outside the policy's embedding of 50257"):
        PPOTrainer(make_policy(), length_reward, make_config(tmp_path),  # TRL's [PAD] (added to the tokenizer only)
                   Dataset.from_dict({"input_ids": [[464, 4252], [50257, 464, 4252]]}), processing_class=gpt2_tokenizer)
    small = lambda **kw: tiny_gpt2_config(vocab_size=1000, **kw)  # noqa: E731  (a model of another tokenizer)
    with pytest.raises(ValueError, match=r"^reward_model: its input embedding holds 1000 token ids, but its tokenizer"):
        make_trainer(tmp_path, gpt2_tokenizer, reward=GPT2ForSequenceClassification(small(num_labels=1)))
    with pytest.raises(ValueError, match=r"^value_model: its input embedding holds 1000"):
        PPOTrainer(make_policy(), length_reward, make_config(tmp_path), Dataset.from_dict({"query": ["a"]}),
                   processing_class=gpt2_tokenizer, value_model=GPT2ForSequenceClassification(small(num_labels=1)))
    with pytest.raises(ValueError, match=r"^model \(the policy\): its input embedding holds 1000"):
        PPOTrainer(GPT2LMHeadModel(small()), length_reward, make_config(tmp_path), Dataset.from_dict({"query": ["a"]}),
                   processing_class=gpt2_tokenizer)
    long_query = Dataset.from_dict({"query": ["Hello there.", "word " * 40]})  # 41 tokens: the policy has 256 positions
    for role in ("reward_model", "value_model"):  # they read the policy's ids: the first update failed with an IndexError
        short = GPT2ForSequenceClassification(tiny_gpt2_config(n_positions=32, num_labels=1))
        models = {"reward_model": short} if role == "reward_model" else {"reward_model": length_reward, "value_model": short}
        with pytest.raises(ValueError, match=rf"train_dataset row 1: query of 41 tokens \+ response_length 6 exceeds the {role}'s 32 positions"):
            PPOTrainer(make_policy(), args=make_config(tmp_path), train_dataset=long_query, processing_class=gpt2_tokenizer,
                       **models)
    with pytest.raises(FileNotFoundError, match=r"^reward_model: no file or folder at './rm_missing'"):
        make_trainer(tmp_path, gpt2_tokenizer, reward="./rm_missing")
    with pytest.raises(FileNotFoundError, match=r"^reward_model: no file or folder at '~/no_such_rm_here'"):
        make_trainer(tmp_path, gpt2_tokenizer, reward="~/no_such_rm_here")
    with pytest.raises(FileNotFoundError, match=r"^model \(the policy\): no file or folder at '/no/such/sft'"):
        PPOTrainer(args=make_config(tmp_path, sft_model_path="/no/such/sft"), processing_class=gpt2_tokenizer,
                   reward_model=length_reward, train_dataset=Dataset.from_dict({"query": ["a"]}))
    with caplog.at_level(logging.WARNING, logger="hf_prefs.trainers.ppo_trainer"):  # TRL's rule, now said
        assert make_trainer(tmp_path, gpt2_tokenizer, total_episodes=12).args.num_total_batches == 2  # 16 episodes
        assert "total_episodes" not in caplog.text
        assert make_trainer(tmp_path, gpt2_tokenizer, total_episodes=3).args.num_total_batches == 1
    assert "total_episodes 3 is fewer than one batch of 8 episodes" in caplog.text and "1 update trains 8 episodes" in caplog.text
    caplog.clear()
    eos = gpt2_tokenizer.eos_token
    both = {"query": ["The sun rose", "Hello there", "A  walk"],  # TRL's input_ids beside a query for the reward
            "input_ids": gpt2_tokenizer(["The sun rose" + eos, "Goodbye friend", "A walk"])["input_ids"]}
    with caplog.at_level(logging.WARNING, logger="hf_prefs.trainers.ppo_data"):
        trainer = PPOTrainer(make_policy(), length_reward, make_config(tmp_path), Dataset.from_dict(both),
                             processing_class=gpt2_tokenizer)
    assert "train_dataset: rows [1] (1 of the first 3) have `input_ids` whose text is not their `query`" in caplog.text
    assert trainer.train_dataset["query"] == both["query"] and trainer.train_dataset["input_ids"] == both["input_ids"]
    with pytest.raises(ValueError, match="has \\['text'\\]"):
        PPOTrainer(make_policy(), length_reward, make_config(tmp_path), Dataset.from_dict({"text": ["a"]}),
                   processing_class=gpt2_tokenizer)
    trainer = make_trainer(tmp_path, gpt2_tokenizer, reward=lambda q, r: torch.zeros(len(r), 2))
    with pytest.raises(ValueError, match=r"returned shape \(8, 2\); expected one float score per response"):
        trainer.train()
    for bad, shown in ((lambda q, r: None, "NoneType (None)"), (lambda q, r: ["x"] * len(r), "str 'x' at row 0")):
        with pytest.raises(ValueError, match=r"the reward function .*<lambda> returned " + re.escape(shown) +
                           ".*one float score per response"):
            make_trainer(tmp_path, gpt2_tokenizer, reward=bad).train()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hf_prefs.trainers.ppo_trainer"):  # TRL ignored it silently
        trainer = PPOTrainer(make_policy(), length_reward, make_config(tmp_path, eval_strategy="steps", eval_steps=1),
                             Dataset.from_dict({"query": ["a b"] * 8}), processing_class=gpt2_tokenizer,
                             eval_dataset=Dataset.from_dict({"query": ["c d"] * 2}))
    assert "eval_strategy='steps': PPOTrainer runs no evaluation loop" in caplog.text
    assert "max_steps" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hf_prefs.trainers.ppo_trainer"):  # TRL ignored it silently too
        PPOTrainer(make_policy(), length_reward, make_config(tmp_path, max_steps=1), Dataset.from_dict({"query": ["a b"] * 8}),
                   processing_class=gpt2_tokenizer)
    assert "max_steps=1: PPOTrainer runs total_episodes" in caplog.text
    with pytest.raises(NotImplementedError, match="generate_completions"):  # was a padding-token error
        trainer.evaluate()


def test_val_ratio_var_is_trls_variance_of_the_micro_batches_mean_ratios(tmp_path, gpt2_tokenizer):
    """TRL 1.12 logged ``val/ratio_var``: the (unbiased) variance over the update's micro-batches of their mean
    probability ratio pi/pi_old (4 epochs x 2 micro-batches here)."""
    trainer = make_trainer(tmp_path, gpt2_tokenizer, total_episodes=16)
    seen, log_step = [], trainer.log_step

    def spy(rollout, train_stats, timings, learning_rate):
        seen.append(train_stats["val/ratio"].detach().double().clone())
        return log_step(rollout, train_stats, timings, learning_rate)

    trainer.log_step = spy
    trainer.train()
    logs = [h for h in trainer.state.log_history if "val/ratio_var" in h]
    assert len(logs) == len(seen) == 2
    for h, ratios in zip(logs, seen):
        assert ratios.numel() == 8 and h["val/ratio_var"] == pytest.approx(ratios.var().item(), rel=1e-4)
    assert all(h["val/ratio_var"] > 0 for h in logs)  # the first epoch's ratios are 1, the later ones not
    one = make_trainer(tmp_path, gpt2_tokenizer, total_episodes=4, per_device_train_batch_size=4,
                       gradient_accumulation_steps=1, num_ppo_epochs=1)
    with warnings.catch_warnings():  # one micro-batch: NaN, as TRL's, without torch's "degrees of freedom" warning
        warnings.filterwarnings("error", message=".*degrees of freedom")
        one.train()
    assert [math.isnan(h["val/ratio_var"]) for h in one.state.log_history if "val/ratio_var" in h] == [True]


@pytest.mark.parametrize("stop_token", ["eos", None])
def test_trl_stop_token_and_missing_eos_penalty(tmp_path, gpt2_tokenizer, stop_token):
    """With ``stop_token="eos"`` TRL's episode ends at the first EOS; without a stop token TRL 1.12 generated past
    EOS (it set the policy's ``generation_config.eos_token_id`` to None), so the episode is the whole response, as
    here. Either way a response without EOS costs ``missing_eos_penalty``, subtracted."""
    with pytest.raises(ValueError, match=r"truncate_after: must lie in \[0, response_length=6\)"):  # at the config
        make_config(tmp_path, stop_token=stop_token, truncate_token=None, missing_eos_penalty=2.0, truncate_after=6)
    policy = make_policy()
    boost_token(policy, gpt2_tokenizer.eos_token_id, 6.0)
    trainer = make_trainer(
        tmp_path, gpt2_tokenizer, model=policy, stop_token=stop_token, truncate_token=None, truncate_after=0,
        missing_eos_penalty=2.0, total_episodes=8,
    )
    eos, stops = gpt2_tokenizer.eos_token_id, stop_token is not None
    assert trainer.rollout_spec.mask_after_cut == stops
    assert trainer.stop_token_id == trainer.rollout_spec.truncate_token_id == (eos if stops else None)  # TRL's
    rollout = trainer.make_rollout(*trainer.sample_queries(0))
    assert rollout.response_ids.shape[1] == 6  # generation does not stop at EOS
    rows = [rollout.response_ids[i].tolist() for i in range(8)]
    assert any(eos in row[:-1] for row in rows) and any(eos not in row for row in rows)  # both cases are met
    for i, row in enumerate(rows):
        has_eos = eos in row
        assert int(rollout.response_lengths[i]) == (row.index(eos) + 1 if has_eos and stops else 6)
        expected = rollout.raw_scores[i].item() - (0.0 if has_eos else 2.0)  # TRL: subtract, not replace
        assert rollout.scores[i].item() == pytest.approx(expected)


def eos_policy_and_padded_reward(tokenizer):
    """A policy that samples EOS often, and a reward model whose tokenizer (returned) has a pad of its own (``[PAD]``,
    as TRL's scripts add): TRL 1.12 read such a model at the EOS."""
    import copy

    policy = make_policy()
    boost_token(policy, tokenizer.eos_token_id, 6.0)
    padded = copy.deepcopy(tokenizer)
    padded.add_special_tokens({"pad_token": "[PAD]"})
    torch.manual_seed(3)
    reward = GPT2ForSequenceClassification(tiny_gpt2_config(num_labels=1, vocab_size=len(padded))).eval()
    reward.config.pad_token_id = padded.pad_token_id
    return policy, reward, padded


def trl_get_reward(model, query_ids, query_mask, response_ids, lengths, pad_id) -> torch.Tensor:
    """TRL 1.12's PPO scoring written out (its ``truncate_response`` and ``get_reward``): the query padded with the
    tokenizer's pad, the response after its cut filled with it, attention on ``ids != pad``, positions by the exclusive
    cumsum, pad ids fed as 0, the backbone's last hidden state through the score head, read at the response's first
    pad - 1."""
    query = query_ids.masked_fill(query_mask == 0, pad_id)
    kept = torch.arange(response_ids.shape[1])[None] < lengths[:, None]
    post = response_ids.masked_fill(~kept, pad_id)
    ids = torch.cat([query, post], 1)
    mask = ids != pad_id
    with torch.no_grad():
        hidden = getattr(model, model.base_model_prefix)(input_ids=ids.masked_fill(~mask, 0), attention_mask=mask.long(),
                                                         position_ids=mask.long().cumsum(1) - mask.long()).last_hidden_state
        logits = model.score(hidden)[..., 0]  # (B, L)
    is_pad = post == pad_id
    first = torch.where(is_pad.any(1), is_pad.int().argmax(1), torch.full_like(lengths, post.shape[1]))
    return logits[torch.arange(len(ids)), query.shape[1] + first - 1]


def test_a_reward_model_from_elsewhere_reads_the_sampled_ids_as_trl_did(tmp_path, gpt2_tokenizer, monkeypatch):
    """TRL 1.12 fed a reward model the query's and the response's token ids (one tokenizer for every model). hf_prefs
    decoded the response and tokenized query + text again, which splits a sampled non-canonical pair (" m" + "at")
    as " mat" and a query built from pieces otherwise than its dataset ids, and, with TRL's "[PAD]" (outside the
    embedding) and ``stop_token="eos"``, read a response that ended at EOS at the token before it. A reward model from
    elsewhere sharing the policy's tokenizer now reads the ids as TRL's ``get_reward`` (written out here) did: with
    "[PAD]" at the EOS, with pad = EOS the token before it; ``normalize_reward`` reads rho's samples the same way."""
    import copy

    import hf_prefs.trainers.ppo_trainer as module

    eos = gpt2_tokenizer.eos_token_id
    policy, reward, _ = eos_policy_and_padded_reward(gpt2_tokenizer)
    reward = GPT2ForSequenceClassification(tiny_gpt2_config(num_labels=1)).eval()  # TRL's: no [PAD] row
    padded = copy.deepcopy(gpt2_tokenizer)
    padded.add_special_tokens({"pad_token": "[PAD]"})
    pieces = [gpt2_tokenizer(" The cat")["input_ids"] + gpt2_tokenizer("s sat")["input_ids"]] * 8  # not " cats"
    for tokenizer, stop in ((padded, "eos"), (gpt2_tokenizer, "eos"), (padded, None)):
        trainer = PPOTrainer(policy, reward, make_config(tmp_path, stop_token=stop, truncate_after=0, total_episodes=8,
                                                         truncate_token=None),
                             Dataset.from_dict({"input_ids": pieces}), processing_class=tokenizer)
        assert trainer.reward_reads_token_ids()
        rollout = trainer.make_rollout(*trainer.sample_queries(0))
        expected = trl_get_reward(reward, rollout.query_ids, rollout.query_mask, rollout.response_ids,
                                  rollout.response_lengths, pad_token_id_of(tokenizer))
        assert torch.allclose(rollout.raw_scores, expected, atol=1e-5)
        ends = [eos in row[:n].tolist() for row, n in zip(rollout.response_ids, rollout.response_lengths)]
        assert any(ends) and not all(ends)
        texts = score_texts(reward, tokenizer, rollout.query_texts, rollout.response_texts)
        assert not torch.allclose(rollout.raw_scores, texts, atol=1e-3)  # the text reading is another one
    seen = []
    real = module.score_token_ids
    monkeypatch.setattr(module, "score_token_ids", lambda *a, **k: seen.append(a) or real(*a, **k))
    config = make_config(tmp_path, stop_token="eos", truncate_after=0, total_episodes=8, truncate_token=None,
                         normalize_reward=True, normalize_samples=16)
    trainer = PPOTrainer(policy, copy.deepcopy(reward), config, Dataset.from_dict({"input_ids": pieces}),
                         processing_class=padded)
    gain, bias = trainer.normalize_reward_model()  # rho's 16 samples, cut at the EOS, read as PPO reads them
    _, query_ids, query_mask, responses, lengths, pad = seen[-1]
    assert len(responses) == 16 and pad == padded.pad_token_id and int(lengths.min()) < responses.shape[1]
    normalized = gain * trl_get_reward(reward, query_ids, query_mask, responses, lengths, pad) + bias
    assert normalized.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert normalized.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    # a reward model trained here, or one with a tokenizer of its own, still reads text
    trainer = PPOTrainer(policy, reward, make_config(tmp_path, total_episodes=8), Dataset.from_dict({"input_ids": pieces}),
                         processing_class=gpt2_tokenizer, reward_processing_class=padded)
    assert not trainer.reward_reads_token_ids()
    trained_here = copy.deepcopy(reward)
    set_response_suffix(trained_here, None)
    trainer = PPOTrainer(policy, trained_here, make_config(tmp_path, total_episodes=8),
                         Dataset.from_dict({"input_ids": pieces}), processing_class=gpt2_tokenizer)
    assert not trainer.reward_reads_token_ids()


def test_a_reward_model_reads_trls_stop_token_where_trl_read_it(tmp_path, gpt2_tokenizer):
    """TRL 1.12 scored the response's ids through the stop token, read at the last that is not the pad. With
    ``stop_token="eos"`` and a reward model whose pad is its own (``[PAD]``, as TRL's scripts add) that is the EOS —
    where a model trained by ``trl.RewardTrainer`` (it appends EOS) learned its reward; with pad = EOS, the token
    before it. hf_prefs decoded the EOS away and read the token before it in both cases. A reward model trained here
    (its reading stored by the reward trainers) is read as its labels' texts were, without the EOS."""
    import copy

    eos = gpt2_tokenizer.eos_token_id
    policy, reward, padded = eos_policy_and_padded_reward(gpt2_tokenizer)
    trained_here = copy.deepcopy(reward)  # its reading set by hf_prefs's reward trainers: as its labels' texts (no EOS)
    set_response_suffix(trained_here, None)
    normalized = copy.deepcopy(reward)  # a normalization alone (PPO's normalize_reward, say) leaves it TRL's
    set_reward_normalization(normalized, 1.0, 0.0)
    for model, tokenizer, reads_eos in ((reward, padded, True), (reward, gpt2_tokenizer, False),  # no pad: EOS pads
                                        (trained_here, padded, False), (normalized, padded, True)):
        trainer = PPOTrainer(policy, model, make_config(tmp_path, stop_token="eos", truncate_after=0, total_episodes=8),
                             Dataset.from_dict({"query": QUERIES * 2}), processing_class=gpt2_tokenizer,
                             reward_processing_class=tokenizer)
        rollout = trainer.make_rollout(*trainer.sample_queries(0))
        ends = [eos in row.tolist() for row in rollout.response_ids]
        assert any(ends) and not all(ends)
        for q, text, raw, end in zip(rollout.query_texts, rollout.response_texts, rollout.raw_scores, ends):
            assert "<|endoftext|>" not in text  # what the labeler and reward functions see is unchanged
            shown = text + ("<|endoftext|>" if end and reads_eos else "")
            assert raw.item() == pytest.approx(score_texts(model, tokenizer, [q], [shown]).item(), abs=1e-5)
            if end and reads_eos:  # the model's own forward on the text's tokens and the EOS id, at the EOS
                ids = torch.tensor([tokenizer(q + text, add_special_tokens=False)["input_ids"] + [eos]])
                with torch.no_grad():
                    assert raw.item() == pytest.approx(model(ids).logits[0, -1].item(), abs=1e-5)
                assert raw.item() != pytest.approx(score_texts(model, tokenizer, [q], [text]).item(), abs=1e-3)


def test_a_chat_reward_model_trained_here_reads_the_end_of_turn_it_was_trained_on(tmp_path, gpt2_tokenizer):
    """A reward model trained here on chat pairs saw every completion end with the template's end of turn (ChatML's
    ``<|im_end|>\\n``; here ``<|endoftext|>\\n``). Under TRL's stop token a response that ended at that token is read
    with the end of turn after it, as trained; one that ran to its length (an unfinished turn) as it is. It was read
    at the response's last content token, a position it never learned at."""
    import copy

    from hf_prefs.models.reward_model import get_turn_end, set_turn_end

    policy = make_policy()
    eos = gpt2_tokenizer.eos_token_id
    boost_token(policy, eos, 6.0)
    torch.manual_seed(3)
    reward = GPT2ForSequenceClassification(tiny_gpt2_config(num_labels=1)).eval()
    set_response_suffix(reward, None)
    set_turn_end(reward, "<|endoftext|>\n")
    config = make_config(tmp_path, stop_token="eos", truncate_after=0, total_episodes=8)
    trainer = PPOTrainer(policy, reward, config, Dataset.from_dict({"query": QUERIES * 2}),
                         processing_class=gpt2_tokenizer)
    rollout = trainer.make_rollout(*trainer.sample_queries(0))
    ends = [eos in row.tolist() for row in rollout.response_ids]
    assert any(ends) and not all(ends) and get_turn_end(reward) == "<|endoftext|>\n"
    for q, text, raw, end in zip(rollout.query_texts, rollout.response_texts, rollout.raw_scores, ends):
        shown = text + ("<|endoftext|>\n" if end else "")
        assert raw.item() == pytest.approx(score_texts(reward, gpt2_tokenizer, [q], [shown]).item(), abs=1e-5)
        if end:
            assert raw.item() != pytest.approx(score_texts(reward, gpt2_tokenizer, [q], [text]).item(), abs=1e-3)
    # without TRL's stop token nothing ends a turn: the text as it is
    plain = PPOTrainer(policy, copy.deepcopy(reward), make_config(tmp_path, truncate_token=None, total_episodes=8),
                       Dataset.from_dict({"query": QUERIES * 2}), processing_class=gpt2_tokenizer)
    rollout = plain.make_rollout(*plain.sample_queries(0))
    for q, text, raw in zip(rollout.query_texts, rollout.response_texts, rollout.raw_scores):
        assert raw.item() == pytest.approx(score_texts(plain.reward_model, gpt2_tokenizer, [q], [text]).item(), abs=1e-5)


def test_normalize_reward_reads_rhos_responses_as_ppo_scores_them(tmp_path, gpt2_tokenizer, monkeypatch):
    """``normalize_reward`` fits the gain and bias on rho's samples: uncut without TRL's stop token (the paper), and
    under it cut at the stop token and read as PPO's scoring reads a reward model from elsewhere (the EOS text after
    the rows cut there) — it scored the uncut text past the EOS, which PPO never scores then."""
    import copy

    import hf_prefs.trainers.ppo_trainer as module

    seen: list[list[str]] = []
    queries: list[list[str]] = []
    real = module.normalize_reward_model

    def capture(model, tok, qs, texts, **kw):
        queries.append(list(qs))
        seen.append(list(texts))
        return real(model, tok, qs, texts, **kw)

    monkeypatch.setattr(module, "normalize_reward_model", capture)
    eos_text = gpt2_tokenizer.eos_token
    policy, reward, padded = eos_policy_and_padded_reward(gpt2_tokenizer)
    for stop_token in ("eos", None):
        config = make_config(tmp_path, stop_token=stop_token, truncate_token=None, truncate_after=0, total_episodes=8,
                             normalize_reward=True, normalize_samples=16)
        trainer = PPOTrainer(policy, copy.deepcopy(reward), config, Dataset.from_dict({"query": QUERIES * 2}),
                             processing_class=gpt2_tokenizer, reward_processing_class=padded)
        gain, bias = trainer.normalize_reward_model()
        texts = seen[-1]
        assert len(texts) == 16 and not all(eos_text in t for t in texts)
        if stop_token == "eos":  # cut at the EOS, which the reward model reads: TRL's scoring
            assert any(t.endswith(eos_text) for t in texts)
            assert all(t.count(eos_text) <= 1 and (eos_text not in t or t.endswith(eos_text)) for t in texts)
        else:  # the paper: the whole sample, its sampled EOS decoded away
            assert all(eos_text not in t for t in texts)
            assert sum(len(gpt2_tokenizer.encode(t)) for t in texts) > 16 * (config.response_length - 2)
        scores = score_texts(trainer.reward_model, padded, queries[-1], texts)  # the normalized reward on them
        assert (gain, bias) != (1.0, 0.0) and scores.mean().item() == pytest.approx(0.0, abs=1e-4)
        assert scores.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)


def test_learning_a_known_reward_with_kl_near_the_adaptive_target(tmp_path, gpt2_tokenizer):
    """Direct RL on a known reward: the number of " the" tokens in the 8-token response.

    The tiny random model would almost never sample " the" (p ~ 1/50257), so its logit is raised at init (a bias on
    the final layer norm, aligned with the token's embedding; the reference starts from the same model). The mean
    score must rise clearly while the adaptive controller keeps KL near its target.
    """
    policy = make_policy()
    with torch.no_grad():
        embedding = policy.transformer.wte.weight[THE]
        policy.transformer.ln_f.bias.copy_(6.0 * embedding / embedding.norm() ** 2)

    def count_the(queries, responses):
        return torch.tensor([float(gpt2_tokenizer.encode(r).count(THE)) for r in responses])

    target = 3.0
    trainer = make_trainer(
        tmp_path, gpt2_tokenizer, model=policy, reward=count_the, per_device_train_batch_size=16, total_episodes=32 * 12,
        response_length=8, truncate_token=None, kl_coef=1.0, kl_target=target, kl_horizon=200,
    )
    trainer.train()
    scores, kls, betas = logged(trainer, "objective/scores"), logged(trainer, "objective/kl"), logged(trainer, "objective/kl_coef")
    before, after = scores[0], sum(scores[-4:]) / 4
    print(f"learning test: mean score {before:.3f} (step 1) -> {after:.3f} (steps 9-12); KL last 4 {kls[-4:]}; "
          f"beta {betas[0]:.3f} -> {trainer.kl_ctl.value:.3f}")
    assert after > 2 * before and after > before + 0.5
    mean_kl = sum(kls[-4:]) / 4
    assert target / 3 < mean_kl < 2 * target
    # beta follows the paper's controller on the logged KLs, i.e. it moves so as to bring KL to the target
    for k in range(len(betas) - 1):
        error = min(max(kls[k] / target - 1, -0.2), 0.2)
        assert betas[k + 1] == pytest.approx(betas[k] * (1 + error * 32 / 200), rel=1e-9)
        assert (betas[k + 1] > betas[k]) == (kls[k] > target)


@pytest.mark.slow
def test_smollm2_lora_vader_on_austen_queries(tmp_path):
    """The paper's setup at small scale on a real pretrained Llama-family model: SmolLM2-135M + LoRA, Austen queries,
    VADER log-odds as the known sentiment reward, 24-token responses cut after '.' at index >= 16, adaptive beta
    (2 PPO epochs per update, not the paper's 4, to keep CI short)."""
    from peft import LoraConfig

    from hf_prefs.assets import load_smollm2_tokenizer, smollm2_path
    from hf_prefs.tasks.known_rewards import vader_log_odds
    from hf_prefs.tasks.books import austen_queries

    tokenizer = load_smollm2_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(smollm2_path(), dtype=torch.float32)
    dataset = austen_queries(tokenizer, n=64, min_tokens=16, max_tokens=32, seed=0)
    args = PPOConfig.paper(  # the paper's books settings: 24 tokens, "." after 16, adaptive beta from 0.15
        "books", output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, gradient_accumulation_steps=2,
        total_episodes=16 * 3, learning_rate=3e-4, report_to=[], save_strategy="steps", save_steps=3,
        num_sample_generations=1, disable_tqdm=True, seed=0, num_ppo_epochs=2,  # 2 of the paper's 4: CI time
    )
    trainer = PPOTrainer(
        model=model, reward_model=lambda q, r: torch.tensor(vader_log_odds(r)), args=args, train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, task_type="CAUSAL_LM"),
    )
    dot = tokenizer.encode(".", add_special_tokens=False)[0]
    assert trainer.rollout_spec.truncate_token_id == dot
    rollout = trainer.make_rollout(*trainer.sample_queries(0))
    assert (rollout.kl == 0).all() and rollout.response_ids.shape == (16, 24)
    for i in range(16):
        row = rollout.response_ids[i].tolist()
        assert bool(rollout.valid[i]) == (dot in row[16:])
        if not rollout.valid[i]:
            assert rollout.scores[i].item() == -1.0
    trainer.train()
    scores, kls, betas = logged(trainer, "objective/scores"), logged(trainer, "objective/kl"), logged(trainer, "objective/kl_coef")
    print(f"SmolLM2 + VADER: scores {scores}, penalized {logged(trainer, 'objective/penalized_frac')}, KL {kls}")
    assert kls[0] == 0.0 and len(scores) == 3
    for h in trainer.state.log_history:
        assert all(v == v for v in h.values() if isinstance(v, float)), h  # no NaN in any metric
    for k in range(2):
        assert betas[k + 1] == pytest.approx(betas[k] * (1 + min(max(kls[k] / 6.0 - 1, -0.2), 0.2) * 16 / 10_000))
    assert trainer.last_samples is not None and len(trainer.last_samples) == 8
    files = set(os.listdir(tmp_path / "out" / "checkpoint-3"))
    assert {"adapter_model.safetensors", "value_head.safetensors", "ppo_state.json"} <= files


def test_micro_batches_accumulate_to_the_minibatch_gradient(tmp_path, gpt2_tokenizer):
    """One minibatch of 8 episodes in 4 micro-batches of 2 (DDP no_sync between them; no private accelerate API)
    moves the parameters exactly like one micro-batch of 8: the same rollout, SGD, fp32, one PPO epoch."""
    trainers = []
    for per_device, accumulation in ((2, 4), (8, 1)):
        trainer = make_trainer(tmp_path / str(per_device), gpt2_tokenizer, per_device_train_batch_size=per_device,
                               gradient_accumulation_steps=accumulation, num_ppo_epochs=1, total_episodes=8)
        trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=0.5)
        trainer._setup_training(None)
        trainers.append(trainer)
    rollout = trainers[0].make_rollout(*trainers[0].sample_queries(0))
    before = {n: p.detach().clone() for n, p in trainers[0].model.named_parameters()}
    for trainer in trainers:
        trainer.ppo_epochs(rollout)
    moved = 0
    for (name, a), (_, b) in zip(trainers[0].model.named_parameters(), trainers[1].model.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5), name
        moved += int(not torch.equal(a, before[name]))
    assert moved > 0


def test_query_width_rounding_leaves_logprobs_and_values_unchanged(tmp_path, gpt2_tokenizer, monkeypatch):
    """The log-prob passes cut the query padding to the longest query rounded up to WIDTH_MULTIPLE (few kernel
    shapes); extra left padding is masked, so log pi, V and the entropy equal those of the tightest cut (fp32)."""
    import hf_prefs.trainers.ppo_trainer as ppo_module

    trainer = make_trainer(tmp_path, gpt2_tokenizer, total_episodes=8)
    query_ids, query_mask, _ = trainer.sample_queries(0)
    response = torch.randint(0, 1000, (query_ids.shape[0], trainer.args.response_length))
    extra = torch.full((query_ids.shape[0], 11), trainer.pad_token_id)  # more left padding than any rounding needs
    ids, mask = torch.cat([extra, query_ids], 1), torch.cat([torch.zeros_like(extra), query_mask], 1)
    outs = {}
    for multiple in (1, 8):
        monkeypatch.setattr(ppo_module, "WIDTH_MULTIPLE", multiple)
        outs[multiple] = trainer.policy_logprobs_and_values(ids, mask, response)
    width = int(query_mask.sum(1).max())
    assert width % 8 != 0  # the rounding adds padding here (the QUERIES are 5-10 GPT-2 tokens)
    for tight, rounded in zip(outs[1], outs[8]):
        torch.testing.assert_close(rounded, tight, atol=1e-5, rtol=1e-5)


def test_an_update_takes_the_streams_next_batch_in_ascending_query_length(tmp_path, gpt2_tokenizer):
    trainer = make_trainer(tmp_path, gpt2_tokenizer, total_episodes=16)
    for update in range(2):
        query_ids, query_mask, texts = trainer.sample_queries(update)
        rows = trainer.query_stream.rows(update * 8, 8)
        assert sorted(texts) == sorted(trainer.train_dataset[rows]["query"])
        lengths = query_mask.sum(1).tolist()
        assert lengths == sorted(lengths) and lengths[0] < lengths[-1]  # the QUERIES differ in length


def test_generation_and_logprob_passes_have_their_own_chunk_sizes(tmp_path, gpt2_tokenizer, monkeypatch):
    """``local_rollout_generation_batch_size`` chunks the sampling, ``local_rollout_forward_batch_size`` the no-grad
    log-prob passes (TRL 1.12's one size for both when the former is None); the chunking leaves log pi, V, the
    entropy and log rho unchanged (fp32)."""
    import hf_prefs.trainers.ppo_trainer as ppo_module

    sampled_rows, forward_rows = [], []
    real_sample, real_forward = ppo_module.sample_responses, PPOTrainer._forward
    monkeypatch.setattr(ppo_module, "sample_responses", lambda m, q, *a: sampled_rows.append(len(q)) or real_sample(m, q, *a))
    monkeypatch.setattr(PPOTrainer, "_forward", lambda self, m, q, *a: forward_rows.append(len(q)) or real_forward(self, m, q, *a))
    split = make_trainer(tmp_path, gpt2_tokenizer, total_episodes=8, local_rollout_forward_batch_size=3,
                         local_rollout_generation_batch_size=8)
    assert split.args.generation_chunk_size == 8
    query_ids, query_mask, _ = split.sample_queries(0)  # 8 queries
    response = split.generate(query_ids, query_mask)
    assert sampled_rows == [8] and response.shape == (8, split.args.response_length)
    chunked = (*split.policy_logprobs_and_values(query_ids, query_mask, response),
               split.ref_logprobs(query_ids, query_mask, response))
    assert forward_rows == [3, 3, 2, 3, 3, 2]  # policy pass, then reference pass

    sampled_rows.clear(), forward_rows.clear()
    same = make_trainer(tmp_path, gpt2_tokenizer, total_episodes=8, local_rollout_forward_batch_size=8)
    assert same.args.local_rollout_generation_batch_size is None and same.args.generation_chunk_size == 8
    whole = (*same.policy_logprobs_and_values(query_ids, query_mask, response), same.ref_logprobs(query_ids, query_mask, response))
    same.generate(query_ids, query_mask)
    assert forward_rows == [8, 8] and sampled_rows == [8]
    for a, b in zip(chunked, whole):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="local_rollout_generation_batch_size"):
        make_config(tmp_path, local_rollout_generation_batch_size=0)


def test_bf16_on_a_cpu_without_bf16_units_warns_when_the_trainer_is_built_not_the_config(tmp_path, gpt2_tokenizer, monkeypatch):
    """The recipes build the config from the YAML (bf16: true) and then switch such a CPU to float32 themselves, so
    only a trainer that will really train in bf16 there warns (before: the config warned, then the recipe fell back)."""
    import warnings

    import hf_prefs.trainers.ppo_config as config_module

    monkeypatch.setattr(config_module, "cpu_bf16_supported", lambda: False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        config = make_config(tmp_path, bf16=True, use_cpu=True, total_episodes=8)
    assert config.cpu_lacks_bf16 and not [w for w in seen if "bf16 matmul units" in str(w.message)]
    with pytest.warns(UserWarning, match="without bf16 matmul units"):
        make_trainer(tmp_path, gpt2_tokenizer, bf16=True, use_cpu=True, total_episodes=8)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        make_trainer(tmp_path, gpt2_tokenizer, bf16=False, use_cpu=True, total_episodes=8)  # what the fallback leaves
    assert not [w for w in seen if "bf16 matmul units" in str(w.message)]


def test_the_sample_table_spreads_its_rows_over_the_length_sorted_batch(tmp_path, gpt2_tokenizer):
    trainer = make_trainer(tmp_path, gpt2_tokenizer, total_episodes=8)
    rollout = trainer.make_rollout(*trainer.sample_queries(0))
    trainer.log_samples(rollout, num_samples=3)
    assert trainer.last_samples["query"].tolist() == [rollout.query_texts[i] for i in (0, 4, 7)]  # first, middle, last
    assert trainer.last_samples["score"].tolist() == pytest.approx([rollout.scores[i].item() for i in (0, 4, 7)])


def test_resume_keeps_the_gain_and_bias_normalize_reward_set(tmp_path, gpt2_tokenizer):
    """``normalize_reward`` runs once, at the start of training; a resumed run (which does not run it again) scores
    with the gain/bias the checkpoint holds, not with those of the reward model it was given."""

    def reward_model() -> GPT2ForSequenceClassification:
        torch.manual_seed(1)
        return GPT2ForSequenceClassification(tiny_gpt2_config(num_labels=1, pad_token_id=gpt2_tokenizer.eos_token_id)).eval()

    overrides = dict(normalize_reward=True, normalize_samples=8, save_strategy="steps", save_steps=1)
    full = make_trainer(tmp_path / "a", gpt2_tokenizer, reward=reward_model(), **overrides)
    full.train()
    gain = full.reward_model.config.hf_prefs_reward_gain
    assert gain != 1.0
    fresh = reward_model()  # as loaded again from its folder: never normalized
    resumed = make_trainer(tmp_path / "b", gpt2_tokenizer, reward=fresh, **overrides)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "out" / "checkpoint-1"))
    assert fresh.config.hf_prefs_reward_gain == pytest.approx(gain, rel=1e-12)
    assert fresh.config.hf_prefs_reward_bias == pytest.approx(full.reward_model.config.hf_prefs_reward_bias, rel=1e-12)
    assert logged(resumed, "objective/scores") == pytest.approx(logged(full, "objective/scores"), rel=1e-5, abs=1e-6)


def test_the_ppo_state_is_in_a_checkpoint_before_older_checkpoints_are_deleted(tmp_path, gpt2_tokenizer, monkeypatch):
    """With ``save_total_limit`` Trainer deletes the older checkpoints once it has written the new one: the PPO state
    must already be there (a process stopped in between left a newest checkpoint that could not resume). A
    checkpoint resumed on another process count says so."""
    import transformers.trainer

    seen = []
    rotate = transformers.trainer.rotate_checkpoints

    def spy(output_dir, **kwargs):
        newest = max((p for p in Path(output_dir).glob("checkpoint-*")), key=lambda p: int(p.name.split("-")[1]))
        seen.append((newest.name, (newest / "ppo_state.json").is_file()))
        return rotate(output_dir=output_dir, **kwargs)

    monkeypatch.setattr(transformers.trainer, "rotate_checkpoints", spy)
    trainer = make_trainer(tmp_path / "a", gpt2_tokenizer, total_episodes=24, save_strategy="steps", save_steps=1,
                           save_total_limit=1)
    trainer.train()
    assert seen == [("checkpoint-1", True), ("checkpoint-2", True), ("checkpoint-3", True)]
    state = json.loads((tmp_path / "a" / "out" / "checkpoint-3" / "ppo_state.json").read_text())
    assert state["num_processes"] == 1
    (tmp_path / "a" / "out" / "checkpoint-3" / "ppo_state.json").rename(tmp_path / "a" / "out" / "checkpoint-3" / "ppo_state_0.json")
    (tmp_path / "a" / "out" / "checkpoint-3" / "ppo_state_1.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="saved by 2 process"):
        make_trainer(tmp_path / "b", gpt2_tokenizer, total_episodes=24).train(
            resume_from_checkpoint=str(tmp_path / "a" / "out" / "checkpoint-3"))
    (tmp_path / "a" / "out" / "checkpoint-3" / "ppo_state.json").write_text(json.dumps({**state, "num_processes": 2}))
    with pytest.raises(ValueError, match="saved by 2 process"):  # this process's own file there, another count in it
        make_trainer(tmp_path / "c", gpt2_tokenizer, total_episodes=24).train(
            resume_from_checkpoint=str(tmp_path / "a" / "out" / "checkpoint-3"))
    # a newest checkpoint a stopped process left half-written is passed over for the one before it
    from hf_prefs.trainers.ppo_checkpoints import last_complete_checkpoint

    out = tmp_path / "a" / "out"
    (out / "checkpoint-4").mkdir()
    (out / "checkpoint-4" / "ppo_state.json").write_text(json.dumps(state))
    assert last_complete_checkpoint(str(out)) == str(out / "checkpoint-3")
    assert last_complete_checkpoint(str(tmp_path / "none")) is None
    # a run of another length: the saved learning-rate schedule ends with the saved run's 3 updates (a longer run ran
    # an update at lr 0, then restarted the schedule)
    (out / "checkpoint-3" / "ppo_state.json").write_text(json.dumps(state))
    (out / "checkpoint-3" / "ppo_state_0.json").unlink()
    (out / "checkpoint-3" / "ppo_state_1.json").unlink()
    with pytest.raises(ValueError, match=r"total_episodes: .*checkpoint-3 was saved by a run of 3 PPO updates, this one "
                                         r"asks for 4 \(total_episodes 32\)"):
        make_trainer(tmp_path / "d", gpt2_tokenizer, total_episodes=32).train(resume_from_checkpoint=str(out / "checkpoint-3"))


def test_activation_checkpointing_trains_exactly_as_without_it(tmp_path, gpt2_tokenizer):
    """``gradient_checkpointing`` (with transformers' ``every_n_layers`` where it has it): the backward recomputes each block's forward under the forward's attention kernel
    and LoRA input rule (before, the recomputation ran under PyTorch's default kernel: CheckpointError on CPU); the
    run is the same as without it, bf16 LoRA as in the offline default."""
    from peft import LoraConfig

    def run(out: str, **overrides) -> tuple[list[float], list[float], list[torch.Tensor]]:
        trainer = PPOTrainer(
            model=make_policy().to(torch.bfloat16),
            reward_model=length_reward,
            args=make_config(tmp_path / out, bf16=True, use_cpu=True, **overrides),
            train_dataset=Dataset.from_dict({"query": QUERIES * 2}),
            processing_class=gpt2_tokenizer,
            peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"], lora_dropout=0.0, task_type="CAUSAL_LM"),
        )
        trainer.train()
        blocks = [m.gradient_checkpointing for m in trainer.model.modules() if type(m).__name__ == "GPT2Block"]
        assert sum(blocks) == (len(blocks) // every if "gradient_checkpointing" in overrides else 0) and len(blocks) == 2
        weights = [p.detach().clone() for p in trainer.model.parameters() if p.requires_grad]
        return logged(trainer, "loss/policy_avg"), logged(trainer, "objective/kl"), weights

    # transformers' layer keys (every_n_layers, offload) are the model's, not torch's checkpoint()'s (which raised on them)
    from transformers import PreTrainedModel

    layer_keys = "every_n_layers" in inspect.signature(PreTrainedModel.activation_checkpointing_enable).parameters
    every = 2 if layer_keys else 1  # of the 2 blocks, one checkpointed (before, the key went to checkpoint(): all were)
    extra = {"activation_checkpointing_kwargs": {"every_n_layers": 2, "use_reentrant": False}} if layer_keys else {}
    losses, kls, weights = run("checkpointed", gradient_checkpointing=True, **extra)
    plain_losses, plain_kls, plain_weights = run("plain")
    assert len(losses) == 2 and losses == plain_losses and kls == plain_kls and kls[1] != 0
    assert all(torch.equal(a, b) for a, b in zip(weights, plain_weights, strict=True))


def test_a_pad_token_added_to_the_tokenizer_only_leaves_saved_llama_models_loadable(tmp_path, gpt2_tokenizer):
    """TRL's PPO scripts add "[PAD]" to the tokenizer without resizing the models: its id (50257) lies outside their
    embedding. The pad id the trainer gives a reward/value model without one is saved in its config, and a Llama-like
    model built with padding_idx outside its embedding refuses to load; so it gets an id it can embed (EOS)."""
    from transformers import AutoModelForSequenceClassification, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    from hf_prefs.models.generation import embeddable_pad_id, ensure_pad_token_id

    tok = gpt2_tokenizer.__class__.from_pretrained(gpt2_tokenizer.name_or_path, padding_side="left")
    tok.add_special_tokens({"pad_token": "[PAD]"})
    assert tok.pad_token_id == 50257
    # the rule (also what a fresh reward model's config gets before it is built: pipeline.reward)
    assert (embeddable_pad_id(tok, 50257), embeddable_pad_id(tok, 50258), embeddable_pad_id(tok, None)) == (50256, 50257, 50257)
    cfg = dict(vocab_size=50257, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
               num_key_value_heads=1, eos_token_id=50256, bos_token_id=50256, pad_token_id=None)
    torch.manual_seed(0)
    policy = LlamaForCausalLM(LlamaConfig(**cfg))
    value = LlamaForSequenceClassification(LlamaConfig(**cfg, num_labels=1))
    reward = LlamaForSequenceClassification(LlamaConfig(**cfg, num_labels=1))
    trainer = PPOTrainer(args=make_config(tmp_path, total_episodes=8), processing_class=tok, model=policy,
                         reward_model=reward, value_model=value, train_dataset=Dataset.from_dict({"query": QUERIES * 2}))
    assert value.config.pad_token_id == reward.config.pad_token_id == 50256  # EOS: the tokenizer's pad is unembeddable
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    reloaded = PolicyWithValueHead.from_pretrained(tmp_path / "final")  # raised "Padding_idx must be within num_embeddings"
    ids = torch.tensor([tok.encode("The sun rose")])
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).values, trainer.model(ids).values, atol=1e-6)
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "final" / "value_model").config.pad_token_id == 50256
    # a reward model read back by path (load_reward_model) the same: a value model copied from it saves loadable
    saved = LlamaForSequenceClassification(LlamaConfig(**cfg, num_labels=1))
    saved.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    by_path = PPOTrainer(args=make_config(tmp_path, total_episodes=4, value_model="separate"), processing_class=tok,
                         model=LlamaForCausalLM(LlamaConfig(**cfg)), reward_model=str(tmp_path / "rm"),
                         train_dataset=Dataset.from_dict({"query": QUERIES * 2}))
    assert by_path.reward_model.config.pad_token_id == by_path.value_model.config.pad_token_id == 50256
    by_path.save_model(str(tmp_path / "by_path"))
    PolicyWithValueHead.from_pretrained(tmp_path / "by_path")
    # a pad id the model can embed is kept; without a tokenizer the config's (first) EOS
    wide = LlamaForSequenceClassification(LlamaConfig(**{**cfg, "vocab_size": 50258}, num_labels=1))
    ensure_pad_token_id(wide, tok)
    assert wide.config.pad_token_id == 50257
    listed = LlamaForSequenceClassification(LlamaConfig(**{**cfg, "eos_token_id": [50256, 7]}, num_labels=1))
    ensure_pad_token_id(listed)
    assert listed.config.pad_token_id == 50256


def test_ppo_config_refuses_a_non_number_naming_the_field(tmp_path):
    """A YAML ``null``, a quoted number or a fractional count is refused at construction with the field's name (they
    raised a bare TypeError from a comparison, or a fractional response_length failed in the first rollout); a whole
    float count is TRL 1.12's ``total_episodes=1e4`` and is kept as an int."""
    for field, value, kind in (("kl_target", None, "a finite number"), ("temperature", None, "a finite number"),
                               ("kl_coef", "0.1", "a finite number"), ("response_length", 24.5, "a whole number"),
                               ("num_ppo_epochs", True, "a whole number"), ("total_episodes", "64", "a whole number or None"),
                               ("missing_eos_penalty", "1", "a finite number or None"),
                               ("kl_coef", float("nan"), "a finite number"),  # NaN passed `< 0`, inf passed `> 0`
                               ("temperature", float("inf"), "a finite number")):
        with pytest.raises(TypeError, match=rf"PPOConfig\.{field} must be {kind}, got {value!r}".replace("(", r"\(")):
            make_config(tmp_path, **{field: value})
    config = make_config(tmp_path, total_episodes=1e4, response_length=8.0, kl_horizon=np.int64(100))
    assert (config.total_episodes, config.response_length, config.kl_horizon) == (10_000, 8, 100)
    assert all(type(v) is int for v in (config.total_episodes, config.response_length, config.kl_horizon))


def test_minibatches_smaller_than_a_micro_batch_run_as_in_trl(tmp_path, gpt2_tokenizer):
    """TRL 1.12 accepted num_mini_batches > gradient_accumulation_steps (a minibatch then is one micro-batch of fewer
    rows than per_device_train_batch_size): 4 episodes per update in minibatches of 2 must train exactly as the same
    split written with per_device_train_batch_size 2 — one optimizer step per minibatch of 2."""
    from hf_prefs.trainers.ppo_config import minibatch_split

    assert minibatch_split(4, 1, 2) == (2, 2) and minibatch_split(4, 4, 2) == (8, 4) and minibatch_split(2, 2, 2) == (2, 2)
    with pytest.raises(ValueError, match=r"a minibatch of 6 episodes .* per_device_train_batch_size \(4\)"):
        make_config(tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=3, num_mini_batches=2)
    for field in ("per_device_train_batch_size", "gradient_accumulation_steps", "num_mini_batches"):
        with pytest.raises(ValueError, match=f"PPOConfig.{field} must be > 0, got 0"):
            make_config(tmp_path, **{field: 0})
    with pytest.raises(ValueError, match=r"4 \* 1 = 4 episodes .* multiple of num_mini_batches \(3\)"):
        make_config(tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=1, num_mini_batches=3)
    runs = {}
    for per_device, accumulation in ((4, 1), (2, 2)):
        steps = []
        trainer = make_trainer(tmp_path / f"{per_device}", gpt2_tokenizer, per_device_train_batch_size=per_device,
                               gradient_accumulation_steps=accumulation, num_mini_batches=2, total_episodes=8,
                               num_ppo_epochs=2)
        trainer.add_callback(type("Count", (TrainerCallback,), {"on_optimizer_step": lambda self, *a, **k: steps.append(1)})())
        trainer.train()
        assert trainer.args.local_mini_batch_size == 2 and len(steps) == 2 * 2 * 2  # updates x epochs x minibatches
        runs[per_device] = [{k: v for k, v in h.items() if not k.startswith(("time/", "memory/", "objective/tokens", "eps"))}
                            for h in trainer.state.log_history if "objective/kl" in h]
    assert runs[4] == runs[2] and runs[4][1]["objective/kl"] != 0


def test_a_lora_policy_saved_with_an_added_pad_token_reloads_with_its_own_vocabulary(tmp_path, gpt2_tokenizer):
    """TRL's scripts add ``[PAD]`` to the tokenizer only. peft's AutoPeftModelForCausalLM grows the base model's
    embedding to the saved tokenizer, a row drawn at random that the trained policy never had (and the reloaded one
    could sample); ``PolicyWithValueHead.from_pretrained`` grows it only to what the adapter saved: none, a whole
    embedding (the base resized before training), or a LoRA embedding's rows. The policy card's snippet (plain
    transformers + peft) sizes the base's embedding to the trained policy's rows."""
    from peft import LoraConfig, get_peft_model

    gpt2_tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    torch.manual_seed(0)
    GPT2LMHeadModel(tiny_gpt2_config()).save_pretrained(tmp_path / "base")
    ids = torch.tensor([gpt2_tokenizer.encode("The sun rose")])
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=50257, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(tmp_path / "llama")
    cases = [("plain", "base", None, dict(target_modules=["c_attn"])),
             ("resized", "base", 50258, dict(target_modules=["c_attn"])),
             ("lora_wte", "base", 50258, dict(target_modules=["c_attn", "wte"])),
             # untied: only the LM head saved (modules_to_save), the embedding's new row not
             ("lm_head", "llama", 50258, dict(target_modules=["q_proj"], modules_to_save=["lm_head"], save_embedding_layers=False))]
    for name, base_name, rows, lora in cases:
        save_embedding_layers = lora.pop("save_embedding_layers", "auto")
        base = AutoModelForCausalLM.from_pretrained(tmp_path / base_name)
        if rows:
            base.resize_token_embeddings(rows)
        policy = get_peft_model(base, LoraConfig(r=2, fan_in_fan_out=base_name == "base", task_type="CAUSAL_LM", **lora))
        PolicyWithValueHead(policy).save_pretrained(tmp_path / name, save_embedding_layers=save_embedding_layers)
        gpt2_tokenizer.save_pretrained(tmp_path / name)
        reloaded = PolicyWithValueHead.from_pretrained(tmp_path / name)
        assert reloaded.policy.get_input_embeddings().weight.shape[0] == (rows or 50257), name  # plain: was 50258
        assert embedding_rows(policy) == (rows or 50257), name  # LoRA on the embedding too (lora_wte: its base layer's)
        # the model card's loading snippet (run as written, the folder as its repo) loads the same policy
        card = render_policy_card(base_model="gpt2", task="sentiment", num_labels=8, reward_gain=1.0, reward_bias=0.0,
                                  kl_final=0.1, beta_final=0.05, temperature=0.7, response_length=8, known_reward="VADER",
                                  hub_model_id=str(tmp_path / name), is_peft=True, embedding_rows=embedding_rows(policy))
        snippet = card.split("## How to load", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
        scope: dict = {}
        exec(snippet, scope)
        with torch.no_grad():
            assert torch.allclose(reloaded.policy(ids).logits, policy(ids).logits, atol=1e-6), name
            assert torch.allclose(scope["model"](ids).logits, policy(ids).logits, atol=1e-6), name


def test_generate_completions_without_an_eval_dataset_warns(tmp_path, gpt2_tokenizer):
    trainer = make_trainer(tmp_path, gpt2_tokenizer)
    with pytest.warns(UserWarning, match="given no eval_dataset"):
        assert trainer.generate_completions() is None


def test_a_reward_model_folder_without_a_tokenizer_scores_with_the_policys(tmp_path, gpt2_tokenizer, caplog):
    """A reward model saved without its tokenizer (built from a config, then ``save_pretrained``): transformers would
    build an empty tokenizer from the folder (every text no tokens); TRL 1.12 scored with the policy's tokenizer, and
    so does PPO here. A ``reward_processing_class`` given is the one used, folder or not; ``load_reward_model`` names
    the folder; a classifier of two labels is refused when the trainer is built."""
    from hf_prefs.models.loading import load_reward_model

    torch.manual_seed(0)
    reward = GPT2ForSequenceClassification(tiny_gpt2_config(num_labels=1)).eval()
    bare = tmp_path / "rm_bare"
    reward.save_pretrained(bare)
    pad = gpt2_tokenizer.pad_token
    with caplog.at_level(logging.INFO, logger="hf_prefs.models.loading"):
        trainer = make_trainer(tmp_path, gpt2_tokenizer, reward=str(bare))
    assert "rm_bare holds no tokenizer; scoring with the fallback tokenizer given" in caplog.text
    assert trainer.reward_processing_class is gpt2_tokenizer and gpt2_tokenizer.pad_token == pad  # not changed
    queries, responses = ["The sun rose"], [" and the day began."]
    expected = score_texts(reward, gpt2_tokenizer, queries, responses)
    assert torch.equal(score_texts(trainer.reward_model, trainer.reward_processing_class, queries, responses), expected)
    with pytest.raises(ValueError, match=r"reward model: .*rm_bare holds no tokenizer files \(tokenizer.json.*pass the tokenizer"):
        load_reward_model(str(bare))
    model, tokenizer = load_reward_model(str(bare), tokenizer=gpt2_tokenizer)
    assert tokenizer is gpt2_tokenizer and torch.equal(score_texts(model, tokenizer, queries, responses), expected)
    # a LoRA adapter whose base model folder has no tokenizer either: the same rule (named, or the fallback)
    from peft import LoraConfig, get_peft_model

    adapter = tmp_path / "rm_adapter"
    get_peft_model(GPT2ForSequenceClassification.from_pretrained(bare),
                   LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True, task_type="SEQ_CLS")).save_pretrained(adapter)
    with pytest.raises(ValueError, match=r"rm_adapter holds no tokenizer files .* and neither does its base model .*rm_bare"):
        load_reward_model(str(adapter))
    model, tokenizer = load_reward_model(str(adapter), fallback_tokenizer=gpt2_tokenizer)
    assert tokenizer is gpt2_tokenizer and torch.allclose(score_texts(model, tokenizer, queries, responses), expected)
    other = type(gpt2_tokenizer).from_pretrained(gpt2_tokenizer.name_or_path)  # given: used, with a tokenizer there too
    gpt2_tokenizer.save_pretrained(bare)
    trainer = PPOTrainer(make_policy(), str(bare), make_config(tmp_path), Dataset.from_dict({"query": QUERIES}),
                         processing_class=gpt2_tokenizer, reward_processing_class=other)
    assert trainer.reward_processing_class is other
    with pytest.raises(ValueError, match=r"^reward_model: its score head has num_labels=2; a reward model outputs one"):
        make_trainer(tmp_path, gpt2_tokenizer, reward=GPT2ForSequenceClassification(tiny_gpt2_config()))


def test_trls_stop_token_ends_the_saved_policys_generation_there(tmp_path, gpt2_tokenizer):
    """TRL 1.12 set the policy's ``generation_config.eos_token_id`` to its stop token, so ``generate()`` on the trained
    policy, saved with it, stops where the episodes ended; without a stop token the model's own is kept here."""
    from transformers import GenerationConfig

    for overrides, expected in (({"stop_token_id": 13}, 13), ({"stop_token": "eos"}, gpt2_tokenizer.eos_token_id),
                                ({}, 7)):
        policy = make_policy()
        policy.generation_config.eos_token_id = 7
        trainer = make_trainer(tmp_path, gpt2_tokenizer, model=policy, truncate_token=None, **overrides)
        assert policy.generation_config.eos_token_id == expected
        trainer.save_model(str(tmp_path / "saved"))
        assert GenerationConfig.from_pretrained(tmp_path / "saved").eos_token_id == expected


def test_an_encoder_reward_model_scores_the_response_text(tmp_path, gpt2_tokenizer):
    """An encoder classifier (BERT; its own tokenizer) as the reward model: it reads the decoded response text through
    its own pooled output (``score_texts``), not ids (TRL read a ``score`` head at an index); as a value model it is
    refused by name."""
    from test_reward_trainer import tiny_bert_and_wordpiece

    bert, bert_tok = tiny_bert_and_wordpiece(tmp_path)
    trainer = PPOTrainer(make_policy(), bert, make_config(tmp_path, total_episodes=8),
                         Dataset.from_dict({"query": QUERIES * 2}), processing_class=gpt2_tokenizer,
                         reward_processing_class=bert_tok)
    assert not trainer.reward_reads_token_ids()
    rollout = trainer.make_rollout(*trainer.sample_queries(0))
    expected = score_texts(bert, bert_tok, rollout.query_texts, rollout.response_texts)
    assert torch.allclose(rollout.raw_scores, expected, atol=1e-5) and expected.std() > 0
    with pytest.raises(TypeError, match="BertForSequenceClassification has no `score` head read at every position"):
        PPOTrainer(make_policy(), bert, make_config(tmp_path, total_episodes=8, value_model="separate"),
                   Dataset.from_dict({"query": QUERIES * 2}), processing_class=gpt2_tokenizer,
                   reward_processing_class=bert_tok)


def test_a_peft_config_given_as_a_dict_is_named(tmp_path, gpt2_tokenizer):
    """TRL 1.12 refused a ``peft_config`` that is no ``peft.PeftConfig`` with a TypeError naming it; hf_prefs failed
    with an AttributeError inside peft."""
    with pytest.raises(TypeError, match="peft_config must be a peft.PeftConfig instance .* got dict"):
        PPOTrainer(make_policy(), length_reward, make_config(tmp_path), Dataset.from_dict({"query": QUERIES}),
                   processing_class=gpt2_tokenizer, peft_config={"r": 8, "target_modules": ["c_attn"]})
