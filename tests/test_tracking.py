"""``report_to`` works as in TRL: the trainers' metrics reach TensorBoard and trackio (both local, offline), and a test
reads them back.

The reporters are transformers' own callbacks (``TensorBoardCallback``, ``TrackioCallback``), as with TRL's trainers:
each ``Trainer.log`` call is written with transformers' ``rewrite_logs`` names (``objective/kl`` -> ``train/objective/kl``,
evaluation metrics ``eval_x`` -> ``eval/x``). TensorBoard writes event files under ``$TENSORBOARD_LOGGING_DIR`` or
``output_dir/runs/<date>_<host>`` (transformers 5 has no ``logging_dir`` argument); trackio writes an SQLite database
per project under ``$TRACKIO_DIR`` (read once, when trackio is imported, which TRL does whenever trackio is installed;
conftest.py sets it to a temporary folder; default ``~/.cache/huggingface/trackio``) and only talks to the Hub when
given a Space (``trackio_space_id`` / ``$TRACKIO_SPACE_ID``) or on ``push_to_hub`` (a static Space, unless
``trackio_static_space_id=False``).
Here every test fails on any connection that is not to the loopback interface.
"""

from __future__ import annotations

import ipaddress
import math
import socket
import uuid
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel

from conftest import TRACKIO_DIR, tiny_gpt2_config
from hf_prefs import PPOConfig, PPOTrainer, PreferenceRewardConfig, PreferenceRewardTrainer

QUERIES = ["It is a truth universally acknowledged.", "She was not a young lady of", "The weather was fine, and",
           "Mr. Darcy said"]
PPO_KEYS = ("objective/kl", "objective/kl_coef", "objective/scores", "objective/rlhf_reward", "objective/entropy",
            "loss/policy_avg", "loss/value_avg", "policy/approxkl_avg", "val/explained_variance", "lr", "episode")
#: Variables that would send trackio's runs to a Space, a Bucket or a server instead of the local folder.
TRACKIO_REMOTE_VARS = ("TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL", "TRACKIO_BUCKET_ID", "TRACKIO_DATASET_ID",
                       "TRACKIO_REGISTRY_BUCKET_ID", "TRACKIO_WEBHOOK_URL")


