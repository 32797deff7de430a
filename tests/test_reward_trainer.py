"""PreferenceRewardTrainer on a tiny GPT-2 with the real GPT-2 tokenizer."""

from __future__ import annotations

import copy
import json
import math
import os
import random
import warnings

import pytest
import torch
from conftest import tiny_gpt2_config
from datasets import Dataset, IterableDataset
from transformers import GPT2ForSequenceClassification
from trl import TrlParser

from hf_prefs.labels.schema import LabelValidationError
from hf_prefs.models.loading import NORMALIZATION_FILE
from hf_prefs.models.reward_model import GAIN_KEY, get_reward_normalization
from hf_prefs import load_reward_model, score_texts
from hf_prefs.trainers import DataCollatorForKWayPreference, PreferenceRewardConfig, PreferenceRewardTrainer

GOOD = [" wonderful", " happy", " lovely", " delightful", " cheerful"]
BAD = [" terrible", " sad", " awful", " dreadful", " gloomy"]


def toy_labels(n: int, k: int = 4, seed: int = 0) -> Dataset:
    """Best-of-K labels whose best sample is the only one with a positive word."""
    rng = random.Random(seed)
    rows = {"query": [], "samples": [], "best": [], "known_rewards": []}
    for i in range(n):
        best = rng.randrange(k)
        rows["query"].append(f"Chapter {i}. After the ball she felt")
        rows["samples"].append([(rng.choice(GOOD) if j == best else rng.choice(BAD)) + " all day." for j in range(k)])
        rows["best"].append(best)
        rows["known_rewards"].append([float(j == best) for j in range(k)])
    return Dataset.from_dict(rows)


def rho_samples(n: int = 32, seed: int = 1) -> Dataset:
    rng = random.Random(seed)
    words = GOOD + BAD + [" the", " a", " walk", " letter"]
    return Dataset.from_dict(
        {
            "query": [f"Chapter {i}. She said" for i in range(n)],
            "response": ["".join(rng.choices(words, k=5)) for _ in range(n)],
        }
    )


def tiny_rm(tokenizer, seed: int = 0) -> GPT2ForSequenceClassification:
    cfg = tiny_gpt2_config()
    cfg.num_labels = 1
    cfg.pad_token_id = tokenizer.eos_token_id
    torch.manual_seed(seed)
    return GPT2ForSequenceClassification(cfg)


def make_args(tmp_path, **kw) -> PreferenceRewardConfig:
    base = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        learning_rate=3e-3,
        num_train_epochs=1,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        gradient_checkpointing=False,
        normalize_before=False,
        normalize_after=False,
        seed=0,
    )
    base.update(kw)
    return PreferenceRewardConfig(**base)


