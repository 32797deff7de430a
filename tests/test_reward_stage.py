"""The pipeline's reward-model stage (`train_reward_model`): a killed training resumes from its newest checkpoint to the
model an uninterrupted training gives."""

from __future__ import annotations

import os

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer, GPT2LMHeadModel, TrainerCallback

import hf_prefs.pipeline.reward as reward_stage
from hf_prefs.models.reward_model import get_reward_normalization
from hf_prefs.pipeline import PipelineArguments, train_reward_model
from hf_prefs.trainers.ppo_config import PPOConfig
from hf_prefs.trainers.reward_trainer import SAMPLER_STATE

WORDS = ["fine", "grey", "cold", "warm", "wet", "still", "bright", "dark"]


def _labels(n: int) -> Dataset:
    """n best-of-2 labels whose best sample is the longer one (a rule a reward model can learn)."""
    rows = {"query": [], "samples": [], "best": []}
    for i in range(n):
        short, long = f" {WORDS[i % 8]}.", f" {WORDS[(i + 3) % 8]} and {WORDS[(i + 5) % 8]} all day."
        rows["query"].append(f"Chapter {i}. The weather was")
        rows["samples"].append([short, long] if i % 2 else [long, short])
        rows["best"].append(1 if i % 2 else 0)
    return Dataset.from_dict(rows)


class _Killed(Exception):
    pass


class _Steps(TrainerCallback):
    """Records the optimizer steps this process ran; raises right after the checkpoint of step ``kill_at`` is written
    (a kill between two saves)."""

    def __init__(self, kill_at: int | None) -> None:
        self.kill_at, self.ran = kill_at, []

    def on_step_end(self, args, state, control, **kwargs):
        self.ran.append(state.global_step)

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.kill_at:
            raise _Killed(f"killed after the checkpoint of step {self.kill_at}")


def _train(tiny_base: str, out: str, steps: _Steps, monkeypatch) -> tuple[torch.nn.Module, dict]:
    tok = AutoTokenizer.from_pretrained(tiny_base, padding_side="left")
    tok.pad_token = tok.eos_token
    pa = PipelineArguments(task="sentiment", num_candidates=2, rm_batch_size=4, rm_learning_rate=1e-3,
                           rm_eval_fraction=0.1, rm_normalize_samples=8, sampling_batch_size=16, rm_freeze_layers=1)
    cfg = PPOConfig(output_dir=os.path.join(out, "ppo"), response_length=6, truncate_token=None, report_to=[],
                    disable_tqdm=True, seed=0, use_cpu=True)
    rho = GPT2LMHeadModel.from_pretrained(tiny_base).eval()
    trainer_cls = reward_stage.PreferenceRewardTrainer

    class Watched(trainer_cls):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.add_callback(steps)

    monkeypatch.setattr(reward_stage, "PreferenceRewardTrainer", Watched)
    try:
        return train_reward_model(pa, cfg, _labels(40), rho, tok, tiny_base, out, resumable=True)
    finally:
        monkeypatch.setattr(reward_stage, "PreferenceRewardTrainer", trainer_cls)


def _assert_same_model(resumed: torch.nn.Module, whole: torch.nn.Module) -> None:
    for (name, a), (_, b) in zip(whole.named_parameters(), resumed.named_parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6, msg=name)
    assert get_reward_normalization(resumed) == pytest.approx(get_reward_normalization(whole), abs=1e-6)


