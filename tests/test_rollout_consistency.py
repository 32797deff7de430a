"""One rollout rule for every user of a sampled response (RolloutSpec): PPO, the labelers, the reward-normalization
sampler, the online label loop and the held-out evaluation cut the same sample at the same place.

The sample is scripted: whatever the query, the policy writes " the cat. sat<EOS> the cat." — a "." at index 2 and
EOS at index 4. With TRL's ``stop_token="eos"`` every user must cut after EOS (5 tokens, " the cat. sat"); cutting
after the "." (the paper's default token) would be the bug this guards against.
"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import GPT2LMHeadModel

from conftest import tiny_gpt2_config
from hf_prefs import PPOConfig, PPOTrainer, ResponseSampler, RolloutSpec, evaluate_policy
from hf_prefs.labels.labelers import SimulatedLabeler
from hf_prefs.pipeline import Base, PipelineArguments, collect_labels, online_label_loop
from hf_prefs.trainers.online import OnlineLabelSchedule, OnlinePreferenceLoop

QUERIES = ["It is a truth universally acknowledged that", "She was not a young lady of many"]  # no script token at the end
CUT_TEXT = " the cat. sat"  # what the reward and the labeler must see: cut after EOS, EOS itself not shown


def scripted_policy(tok) -> GPT2LMHeadModel:
    """A tiny GPT-2 whose next token is forced by the current one: the -> cat -> . -> sat -> EOS -> the ... (any
    other token -> the). A forward hook reads the inputs, so prefill, cached decoding and full forwards agree."""
    the, cat, dot, sat = tok.encode(" the")[0], tok.encode(" cat")[0], tok.encode(".")[0], tok.encode(" sat")[0]
    eos = tok.eos_token_id
    table = torch.full((len(tok),), the, dtype=torch.long)
    table[the], table[cat], table[dot], table[sat] = cat, dot, sat, eos
    torch.manual_seed(0)
    model = GPT2LMHeadModel(tiny_gpt2_config()).eval()

    def force(_module, _args, kwargs, output):
        logits = output.logits  # (B, K, V): the last K positions (logits_to_keep)
        prev = kwargs["input_ids"][:, -logits.shape[1]:]  # (B, K) the token each position predicts after
        logits.scatter_add_(-1, table[prev].unsqueeze(-1), torch.full(prev.shape + (1,), 1e4, dtype=logits.dtype))
        return output

    model.register_forward_hook(force, with_kwargs=True)
    return model


def config(tmp_path) -> PPOConfig:
    """TRL's settings: cut after the first EOS (stop_token), at any index."""
    return PPOConfig(
        output_dir=str(tmp_path / "ppo"), stop_token="eos", truncate_after=0, response_length=8, temperature=1.0,
        per_device_train_batch_size=2, gradient_accumulation_steps=1, total_episodes=2, report_to=[],
        save_strategy="no", num_sample_generations=0, disable_tqdm=True, use_cpu=True, seed=0,
    )