def test_config_defaults_are_cpu_friendly_and_paper_like(tmp_path):
    args = PreferenceRewardConfig(output_dir=str(tmp_path))
    assert args.bf16 is (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    assert (args.normalize_before, args.normalize_after, args.normalize_samples) == (True, True, 256)
    assert (args.target_mean, args.target_std) == (0.0, 1.0)
    with pytest.raises(ValueError, match="num_candidates"):
        PreferenceRewardConfig(output_dir=str(tmp_path), num_candidates=1)


def test_activation_checkpointing_on_as_in_trl_without_a_deprecation_warning(tmp_path, recwarn):
    """TRL's `gradient_checkpointing` (default True) reaches transformers' `activation_checkpointing` without the
    deprecation warning transformers >= 5.25 gives on every TRL config; both names and TRL's CLI spellings work."""
    args = PreferenceRewardConfig(output_dir=str(tmp_path))
    assert args.activation_checkpointing is True and args.gradient_checkpointing is True
    assert not [w for w in recwarn if "gradient_checkpointing" in str(w.message)]
    assert PreferenceRewardConfig(output_dir=str(tmp_path), activation_checkpointing=False).gradient_checkpointing is False
    assert PreferenceRewardConfig(output_dir=str(tmp_path), gradient_checkpointing=False).activation_checkpointing is False
    for flags, on in ([], True), (["--gradient_checkpointing"], True), (["--no_gradient_checkpointing"], False), (
            ["--gradient_checkpointing", "false"], False), (["--activation_checkpointing", "false"], False):
        (parsed,) = TrlParser((PreferenceRewardConfig,)).parse_args_and_config(
            ["--output_dir", str(tmp_path), "--use_cpu", "true", *flags])
        assert parsed.activation_checkpointing is on and parsed.gradient_checkpointing is on, flags


@pytest.mark.parametrize("share_query_prefix", [False, True])
def test_one_forward_pass_per_batch_for_all_k_candidates(gpt2_tokenizer, tmp_path, share_query_prefix):
    model = tiny_rm(gpt2_tokenizer)
    batch_rows = []
    model.register_forward_hook(
        lambda mod, args, kwargs, out: batch_rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    args = make_args(tmp_path, max_steps=3, share_query_prefix=share_query_prefix)
    trainer = PreferenceRewardTrainer(model, args, train_dataset=toy_labels(12), processing_class=gpt2_tokenizer)
    trainer.train()
    # 3 steps of B=4 labels x K=4 samples: one forward each, with B*K rows (or B packed rows)
    expected_rows = 4 if share_query_prefix else 16
    assert batch_rows == [expected_rows] * 3


def test_packed_batch_gives_the_same_loss_and_gradients(gpt2_tokenizer, tmp_path):
    model = tiny_rm(gpt2_tokenizer)
    trainer = PreferenceRewardTrainer(
        model, make_args(tmp_path), train_dataset=toy_labels(8), processing_class=gpt2_tokenizer
    )
    examples = [trainer.train_dataset[i] for i in range(6)]
    model.train()
    results = []
    for packed in (False, True):
        collator = DataCollatorForKWayPreference(pad_token_id=gpt2_tokenizer.eos_token_id, share_query_prefix=packed)
        model.zero_grad()
        loss, out = trainer.compute_loss(model, collator(examples), return_outputs=True)
        loss.backward()
        results.append((loss.item(), out["logits"].detach(), model.transformer.wte.weight.grad.clone()))
    (l0, r0, g0), (l1, r1, g1) = results
    assert r0.shape == r1.shape == (6, 4)
    assert torch.allclose(r0, r1, atol=1e-5)
    assert l0 == pytest.approx(l1, abs=1e-5)
    assert torch.allclose(g0, g1, atol=1e-5)


def test_training_lowers_loss_and_logs_metrics(gpt2_tokenizer, tmp_path):
    model = tiny_rm(gpt2_tokenizer)
    args = make_args(
        tmp_path, num_train_epochs=3, per_device_train_batch_size=8, logging_steps=4, eval_strategy="epoch"
    )
    trainer = PreferenceRewardTrainer(
        model, args, train_dataset=toy_labels(64), eval_dataset=toy_labels(32, seed=1), processing_class=gpt2_tokenizer
    )
    assert trainer.num_candidates == 4
    start = trainer.evaluate()
    assert start["eval_loss"] == pytest.approx(math.log(4), abs=0.05)  # a fresh head scores everything ~equally
    trainer.train()
    end = trainer.evaluate()
    assert end["eval_loss"] < 0.5 * start["eval_loss"]
    assert end["eval_accuracy"] > 0.9
    train_logs = [h for h in trainer.state.log_history if "loss" in h]
    assert train_logs[-1]["loss"] < train_logs[0]["loss"]
    for key in ("loss", "accuracy", "margin", "mean_reward", "std_reward", "min_reward", "max_reward", "num_tokens"):
        assert key in train_logs[0], key
        assert f"eval_{key}" in end, key
    assert end["eval_std_reward"] > 0 and end["eval_margin"] > start["eval_margin"] + 1.0  # TRL's metric, K-way


def test_eval_metrics_are_over_the_whole_eval_set(gpt2_tokenizer, tmp_path):
    """5 eval labels in batches of 3 and 2: accuracy, mean, population std, min and max of the eval set as computed
    from its rewards by hand (TRL's per-batch averages weighed the batch of 2 as much as the batch of 3, and averaged
    stds); the loss as before."""
    from hf_prefs.core.losses import kway_accuracy

    labels = toy_labels(5, seed=3)
    trainer = PreferenceRewardTrainer(tiny_rm(gpt2_tokenizer, seed=4), make_args(tmp_path, per_device_eval_batch_size=3),
                                      train_dataset=toy_labels(4), eval_dataset=labels, processing_class=gpt2_tokenizer)
    metrics = trainer.evaluate()
    rewards = torch.stack([score_texts(trainer.model, gpt2_tokenizer, [q] * 4, s, normalized=False)
                           for q, s in zip(labels["query"], labels["samples"])])  # (5, 4)
    best = torch.tensor(labels["best"])
    assert metrics["eval_accuracy"] == pytest.approx(kway_accuracy(rewards, best).item(), abs=1e-6)
    assert metrics["eval_mean_reward"] == pytest.approx(rewards.mean().item(), abs=1e-5)
    assert metrics["eval_std_reward"] == pytest.approx(rewards.std(unbiased=False).item(), abs=1e-5)
    assert (metrics["eval_min_reward"], metrics["eval_max_reward"]) == pytest.approx(
        (rewards.min().item(), rewards.max().item()), abs=1e-5)


def test_labels_longer_than_the_model_positions_are_dropped_not_crashed_on(gpt2_tokenizer, tmp_path):
    """A query past GPT-2's learned positions (here 256) but under max_length (1024): dropped with a warning naming the
    model's positions, as rows over max_length are — was an IndexError inside the position embedding."""
    model = tiny_rm(gpt2_tokenizer)
    assert model.config.n_positions == 256
    labels = toy_labels(8).to_dict()
    labels["query"][3] = "word " * 300
    with pytest.warns(UserWarning, match=r"1 of 8 train labels .* longer than the model's 256 positions and were dropped"):
        trainer = PreferenceRewardTrainer(model, make_args(tmp_path, max_length=1024), train_dataset=Dataset.from_dict(labels),
                                          processing_class=gpt2_tokenizer)
    assert len(trainer.train_dataset) == 7
    trainer.train()
    model.save_pretrained(tmp_path / "by_name")  # given by name, as TRL takes it: TRL loads it after the datasets
    with pytest.warns(UserWarning, match=r"1 of 8 train labels .* longer than the model's 256 positions"):
        by_name = PreferenceRewardTrainer(str(tmp_path / "by_name"), make_args(tmp_path, max_length=1024),
                                          train_dataset=Dataset.from_dict(labels), processing_class=gpt2_tokenizer)
    assert len(by_name.train_dataset) == 7
    with pytest.warns(UserWarning, match="longer than max_length=64 tokens"):  # the smaller limit is named
        PreferenceRewardTrainer(tiny_rm(gpt2_tokenizer), make_args(tmp_path, max_length=64),
                                train_dataset=Dataset.from_dict(labels), processing_class=gpt2_tokenizer)
    from transformers import LlamaConfig, LlamaForSequenceClassification  # rotary: no table to run past, rows kept

    llama = LlamaForSequenceClassification(LlamaConfig(vocab_size=50257, hidden_size=32, intermediate_size=64,
                                                       num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                                       max_position_embeddings=256, num_labels=1, pad_token_id=50256))
    kept = PreferenceRewardTrainer(llama, make_args(tmp_path, max_length=1024), train_dataset=Dataset.from_dict(labels),
                                   processing_class=gpt2_tokenizer)
    assert len(kept.train_dataset) == 8


def test_share_query_prefix_falls_back_on_a_model_without_position_ids(gpt2_tokenizer, tmp_path):
    """BLOOM (ALiBi) takes no position_ids: packed rows would crash in its ALiBi bias; the trainer warns and encodes
    each sample with its query (the recipe turns sharing on by default)."""
    from transformers import BloomConfig, BloomForSequenceClassification

    torch.manual_seed(0)
    model = BloomForSequenceClassification(BloomConfig(vocab_size=50257, hidden_size=32, n_layer=2, n_head=2,
                                                       num_labels=1, pad_token_id=gpt2_tokenizer.eos_token_id))
    with pytest.warns(UserWarning, match="share_query_prefix: BloomForSequenceClassification takes no position_ids"):
        trainer = PreferenceRewardTrainer(model, make_args(tmp_path, share_query_prefix=True, max_steps=2),
                                          train_dataset=toy_labels(8), processing_class=gpt2_tokenizer)
    assert not trainer.data_collator.share_query_prefix
    trainer.train()
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)


def test_share_query_prefix_packs_a_sliding_window_model_only_where_no_row_outgrows_its_window(gpt2_tokenizer, tmp_path):
    """The packed rows' 4-D mask replaces the model's own, sliding window included: a Mistral with a window of 8 scored
    its 21-30-token rows as if it had none (loss 1.58 against 3.12 unpacked). Packing is kept only where max_length
    (or the model's positions) fits the window; the rewards then equal each sample scored alone."""
    from transformers import MistralConfig, MistralForSequenceClassification

    labels = Dataset.from_dict({"query": ["It was a dark and stormy night and the rain fell hard on the old roof."],
                                "samples": [[" The fire was warm.", " Rain fell all night long on the hills", " He died."]],
                                "best": [0]})
    query = gpt2_tokenizer(labels[0]["query"])["input_ids"]
    for window, max_length, packs in ((8, 1024, False), (64, 64, True)):
        torch.manual_seed(0)
        model = MistralForSequenceClassification(MistralConfig(
            vocab_size=50257, num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, max_position_embeddings=256, sliding_window=window, num_labels=1,
            pad_token_id=gpt2_tokenizer.eos_token_id, initializer_range=0.3)).eval()
        args = make_args(tmp_path, share_query_prefix=True, max_length=max_length, per_device_train_batch_size=1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer = PreferenceRewardTrainer(model, args, train_dataset=labels, processing_class=gpt2_tokenizer)
        said = [str(w.message) for w in caught if "window of" in str(w.message)]
        assert trainer.data_collator.share_query_prefix is packs and bool(said) is not packs
        if said:
            assert "attends to a window of 8 tokens in some layers, which a query + sample of up to 1024" in said[0]
        batch = next(iter(trainer.get_train_dataloader()))
        with torch.no_grad():
            rewards = trainer.compute_loss(model, batch, return_outputs=True)[1]["logits"][0]
            alone = [model(input_ids=torch.tensor([query + gpt2_tokenizer(x, add_special_tokens=False)["input_ids"]])
                           ).logits[0, 0] for x in labels[0]["samples"]]
        assert rewards.tolist() == pytest.approx([float(r) for r in alone], abs=1e-5)


def test_attention_window_reads_each_kind_of_config():
    from transformers import Gemma3TextConfig, GPTNeoConfig, MistralConfig, Qwen2Config

    from hf_prefs.models.attention import attention_window

    assert attention_window(MistralConfig(sliding_window=None)) is None
    assert attention_window(MistralConfig(sliding_window=4096)) == 4096
    assert attention_window(Gemma3TextConfig(num_hidden_layers=6, sliding_window=512)) == 512  # 5 sliding : 1 full
    assert attention_window(Qwen2Config(use_sliding_window=False, sliding_window=4096)) is None  # every layer full
    assert attention_window(GPTNeoConfig(attention_types=[[["global", "local"], 1]], num_layers=2, window_size=256)) == 256
    assert attention_window(tiny_gpt2_config()) is None


def test_bad_labels_and_k_mismatch_name_the_row(gpt2_tokenizer, tmp_path):
    model = tiny_rm(gpt2_tokenizer)
    with pytest.raises(LabelValidationError) as info:
        PreferenceRewardTrainer(
            model, make_args(tmp_path, num_candidates=3), train_dataset=toy_labels(4), processing_class=gpt2_tokenizer
        )
    assert (info.value.row, info.value.field) == (0, "samples") and str(info.value) == (
        "train dataset, row 0, field 'samples': expected K=3 samples (the K asked for: num_candidates), got 4")

    mixed = toy_labels(4).to_dict()
    mixed["samples"][2] = mixed["samples"][2][:3]
    with pytest.raises(LabelValidationError) as info:
        PreferenceRewardTrainer(
            model, make_args(tmp_path), train_dataset=Dataset.from_dict(mixed), processing_class=gpt2_tokenizer
        )
    assert (info.value.row, info.value.field) == (2, "samples")
    stream = IterableDataset.from_generator(lambda: iter(Dataset.from_dict(mixed)))  # read as training goes
    trainer = PreferenceRewardTrainer(model, make_args(tmp_path, max_steps=1, per_device_train_batch_size=4),
                                      train_dataset=stream, processing_class=gpt2_tokenizer)
    with pytest.raises(LabelValidationError) as info:  # was "batch row 2 has 3 samples, row 0 has 4" (the collator)
        trainer.train()
    assert str(info.value) == "train dataset, row 2, field 'samples': expected K=4 samples like the rows before it, got 3"

    bad_eval = toy_labels(4).to_dict()
    bad_eval["best"][3] = 4
    with pytest.raises(LabelValidationError) as info:
        PreferenceRewardTrainer(
            model,
            make_args(tmp_path),
            train_dataset=toy_labels(4),
            eval_dataset=Dataset.from_dict(bad_eval),
            processing_class=gpt2_tokenizer,
        )
    assert (info.value.row, info.value.field) == (3, "best")
    assert str(info.value).startswith("eval dataset, row 3, field 'best': best=4 is out of range")

    small = GPT2ForSequenceClassification(tiny_gpt2_config(vocab_size=1000, num_labels=1))  # not GPT-2's 50,257 ids
    with pytest.raises(ValueError, match=r"model \(the reward model\): its input embedding holds 1000 token ids, but "
                                         r"its tokenizer .* has 50257"):
        PreferenceRewardTrainer(small, make_args(tmp_path), train_dataset=toy_labels(4), processing_class=gpt2_tokenizer)


def test_normalization_needs_samples(gpt2_tokenizer, tmp_path):
    with pytest.raises(ValueError, match="normalization_samples"):
        PreferenceRewardTrainer(
            tiny_rm(gpt2_tokenizer),
            make_args(tmp_path, normalize_before=True),
            train_dataset=toy_labels(4),
            processing_class=gpt2_tokenizer,
        )
    with pytest.raises(ValueError, match="'response'"):
        PreferenceRewardTrainer(
            tiny_rm(gpt2_tokenizer),
            make_args(tmp_path, normalize_before=True),
            train_dataset=toy_labels(4),
            processing_class=gpt2_tokenizer,
            normalization_samples=Dataset.from_dict({"query": ["a", "b"]}),
        )
    with pytest.raises(ValueError, match=r"normalization_samples: row 1, field 'response': a text is needed, got None"):
        PreferenceRewardTrainer(  # it failed at train(), in the tokenizer, naming no row
            tiny_rm(gpt2_tokenizer), make_args(tmp_path, normalize_before=True), train_dataset=toy_labels(4),
            processing_class=gpt2_tokenizer,
            normalization_samples=Dataset.from_dict({"query": ["a", "b"], "response": [" x", None]}),
        )
    with pytest.raises(ValueError, match=r"normalization_samples: row 2: query and response are both empty"):
        PreferenceRewardTrainer(  # it failed at train(): "query and response are both empty", naming no row
            tiny_rm(gpt2_tokenizer), make_args(tmp_path, normalize_before=True), train_dataset=toy_labels(4),
            processing_class=gpt2_tokenizer,
            normalization_samples=Dataset.from_dict({"query": ["a", "", ""], "response": [" x", " y", ""]}),
        )
    with pytest.raises(ValueError, match=r"score_texts: row 1: query and response are both empty"):
        score_texts(tiny_rm(gpt2_tokenizer), gpt2_tokenizer, ["a", ""], [" x", ""])
    from hf_prefs.trainers import launch  # an error leaving train() marks the run failed for the exit hook

    trainer = PreferenceRewardTrainer(tiny_rm(gpt2_tokenizer), make_args(tmp_path), train_dataset=toy_labels(4),
                                      processing_class=gpt2_tokenizer)
    with pytest.raises(ValueError, match="no checkpoint found"):
        trainer.train(resume_from_checkpoint=True)
    assert launch._EXIT["failed"] is True
    trainer.train()
    assert launch._EXIT["failed"] is False


@pytest.mark.parametrize("targets", [(0.0, 1.0), (2.0, 0.5)])
def test_normalize_before_and_after_then_save_and_load(gpt2_tokenizer, tmp_path, targets):
    """Before training to (target_mean, target_std); after it to mean 0, std 1 whatever the targets (paper)."""
    rho = rho_samples(32)
    args = make_args(tmp_path, normalize_before=True, normalize_after=True, normalize_samples=32, max_steps=6,
                     target_mean=targets[0], target_std=targets[1])
    trainer = PreferenceRewardTrainer(
        tiny_rm(gpt2_tokenizer),
        args,
        train_dataset=toy_labels(24),
        processing_class=gpt2_tokenizer,
        normalization_samples=rho,
    )
    trainer.train()
    logs = {k: v for h in trainer.state.log_history for k, v in h.items()}
    assert {"reward_gain_before", "reward_bias_before", "reward_gain_after", "reward_bias_after"} <= set(logs)
    assert logs["reward_gain_after"] != pytest.approx(logs["reward_gain_before"])
    assert get_reward_normalization(trainer.model) == (logs["reward_gain_after"], logs["reward_bias_after"])
    raw = score_texts(tiny_rm(gpt2_tokenizer), gpt2_tokenizer, rho["query"], rho["response"])  # the untrained model
    before = raw * logs["reward_gain_before"] + logs["reward_bias_before"]
    assert before.mean().item() == pytest.approx(targets[0], abs=1e-4)
    assert before.std(unbiased=False).item() == pytest.approx(targets[1], abs=1e-4)
    scores = score_texts(trainer.model, gpt2_tokenizer, rho["query"], rho["response"])
    assert scores.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert scores.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)

    trainer.save_model(str(tmp_path / "rm"))
    with open(tmp_path / "rm" / "config.json") as f:
        assert json.load(f)[GAIN_KEY] == pytest.approx(logs["reward_gain_after"])
    loaded, tok = load_reward_model(tmp_path / "rm")
    assert torch.allclose(score_texts(loaded, tok, rho["query"], rho["response"]), scores, atol=1e-5)


def test_normalization_with_a_sampler_uses_training_queries(gpt2_tokenizer, tmp_path):
    seen = []

    def sampler(queries):
        seen.extend(queries)
        return [f" reply {i} to it." for i in range(len(queries))]

    args = make_args(tmp_path, normalize_before=True, normalize_samples=10, max_steps=1)
    train = toy_labels(6)
    trainer = PreferenceRewardTrainer(
        tiny_rm(gpt2_tokenizer),
        args,
        train_dataset=train,
        processing_class=gpt2_tokenizer,
        normalization_samples=sampler,
    )
    trainer.train()
    assert len(seen) == 10 and set(seen) <= set(train["query"])


def test_resume_restores_the_checkpoints_gain(gpt2_tokenizer, tmp_path):
    rho = rho_samples(16)
    args = make_args(
        tmp_path, normalize_before=True, normalize_samples=16, max_steps=4, save_strategy="steps", save_steps=2
    )
    first = PreferenceRewardTrainer(
        tiny_rm(gpt2_tokenizer),
        args,
        train_dataset=toy_labels(16),
        processing_class=gpt2_tokenizer,
        normalization_samples=rho,
    )
    first.train()
    gain = get_reward_normalization(first.model)
    ckpt = os.path.join(args.output_dir, "checkpoint-2")
    # resumed with other ρ samples: the checkpoint's gain wins, normalize_before is not redone
    second = PreferenceRewardTrainer(
        tiny_rm(gpt2_tokenizer, seed=5),
        args,
        train_dataset=toy_labels(16),
        processing_class=gpt2_tokenizer,
        normalization_samples=rho_samples(16, seed=9),
    )
    second.train(resume_from_checkpoint=ckpt)
    assert get_reward_normalization(second.model) == pytest.approx(gain)
    second.create_model_card()  # normalize_before only: chosen before training, not claimed to hold after it
    card = open(os.path.join(args.output_dir, "README.md"), encoding="utf-8").read()
    assert "with gain and bias set before this training" in card and "**not**" in card


def test_peft_lora_training_saves_adapter_with_gain(gpt2_tokenizer, tmp_path):
    from peft import LoraConfig

    base = tiny_rm(gpt2_tokenizer)
    base.save_pretrained(tmp_path / "base")  # an adapter must name a base model that can be reloaded
    base = GPT2ForSequenceClassification.from_pretrained(tmp_path / "base")
    rho = rho_samples(16)
    args = make_args(tmp_path, normalize_before=True, normalize_after=True, normalize_samples=16, max_steps=4)
    trainer = PreferenceRewardTrainer(
        base,
        args,
        train_dataset=toy_labels(16),
        processing_class=gpt2_tokenizer,
        normalization_samples=rho,
        peft_config=LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["c_attn"]),
    )
    trainer.train()
    scores = score_texts(trainer.model, gpt2_tokenizer, rho["query"], rho["response"])
    trainer.save_model(str(tmp_path / "adapter"))
    assert os.path.isfile(tmp_path / "adapter" / NORMALIZATION_FILE)
    assert os.path.isfile(tmp_path / "adapter" / "adapter_config.json")
    card = (tmp_path / "adapter" / "README.md").read_text(encoding="utf-8")
    assert "chosen after training so that rewards\non responses sampled from the base model have mean 0" in card
    loaded, tok = load_reward_model(tmp_path / "adapter")
    assert torch.allclose(score_texts(loaded, tok, rho["query"], rho["response"]), scores, atol=1e-5)


