"""A reward given as a function: hf_prefs' positional ``f(queries, responses)`` or TRL's reward-function form
``f(prompts=, completions=, **kwargs)`` (GRPO/RLOO), told apart when the trainer is built."""

from __future__ import annotations

import asyncio
import functools

import pytest
import torch
from datasets import Dataset
from transformers import GPT2ForSequenceClassification

from conftest import tiny_gpt2_config
from hf_prefs import PPOTrainer
from hf_prefs.trainers.reward_functions import combined_scores, reward_caller
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
    assert reward_caller(lambda queries=None, responses=None, **kw: (queries, responses), ["x"])(q, r, {"x": [1]}) == (q, r)


def test_a_function_of_neither_form_is_refused_with_its_signature():
    def one_argument(responses):
        return responses

    def keyword_only(*, completions, solution):  # a TRL reward reading a dataset column (not passed here)
        return completions

    with pytest.raises(TypeError, match=r"one_argument\(responses\) cannot be called as f\(queries, responses\)"):
        reward_caller(one_argument)
    with pytest.raises(TypeError, match=r"keyword_only\(\*, completions, solution\) takes TRL's keywords but cannot "
                                        r"be called with those offered \(prompts=, completions=\).*'solution'"):
        reward_caller(keyword_only)

    def timed(f):  # a decorator without functools.wraps: its signature says nothing of the form
        def wrapper(*args, **kwargs):
            return f(*args, **kwargs)
        return wrapper

    with pytest.raises(TypeError, match=r"wrapper\(\*args, \*\*kwargs\) can be called both as f\(queries, responses\) "
                                        r"and in TRL's keyword form.*functools.wraps"):
        reward_caller(timed(lambda completions, **kw: completions))
    wrapped = functools.wraps(keyword_only)(timed(keyword_only))  # with wraps the wrapped signature decides
    assert reward_caller(wrapped, ["solution"])(["q"], ["r"], {"solution": ["s"]}) == ["r"]


def test_dataset_columns_reach_a_trl_reward_by_name_and_conversational_prompts_as_trl_passes_them():
    q, r = ["two", "three"], ["2", "four"]

    def accuracy(completions, solution, **kwargs):  # TRL's GRPO example: a column read by name
        return [float(c == s) for c, s in zip(completions, solution)]

    call = reward_caller(accuracy, ["query", "solution", "completion_ids", "trainer_state"])
    assert call(q, r, {"solution": ["2", "3"], "query": q}) == [1.0, 0.0]
    # without the column the keywords do not bind: refused, naming it (it used to fall back to a positional call that
    # handed `completions` the queries and `solution` the responses)
    with pytest.raises(TypeError, match=r"accuracy\(completions, solution, \*\*kwargs\) takes TRL's keywords but "
                                        r"cannot be called with those offered \(prompts=, completions=, query=\).*"
                                        r"'solution'"):
        reward_caller(accuracy, ["query"])
    # only what a function names (or **kwargs) is passed; a conversational prompt column gives TRL's message lists
    chats = [[{"role": "user", "content": "two"}], [{"role": "user", "content": "three"}]]
    named = reward_caller(lambda prompts, completions, answer: (prompts, completions, answer), ["prompt", "answer", "x"])
    prompts, completions, answer = named(["rendered 2", "rendered 3"], r, {"prompt": chats, "answer": [2, 3], "x": [0, 0]})
    assert prompts == chats and answer == [2, 3]
    assert completions == [[{"role": "assistant", "content": "2"}], [{"role": "assistant", "content": "four"}]]
    # a text prompt column: the texts as given (the query texts)
    seen = reward_caller(lambda completions, **kw: sorted(kw.items()), ["prompt", "x"])(q, r, {"prompt": q, "x": [1, 2]})
    assert seen == [("prompts", q), ("x", [1, 2])]