def test_all_five_users_cut_the_same_sample_at_the_same_place(tmp_path, gpt2_tokenizer):
    tok, cfg = gpt2_tokenizer, config(tmp_path)
    rho = scripted_policy(tok)
    spec = RolloutSpec.from_config(cfg, tok)
    assert spec.truncate_token_id == tok.eos_token_id and spec.truncate_after == 0

    # 1. PPO: the rollout's cut lengths and the texts its reward is called with
    seen: list[str] = []
    trainer = PPOTrainer(model=scripted_policy(tok), reward_model=lambda q, r: seen.extend(r) or torch.zeros(len(r)),
                         args=cfg, train_dataset=Dataset.from_dict({"query": QUERIES}), processing_class=tok)
    assert trainer.rollout_spec == spec
    rollout = trainer.make_rollout(*trainer.sample_queries(0))
    assert rollout.response_lengths.tolist() == [5, 5] and rollout.valid.all()
    assert rollout.response_texts == seen == [CUT_TEXT] * 2

    # 2. the labelers, through the pipeline's label stage (the spec comes from the same config)
    pa = PipelineArguments(task="sentiment", num_candidates=2, sampling_batch_size=8)
    labels, info = collect_labels(pa, cfg, rho, tok, QUERIES)
    assert info["labels"] == 2 and labels["samples"] == [[CUT_TEXT, CUT_TEXT]] * 2

    # 3. the normalization sampler: same tokens; the paper scores them uncut, cut=True cuts them like everyone else
    assert ResponseSampler(rho, tok, spec=spec, cut=True)(QUERIES) == [CUT_TEXT] * 2
    assert ResponseSampler(rho, tok, spec=spec)(QUERIES) == [" the cat. sat the cat."] * 2  # raw: all 8 tokens

    # 4. the online loop, built from the same config (and the pipeline's loop holds the same spec)
    loop = OnlinePreferenceLoop(OnlineLabelSchedule(1, 2), SimulatedLabeler(lambda t: [0.0] * len(t), seed=0),
                                lambda labels, init, r: lambda q, resp: torch.zeros(len(q)), QUERIES, tok, args=cfg, num_candidates=2)
    assert loop.spec == spec
    loop.first_round(rho)
    assert loop.labels_dataset()["samples"] == [[CUT_TEXT, CUT_TEXT]] * 2
    assert online_label_loop(pa, cfg, Base("tiny", tok, rho), QUERIES, str(tmp_path / "online")).spec == spec

    # 5. the held-out evaluation
    ev = evaluate_policy(rho, tok, QUERIES, spec, ref_model=rho, known_reward=lambda t: [0.0] * len(t))
    assert ev.responses == [CUT_TEXT] * 2 and not any(ev.penalized)


@pytest.mark.parametrize(
    "settings, cut, valid",
    [
        ({"stop_token": "eos", "truncate_after": 0}, 5, True),  # TRL: after the first EOS
        ({"truncate_token": ".", "truncate_after": 0}, 3, True),  # paper's token: after the first "."
        ({"truncate_token": ".", "truncate_after": 3}, 8, True),  # "." again at index 7 (the last token)
        ({"stop_token_id": 13, "truncate_after": 4, "response_length": 7}, 7, True),  # no "." at index >= 4: whole;
        # TRL's stop token penalizes nothing without missing_eos_penalty (TRL 1.12 applies no penalty then)
        ({"truncate_token_id": 13, "truncate_after": 4, "response_length": 7}, 7, False),  # the paper's: penalized
        # TRL 1.12 without a stop token generated past EOS: no cut; an EOS anywhere spares the penalty
        ({"truncate_token": None, "missing_eos_penalty": 1.0}, 8, True),
        ({"truncate_token": None, "missing_eos_penalty": 1.0, "truncate_after": 5}, 8, False),  # none at index >= 5
    ],
)
def test_the_spec_resolves_trl_and_paper_names_once(gpt2_tokenizer, settings, cut, valid):
    tok = gpt2_tokenizer
    spec = RolloutSpec.build(tok, **{"response_length": 8, **settings})
    ids = torch.tensor([tok.encode(" the cat. sat")[:4] + [tok.eos_token_id] + tok.encode(" the cat.")[:3]])
    lengths, ok = spec.cut(ids[:, : spec.response_length])
    assert lengths.tolist() == [cut] and ok.tolist() == [valid]


def test_trl_stop_token_alone_keeps_every_score(gpt2_tokenizer):
    """TRL 1.12 penalizes a response without EOS only when ``missing_eos_penalty`` is set; the paper's −1
    (``penalty_reward_value``) belongs to ``truncate_token``."""
    tok = gpt2_tokenizer
    ids = torch.tensor([tok.encode(" the cat sat on the")[:5], tok.encode(" the cat")[:2] + [tok.eos_token_id] * 3])
    scores = torch.tensor([3.0, 3.0])
    trl = RolloutSpec.build(tok, response_length=5, stop_token="eos")
    lengths, valid = trl.cut(ids)
    assert lengths.tolist() == [5, 3] and trl.penalize(scores, valid).tolist() == [3.0, 3.0]
    with_penalty = RolloutSpec.build(tok, response_length=5, stop_token="eos", missing_eos_penalty=1.0)
    assert with_penalty.penalize(scores, with_penalty.cut(ids).valid).tolist() == [2.0, 3.0]  # subtracted
    paper = RolloutSpec.build(tok, response_length=5, truncate_token_id=tok.eos_token_id)
    assert paper.penalize(scores, paper.cut(ids).valid).tolist() == [-1.0, 3.0]  # replaced