def test_gradient_checkpointing_and_model_card(gpt2_tokenizer, tmp_path):
    args = make_args(tmp_path, max_steps=2, gradient_checkpointing=True)
    trainer = PreferenceRewardTrainer(
        tiny_rm(gpt2_tokenizer), args, train_dataset=toy_labels(8), processing_class=gpt2_tokenizer
    )
    trainer.train()
    assert trainer.state.log_history[0]["loss"] > 0
    trainer.create_model_card(model_name="tiny-rm")
    card = open(os.path.join(args.output_dir, "README.md")).read()
    assert "hf-prefs" in card and "1909.08593" in card and "reward-trainer" in card
    # hf_prefs' card, not TRL's generic one (a pipeline of model "None" that printed sigmoid of the raw output): the
    # normalized reward through load_reward_model + score_texts, its gain and bias
    gain, bias = get_reward_normalization(trainer.model)
    assert "None" not in card and "load_reward_model" in card and f"| gain | {gain:.6g} |" in card
    # trained without normalization (normalize_before/after off): the card says so (it claimed mean 0 and std 1)
    assert "**Not normalized:** r is the raw head output" in card and "standard deviation 1 (so" not in card
    saved = tmp_path / "saved"
    trainer.save_model(str(saved))
    gpt2_tokenizer.save_pretrained(saved)
    card = (saved / "README.md").read_text()
    snippet = card.split("## How to load", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(snippet.replace('"./saved"', repr(str(saved))), scope)
    want = score_texts(trainer.model, gpt2_tokenizer, ["It was a dark and stormy night."],
                       [" The storm passed and the sun came out."])
    assert torch.allclose(scope["rewards"], want, atol=1e-5)




def ball_pairs(n: int = 8) -> Dataset:
    """TRL pairwise rows (explicit prompt): a happy word chosen over a sad one, seeded."""
    rng = random.Random(0)
    return Dataset.from_dict({
        "prompt": [f"Chapter {i}. After the ball she felt" for i in range(n)],
        "chosen": [rng.choice(GOOD) + " all day." for _ in range(n)],
        "rejected": [rng.choice(BAD) + " for a" * rng.randrange(1, 4) + " week." for _ in range(n)],
    })

def assert_trains_as_trl(ours, trl_trainer, initial) -> None:
    """Both trainers run: the same 2 logged losses (within 1e-5) and weights (within 1e-6), which moved (> 1e-3)."""
    trl_trainer.train()
    ours.train()
    trl_losses = [h["loss"] for h in trl_trainer.state.log_history if "loss" in h]
    our_losses = [h["loss"] for h in ours.state.log_history if "loss" in h]
    assert len(our_losses) == 2 and our_losses == pytest.approx(trl_losses, abs=1e-5)
    moved = max((a - b).abs().max().item() for a, b in zip(ours.model.parameters(), initial.parameters()))
    diff = max((a - b).abs().max().item() for a, b in zip(ours.model.parameters(), trl_trainer.model.parameters()))
    print(f"max |ours - TRL| after 2 steps: {diff:.2e} (weights moved up to {moved:.2e})")
    assert diff < 1e-6 and moved > 1e-3

@pytest.mark.parametrize("streaming, center, pad, eos_in_text", [
    (False, None, "[PAD]", False), (True, None, "[PAD]", False), (False, 10.0, "[PAD]", False), (False, None, None, False),
    (False, None, None, True), (False, None, "[PAD]", True)])
def test_trl_pairwise_rows_train_as_trl_reward_trainer_trains_them(gpt2_tokenizer, tmp_path, streaming, center, pad,
                                                                   eos_in_text):
    """A TRL reward script with the trainer's import changed: TRL's RewardConfig and pairwise rows passed straight to
    the trainer: K = 2 labels prepared as trl.RewardTrainer prepares the rows (EOS appended, reward at the last token),
    so two steps from the same weights give TRL's losses and weights — with TRL's ``center_rewards_coefficient`` too.
    A tokenizer without a pad token (``pad`` None: TRL pads with EOS, and the sequence classifier reads the last token
    that is not the pad, the one before the EOS TRL appends): no EOS is appended, the same losses, and the saved
    model's own forward scores ``completion + EOS`` as hf_prefs scores ``completion``."""
    import copy

    from trl import RewardConfig, RewardTrainer

    tok = copy.deepcopy(gpt2_tokenizer)
    if pad is not None:
        tok.add_special_tokens({"pad_token": pad})  # pad != eos: GPT-2's head reads the last non-pad token
    cfg = tiny_gpt2_config()
    cfg.num_labels, cfg.vocab_size, cfg.pad_token_id = 1, len(tok), tok.pad_token_id  # None: TRL sets EOS's
    torch.manual_seed(0)
    ours_model = GPT2ForSequenceClassification(cfg)
    trl_model, initial = copy.deepcopy(ours_model), copy.deepcopy(ours_model)
    pairs = ball_pairs()
    if eos_in_text:  # completions that end in the EOS already: with pad = EOS read at the token before it, as TRL
        pairs = pairs.map(lambda row: {"chosen": row["chosen"] + tok.eos_token, "rejected": row["rejected"] + tok.eos_token})
    # plain SGD: Adam's first steps move every weight by ~lr whatever its gradient, so float noise in a ~0 gradient
    # would show as an lr-sized difference
    common = dict(per_device_train_batch_size=4, optim="sgd", learning_rate=0.1, max_steps=2, logging_steps=1, report_to=[],
                  save_strategy="no", gradient_checkpointing=False, seed=0, use_cpu=True, bf16=False,
                  disable_tqdm=True, center_rewards_coefficient=center)
    data = pairs.to_iterable_dataset() if streaming else pairs  # a stream: TRL's --dataset_streaming, rows in order
    trl_trainer = RewardTrainer(trl_model, RewardConfig(output_dir=str(tmp_path / "trl"), **common),
                                train_dataset=data, processing_class=tok)
    ours = PreferenceRewardTrainer(ours_model, RewardConfig(output_dir=str(tmp_path / "ours"), **common),
                                   train_dataset=data, processing_class=tok)
    assert isinstance(ours.args, PreferenceRewardConfig) and ours.args.optim == trl_trainer.args.optim
    assert not ours.args.normalize_before and not ours.args.normalize_after  # TRL's config: no rho samples, no normalization
    row, trl_row = next(iter(ours.train_dataset)), next(iter(trl_trainer.train_dataset))
    assert len(row["samples_ids"]) == 2 and row["best"] == 0
    appended = -1 if pad is None else None  # with pad = EOS, TRL's appended EOS is the token its model never reads
    assert row["query_ids"] + row["samples_ids"][0] == trl_row["chosen_ids"][:appended]  # same tokens
    assert row["query_ids"] + row["samples_ids"][1] == trl_row["rejected_ids"][:appended]
    assert_trains_as_trl(ours, trl_trainer, initial)
    if pad is None:
        ours.save_model(str(tmp_path / "saved"))
        saved, _ = load_reward_model(str(tmp_path / "saved"))
        assert saved.config.pad_token_id == tok.eos_token_id
        query, completion = pairs[0]["prompt"], pairs[0]["chosen"].removesuffix(tok.eos_token)
        own = saved(**tok(query + completion + tok.eos_token, return_tensors="pt")).logits[0, 0]
        assert score_texts(saved, tok, [query], [completion])[0].item() == pytest.approx(own.item(), abs=1e-6)
        # a response that ends in the EOS (the pad) is read where the model's own forward reads it, before the EOS
        assert score_texts(saved, tok, [query], [completion + tok.eos_token])[0].item() == pytest.approx(own.item(), abs=1e-6)
    if streaming:  # a bad row of a stream is named when it is read
        bad = Dataset.from_dict({"prompt": ["q", "q"], "chosen": [" a", None], "rejected": [" b", " c"]}).to_iterable_dataset()
        stream = PreferenceRewardTrainer(copy.deepcopy(initial), RewardConfig(output_dir=str(tmp_path / "bad"), **common),
                                         train_dataset=bad, processing_class=tok).train_dataset
        with pytest.raises(LabelValidationError, match="row 1, field 'chosen': must be text or a list of messages, got NoneType"):
            list(stream)


def test_trl_reward_config_is_taken_field_for_field(gpt2_tokenizer, tmp_path, monkeypatch):
    """A trl.RewardConfig becomes a PreferenceRewardConfig with every field of it; normalization (which needs rho
    samples) is on only when the trainer gets them; anything else is refused."""
    from dataclasses import fields

    from trl import RewardConfig

    trl_args = RewardConfig(output_dir=str(tmp_path), learning_rate=1e-5, lr_scheduler_type="cosine", max_length=64,
                            center_rewards_coefficient=0.01, hub_token="t", report_to=[], use_cpu=True, bf16=False)
    ours = PreferenceRewardConfig.from_reward_config(trl_args, normalize_before=False)
    assert all(getattr(ours, f.name) == getattr(trl_args, f.name) for f in fields(trl_args))
    assert not ours.normalize_before and ours.normalize_after
    trainer = PreferenceRewardTrainer(tiny_rm(gpt2_tokenizer), trl_args, train_dataset=toy_labels(8),
                                      processing_class=gpt2_tokenizer, normalization_samples=rho_samples())
    assert trainer.args.normalize_before and trainer.args.normalize_after and trainer.args.center_rewards_coefficient == 0.01
    monkeypatch.chdir(tmp_path)  # args=None: TRL's default output_dir "<model>-Reward", here without rho samples
    default = PreferenceRewardTrainer(tiny_rm(gpt2_tokenizer), train_dataset=toy_labels(8), processing_class=gpt2_tokenizer)
    assert not default.args.normalize_before and default.args.output_dir.endswith("-Reward")
    with pytest.raises(TypeError, match="PreferenceRewardConfig or trl.RewardConfig, got dict"):
        PreferenceRewardTrainer(tiny_rm(gpt2_tokenizer), {"output_dir": str(tmp_path)}, train_dataset=toy_labels(8))


@pytest.mark.parametrize("peft", [False, True])
def test_a_model_trained_on_trl_text_pairs_is_read_at_the_eos_it_was_trained_on(gpt2_tokenizer, tmp_path, peft):
    """TRL's pairwise text rows with a pad token of its own: the trainer appends EOS (as trl.RewardTrainer) and the
    model learns at it; the model keeps that EOS as its response suffix (config, or the adapter's normalization file),
    so score_texts — hence the normalization and PPO — reads ``response + EOS``: the score the model's own forward
    gives on that text, before and after saving. K-way labels and chats keep no suffix."""
    import copy

    from peft import LoraConfig

    from hf_prefs.models.reward_model import get_response_suffix, reads_as_trained_here, set_response_suffix

    tok = copy.deepcopy(gpt2_tokenizer)
    tok.add_special_tokens({"pad_token": "[PAD]"})
    cfg = tiny_gpt2_config()
    cfg.num_labels, cfg.vocab_size, cfg.pad_token_id = 1, len(tok), tok.pad_token_id
    torch.manual_seed(0)
    GPT2ForSequenceClassification(cfg).save_pretrained(tmp_path / "base")
    pairs = Dataset.from_dict({"prompt": ["After the ball she felt"] * 8, "chosen": [" happy all day."] * 8,
                               "rejected": [" sad for a week."] * 8})
    rho = rho_samples(8)
    args = make_args(tmp_path, max_steps=2, normalize_before=True, normalize_after=True, normalize_samples=8)
    trainer = PreferenceRewardTrainer(GPT2ForSequenceClassification.from_pretrained(tmp_path / "base"), args,
                                      train_dataset=pairs, processing_class=tok, normalization_samples=rho,
                                      peft_config=LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["c_attn"]) if peft else None)
    assert get_response_suffix(trainer.model) == tok.eos_token  # set before normalize_before scores rho
    trainer.train()
    model = trainer.model
    query, response = "After the ball she felt", " happy all day."
    raw = score_texts(model, tok, [query], [response], normalized=False)[0].item()
    own = model(**tok(query + response + tok.eos_token, return_tensors="pt")).logits[0, 0].item()
    assert raw == pytest.approx(own, abs=1e-5)  # read at the EOS, the trained position
    assert score_texts(model, tok, [query], [response + tok.eos_token])[0] == score_texts(model, tok, [query], [response])[0]
    # the normalization was fitted on what PPO reads: rho's samples scored with the EOS, mean 0 and std 1
    normalized = score_texts(model, tok, rho["query"], rho["response"])
    assert normalized.mean().item() == pytest.approx(0.0, abs=1e-4) and normalized.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    trainer.save_model(str(tmp_path / "saved"))
    loaded, _ = load_reward_model(str(tmp_path / "saved"))
    assert get_response_suffix(loaded) == tok.eos_token and reads_as_trained_here(loaded)  # the mark saved too
    assert torch.allclose(score_texts(loaded, tok, rho["query"], rho["response"]), normalized, atol=1e-5)
    kway = PreferenceRewardTrainer(tiny_rm(gpt2_tokenizer), make_args(tmp_path), train_dataset=toy_labels(8),
                                   processing_class=gpt2_tokenizer)
    assert get_response_suffix(kway.model) == "" and reads_as_trained_here(kway.model)  # marked: PPO reads it as given
    assert not reads_as_trained_here(tiny_rm(gpt2_tokenizer))
    if not peft:  # a model that had one, trained on K-way labels or chats: read as those are (the suffix cleared)
        again = PreferenceRewardTrainer(loaded, make_args(tmp_path), train_dataset=toy_labels(8), processing_class=tok)
        assert get_response_suffix(again.model) == ""
        tok.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        turn = lambda role, text: [{"role": role, "content": text}]  # noqa: E731
        chats = Dataset.from_dict({"prompt": [turn("user", "Hi")] * 2, "chosen": [turn("assistant", "Hello.")] * 2,
                                   "rejected": [turn("assistant", "Go.")] * 2})
        set_response_suffix(loaded, tok.eos_token)
        assert get_response_suffix(PreferenceRewardTrainer(loaded, make_args(tmp_path), train_dataset=chats,
                                                           processing_class=tok).model) == ""