def test_ppo_passes_each_rows_columns_completion_ids_and_state_to_a_trl_reward(tmp_path, gpt2_tokenizer):
    """Each response is scored with its own row's columns (the rows PPO sampled, dealt by length), its kept token ids
    and the trainer's state, during training and in generate_completions on eval_dataset."""
    answers = {query: f"answer {i}" for i, query in enumerate(QUERIES)}
    calls = []

    def reward(prompts, completions, completion_ids, trainer_state, answer, **kwargs):
        calls.append(trainer_state.global_step)
        assert [answers[p] for p in prompts] == answer  # each row's own column value
        assert [gpt2_tokenizer.decode(ids, skip_special_tokens=True) for ids in completion_ids] == completions
        assert sorted(kwargs) == ["input_ids", "log_extra", "log_metric", "query"] and kwargs["query"] == prompts
        return [float(len(ids)) for ids in completion_ids]

    data = Dataset.from_dict({"query": QUERIES * 2, "answer": [answers[x] for x in QUERIES * 2]})
    args = make_config(tmp_path, total_episodes=16, per_device_eval_batch_size=4)
    trainer = PPOTrainer(make_policy(), reward, args, data, processing_class=gpt2_tokenizer,
                         eval_dataset=data.select(range(5)))
    for world, rank in ((1, 0), (2, 0), (2, 1)):  # the rows behind queries_for, in its order
        assert trainer.train_dataset[trainer.query_rows(1, world, rank)]["query"] == trainer.queries_for(1, world, rank)[2]
    trainer.make_rollout(*trainer.queries_for(1, 2, 1))  # other rows (benchmarks/scaling.py's workers): theirs
    assert calls == [0]
    trainer.train()
    assert calls[1:3] == [0, 1]  # one call per update (generate_completions' calls in between)
    table = trainer.generate_completions()
    assert len(table) == 5 and calls[-1] == 2
    with pytest.raises(TypeError, match=r"^train_dataset \(columns \['query', 'input_ids'\]\): .*those offered "
                                        r"\(prompts=, completions=, query=, input_ids=, completion_ids=, trainer_state=, "
                                        r"log_extra=, log_metric=\).*'answer'"):
        PPOTrainer(make_policy(), reward, args, Dataset.from_dict({"query": QUERIES}), processing_class=gpt2_tokenizer)
    with pytest.raises(TypeError, match=r"^eval_dataset \(columns \['query', 'input_ids'\]\): .*'answer'"):
        PPOTrainer(make_policy(), reward, args, data, processing_class=gpt2_tokenizer,
                   eval_dataset=Dataset.from_dict({"query": QUERIES}))


def test_trl_forms_without_a_completions_parameter_and_async_functions_are_called_with_keywords():
    from trl.rewards import get_soft_overlong_punishment

    q, r, ids = ["a", "b"], ["x", "y"], [[1, 2, 3], [4] * 9]
    extra = {"completion_ids": ids, "trainer_state": None}
    overlong = get_soft_overlong_punishment(max_completion_len=8, soft_punish_cache=4)  # TRL's own: (completion_ids, **kw)
    assert reward_caller(overlong, extra)(q, r, extra) == pytest.approx([0.0, -1.0])
    assert reward_caller(lambda **kw: [len(c) for c in kw["completions"]], extra)(q, ["xy", "z"], extra) == [2, 1]
    assert reward_caller(lambda prompts, **kw: prompts, extra)(q, r, extra) == q

    async def remote(completions, **kwargs):  # GRPO awaits async reward functions
        return [1.0 for _ in completions]

    assert reward_caller(remote, extra)(q, r, extra) == [1.0, 1.0]

    async def inside_a_running_loop():  # a notebook's: asyncio.run cannot nest there
        return reward_caller(remote, extra)(q, r, extra)

    assert asyncio.run(inside_a_running_loop()) == [1.0, 1.0]


def test_a_list_of_functions_is_summed_with_weights_and_none_means_no_score():
    """Row scores by hand: Σ_i w_i·r_i over the functions that scored the row (None: not scored); a row none scored
    gets 0 with a warning (GRPO's nansum); NaN is kept (PPO stops on it); bad outputs name their function."""
    def first(completions, **kw):
        return [1.0, None, None, 2.0]

    def second(queries, responses):
        return torch.tensor([[10.0], [20.0], [float("nan")], [30.0]])  # (B, 1), positional form

    with pytest.warns(UserWarning, match=r"no reward function scored rows \[1\] of 2"):
        got = combined_scores([lambda completions, **kw: [3.0, None]], None, ["q"] * 2, ["r"] * 2)
    assert got.tolist() == [3.0, 0.0]
    total = combined_scores([first, second], [0.5, -1.0], ["q"] * 4, ["r"] * 4)
    assert total[[0, 1, 3]].tolist() == [0.5 * 1.0 - 10.0, -20.0, 0.5 * 2.0 - 30.0] and torch.isnan(total[2])
    for bad, said in ((lambda q, r: ["1.0"] * len(r), r"returned str '1.0' at row 0"),
                      (lambda q, r: [1.0], r"returned 1 scores for 4 responses"),
                      (lambda q, r: None, r"returned NoneType \(None\)"),
                      (lambda q, r: torch.zeros(1, 4), r"returned shape \(1, 4\)")):
        with pytest.raises(ValueError, match=r"the reward function .*<lambda> " + said + r".*one float score per response"):
            combined_scores([first, bad], None, ["q"] * 4, ["r"] * 4)


