"""Moving from TRL <= 1.12's PPOTrainer: the flows of TRL 1.12's examples/scripts/ppo/ppo.py and ppo_tldr.py, on local
tiny models and local datasets, with only the import changed (``from hf_prefs import PPOConfig, PPOTrainer``).

The flow, as TRL's scripts run it: parse ``(ScriptArguments, PPOConfig, ModelConfig)`` with ``HfArgumentParser``;
tokenizer with padding on the left and a "[PAD]" token added to the tokenizer only; reward AND value model loaded as
``AutoModelForSequenceClassification(num_labels=1)`` from ``reward_model_path`` (their configs have no pad id); policy
and reference from ``sft_model_path``; the ``prompt`` column tokenized to ``input_ids`` (TL;DR: prompts of <= 512
tokens); ``PPOTrainer(args=, processing_class=, model=, ref_model=, reward_model=, value_model=, train_dataset=,
eval_dataset=, peft_config=)``; ``train()``; ``save_model(output_dir)``; ``push_to_hub(dataset_name=)``;
``generate_completions()``. Each stage is asserted. And TRL's reward-modeling script ``trl/scripts/reward.py`` with its
trainer imported from hf_prefs.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import pytest
import torch
from accelerate import PartialState
from datasets import Dataset, load_dataset
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GPT2ForSequenceClassification,
    HfArgumentParser,
)
from trl import ModelConfig, ScriptArguments, get_peft_config

from conftest import tiny_gpt2_config
from hf_prefs import PPOConfig, PPOTrainer  # the one line a TRL user changes
from hf_prefs.models.value_head import PolicyWithValueHead

#: TRL 1.12's PPOConfig defaults (trl/experimental/ppo/ppo_config.py of the 1.12.0 wheel), field by field.
TRL_112_DEFAULTS = {
    "dataset_num_proc": None, "num_mini_batches": 1, "total_episodes": None, "local_rollout_forward_batch_size": 64,
    "num_sample_generations": 10, "response_length": 53, "stop_token": None, "stop_token_id": None,
    "temperature": 0.7, "missing_eos_penalty": None, "sft_model_path": "EleutherAI/pythia-160m",
    "num_total_batches": None, "micro_batch_size": None, "local_batch_size": None, "batch_size": None,
    "local_mini_batch_size": None, "mini_batch_size": None, "push_to_hub": False,
    "reward_model_path": "EleutherAI/pythia-160m", "model_adapter_name": None, "ref_adapter_name": None,
    "num_ppo_epochs": 4, "whiten_rewards": False, "kl_coef": 0.05, "kl_estimator": "k1", "cliprange": 0.2,
    "vf_coef": 0.1, "cliprange_value": 0.2, "gamma": 1.0, "lam": 0.95, "ds3_gather_for_generation": True,
    "learning_rate": 3e-6, "world_size": None,
}
#: Where hf_prefs' default differs from TRL 1.12's and README.md's migration table says why (TRL's value was inert).
DIFFERENT_ON_PURPOSE = {"gradient_checkpointing", "logging_steps", "bf16", "max_grad_norm"}


def test_every_trl_112_field_is_accepted_with_its_default():
    fields = {f.name: f for f in dataclasses.fields(PPOConfig)}
    assert set(TRL_112_DEFAULTS) <= set(fields)
    for name, default in TRL_112_DEFAULTS.items():
        assert fields[name].default == default, name
    args = PPOConfig(output_dir="/tmp/unused", use_cpu=True)
    assert args.world_size == 1  # TRL's field shadows TrainingArguments' property; here it reads the process count
    assert not args.adaptive_kl and args.truncate_token is None and not args.whiten_rewards  # the paper's additions off
    paper = PPOConfig.paper("books", output_dir="/tmp/unused", use_cpu=True)
    assert (paper.response_length, paper.truncate_token, paper.truncate_after, paper.kl_coef, paper.adaptive_kl) == (
        24, ".", 16, 0.15, True
    )
    assert paper.per_device_train_batch_size * paper.gradient_accumulation_steps == 512 and paper.whiten_rewards
    # what report_to integrations log: the stop/truncation tokens as set (TrainingArguments masks every *_token field);
    # a secret stays masked, and the dict rebuilds the config
    stop = PPOConfig(output_dir="/tmp/unused", use_cpu=True, stop_token="eos", hub_token="secret")
    assert paper.to_sanitized_dict()["truncate_token"] == "." and stop.to_dict()["stop_token"] == "eos"
    assert stop.to_dict()["hub_token"] == "<HUB_TOKEN>"
    assert PPOConfig(**{**stop.to_dict(), "hub_token": None}).stop_token == "eos"


@pytest.mark.parametrize("flags, on", [([], False), (["--gradient_checkpointing"], True),
                                       (["--gradient_checkpointing", "false"], False),
                                       (["--activation_checkpointing"], True)])
def test_trl_checkpointing_flags_parse(flags, on):
    """TRL scripts' spellings of the checkpointing flag (a bare `--gradient_checkpointing` is true); off by default."""
    from trl import TrlParser

    (args,) = TrlParser((PPOConfig,)).parse_args_and_config(["--output_dir", "/tmp/unused", "--use_cpu", "true", *flags])
    assert args.activation_checkpointing is on and args.gradient_checkpointing is on