def test_a_model_trained_on_chat_pairs_stores_the_end_of_turn_its_samples_ended_with(gpt2_tokenizer, tmp_path):
    """Chat pairs are rendered with the template, so each completion ends with its end of an assistant turn; the
    trainer stores it with the model (saved whole or as an adapter), for PPO to read a response that ended its turn
    at TRL's stop token as these samples ended (``RolloutSpec.turn_texts``)."""
    import copy

    from peft import LoraConfig

    from hf_prefs.chat_templates import assistant_turn_end
    from hf_prefs.models.reward_model import get_turn_end

    tok = copy.deepcopy(gpt2_tokenizer)
    assert assistant_turn_end(tok) == ""  # no template: no end known
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|endoftext|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    assert assistant_turn_end(tok) == "<|endoftext|>\n"
    turn = lambda role, text: [{"role": role, "content": text}]  # noqa: E731
    chats = Dataset.from_dict({"prompt": [turn("user", "Hi")] * 4, "chosen": [turn("assistant", "Hello.")] * 4,
                               "rejected": [turn("assistant", "Go.")] * 4})
    tiny_rm(tok).save_pretrained(tmp_path / "base")  # an adapter names its base model
    loaded = {}
    for peft_config in (None, LoraConfig(r=2, target_modules=["c_attn"], task_type="SEQ_CLS")):
        trainer = PreferenceRewardTrainer(GPT2ForSequenceClassification.from_pretrained(tmp_path / "base"),
                                          make_args(tmp_path), train_dataset=chats, processing_class=tok,
                                          peft_config=peft_config)
        sample = tok.decode(trainer.train_dataset[0]["samples_ids"][0])
        assert sample.endswith(get_turn_end(trainer.model)) and get_turn_end(trainer.model) == "<|endoftext|>\n"
        folder = tmp_path / f"saved-{peft_config is not None}"
        trainer.save_model(str(folder))
        loaded[peft_config is not None] = load_reward_model(str(folder))[0]
        assert get_turn_end(loaded[peft_config is not None]) == "<|endoftext|>\n"
    again = PreferenceRewardTrainer(loaded[False], make_args(tmp_path), train_dataset=toy_labels(8), processing_class=tok)
    assert get_turn_end(again.model) == ""  # trained on text labels now: no end of turn read
    if any(p.requires_grad for p in loaded[True].parameters()):  # peft 0.13 (the floor) leaves the saved head trainable
        PreferenceRewardTrainer(loaded[True], make_args(tmp_path), train_dataset=toy_labels(8), processing_class=tok)
    else:
        with pytest.raises(ValueError, match="nothing trainable .* is_trainable=True"):  # it trained nothing, silently
            PreferenceRewardTrainer(loaded[True], make_args(tmp_path), train_dataset=toy_labels(8), processing_class=tok)