def test_ppo_trains_on_weighted_reward_functions_with_logged_metrics_and_columns(tmp_path, gpt2_tokenizer):
    def length(completions, log_metric, log_extra, **kwargs):
        log_metric("reward/mean_length", sum(len(c) for c in completions) / len(completions))
        log_metric("objective/kl", -1.0)  # a built-in metric's name: logged beside it, not over it
        log_metric("step", -2.0)  # one Trainer.log adds after log_step
        log_extra("length", [len(c) for c in completions])
        return [float(len(c)) for c in completions]

    def constant(queries, responses):
        return [1.0] * len(responses)

    args = make_config(tmp_path, total_episodes=16, reward_weights=[0.1, 2.0], num_sample_generations=2, truncate_token=None)
    trainer = PPOTrainer(make_policy(), [length, constant], args, Dataset.from_dict({"query": QUERIES * 2}),
                         processing_class=gpt2_tokenizer)
    with pytest.warns(UserWarning, match=r"log_metric\('objective/kl', ...\) of a reward function names one of "
                                         r"PPOTrainer's own metrics or groups: logged as 'reward_fn/objective/kl'"):
        trainer.train()
    assert logged(trainer, "reward_fn/objective/kl") == [-1.0, -1.0] and logged(trainer, "reward_fn/step") == [-2.0, -2.0]
    assert logged(trainer, "step") == [1, 2]
    assert len(logged(trainer, "objective/kl")) == 2 and -1.0 not in logged(trainer, "objective/kl")
    texts = trainer.last_samples["response"].tolist()
    assert trainer.last_samples["length"].tolist() == [len(t) for t in texts]
    assert trainer.last_samples["score"].tolist() == pytest.approx([0.1 * len(t) + 2.0 for t in texts])
    lengths = logged(trainer, "reward/mean_length")
    assert len(lengths) == 2 and all(v > 0 for v in lengths)
    with pytest.raises(ValueError, match="PPOConfig.reward_weights has 2 weights for 1 reward functions"):
        PPOTrainer(make_policy(), length, args, Dataset.from_dict({"query": QUERIES}), processing_class=gpt2_tokenizer)
    with pytest.raises(TypeError, match="a list takes reward functions \\(callables\\), item 1 is GPT2ForSequenceClassification"):
        PPOTrainer(make_policy(), [length, GPT2ForSequenceClassification(tiny_gpt2_config(num_labels=1))],
                   make_config(tmp_path), Dataset.from_dict({"query": QUERIES}), processing_class=gpt2_tokenizer)


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


def test_subclasses_overriding_score_and_make_rollout_with_their_old_signatures_still_train(tmp_path, gpt2_tokenizer):
    """score(q, r) and make_rollout(ids, mask, texts) keep their signatures: a TRL reward's columns reach it through
    scoring_with, not through new parameters an override would not take."""
    seen = []

    class Tracking(PPOTrainer):
        def score(self, query_texts, response_texts):
            seen.append(len(response_texts))
            return super().score(query_texts, response_texts)

        def make_rollout(self, query_ids, query_mask, query_texts):
            return super().make_rollout(query_ids, query_mask, query_texts)

    def reward(completions, answer, **kwargs):
        return [float(a == "x") for a in answer]

    data = Dataset.from_dict({"query": QUERIES * 2, "answer": ["x"] * 10})
    trainer = Tracking(make_policy(), reward, make_config(tmp_path, total_episodes=8, truncate_token=None), data,
                       processing_class=gpt2_tokenizer)
    trainer.train()
    assert seen == [8] and logged(trainer, "objective/scores") == [1.0]