# ---------------------------------------------------------------------------------------------------------------------
# local stand-ins for the Hub ids of TRL's scripts
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_hub(tmp_path_factory, gpt2_tokenizer_pristine):
    """An SFT policy (tiny GPT-2 + the real GPT-2 tokenizer), a reward model folder (GPT2ForSequenceClassification,
    num_labels=1, no pad id in its config, like TRL's) and two datasets shaped like TRL's: a 'descriptiveness' split
    with a `prompt` column, and TL;DR train/validation splits whose prompts end with "TL;DR:"."""
    root = tmp_path_factory.mktemp("local_hub")
    torch.manual_seed(0)
    sft = root / "sft"
    AutoModelForCausalLM.from_config(tiny_gpt2_config()).save_pretrained(sft)
    gpt2_tokenizer_pristine.save_pretrained(sft)
    rm = root / "reward"
    config = tiny_gpt2_config()
    config.num_labels = 1
    assert config.pad_token_id is None
    GPT2ForSequenceClassification(config).save_pretrained(rm)
    gpt2_tokenizer_pristine.save_pretrained(rm)
    words = "the sun rose over the quiet town and she walked to the river".split()
    prompts = [" ".join(words[i % 7 : i % 7 + 4 + i % 5]).capitalize() + "." for i in range(110)]
    desc = root / "descriptiveness-sentiment"
    (desc / "data").mkdir(parents=True)
    Dataset.from_dict({"prompt": prompts}).to_parquet(desc / "data" / "descriptiveness-00000-of-00001.parquet")
    tldr = root / "tldr"
    (tldr / "data").mkdir(parents=True)
    posts = [f"SUBREDDIT: r/books\nTITLE: {p}\nPOST: {p} {p}\nTL;DR:" for p in prompts]
    Dataset.from_dict({"prompt": posts[:16], "completion": [" a walk."] * 16}).to_parquet(tldr / "data" / "train-00000-of-00001.parquet")
    Dataset.from_dict({"prompt": posts[16:24], "completion": [" a walk."] * 8}).to_parquet(tldr / "data" / "validation-00000-of-00001.parquet")
    return {"sft": str(sft), "rm": str(rm), "desc": str(desc), "tldr": str(tldr)}


def _load_models(script_args, training_args, model_args):
    """TRL's scripts: [PAD] added to the tokenizer only; value and reward model both from reward_model_path."""
    dtype = model_args.dtype if model_args.dtype in ["auto", None] else getattr(torch, model_args.dtype)
    model_kwargs = dict(revision=model_args.model_revision, attn_implementation=model_args.attn_implementation, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, padding_side="left")
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    value_model = AutoModelForSequenceClassification.from_pretrained(training_args.reward_model_path, num_labels=1, **model_kwargs)
    reward_model = AutoModelForSequenceClassification.from_pretrained(training_args.reward_model_path, num_labels=1, **model_kwargs)
    policy = AutoModelForCausalLM.from_pretrained(training_args.sft_model_path, **model_kwargs)
    peft_config = get_peft_config(model_args)
    ref_policy = None if peft_config is not None else AutoModelForCausalLM.from_pretrained(training_args.sft_model_path, **model_kwargs)
    return tokenizer, value_model, reward_model, policy, ref_policy, peft_config


