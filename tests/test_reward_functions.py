"""A reward given as a function: hf_prefs' positional ``f(queries, responses)`` or TRL's reward-function form
``f(prompts=, completions=, **kwargs)`` (GRPO/RLOO), told apart when the trainer is built."""

from __future__ import annotations

import functools

import pytest
from datasets import Dataset
from transformers import GPT2ForSequenceClassification

from conftest import tiny_gpt2_config
from hf_prefs import PPOTrainer
from hf_prefs.trainers.reward_functions import reward_caller
from test_ppo_trainer import QUERIES, logged, make_config, make_policy, make_trainer


def test_each_form_is_called_with_the_texts_where_it_takes_them():
    seen = []

    def positional(queries, responses):
        seen.append(("positional", queries, responses))
        return [0.0] * len(responses)

    def trl_form(completions, **kwargs):  # TRL's canonical length reward
        seen.append(("trl", sorted(kwargs), completions))
        return [float(len(c)) for c in completions]

    def trl_named(prompts, completions):
        seen.append(("named", prompts, completions))
        return [1.0]

    class Scorer:
        def __call__(self, queries, responses, scale=1.0):
            return [scale] * len(responses)

    q, r = ["a query"], ["a response"]
    reward_caller(positional)(q, r)
    assert reward_caller(trl_form)(q, r) == [10.0]
    reward_caller(trl_named)(q, r)
    assert seen == [("positional", q, r), ("trl", ["prompts"], r), ("named", q, r)]
    assert reward_caller(Scorer())(q, r) == [1.0]
    # a positional reward whose second parameter is named completions stays positional; TRL's keywords are used where
    # a positional call would hand completions the queries
    assert reward_caller(lambda queries, completions: (queries, completions))(q, r) == (q, r)
    assert reward_caller(lambda queries, responses, completions=None: (queries, responses))(q, r) == (q, r)
    assert reward_caller(lambda completions, prompts, **kw: (prompts, completions))(q, r) == (q, r)
    assert reward_caller(functools.partial(lambda queries, responses, k: [k], k=2.0))(q, r) == [2.0]


def test_a_function_of_neither_form_is_refused_with_its_signature():
    def one_argument(responses):
        return responses

    def keyword_only(*, completions, solution):  # a TRL reward reading a dataset column (not passed here)
        return completions

    with pytest.raises(TypeError, match=r"one_argument\(responses\) cannot be called as f\(queries, responses\)"):
        reward_caller(one_argument)
    with pytest.raises(TypeError, match=r"keyword_only\(\*, completions, solution\) takes TRL's completions= but"):
        reward_caller(keyword_only)


def test_ppo_trains_on_a_trl_style_reward_and_refuses_a_bad_one_when_built(tmp_path, gpt2_tokenizer):
    def reward_len(completions, **kwargs):
        return [len(c) / 10.0 for c in completions]

    trainer = make_trainer(tmp_path, gpt2_tokenizer, reward=reward_len, total_episodes=8, truncate_token=None)
    trainer.reward_model = lambda queries, responses: [7.0] * len(responses)  # swapped, as the online loop swaps it
    assert trainer.score(["q"], ["r"]).tolist() == [7.0]
    trainer.reward_model = reward_len
    assert trainer.score(["q"], ["four"]).tolist() == pytest.approx([0.4])
    trainer.train()
    scores = logged(trainer, "objective/scores")
    assert len(scores) == 1 and scores[0] > 0  # the responses' lengths / 10
    with pytest.raises(TypeError, match="cannot be called as f\\(queries, responses\\)"):
        make_trainer(tmp_path, gpt2_tokenizer, reward=lambda responses: responses)



def test_value_model_as_a_kind_or_a_path(tmp_path, gpt2_tokenizer):
    """The trainer's value_model=: the config's kind by name is accepted (another kind is an error naming both), a
    folder is loaded as a value model, like model= and reward_model=."""
    def build(value_model):
        return PPOTrainer(make_policy(), lambda q, r: [0.0] * len(r), make_config(tmp_path),
                          Dataset.from_dict({"query": QUERIES}), processing_class=gpt2_tokenizer, value_model=value_model)

    with pytest.raises(ValueError, match=r"value_model='policy' was given to the trainer, PPOConfig.value_model is 'shared'"):
        build("policy")
    folder = tmp_path / "value"
    GPT2ForSequenceClassification(tiny_gpt2_config(num_labels=1)).save_pretrained(folder)
    assert build("shared").value_model is None  # the paper's head on the policy trunk
    loaded = build(str(folder)).value_model
    assert isinstance(loaded, GPT2ForSequenceClassification) and loaded.config.num_labels == 1