@pytest.mark.parametrize("pad", [None, "[PAD]"])
def test_max_length_keeps_the_rows_trl_keeps(gpt2_tokenizer, tmp_path, pad):
    """TRL's max_length counts the EOS it appends to pairwise text rows; where it pads with EOS hf_prefs appends none
    (the model reads the token before it), and it kept rows one token too long for TRL."""
    import copy

    from trl import RewardConfig, RewardTrainer

    tok = copy.deepcopy(gpt2_tokenizer)
    if pad is not None:
        tok.add_special_tokens({"pad_token": pad})
    cfg = tiny_gpt2_config()
    cfg.num_labels, cfg.vocab_size, cfg.pad_token_id = 1, len(tok), tok.pad_token_id
    pairs = Dataset.from_dict({"prompt": ["She felt"] * 6, "chosen": [" happy" * n for n in range(1, 7)],
                               "rejected": [" sad"] * 6})
    common = dict(max_length=6, report_to=[], use_cpu=True, bf16=False, disable_tqdm=True, save_strategy="no")
    trl_rows = RewardTrainer(GPT2ForSequenceClassification(cfg), RewardConfig(output_dir=str(tmp_path / "trl"), **common),
                             train_dataset=pairs, processing_class=tok).train_dataset
    with pytest.warns(UserWarning, match="longer than max_length=6 tokens"):
        ours = PreferenceRewardTrainer(GPT2ForSequenceClassification(cfg),
                                       RewardConfig(output_dir=str(tmp_path / "ours"), **common),
                                       train_dataset=pairs, processing_class=tok).train_dataset
    assert len(ours) == len(trl_rows) and 0 < len(ours) < 6