def _parse(argv):
    parser = HfArgumentParser((ScriptArguments, PPOConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_into_dataclasses(args=argv)
    shutil.rmtree(training_args.output_dir, ignore_errors=True)
    return script_args, training_args, model_args


def _common(hub, out, *extra):
    return [
        "--output_dir", str(out), "--model_name_or_path", hub["sft"], "--sft_model_path", hub["sft"],
        "--reward_model_path", hub["rm"], "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
        "--local_rollout_forward_batch_size", "4", "--response_length", "8", "--use_cpu", "True", "--bf16", "False",
        "--report_to", "none", "--disable_tqdm", "True", "--seed", "0", *extra,
    ]


def _check_trained_and_saved(trainer, training_args, n_updates):
    log = [h for h in trainer.state.log_history if "objective/kl" in h]
    assert trainer.state.global_step == training_args.num_total_batches == n_updates and len(log) == n_updates
    for key in ("objective/kl", "objective/scores", "objective/rlhf_reward", "loss/policy_avg", "loss/value_avg",
                "policy/approxkl_avg", "val/clipfrac_avg", "eps", "lr", "episode"):
        assert all(math.isfinite(h[key]) for h in log), key
    assert log[0]["objective/kl"] == pytest.approx(0.0, abs=1e-5)  # pi = rho before the first update
    a = training_args  # the derived sizes, set by the trainer as TRL did
    assert (a.world_size, a.local_batch_size, a.micro_batch_size, a.batch_size, a.mini_batch_size) == (1, 4, 4, 4, 4)
    out = Path(training_args.output_dir)
    trainer.save_model(training_args.output_dir)
    names = {p.name for p in out.iterdir()}
    assert {"tokenizer_config.json", "value_model"} <= names
    assert {"config.json", "model.safetensors"} <= names or {"adapter_config.json", "adapter_model.safetensors"} <= names
    return out


# ---------------------------------------------------------------------------------------------------------------------
# examples/scripts/ppo/ppo.py
# ---------------------------------------------------------------------------------------------------------------------
def test_trl_ppo_py_flow_with_the_import_changed(local_hub, tmp_path, fake_hub):
    # 1. parse: TRL's flags, including sft_model_path / reward_model_path / missing_eos_penalty
    script_args, training_args, model_args = _parse(_common(
        local_hub, tmp_path / "ppo", "--dataset_name", local_hub["desc"], "--dataset_train_split", "descriptiveness",
        "--total_episodes", "8", "--missing_eos_penalty", "1.0", "--num_sample_generations", "2",
        "--per_device_eval_batch_size", "8", "--push_to_hub", "True", "--hub_model_id", "me/ppo-tiny",
    ))
    assert training_args.missing_eos_penalty == 1.0 and training_args.sft_model_path == local_hub["sft"]
    # 2. models as TRL's script loads them (no pad id in the reward/value configs, [PAD] only in the tokenizer)
    tokenizer, value_model, reward_model, policy, ref_policy, peft_config = _load_models(script_args, training_args, model_args)
    assert reward_model.config.pad_token_id is None and tokenizer.pad_token_id == 50257 == len(tokenizer) - 1
    # 3. dataset: the last 100 rows for evaluation, prompts tokenized to input_ids
    dataset = load_dataset(script_args.dataset_name, name=script_args.dataset_config, split=script_args.dataset_train_split)
    eval_samples = 100
    train_dataset = dataset.select(range(len(dataset) - eval_samples))
    eval_dataset = dataset.select(range(len(dataset) - eval_samples, len(dataset)))

    def prepare_dataset(dataset, tokenizer):
        def tokenize(element):
            return {"input_ids": tokenizer(element["prompt"], padding=False)["input_ids"]}

        return dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, num_proc=training_args.dataset_num_proc)

    with PartialState().local_main_process_first():
        train_dataset = prepare_dataset(train_dataset, tokenizer)
        eval_dataset = prepare_dataset(eval_dataset, tokenizer)
    # 4. the trainer, with TRL's keyword names
    trainer = PPOTrainer(
        args=training_args, processing_class=tokenizer, model=policy, ref_model=ref_policy, reward_model=reward_model,
        value_model=value_model, train_dataset=train_dataset, eval_dataset=eval_dataset, peft_config=peft_config,
    )
    trainer.train()
    # 5. save: the policy AND the value model (TRL dropped the value model), reloadable together
    out = _check_trained_and_saved(trainer, training_args, n_updates=2)
    reloaded = PolicyWithValueHead.from_pretrained(out)
    ids = torch.tensor([tokenizer.encode("The sun rose")])
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).values, trainer.model(ids).values, atol=1e-6)
    # 6. push, with TRL's dataset_name keyword: the card names the dataset and the paper
    trainer.push_to_hub(dataset_name=script_args.dataset_name)
    files = fake_hub.repos["me/ppo-tiny"]
    assert "README.md" in files and script_args.dataset_name.encode() in files["README.md"]
    assert b"1909.08593" in files["README.md"] and "value_model/model.safetensors" in files
    # 7. completions on the evaluation set (TRL: near-greedy, the first rows printed)
    completions = trainer.generate_completions()
    assert list(completions.columns) == ["query", "model response", "score"] and len(completions) == eval_samples
    assert all(math.isfinite(s) for s in completions["score"])