def test_a_killed_reward_model_training_resumes_to_the_uninterrupted_model(tiny_base, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    whole_steps = _Steps(None)
    whole, whole_metrics = _train(tiny_base, str(tmp_path / "whole"), whole_steps, monkeypatch)
    assert whole_steps.ran == list(range(1, 10))  # 36 training labels / 4 per step; a checkpoint after each step
    # killed mid-way, and killed after the last step's checkpoint (normalize_after, evaluation and saving not done)
    for kill_at, left in ((4, [5, 6, 7, 8, 9]), (9, [])):
        out = str(tmp_path / f"killed_at_{kill_at}")
        killed_steps, resumed_steps = _Steps(kill_at), _Steps(None)
        with pytest.raises(_Killed):
            _train(tiny_base, out, killed_steps, monkeypatch)
        training = os.path.join(out, "reward_model_training")
        checkpoints = lambda: sorted(n for n in os.listdir(training) if n.startswith("checkpoint-"))  # noqa: E731
        assert killed_steps.ran == list(range(1, kill_at + 1)) and checkpoints() == [f"checkpoint-{kill_at}"]
        assert SAMPLER_STATE.format(0) in os.listdir(os.path.join(training, f"checkpoint-{kill_at}"))
        assert not os.path.exists(os.path.join(out, "reward_model"))
        resumed, metrics = _train(tiny_base, out, resumed_steps, monkeypatch)
        assert resumed_steps.ran == left  # went on from the checkpoint ...
        # ... to the model the uninterrupted training gave: the checkpoint's weights, optimizer, schedule, data
        # order, gain/bias (normalize_before not redone) and the ρ sampler's generator (normalize_after's samples)
        _assert_same_model(resumed, whole)
        assert metrics["eval_accuracy"] == whole_metrics["eval_accuracy"]
        assert not os.path.exists(training)  # the checkpoints removed once the model was saved, then the empty folder
        assert os.path.isfile(os.path.join(out, "rm_metrics.jsonl"))
        assert os.path.isfile(os.path.join(out, "reward_model", "config.json"))


def test_zero3_without_gathered_weights_on_save_is_refused_before_training():
    """PPO loads the reward model as saved; under ZeRO-3 only gathered 16-bit weights make a loadable folder."""
    from types import SimpleNamespace

    from hf_prefs.pipeline.reward import _check_zero3_saves_whole_weights

    def plugin(stage: int, gather: bool) -> SimpleNamespace:
        zero = {"stage": stage, "stage3_gather_16bit_weights_on_model_save": gather}
        return SimpleNamespace(deepspeed_config={"zero_optimization": zero})

    with pytest.raises(ValueError, match="zero3_save_16bit_model: true"):
        _check_zero3_saves_whole_weights(plugin(3, False))
    _check_zero3_saves_whole_weights(plugin(3, True))
    _check_zero3_saves_whole_weights(plugin(2, False))
    old_name = {"zero_optimization": {"stage": 3, "stage3_gather_fp16_weights_on_model_save": True}}
    _check_zero3_saves_whole_weights(SimpleNamespace(deepspeed_config=old_name))


def test_held_out_labels_share_no_comparison_with_the_training_labels():
    """The same comparison labeled twice (two labelers, or a row repeated in a file) never falls on both sides of the
    held-out split: the held-out accuracy measures comparisons the reward model did not train on. All-different rows
    split as datasets' seeded train_test_split does."""
    from hf_prefs.pipeline.reward import split_held_out

    distinct = _labels(40)
    train, held = split_held_out(distinct, 0.25, seed=3)
    plain = distinct.train_test_split(test_size=0.25, seed=3)
    assert train.to_list() == plain["train"].to_list() and held.to_list() == plain["test"].to_list()
    twice = Dataset.from_list(distinct.to_list() + [{**r, "best": 1 - r["best"]} for r in distinct.to_list()[:20]])
    train, held = split_held_out(twice, 0.25, seed=3)
    key = lambda ds: {(q, tuple(s)) for q, s in zip(ds["query"], ds["samples"])}
    assert held is not None and not key(train) & key(held)
    assert len(key(held)) == 10  # a quarter of the 40 comparisons, each with all its rows
    assert sorted(map(str, train.to_list() + held.to_list())) == sorted(map(str, twice.to_list()))
    before = twice.train_test_split(test_size=0.25, seed=3)
    assert key(before["train"]) & key(before["test"])  # what the plain split gave
    assert split_held_out(twice, 0.0, seed=3) == (twice, None)
    assert split_held_out(Dataset.from_list(distinct.to_list()[:1] * 8), 0.25, seed=3)[1] is None  # 1 comparison
