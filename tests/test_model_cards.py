"""Model cards: the run's numbers appear, the front matter is valid YAML with the right tags, no "[None]"."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

import hf_prefs
from hf_prefs.model_cards import (
    POLICY_TAGS,
    REWARD_MODEL_TAGS,
    render_policy_card,
    render_reward_model_card,
    resolve_base_model,
    template_path,
    write_model_card,
)

REPO = Path(__file__).resolve().parents[1]


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def policy_fields(**overrides) -> dict:
    fields = dict(base_model="gpt2", task="sentiment", num_labels=4992, reward_gain=1.2345678, reward_bias=-0.0312,
                  kl_final=5.87, beta_final=0.234, kl_target=6.0, beta_initial=0.15, temperature=0.7,
                  response_length=24, known_reward="VADER log-odds", hub_model_id="alice/gpt2-sentiment")
    fields.update(overrides)
    return fields


def rm_fields(**overrides) -> dict:
    fields = dict(base_model="gpt2", task="sentiment", num_labels=4992, reward_gain=0.8125, reward_bias=0.4375,
                  known_reward="VADER log-odds", hub_model_id="alice/gpt2-sentiment-reward-model")
    fields.update(overrides)
    return fields


def test_templates_in_package_equal_model_cards_folder():
    shipped = {p.name: p.read_bytes() for p in (REPO / "hf_prefs" / "templates").glob("*.md")}
    browsable = {p.name: p.read_bytes() for p in (REPO / "model_cards").glob("*.md")}
    assert set(shipped) == {"policy.md", "reward_model.md"}
    assert browsable == shipped
    assert template_path("policy.md").read_bytes() == shipped["policy.md"]


def test_policy_card_shows_the_run_numbers():
    text = render_policy_card(**policy_fields(metrics={"objective/scores": 1.8125, "objective/kl": 5.87, "episodes": 1000000}))

    meta = front_matter(text)
    assert meta["library_name"] == "transformers"
    assert meta["tags"] == list(POLICY_TAGS) == ["hf-prefs", "trl", "ppo", "rlhf"]
    assert meta["base_model"] == "gpt2"
    assert meta["license"] == "apache-2.0"
    assert meta["pipeline_tag"] == "text-generation"
    assert "4,992 best-of-4 labels from a simulated labeler" in text and "VADER log-odds" in text
    assert f"| reward normalization gain | {format(1.2345678, '.6g')} |" in text  # 1.23457
    assert "| reward normalization bias | -0.0312 |" in text
    assert "| KL controller | adaptive |" in text
    assert "| KL target (nats) | 6 |" in text
    assert "| β initial | 0.15 |" in text
    assert "| β final | 0.234 |" in text
    assert "| final KL(π, ρ) (nats) | 5.87 |" in text
    assert "| `objective/scores` | 1.8125 |" in text and "| `episodes` | 1000000 |" in text
    assert 'AutoModelForCausalLM.from_pretrained("alice/gpt2-sentiment")' in text
    assert "temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=24" in text
    assert "[gpt2](https://huggingface.co/gpt2)" in text
    assert "@article{ziegler2019finetuning" in text and "arXiv:1909.08593" in text
    assert "@software{vonwerra2020trl" in text
    assert "None" not in text


def test_fixed_kl_and_minimal_fields_render_without_none():
    fields = policy_fields(kl_target=None, beta_initial=None, hub_model_id=None)
    text = render_policy_card(**fields)
    assert "| KL controller | fixed |" in text and "| KL target (nats) | none (fixed β) |" in text
    assert "| β initial | not recorded |" in text
    assert "No metrics were recorded." in text and "## Training hyperparameters" not in text
    assert 'from_pretrained("./gpt2-sentiment-ppo")' in text  # local folder name, not a made-up Hub id
    assert "None" not in text


def test_local_base_model_path_never_renders_none(tmp_path):
    local = tmp_path / "SmolLM2-135M-Instruct"
    local.mkdir()
    text = render_policy_card(**policy_fields(base_model=str(local) + "/"))
    assert "base_model" not in front_matter(text)  # the Hub only accepts repo ids there
    assert "`SmolLM2-135M-Instruct` (local model)" in text
    assert "[None]" not in text and "None" not in text

    named = render_reward_model_card(**rm_fields(base_model=local, base_model_name="SmolLM2 135M (GGUF Q4_1)"))
    assert "`SmolLM2 135M (GGUF Q4_1)` (local model)" in named and "base_model" not in front_matter(named)

    # A path from another machine (not present here) is still a path, not a Hub id.
    assert resolve_base_model("/data/models/gpt2-large") == (None, "gpt2-large")
    assert resolve_base_model("HuggingFaceTB/SmolLM2-135M") == ("HuggingFaceTB/SmolLM2-135M", "HuggingFaceTB/SmolLM2-135M")
    with pytest.raises(ValueError, match="base_model"):
        resolve_base_model(None)


def test_reward_model_card_shows_normalization_labels_and_loading():
    text = render_reward_model_card(**rm_fields(
        labeler="file", labels_file="offline_5k.json", samples_per_label=4, policy_model_id="alice/gpt2-sentiment",
        metrics={"eval_accuracy": 0.6875, "eval_loss": 1.0625}, datasets=["alice/sentiment-labels"]))

    meta = front_matter(text)
    assert meta["tags"] == list(REWARD_MODEL_TAGS) == ["hf-prefs", "trl", "reward-model", "rlhf"]
    assert meta["base_model"] == "gpt2" and meta["library_name"] == "transformers"
    assert meta["datasets"] == ["alice/sentiment-labels"]
    assert "| gain | 0.8125 |" in text and "| bias | 0.4375 |" in text
    assert "4,992 best-of-4 labels read from `offline_5k.json`" in text
    assert "| `eval_accuracy` | 0.6875 |" in text and "| `eval_loss` | 1.0625 |" in text
    assert "[alice/gpt2-sentiment](https://huggingface.co/alice/gpt2-sentiment)" in text
    assert 'load_reward_model("alice/gpt2-sentiment-reward-model")' in text
    assert "ziegler2019finetuning" in text and "vonwerra2020trl" in text
    assert "None" not in text
    # The loading snippet's imports are real.
    imports = [line for line in text.splitlines() if line.startswith("from hf_prefs")]
    assert imports
    for line in imports:
        exec(line, {})

    human = render_reward_model_card(**rm_fields(labeler="human", known_reward=None, num_labels=7, samples_per_label=2))
    assert "7 best-of-2 labels from human labelers." in human


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(num_labels=0), "num_labels"),
        (dict(num_labels=12.0), "num_labels"),
        (dict(reward_gain=math.nan), "reward_gain"),
        (dict(reward_bias="0.1"), "reward_bias"),
        (dict(kl_final=math.inf), "kl_final"),
        (dict(kl_target=0.0), "kl_target"),
        (dict(temperature=0), "temperature"),
        (dict(response_length=0), "response_length"),
        (dict(labeler="robot"), "labeler"),
        (dict(known_reward=None), "known_reward"),
        (dict(labeler="file", labels_file=None), "labels_file"),
        (dict(samples_per_label=1), "samples_per_label"),
        (dict(metrics={"objective/kl": math.inf}), r"metrics\['objective/kl'\]"),
        (dict(base_model=None), "base_model"),
        (dict(task=""), "task"),
    ],
)
def test_bad_fields_raise_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        render_policy_card(**policy_fields(**overrides))


def test_write_model_card_round_trips_and_rejects_bad_front_matter(tmp_path):
    text = render_reward_model_card(**rm_fields())
    path = write_model_card(tmp_path / "rm", text)
    assert path == tmp_path / "rm" / "README.md"
    assert path.read_text(encoding="utf-8") == text
    loaded = ModelCard.load(path)
    assert loaded.data.tags == list(REWARD_MODEL_TAGS) and loaded.data.base_model == "gpt2"

    with pytest.raises(ValueError, match="front matter"):
        write_model_card(tmp_path / "bad", "# no front matter\n")
    with pytest.raises(ValueError, match="does not parse"):
        write_model_card(tmp_path / "bad", "---\ntags: [unclosed\n---\n# card\n")
    assert not (tmp_path / "bad" / "README.md").exists()


def test_peft_policy_card_loads_the_adapter():
    text = render_policy_card(**policy_fields(is_peft=True, tags=["lora"]))  # no rows given: peft's loader
    assert 'AutoPeftModelForCausalLM.from_pretrained("alice/gpt2-sentiment")' in text and "resize_token" not in text
    sized = render_policy_card(**policy_fields(is_peft=True, embedding_rows=50257))
    assert "base.resize_token_embeddings(50257)\nmodel = PeftModel.from_pretrained(base, \"alice/gpt2-sentiment\")" in sized
    assert "with the 50257 token rows" in sized and "AutoPeftModelForCausalLM.from_pretrained" not in sized
    with pytest.raises(ValueError, match="embedding_rows: expected an int >= 1"):
        render_policy_card(**policy_fields(is_peft=True, embedding_rows=0))
    assert front_matter(text)["tags"] == [*POLICY_TAGS, "lora"]
    assert front_matter(text)["library_name"] == "peft"  # the Hub lists an adapter by it (base_model: gpt2)
    assert hf_prefs.__version__ in text  # framework versions list hf_prefs


def test_cards_say_whether_the_reward_was_normalized():
    """A reward model's card tells what chose its gain and bias (after training, before it only, or nothing), and a
    policy's whether its reward was normalized: both claimed mean 0 and standard deviation 1 whatever was done."""
    claim = "base model have mean 0 and standard deviation 1"
    after = render_reward_model_card(**rm_fields())
    before = render_reward_model_card(**rm_fields(normalization="before"))
    none = render_reward_model_card(**rm_fields(reward_gain=1.0, reward_bias=0.0, normalization="none"))
    assert claim in after and "chosen after training" in after
    assert claim not in before and "set before this training" in before and "`hf_prefs_reward_gain`" in before
    assert claim not in none and "**Not normalized:**" in none and "`hf_prefs_reward_gain`" not in none
    with pytest.raises(ValueError, match="normalization must be one of"):
        render_reward_model_card(**rm_fields(normalization="yes"))
    assert "ρ's samples have mean 0 and standard deviation 1" in render_policy_card(**policy_fields())
    raw = render_policy_card(**policy_fields(reward_gain=1.0, reward_bias=0.0, reward_normalized=False))
    assert "standard deviation 1" not in raw and "not\nnormalized (gain 1, bias 0)" in raw