def test_trl_positional_order_and_defaults_from_the_config_paths(local_hub, tmp_path):
    """TRL 1.12's positional order (args, processing_class, model, ref_model, reward_model, train_dataset, value_model)
    and, with no model given, the policy and reward model from sft_model_path / reward_model_path."""
    _, training_args, _ = _parse(_common(local_hub, tmp_path / "pos", "--total_episodes", "4", "--num_sample_generations", "0"))
    tok = AutoTokenizer.from_pretrained(local_hub["sft"], padding_side="left")
    ds = Dataset.from_dict({"input_ids": [tok.encode("She walked to the river")] * 4})
    policy = AutoModelForCausalLM.from_pretrained(local_hub["sft"])
    rm = AutoModelForSequenceClassification.from_pretrained(local_hub["rm"], num_labels=1)
    trainer = PPOTrainer(training_args, tok, policy, None, rm, ds, None)
    assert trainer.model.policy is policy and trainer.reward_model is rm and trainer.train_dataset["query"][0]
    # TRL 1.12's attribute names
    assert trainer.policy_model is policy and trainer.value_model is None and trainer.train_dataset_len == 4
    assert trainer.stop_token_id is None  # no TRL stop token set
    # TRL's positional order with TRL's keywords after it: each binds to its own TRL parameter
    vm = AutoModelForSequenceClassification.from_pretrained(local_hub["rm"], num_labels=1)
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.1)
    mixed = PPOTrainer(training_args, tok, policy, None, rm, ds, value_model=vm, optimizers=(optimizer, None))
    assert mixed.model.value_model is vm and mixed.optimizer is optimizer and mixed.reward_model is rm
    assert mixed.value_model is vm
    with pytest.raises(TypeError, match="multiple values for reward_model"):
        PPOTrainer(training_args, tok, policy, None, rm, ds, reward_model=rm)
    by_path = PPOTrainer(args=training_args, processing_class=tok, train_dataset=ds)
    assert by_path.model.policy.config.n_layer == 2 and by_path.reward_model.config.num_labels == 1


# ---------------------------------------------------------------------------------------------------------------------
# examples/scripts/ppo/ppo_tldr.py
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_peft", [False, True])
def test_trl_ppo_tldr_flow_with_the_import_changed(local_hub, tmp_path, use_peft):
    script_args, training_args, model_args = _parse(_common(
        local_hub, tmp_path / "tldr", "--dataset_name", local_hub["tldr"], "--dataset_test_split", "validation",
        "--total_episodes", "8", "--missing_eos_penalty", "1.0", "--stop_token", "eos", "--eval_strategy", "steps",
        "--eval_steps", "100", "--num_sample_generations", "1", "--per_device_eval_batch_size", "4",
        *(["--use_peft", "--lora_r", "4", "--lora_target_modules", "c_attn", "c_proj"] if use_peft else []),
    ))
    tokenizer, value_model, reward_model, policy, ref_policy, peft_config = _load_models(script_args, training_args, model_args)
    dataset = load_dataset(script_args.dataset_name, name=script_args.dataset_config)
    train_dataset = dataset[script_args.dataset_train_split]
    eval_dataset = dataset[script_args.dataset_test_split] if training_args.eval_strategy != "no" else None

    def prepare_dataset(dataset, tokenizer):
        def tokenize(element):
            input_ids = tokenizer(element["prompt"], padding=False)["input_ids"]
            return {"input_ids": input_ids, "lengths": len(input_ids)}

        return dataset.map(tokenize, remove_columns=dataset.column_names, num_proc=training_args.dataset_num_proc)

    with PartialState().local_main_process_first():
        train_dataset = prepare_dataset(train_dataset, tokenizer)
        eval_dataset = prepare_dataset(eval_dataset, tokenizer)
        train_dataset = train_dataset.filter(lambda x: x["lengths"] <= 512, num_proc=training_args.dataset_num_proc)
        eval_dataset = eval_dataset.filter(lambda x: x["lengths"] <= 512, num_proc=training_args.dataset_num_proc)
    assert train_dataset[0]["input_ids"][-1] != tokenizer.eos_token_id, "The last token should not be an EOS token"
    trainer = PPOTrainer(
        args=training_args, processing_class=tokenizer, model=policy, ref_model=ref_policy, reward_model=reward_model,
        value_model=value_model, train_dataset=train_dataset, eval_dataset=eval_dataset, peft_config=peft_config,
    )
    # TRL's stop token: responses end after the first EOS; what follows is masked out of KL and losses
    assert trainer.rollout_spec.truncate_token_id == tokenizer.eos_token_id and trainer.rollout_spec.mask_after_cut
    assert trainer.stop_token_id == tokenizer.eos_token_id and trainer.value_model is value_model  # TRL's attributes
    assert trainer.policy_model is (trainer.model.policy if use_peft else policy)
    trainer.train()
    _check_trained_and_saved(trainer, training_args, n_updates=2)
    assert len(trainer.generate_completions()) == len(eval_dataset)