@pytest.fixture(autouse=True)
def offline_only(monkeypatch):
    """Refuse (and record) every socket connection that is not to 127.0.0.1/::1 or a unix socket; torch on 1 thread."""
    attempts: list = []
    connect = socket.socket.connect

    def guarded(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:  # a host name
                loopback = host == "localhost"
            if not loopback:
                attempts.append(address)
                raise OSError(f"test_tracking: no network here (tried {address})")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield attempts
    torch.set_num_threads(threads)
    assert attempts == [], f"a reporter tried the network: {attempts}"


@pytest.fixture
def trackio_dir(monkeypatch):
    """trackio's local storage: the temporary folder conftest.py sets as TRACKIO_DIR before anything imports trackio;
    no variable that would send the run to a Space, a Bucket or a server."""
    for var in TRACKIO_REMOTE_VARS:
        monkeypatch.delenv(var, raising=False)
    import trackio.utils

    assert Path(trackio.utils.TRACKIO_DIR) == Path(TRACKIO_DIR), "trackio was imported before conftest set TRACKIO_DIR"
    return Path(TRACKIO_DIR)


def ppo_trainer(tmp_path, gpt2_tokenizer, report_to: list[str], **overrides) -> PPOTrainer:
    """Two PPO updates of 4 episodes on a tiny random GPT-2, rewarded by response length."""
    torch.manual_seed(0)
    kw = dict(
        output_dir=str(tmp_path / "ppo"), per_device_train_batch_size=4, gradient_accumulation_steps=1,
        num_mini_batches=1, total_episodes=8, response_length=6, learning_rate=1e-3, report_to=report_to,
        logging_steps=1, save_strategy="no", num_sample_generations=0, disable_tqdm=True, seed=0,
    )
    args = PPOConfig(**{**kw, **overrides})
    return PPOTrainer(
        model=GPT2LMHeadModel(tiny_gpt2_config()).eval(),
        reward_model=lambda queries, responses: torch.tensor([len(r) / 10.0 for r in responses]),
        args=args,
        train_dataset=Dataset.from_dict({"query": QUERIES * 2}),
        processing_class=gpt2_tokenizer,
    )


def history(trainer, key: str) -> dict[int, float]:
    """``{global step: value}`` of ``key`` in ``trainer.state.log_history``."""
    return {h["step"]: h[key] for h in trainer.state.log_history if key in h}


def tensorboard_scalars(log_dir: Path) -> dict[str, dict[int, float]]:
    """``{tag: {step: value}}`` of every scalar in the event files under ``log_dir``."""
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def assert_close(got: dict[int, float], expected: dict[int, float], rel: float) -> None:
    assert got.keys() == expected.keys()
    for step, value in expected.items():
        assert got[step] == pytest.approx(value, rel=rel, abs=1e-7), step


def test_ppo_report_to_tensorboard(tmp_path, gpt2_tokenizer):
    trainer = ppo_trainer(tmp_path, gpt2_tokenizer, ["tensorboard"])
    trainer.train()

    runs = list((tmp_path / "ppo" / "runs").iterdir())  # output_dir/runs/<date>_<host>, as for any Trainer
    assert len(runs) == 1 and list(runs[0].glob("events.out.tfevents.*"))
    scalars = tensorboard_scalars(runs[0])
    logged = {k for h in trainer.state.log_history for k in h} - {"step"}
    assert set(scalars) == {f"train/{k}" for k in logged}  # every metric of every update, TRL's names
    for key in PPO_KEYS:
        expected = history(trainer, key)
        assert sorted(expected) == [1, 2], key
        assert_close(scalars[f"train/{key}"], expected, rel=1e-6)  # event files hold float32
    assert scalars["train/objective/scores"][1] > 0  # the length reward reached the log


def test_ppo_report_to_trackio(tmp_path, gpt2_tokenizer, trackio_dir):
    from trackio.sqlite_storage import SQLiteStorage

    from hf_prefs.trainers.ppo_data import prepare_query_dataset

    # num_sample_generations=1: a table of samples after the first update, logged to the trackio run too
    project = f"hf-prefs-tests-{uuid.uuid4().hex[:8]}"  # TRACKIO_DIR is one folder for the whole session
    trainer = ppo_trainer(tmp_path, gpt2_tokenizer, ["trackio"], project=project, run_name="ppo-tiny",
                          trackio_static_space_id=False, num_sample_generations=1)
    trainer.train()

    assert (trackio_dir / f"{project}.db").is_file()
    assert SQLiteStorage.get_runs(project) == ["ppo-tiny"]
    logs = SQLiteStorage.get_logs(project, "ppo-tiny")
    metric_rows = [row for row in logs if "train/global_step" in row]
    assert [row["train/global_step"] for row in metric_rows] == [1, 2]
    for key in PPO_KEYS:
        got = {row["train/global_step"]: row[f"train/{key}"] for row in metric_rows}
        assert_close(got, history(trainer, key), rel=1e-12)  # trackio keeps float64
    (table,) = [row["samples"] for row in logs if "samples" in row]
    assert table["_type"] == "trackio.table" and len(table["_value"]) == 4
    for sample in table["_value"]:
        assert set(sample) == {"query", "response", "score", "penalized"} and sample["query"] in QUERIES
        assert sample["score"] == pytest.approx(len(sample["response"]) / 10.0, rel=1e-6)  # the reward of that text
    config = SQLiteStorage.get_run_config(project, "ppo-tiny")
    assert config["learning_rate"] == 1e-3 and config["response_length"] == 6  # TrackioCallback logs the arguments
    # after training (the run finished), as TRL's flow calls it: the table is returned, nothing logged (was
    # "Call trackio.init() before trackio.log()")
    trainer.eval_dataset = prepare_query_dataset(Dataset.from_dict({"query": QUERIES}), gpt2_tokenizer,
                                                 trainer.policy_model, trainer.args, name="eval_dataset")
    after = trainer.generate_completions()
    assert len(after) == len(QUERIES) and len([row for row in SQLiteStorage.get_logs(project, "ppo-tiny") if "samples" in row]) == 1


def test_reward_trainer_report_to_tensorboard(tmp_path, gpt2_tokenizer, monkeypatch):
    log_dir = tmp_path / "tb"
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(log_dir))  # transformers 5's way to choose the folder
    cfg = tiny_gpt2_config(num_labels=1, pad_token_id=gpt2_tokenizer.eos_token_id)
    torch.manual_seed(0)
    labels = Dataset.from_dict({
        "query": [f"Chapter {i}. After the ball she felt" for i in range(8)],
        "samples": [[" happy all day.", " sad all day.", " awful all day."] for _ in range(8)],
        "best": [0] * 8,
    })
    args = PreferenceRewardConfig(
        output_dir=str(tmp_path / "rm"), per_device_train_batch_size=4, per_device_eval_batch_size=8,
        learning_rate=3e-3, max_steps=2, logging_steps=1, eval_strategy="steps", eval_steps=2,
        report_to=["tensorboard"], save_strategy="no", normalize_before=False, normalize_after=False, seed=0,
    )
    trainer = PreferenceRewardTrainer(GPT2ForSequenceClassification(cfg), args, train_dataset=labels,
                                      eval_dataset=labels, processing_class=gpt2_tokenizer)
    trainer.train()

    scalars = tensorboard_scalars(log_dir)
    for key in ("loss", "accuracy", "mean_reward", "grad_norm", "learning_rate"):
        expected = history(trainer, key)
        assert sorted(expected) == [1, 2], key
        assert_close(scalars[f"train/{key}"], expected, rel=1e-6)
    for key in ("loss", "accuracy"):  # eval_loss -> eval/loss
        expected = history(trainer, f"eval_{key}")
        assert sorted(expected) == [2], key
        assert_close(scalars[f"eval/{key}"], expected, rel=1e-6)
    assert all(0.0 <= v <= 1.0 for v in scalars["train/accuracy"].values())
    assert all(math.isfinite(v) and v > 0 for v in scalars["train/loss"].values())