def test_a_trainers_card_says_what_it_does_not_know_about_the_labels():
    """The trainers' own cards (hf_prefs.trainers.trainer_cards) know a reward trainer's dataset (its size and K when
    it has a length), not the task's labeler; a PPO trainer knows neither."""
    ppo = render_policy_card(**policy_fields(num_labels=None, samples_per_label=None, labeler=None,
                                             reward_model_name="the reward function `f`, given to the trainer"))
    assert "**Labels behind the reward model:** not recorded." in ppo
    assert "**Reward model:** the reward function `f`, given to the trainer" in ppo
    rm = render_reward_model_card(**rm_fields(num_labels=8, samples_per_label=4, labeler=None, labels_file="mine"))
    assert "**Labels:** 8 best-of-4 labels of the training dataset `mine`." in rm
    streamed = render_reward_model_card(**rm_fields(num_labels=None, samples_per_label=None, labeler=None))
    assert "**Labels:** not recorded." in streamed and "given to the trainer" not in streamed


def test_cards_link_the_runs_trackers_as_trls_did(monkeypatch):
    """TRL's cards linked the run's W&B / Trackio / Comet pages and tagged unsloth, hf_jobs and trackio:<url>; the
    trainers' own cards keep that."""
    from types import SimpleNamespace

    from transformers import GPT2Config, GPT2ForSequenceClassification

    import hf_prefs.trainers.trainer_cards as trainer_cards

    text = render_policy_card(**policy_fields(tracking_links={"Weights & Biases": "https://wandb.ai/a/b/runs/c"}))
    assert "- **Training logs:** [Weights & Biases](https://wandb.ai/a/b/runs/c)\n" in text
    assert "Training logs" not in render_policy_card(**policy_fields())
    links = {"Trackio": "https://huggingface.co/spaces/a/t", "Comet": "https://www.comet.com/x"}
    monkeypatch.setattr(trainer_cards, "tracker_urls", lambda: links)
    monkeypatch.setenv("JOB_ID", "42")
    model = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=8, n_head=1, num_labels=1))
    trainer = SimpleNamespace(
        model=model, train_dataset=[0] * 6, num_candidates=4, state=SimpleNamespace(log_history=[{"eval_loss": 1.25}]),
        args=SimpleNamespace(learning_rate=1e-3, per_device_train_batch_size=2, gradient_accumulation_steps=1,
                             num_train_epochs=1, seed=0, hub_model_id=None))
    card = trainer_cards.reward_trainer_card(trainer, model_name="rm", tags=["mine"])
    assert "- **Training logs:** [Trackio](https://huggingface.co/spaces/a/t), [Comet](https://www.comet.com/x)\n" in card
    assert {"mine", "hf_jobs", "trackio:https://huggingface.co/spaces/a/t"} <= set(front_matter(card)["tags"])
    assert "6 best-of-4 labels of the training dataset." in card and "| `eval_loss` | 1.25 |" in card


def test_an_adapter_reward_models_card_says_where_its_gain_is_and_how_plain_transformers_loads_it():
    """An adapter folder has no config.json: the card said the gain/bias were stored there, and its plain-transformers
    line failed on the folder without num_labels=1."""
    adapter = render_reward_model_card(**rm_fields(is_peft=True))
    full = render_reward_model_card(**rm_fields())
    assert "stored in `reward_normalization.json` next to the adapter" in adapter and "`config.json` (" not in adapter
    assert "`num_labels=1`" in adapter and "`num_labels=1`" not in full
    assert "stored in `config.json` (`hf_prefs_reward_gain`, `hf_prefs_reward_bias`)" in full