# ---------------------------------------------------------------------------------------------------------------------
# trl/scripts/reward.py (TRL's reward-modeling script, as installed)
# ---------------------------------------------------------------------------------------------------------------------
def test_trl_reward_script_with_the_import_changed(local_hub, tmp_path):
    """The installed TRL's own ``trl/scripts/reward.py`` with one line changed (its trainer imported from hf_prefs), run
    as a user runs it: a model path, a local pairwise dataset, TRL's RewardConfig flags; trains, saves, and the saved
    model scores the chosen completions above the rejected ones more often than before."""
    import subprocess
    import sys

    import trl.scripts.reward as trl_reward

    source = Path(trl_reward.__file__).read_text()
    old = "from trl import RewardTrainer, "
    assert source.count(old) == 1, "TRL's reward script imports its trainer differently now"
    script = tmp_path / "reward.py"
    script.write_text(source.replace(old, "from hf_prefs import PreferenceRewardTrainer as RewardTrainer\n    from trl import "))
    data = tmp_path / "pairs"
    (data / "data").mkdir(parents=True)
    good, bad = [" wonderful", " happy", " lovely"], [" terrible", " sad", " awful"]
    rows = {"chosen": [f"Day {i}. She felt{good[i % 3]}." for i in range(32)],
            "rejected": [f"Day {i}. She felt{bad[i % 3]}." for i in range(32)]}  # implicit prompt, as TRL's datasets
    Dataset.from_dict(rows).to_parquet(data / "data" / "train-00000-of-00001.parquet")
    out = tmp_path / "rm"
    cmd = [sys.executable, str(script), "--model_name_or_path", local_hub["rm"], "--dataset_name", str(data),
           "--output_dir", str(out), "--per_device_train_batch_size", "8", "--num_train_epochs", "3",
           "--learning_rate", "3e-3", "--use_cpu", "true", "--bf16", "false", "--report_to", "none",
           "--save_strategy", "no", "--disable_tqdm", "true", "--gradient_checkpointing", "false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Training completed" in proc.stdout + proc.stderr

    from hf_prefs import load_reward_model, score_texts

    def margin(path: str) -> float:  # mean r(chosen) - r(rejected), each read where the model was trained (with
        model, tok = load_reward_model(path)  # its response suffix: none here, whose tokenizer pads with EOS)
        prompts = [c.split(" She")[0] for c in rows["chosen"]]
        chosen, rejected = ([t[len(p):] for t, p in zip(rows[col], prompts)] for col in ("chosen", "rejected"))
        return float((torch.as_tensor(score_texts(model, tok, prompts, chosen))
                      - torch.as_tensor(score_texts(model, tok, prompts, rejected))).mean())

    before, after = margin(local_hub["rm"]), margin(str(out))
    print(f"mean reward margin chosen - rejected: {before:.3f} before, {after:.3f} after")
    assert after > before + 1.0