def tiny_bert_and_wordpiece(tmp_path):
    """A tiny random BERT classifier (num_labels=1, no dropout) and a WordPiece tokenizer written here: ``[CLS] text
    [SEP]``, as BERT's and DeBERTa's tokenizers encode a text (``[SEP]`` is also its EOS, as DeBERTa's)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    words = sorted({w.strip() for w in GOOD + BAD} | {"chapter", "after", "the", "ball", "she", "felt", "all", "day",
                                                     "for", "a", "week", "."} | {str(i) for i in range(8)})
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tok = BertTokenizerFast(vocab_file=str(vocab), eos_token="[SEP]")
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0, num_labels=1,
        pad_token_id=tok.pad_token_id))
    return model, tok


def test_an_encoder_reward_model_trains_as_trl_reward_trainer_trains_it(tmp_path):
    """``trl.RewardTrainer`` trains encoder classifiers too (BERT, DeBERTa: a pooled reward per row, no score head at
    every position); hf_prefs refused them (``has no `score` head``). Now their reward is the model's own output, the
    query and each sample hold the tokens of the joined text (``[CLS] prompt completion [SEP]``: the ``[SEP]`` that
    closes a text goes after the sample, not between), and two SGD steps give TRL's losses and weights; K-way labels
    train too, and ``score_texts`` reads the saved model as its own forward does. Packed rows and the frozen-feature
    cache, which need a reward at every position, are left out with a warning."""
    import copy

    from trl import RewardConfig, RewardTrainer

    ours_model, tok = tiny_bert_and_wordpiece(tmp_path)
    trl_model, initial = copy.deepcopy(ours_model), copy.deepcopy(ours_model)
    pairs = ball_pairs()
    common = dict(per_device_train_batch_size=4, optim="sgd", learning_rate=10.0, max_steps=2, logging_steps=1,
                  report_to=[], save_strategy="no", gradient_checkpointing=False, seed=0, use_cpu=True, bf16=False,
                  disable_tqdm=True)
    trl_trainer = RewardTrainer(trl_model, RewardConfig(output_dir=str(tmp_path / "trl"), **common),
                                train_dataset=pairs, processing_class=tok)
    ours = PreferenceRewardTrainer(ours_model, RewardConfig(output_dir=str(tmp_path / "ours"), **common),
                                   train_dataset=pairs, processing_class=tok)
    row, trl_row = ours.train_dataset[0], trl_trainer.train_dataset[0]
    assert row["query_ids"][0] == tok.cls_token_id and row["samples_ids"][0][-1] == tok.sep_token_id
    assert row["query_ids"] + row["samples_ids"][0] == trl_row["chosen_ids"]  # TRL's tokens of the joined text
    assert row["query_ids"] + row["samples_ids"][1] == trl_row["rejected_ids"]
    assert_trains_as_trl(ours, trl_trainer, initial)  # (a tiny BERT's gradients are small: lr 10)
    ours.save_model(str(tmp_path / "saved"))
    saved, saved_tok = load_reward_model(str(tmp_path / "saved"))
    query, completion = pairs[0]["prompt"], pairs[0]["chosen"]
    with torch.no_grad():
        own = saved(**saved_tok(query + completion + tok.eos_token, return_tensors="pt")).logits[0, 0].item()
    assert score_texts(saved, saved_tok, [query], [completion])[0].item() == pytest.approx(own, abs=1e-5)

    labels = Dataset.from_dict({"query": pairs["prompt"], "best": [0] * 8,
                                "samples": [[c, r, " the day."] for c, r in zip(pairs["chosen"], pairs["rejected"])]})
    args = PreferenceRewardConfig(output_dir=str(tmp_path / "kway"), share_query_prefix=True,
                                  cache_frozen_features=True, normalize_before=False, normalize_after=False,
                                  **{**common, "max_steps": 6, "per_device_train_batch_size": 8, "optim": "adamw_torch",
                                     "learning_rate": 0.01})
    model, _ = tiny_bert_and_wordpiece(tmp_path)
    for param in model.bert.embeddings.parameters():
        param.requires_grad_(False)
    with pytest.warns(UserWarning, match="one pooled reward per row"):
        kway = PreferenceRewardTrainer(model, args, train_dataset=labels, processing_class=tok)
        kway.train()
    losses = [h["loss"] for h in kway.state.log_history if "loss" in h]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.05 and losses[0] == pytest.approx(math.log(3), abs=0.05)


def test_predict_takes_label_rows_and_leaves_evaluate_as_it_was(gpt2_tokenizer, tmp_path):
    """``predict`` on untokenized label rows failed (``KeyError: 'samples_ids'``: only ``evaluate`` prepared them),
    and the accuracy it accumulated was averaged into the next ``evaluate``'s (0.667 -> 0.5 in the report; so in stock
    TRL). Now: the (N, K) rewards, the labels' accuracy against them by hand, and ``evaluate`` unchanged by it."""
    from hf_prefs.core.losses import kway_accuracy

    trainer = PreferenceRewardTrainer(tiny_rm(gpt2_tokenizer), make_args(tmp_path), train_dataset=toy_labels(8),
                                      eval_dataset=toy_labels(6, seed=1), processing_class=gpt2_tokenizer)
    before = trainer.evaluate()["eval_accuracy"]
    test = toy_labels(5, seed=2)
    out = trainer.predict(test)
    rewards = torch.as_tensor(out.predictions)
    assert rewards.shape == (5, 4)
    best = torch.tensor(test["best"])
    assert out.metrics["test_accuracy"] == pytest.approx(kway_accuracy(rewards, best).item())
    assert "test_margin" in out.metrics and "test_loss" in out.metrics
    assert trainer.evaluate()["eval_accuracy"] == pytest.approx(before)


def test_several_eval_sets_each_log_their_own_metrics(gpt2_tokenizer, tmp_path):
    """With ``eval_dataset`` a dict, each set's accuracy, margin and reward statistics are its own (``eval_<name>_*``,
    as its loss is): TRL's log wrote them all as ``eval_*``, so each set overwrote the one before."""
    sets = {"a": toy_labels(6, seed=1), "b": toy_labels(7, seed=3)}
    trainer = PreferenceRewardTrainer(tiny_rm(gpt2_tokenizer), make_args(tmp_path), train_dataset=toy_labels(8),
                                      eval_dataset=sets, processing_class=gpt2_tokenizer)
    both = trainer.evaluate()
    assert "eval_accuracy" not in both
    for name, labels in sets.items():
        alone = trainer.evaluate(eval_dataset=labels)
        for metric in ("loss", "accuracy", "margin", "mean_reward", "std_reward"):
            assert both[f"eval_{name}_{metric}"] == pytest.approx(alone[f"eval_{metric}"], rel=1e-6), (name, metric)
    assert both["eval_a_accuracy"] != both["eval_b_accuracy"] or both["eval_a_margin"] != both["eval_b_margin"]


def test_a_pad_added_to_the_tokenizer_only_trains_reads_and_reloads_as_one(gpt2_tokenizer, tmp_path):
    """TRL's scripts add a [PAD] (id 50257) the model cannot embed. TRL set config.pad_token_id to it: a Llama-like
    model saved so failed to load ("Padding_idx must be within num_embeddings"), and training read a pairwise row at
    its appended EOS while score_texts (PPO, normalization, evaluation) read the token before it. The config now pads
    with the EOS, and training, score_texts and the model's own forward read the same token."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tokenizer = gpt2_tokenizer
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    pairs = Dataset.from_dict({"prompt": ["She opened the letter."] * 2, "chosen": [" It was wonderful news!"] * 2,
                               "rejected": [" It was a bill."] * 2})
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(LlamaConfig(
        vocab_size=50257, num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, num_labels=1, initializer_range=0.3))
    trainer = PreferenceRewardTrainer(model, make_args(tmp_path, per_device_train_batch_size=2, learning_rate=0.0),
                                      train_dataset=pairs, processing_class=tokenizer)
    trainer.train()  # transformers' Trainer.train aligns the config's pad with the tokenizer's (50257) again
    assert model.config.pad_token_id == tokenizer.eos_token_id
    model.eval()
    with torch.no_grad():
        trained = trainer.compute_loss(model, next(iter(trainer.get_train_dataloader())), return_outputs=True)[1]["logits"][0]
        query = tokenizer("She opened the letter.")["input_ids"]
        own = [model(input_ids=torch.tensor([query + tokenizer(c)["input_ids"] + [tokenizer.eos_token_id]])).logits[0, 0]
               for c in (" It was wonderful news!", " It was a bill.")]
    scored = score_texts(model, tokenizer, ["She opened the letter."] * 2, [" It was wonderful news!", " It was a bill."],
                         normalized=False)
    assert scored.tolist() == pytest.approx(trained.tolist(), abs=1e-5)
    assert scored.tolist() == pytest.approx([float(r) for r in own], abs=1e-5)
    trainer.save_model(str(tmp_path / "rm"))
    tokenizer.save_pretrained(str(tmp_path / "rm"))
    loaded, loaded_tokenizer = load_reward_model(str(tmp_path / "rm"))
    assert score_texts(loaded, loaded_tokenizer, ["She opened the letter."], [" It was a bill."],
                       normalized=False).tolist() == pytest.approx(scored[1:].tolist(), abs=1e-5)


def test_a_lora_reward_model_whose_head_would_stay_frozen_is_refused(gpt2_tokenizer, tmp_path):
    """LoraConfig without task_type="SEQ_CLS": the score head stayed at its random init and was not saved, so each
    reload of the adapter drew another head (scores -0.14 in memory, -0.18 and +0.52 after two loads)."""
    from peft import LoraConfig

    lora = dict(r=4, lora_alpha=8, target_modules=["c_attn"])
    with pytest.raises(ValueError, match=r"score head \('score'\) is frozen.*task_type=\"SEQ_CLS\".*modules_to_save=\['score'\]"):
        PreferenceRewardTrainer(tiny_rm(gpt2_tokenizer), make_args(tmp_path), train_dataset=toy_labels(4),
                                processing_class=gpt2_tokenizer, peft_config=LoraConfig(**lora))
    for config in (LoraConfig(task_type="SEQ_CLS", **lora), LoraConfig(modules_to_save=["score"], **lora)):
        trainer = PreferenceRewardTrainer(tiny_rm(gpt2_tokenizer), make_args(tmp_path), train_dataset=toy_labels(4),
                                          processing_class=gpt2_tokenizer, peft_config=config)
        assert any(p.requires_grad for n, p in trainer.model.named_parameters() if "score" in n)
    from transformers import BertConfig, BertForSequenceClassification  # an encoder's head is `classifier`

    bert = BertForSequenceClassification(BertConfig(vocab_size=50257, hidden_size=32, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=64, num_labels=1))
    with pytest.raises(ValueError, match=r"score head \('classifier'\) is frozen.*modules_to_save=\['classifier'\]"):
        PreferenceRewardTrainer(copy.deepcopy(bert), make_args(tmp_path), train_dataset=toy_labels(4),
                                processing_class=gpt2_tokenizer, peft_config=LoraConfig(r=2, target_modules=["query"]))
    trainer = PreferenceRewardTrainer(bert, make_args(tmp_path), train_dataset=toy_labels(4), processing_class=gpt2_tokenizer,
                                      peft_config=LoraConfig(r=2, target_modules=["query"], task_type="SEQ_CLS"))
    assert any(p.requires_grad for n, p in trainer.model.named_parameters() if "classifier" in n)
