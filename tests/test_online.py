"""The online label loop (hf_prefs/online.py): schedule, rounds during PPO on tiny GPT-2, label sources, recipe."""

from __future__ import annotations

import json
import math
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer, GPT2LMHeadModel, TrainerCallback

from hf_prefs.trainers import online
from hf_prefs.core.kl import adaptive_kl_update
from hf_prefs.labels.queue import LabelQueue
from hf_prefs.labels.labelers import SimulatedLabeler
from hf_prefs.labels.sources import QueueLabelSource
from hf_prefs.trainers.online import OnlineLabelSchedule, OnlinePreferenceLoop
from hf_prefs.pipeline import PipelineArguments, main, train_reward_model, validate_pipeline_config
from hf_prefs.trainers.ppo_config import PPOConfig
from hf_prefs.trainers.ppo_trainer import PPOTrainer


ROOT = Path(__file__).resolve().parents[1]
OFFLINE = str(ROOT / "recipes" / "configs" / "sentiment_offline.yaml")
QUERIES = [f"Chapter {i}. The weather in the village was {w} that day." for i, w in
           zip(range(40), ["fine", "grey", "cold", "warm", "wet"] * 8)]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



def _tokenizer(base: str):
    tok = AutoTokenizer.from_pretrained(base, padding_side="left")
    tok.pad_token = tok.eos_token
    return tok


def _ppo_config(tmp_path, **kw) -> PPOConfig:
    base = dict(
        output_dir=str(tmp_path / "ppo"), per_device_train_batch_size=4, gradient_accumulation_steps=1,
        total_episodes=24, response_length=6, truncate_token=None, num_ppo_epochs=1, learning_rate=1e-3,
        kl_coef=0.2, adaptive_kl=True, kl_target=0.05, kl_horizon=20, report_to=[], save_strategy="no",
        num_sample_generations=0, disable_tqdm=True, seed=0, use_cpu=True,
    )
    base.update(kw)
    return PPOConfig(**base)


def _char_count(texts):  # the simulated labeler's known reward
    return [float(len(t)) for t in texts]


class _RecordRewardModel(TrainerCallback):
    """Appended after the loop's callback: sees the reward model each update's rollout will use."""

    def __init__(self, trainer):
        self.trainer, self.models = trainer, []

    def on_step_begin(self, args, state, control, **kwargs):
        self.models.append(self.trainer.reward_model)


# --------------------------------------------------------------------------- schedule
def test_schedule_boundaries_and_labels():
    s = OnlineLabelSchedule(rounds=4, labels_per_round=[5, 3, 2, 2])
    assert s.episode_boundaries(100) == [0, 25, 50, 75]
    # first update starting at or after the episode: ceil(25/8)=4, ceil(50/8)=7, ceil(75/8)=10 (13 updates)
    assert s.update_boundaries(100, 8) == [0, 4, 7, 10]
    assert s.cumulative_labels() == [5, 8, 10, 12] and s.total_labels == 12
    later = OnlineLabelSchedule(rounds=4, labels_per_round=3, first_round_before_rl=False)
    assert later.episode_boundaries(100) == [20, 40, 60, 80] and later.labels_per_round == (3, 3, 3, 3)
    paper = OnlineLabelSchedule.even(45_000, 20)  # 1 round before RL + 19 retrainings, evenly spaced
    assert paper.episode_boundaries(1_000_000) == [r * 50_000 for r in range(20)]
    assert paper.labels_per_round == (2250,) * 20
    assert OnlineLabelSchedule.even(10, 3).labels_per_round == (4, 3, 3)
    assert OnlineLabelSchedule.offline(4992).episode_boundaries(10) == [0]
    with pytest.raises(ValueError, match="3 entries for 2 rounds"):
        OnlineLabelSchedule(2, [1, 2, 3])
    with pytest.raises(ValueError, match=r"labels_per_round\[1\]"):
        OnlineLabelSchedule(2, [1, 0])
    with pytest.raises(ValueError, match="rounds"):
        OnlineLabelSchedule(0, 1)
    numpy_counts = OnlineLabelSchedule(np.int64(2), np.int64(3))  # was refused: "rounds must be an int"
    assert numpy_counts == OnlineLabelSchedule(2, 3) and type(numpy_counts.rounds) is int
    assert OnlineLabelSchedule(2, np.array([4, 1])).labels_per_round == (4, 1)
    with pytest.raises(ValueError, match=r"labels_per_round\[0\] must be an int >= 1, got 2.5"):
        OnlineLabelSchedule(1, [2.5])
    with pytest.raises(ValueError, match="distinct PPO updates"):
        OnlineLabelSchedule(3, 1).update_boundaries(16, 8)  # episodes 0, 5, 10 -> updates 0, 1, 2 of only 2
    with pytest.raises(ValueError, match="do not fit"):
        OnlineLabelSchedule(5, 1).episode_boundaries(3)


# --------------------------------------------------------------------------- the loop with a simulated labeler
def test_simulated_rounds_grow_labels_retrain_rm_keep_beta_and_sample_the_current_policy(tiny_base, tmp_path, monkeypatch):
    tok = _tokenizer(tiny_base)
    cfg = _ppo_config(tmp_path)
    pa = PipelineArguments(task="sentiment", num_candidates=2, rm_batch_size=4, rm_learning_rate=1e-3,
                           rm_eval_fraction=0.0, rm_normalize_samples=8, sampling_batch_size=16)
    rho = GPT2LMHeadModel.from_pretrained(tiny_base).eval()
    policy = GPT2LMHeadModel.from_pretrained(tiny_base)

    trained = []  # (labels passed, init_model, returned model, its parameters)

    def train_rm(labels, init_model, r):
        model, metrics = train_reward_model(pa, cfg, labels.select_columns(["query", "samples", "best"]), rho, tok,
                                            tiny_base, str(tmp_path / "rm"), init_model=init_model)
        params = {n: p.detach().clone() for n, p in model.named_parameters() if "wte" not in n}
        trained.append((labels, init_model, model, params))
        return model, metrics

    sampled = []  # (round seed, policy object, L1 distance of its weights to rho's)
    real_sample = online.sample_candidates

    def spy(policy, *args, **kwargs):
        with torch.no_grad():
            dist = sum((p - q).abs().sum().item() for p, q in zip(policy.parameters(), rho.parameters()))
        sampled.append((policy, dist))
        return real_sample(policy, *args, **kwargs)

    monkeypatch.setattr(online, "sample_candidates", spy)
    schedule = OnlineLabelSchedule(rounds=3, labels_per_round=[4, 3, 5])
    loop = OnlinePreferenceLoop(schedule, SimulatedLabeler(_char_count, seed=0), train_rm, QUERIES[:20], tok,
                                args=cfg, num_candidates=2, sampling_batch_size=16, output_dir=str(tmp_path / "out"))
    trainer = PPOTrainer(policy, reward_model=lambda q, r: torch.zeros(len(q)), args=cfg,
                         train_dataset=Dataset.from_dict({"query": QUERIES[20:]}), processing_class=tok)
    recorder = _RecordRewardModel(trainer)
    trainer.add_callback(recorder)
    loop.train(trainer)

    # 24 episodes / 4 per update = 6 updates; rounds at episodes 0, 8, 16 = before updates 0, 2, 4
    assert trainer.state.global_step == 6
    assert [r["step"] for r in loop.rounds] == [0, 2, 4] and [r["episode"] for r in loop.rounds] == [0, 8, 16]
    # labels grow exactly as scheduled, and each fresh reward model is trained on ALL labels so far
    assert [r["new_labels"] for r in loop.rounds] == [4, 3, 5]
    assert [r["labels_total"] for r in loop.rounds] == [4, 7, 12] and len(loop.labels_dataset()) == 12
    assert [len(labels) for labels, *_ in trained] == [4, 7, 12]
    assert all(init is None for _, init, *_ in trained)
    rows = loop.labels_dataset()
    assert rows["round"] == [0] * 4 + [1] * 3 + [2] * 5 and rows["episode"] == [0] * 4 + [8] * 3 + [16] * 5
    for labels, *_ in trained:  # the earlier labels come first, unchanged
        assert labels["query"] == rows["query"][: len(labels)] and labels["best"] == rows["best"][: len(labels)]
    saved = [json.loads(line) for line in (tmp_path / "out" / "online_labels.jsonl").read_text().splitlines()]
    assert [r["query"] for r in saved] == rows["query"]

    # a new reward model each round, with different weights, swapped into the rollouts at the scheduled updates
    models = [m for _, _, m, _ in trained]
    assert len({id(m) for m in models}) == 3
    for (_, _, _, a), (_, _, _, b) in zip(trained, trained[1:]):
        assert any(not torch.equal(a[n], b[n]) for n in a)
        assert not torch.equal(a["score.weight"], b["score.weight"])
    assert [id(m) for m in recorder.models] == [id(models[i]) for i in (0, 0, 1, 1, 2, 2)]
    assert trainer.reward_model is models[-1]

    # samples of each round come from the trainer's live policy: rho's weights at round 0, moved away after
    policy_now = trainer.accelerator.unwrap_model(trainer.model).policy
    assert all(p is policy_now for p, _ in sampled) and len(sampled) == 3
    assert sampled[0][1] == 0.0 and sampled[1][1] > 0.0 and sampled[2][1] > 0.0

    # beta: one adaptive rule over the whole run's logged KLs, never reset at a round
    ppo_rows = [row for row in trainer.state.log_history if "objective/kl" in row]
    assert len(ppo_rows) == 6
    beta = cfg.kl_coef
    for row in ppo_rows:
        assert row["objective/kl_coef"] == pytest.approx(beta, rel=1e-9)
        beta = adaptive_kl_update(beta, row["objective/kl"], cfg.kl_target, 4, cfg.kl_horizon)
    assert trainer.kl_ctl.value == pytest.approx(beta, rel=1e-9)
    assert ppo_rows[2]["objective/kl_coef"] != pytest.approx(cfg.kl_coef, rel=1e-3)  # not reset after round 1
    # the lr schedule runs once over all 6 updates (linear to 0), not restarted per round
    assert [row["lr"] for row in ppo_rows] == pytest.approx([1e-3 * (6 - u) / 6 for u in range(6)])
    # every PPO row is tagged with its round and the labels its reward model saw; one extra row per round
    assert [row["online/round"] for row in ppo_rows] == [0, 0, 1, 1, 2, 2]
    assert [row["online/labels_total"] for row in ppo_rows] == [4, 4, 7, 7, 12, 12]
    round_rows = [row for row in trainer.state.log_history if "online/new_labels" in row]
    assert [row["online/round"] for row in round_rows] == [0, 1, 2]
    assert all(math.isfinite(row["online/known_reward_of_samples"]) for row in round_rows)
    records = [json.loads(line) for line in (tmp_path / "out" / "online_rounds.jsonl").read_text().splitlines()]
    assert [r["labels_total"] for r in records] == [4, 7, 12]


# --------------------------------------------------------------------------- label files and the human queue
def _rm_stub(calls):
    """A cheap 'reward model' per round (a reward callable), recording what it was trained on."""

    def train(labels, init_model, r):
        calls.append((r, len(labels), init_model, list(labels["query"])))
        return lambda q, resp: torch.full((len(q),), float(r))

    return train


def _trainer(tiny_base, tmp_path, tok, **kw):
    cfg = _ppo_config(tmp_path, **kw)
    policy = GPT2LMHeadModel.from_pretrained(tiny_base)
    trainer = PPOTrainer(policy, reward_model=lambda q, r: torch.zeros(len(q)), args=cfg,
                         train_dataset=Dataset.from_dict({"query": QUERIES[20:]}), processing_class=tok)
    return cfg, trainer


def test_rounds_filled_from_a_label_file_and_continue_mode(tiny_base, tmp_path, monkeypatch):
    tok = _tokenizer(tiny_base)
    cfg, trainer = _trainer(tiny_base, tmp_path, tok)
    file_labels = Dataset.from_list([{"query": f"q{i}", "samples": [f"a{i}", f"b{i}"], "best": i % 2} for i in range(10)])

    def no_sampling(*a, **k):
        raise AssertionError("a file round must not sample")

    monkeypatch.setattr(online, "sample_candidates", no_sampling)
    calls = []
    loop = OnlinePreferenceLoop(OnlineLabelSchedule(3, [2, 3, 4]), file_labels, _rm_stub(calls), [], tok, args=cfg,
                                num_candidates=2, rm_init="continue")
    loop.train(trainer)
    rows = loop.labels_dataset()
    assert rows["query"] == [f"q{i}" for i in range(9)] and rows["best"] == [i % 2 for i in range(9)]
    assert rows["round"] == [0, 0, 1, 1, 1, 2, 2, 2, 2]
    # continue mode: each round trains the current reward model further on the round's new labels only
    assert [(r, n) for r, n, _, _ in calls] == [(0, 2), (1, 3), (2, 4)]
    assert calls[1][3] == ["q2", "q3", "q4"]
    assert calls[0][2] is None and calls[1][2] is not None and calls[2][2] is not None
    assert trainer.reward_model(["x"], ["y"]).tolist() == [2.0]


def test_a_label_file_loop_built_without_the_recipes_refuses_zero3(tiny_base, tmp_path, monkeypatch):
    """The loop's own check (not only the recipes' config check): a label-file source samples nothing, but its rounds'
    reward models would still be sharded under ZeRO-3; it stops before any round trains one."""
    tok = _tokenizer(tiny_base)
    cfg, trainer = _trainer(tiny_base, tmp_path, tok)
    file_labels = Dataset.from_list([{"query": f"q{i}", "samples": [f"a{i}", f"b{i}"], "best": 0} for i in range(4)])
    calls = []
    loop = OnlinePreferenceLoop(OnlineLabelSchedule(2, [2, 2]), file_labels, _rm_stub(calls), [], tok, args=cfg,
                                num_candidates=2)
    monkeypatch.setattr(online, "zero_stage", lambda accelerator: 3)
    with pytest.raises(NotImplementedError, match="ZeRO-3"):
        loop.train(trainer)
    assert calls == [] and trainer.state.global_step == 0
    # and at construction, from args carrying a ZeRO-3 plugin: before round 0 (first_round) samples or trains
    from types import SimpleNamespace

    zero3_args = SimpleNamespace(**{**vars(cfg), "deepspeed_plugin": SimpleNamespace(zero_stage=3)})
    with pytest.raises(NotImplementedError, match="ZeRO-3"):
        OnlinePreferenceLoop(OnlineLabelSchedule(2, [2, 2]), file_labels, _rm_stub(calls), [], tok, args=zero3_args,
                             num_candidates=2)


def test_rounds_during_rl_only_start_from_the_trainers_reward(tiny_base, tmp_path):
    """first_round_before_rl=False: PPO starts with the reward the trainer was built with; 2 rounds at episodes
    8 and 16 (24 / 3) replace it before updates 2 and 4."""
    tok = _tokenizer(tiny_base)
    cfg, trainer = _trainer(tiny_base, tmp_path, tok)
    initial = trainer.reward_model
    recorder = _RecordRewardModel(trainer)
    trainer.add_callback(recorder)
    file_labels = Dataset.from_list([{"query": f"q{i}", "samples": [f"a{i}", f"b{i}"], "best": 0} for i in range(4)])
    calls = []
    schedule = OnlineLabelSchedule(2, 2, first_round_before_rl=False)
    loop = OnlinePreferenceLoop(schedule, file_labels, _rm_stub(calls), [], tok, args=cfg, num_candidates=2)
    with pytest.raises(ValueError, match="no round before RL"):
        loop.first_round(None)
    loop.train(trainer)
    assert [r["step"] for r in loop.rounds] == [2, 4] and [(r, n) for r, n, _, _ in calls] == [(0, 2), (1, 4)]
    assert recorder.models[:2] == [initial, initial] and recorder.models[2] is not initial
    assert [m(["x"], ["y"]).tolist() for m in recorder.models[2:]] == [[0.0], [0.0], [1.0], [1.0]]


class _FileFilledQueue(QueueLabelSource):
    """The comparisons of each queued round are answered in a label FILE that is imported into the queue, by another
    LabelQueue object on the same folder (like `hf-prefs label import` from another process)."""

    def __init__(self, queue, folder, now: bool):
        super().__init__(queue, poll_s=0.02)
        self.folder, self.now, self.pending = Path(folder), now, []

    def request(self, round, n, queries, samples):
        out = super().request(round, n, queries, samples)
        self.pending.append((round, queries, samples))
        if self.now:
            self.fill()
        return out

    def fill(self):
        while self.pending:
            r, queries, samples = self.pending.pop(0)
            path = self.folder / f"labels_round{r}.jsonl"
            with open(path, "w") as f:
                for i, (q, s) in enumerate(zip(queries, samples)):
                    f.write(json.dumps({"query": q, "samples": s, "best": i % 2, "round": f"online-{r}"}) + "\n")
            LabelQueue(self.queue.path).add_labels(str(path))


def test_human_queue_waits_for_each_round_filled_from_a_file(tiny_base, tmp_path):
    tok = _tokenizer(tiny_base)
    cfg, trainer = _trainer(tiny_base, tmp_path, tok)
    source = _FileFilledQueue(LabelQueue(tmp_path / "queue"), tmp_path, now=False)
    stop = threading.Event()

    def labeler():  # fills each round from a file some time after it was queued
        while not stop.is_set():
            if source.pending:
                stop.wait(0.1)
                source.fill()
            stop.wait(0.02)

    thread = threading.Thread(target=labeler, daemon=True)
    thread.start()
    calls = []
    try:
        loop = OnlinePreferenceLoop(OnlineLabelSchedule(3, 2), source, _rm_stub(calls), QUERIES[:20], tok, args=cfg,
                                    num_candidates=2, label_timeout=60)
        loop.train(trainer)
    finally:
        stop.set()
        thread.join(5)
    assert [r["new_labels"] for r in loop.rounds] == [2, 2, 2]
    assert [(r, n) for r, n, _, _ in calls] == [(0, 2), (1, 4), (2, 6)]  # fresh: all labels so far
    rows = loop.labels_dataset()
    assert rows["best"] == [0, 1] * 3 and rows["round"] == [0, 0, 1, 1, 2, 2]
    assert len(LabelQueue(tmp_path / "queue").labels()) == 6


def test_without_waiting_ppo_continues_and_late_labels_join_the_next_round(tiny_base, tmp_path):
    tok = _tokenizer(tiny_base)
    cfg, trainer = _trainer(tiny_base, tmp_path, tok)
    source = _FileFilledQueue(LabelQueue(tmp_path / "queue"), tmp_path, now=False)

    class FillAfterUpdate(TrainerCallback):  # labels of a queued round arrive after the next PPO update
        def on_step_end(self, args, state, control, **kwargs):
            source.fill()

    trainer.add_callback(FillAfterUpdate())
    source.now = True  # round 0 (before RL) is answered at once: it always waits, there is no reward model yet
    calls = []
    loop = OnlinePreferenceLoop(OnlineLabelSchedule(3, [3, 2, 2]), source, _rm_stub(calls), QUERIES[:20], tok,
                                args=cfg, num_candidates=2, wait_for_labels=False)
    loop.first_round(trainer.accelerator.unwrap_model(trainer.model).policy)
    source.now = False
    loop.train(trainer)
    # round 1 found nothing new (its labels came after the update), round 2 picked up round 1's labels; round 2's
    # own labels arrived after the last round and trained no reward model
    assert [r["new_labels"] for r in loop.rounds] == [3, 0, 2]
    assert [(r, n) for r, n, _, _ in calls] == [(0, 3), (2, 5)]
    assert loop.labels_dataset()["round"] == [0, 0, 0, 1, 1]
    rows = [row for row in trainer.state.log_history if "objective/kl" in row]
    assert [row["online/round"] for row in rows] == [0, 0, 1, 1, 2, 2]
    assert [row["online/labels_total"] for row in rows] == [3, 3, 3, 3, 5, 5]
    assert trainer.reward_model(["x"], ["y"]).tolist() == [2.0]


# --------------------------------------------------------------------------- the recipe flag
def _recipe_args(base: str, out: Path, *extra: str) -> list[str]:
    return [
        "--config", OFFLINE, "--model_name_or_path", base, "--output_dir", str(out),
        "--use_peft", "false", "--rm_freeze_layers", "0", "--num_label_queries", "12", "--num_eval_queries", "4",
        "--num_ppo_queries", "16", "--rm_normalize_samples", "8", "--rm_batch_size", "8", "--num_candidates", "2",
        "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2", "--total_episodes", "24",
        "--num_ppo_epochs", "1", "--sampling_batch_size", "16", "--kl_horizon", "100", "--kl_target", "0.5",
        "--response_length", "20", "--disable_tqdm", "true", "--label_mode", "online", "--online_rounds", "3",
        *extra,
    ]


def test_recipe_label_mode_online(tiny_base, tmp_path):
    out = tmp_path / "run"
    summary = main(task="sentiment", argv=_recipe_args(tiny_base, out))
    assert summary["online"]["rounds_run"] == 3 and summary["labels"]["labels"] == 12
    records = [json.loads(line) for line in (out / "online_rounds.jsonl").read_text().splitlines()]
    assert [r["labels_total"] for r in records] == [4, 8, 12] and [r["step"] for r in records] == [0, 1, 2]
    assert len((out / "labels.jsonl").read_text().splitlines()) == 12
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["online/round"] for r in rows] == [0, 1, 2] and [r["online/labels_total"] for r in rows] == [4, 8, 12]
    beta = 0.15  # the recipe's kl_coef, adapted over the whole run
    for row in rows:
        assert row["objective/kl_coef"] == pytest.approx(beta, rel=1e-9)
        beta = adaptive_kl_update(beta, row["objective/kl"], 0.5, 8, 100)
    assert summary["final_beta"] == pytest.approx(beta, rel=1e-9)
    assert (out / "reward_model" / "config.json").is_file() and summary["reward_model"]["gain"] == pytest.approx(
        records[-1]["reward_gain"])


def test_online_resume_keeps_the_run_id_and_passes_over_an_earlier_runs_checkpoints(tiny_base, tmp_path, capsys):
    """An online run's checkpoints carry the run id of labels_info.json (written after round 0); resumed, the run
    keeps that id, so its new checkpoints do too; ``--resume_from_checkpoint true`` then passes over a checkpoint an
    earlier run left in the same folder (it took the highest-numbered one, whichever run wrote it). A checkpoint folder
    written again is replaced whole."""
    from hf_prefs.pipeline import resume_checkpoint
    from hf_prefs.pipeline.run import parse_args
    from hf_prefs.pipeline.saved_stages import RUN_FILE

    out = tmp_path / "run"
    argv = _recipe_args(tiny_base, out, "--save_strategy", "steps", "--save_steps", "1")
    main(task="sentiment", argv=argv)
    run_id = json.loads((out / "labels_info.json").read_text())["run_id"]
    ids = lambda: {c.name: json.loads((c / RUN_FILE).read_text())["run_id"] for c in out.glob("checkpoint-*")}
    assert ids() == {"checkpoint-1": run_id, "checkpoint-2": run_id, "checkpoint-3": run_id}
    shutil.rmtree(out / "checkpoint-3")
    main(task="sentiment", argv=[*argv, "--resume_from_checkpoint", str(out / "checkpoint-2")])
    assert json.loads((out / "labels_info.json").read_text())["run_id"] == run_id  # the same run, resumed
    assert ids()["checkpoint-3"] == run_id
    earlier = out / "checkpoint-9"  # an earlier run's, left in the folder
    shutil.copytree(out / "checkpoint-3", earlier)
    (earlier / RUN_FILE).write_text(json.dumps({"run_id": "an-earlier-run"}))
    capsys.readouterr()
    pa, cfg, model_args = parse_args("sentiment", [*argv, "--resume_from_checkpoint", "true"])
    assert resume_checkpoint(cfg, pa, model_args) == str(out / "checkpoint-3")
    assert "1 checkpoint(s) in" in capsys.readouterr().out
    cfg.resume_from_checkpoint = str(earlier)  # named: an online checkpoint holds its own labels and reward model
    assert resume_checkpoint(cfg, pa, model_args) == str(earlier)
    # a checkpoint written before run ids (no RUN_FILE), resumed: the run has none either, and true takes the newest
    # as before; the checkpoint folders it writes again are replaced whole (a stray file of the earlier one is gone)
    (out / "checkpoint-1" / RUN_FILE).unlink()
    (out / "checkpoint-2" / "stray.txt").write_text("an earlier run's")
    main(task="sentiment", argv=[*argv, "--resume_from_checkpoint", str(out / "checkpoint-1")])
    assert json.loads((out / "labels_info.json").read_text())["run_id"] is None
    assert not (out / "checkpoint-2" / "stray.txt").exists() and not (out / "checkpoint-2" / RUN_FILE).exists()
    cfg.resume_from_checkpoint = "true"
    assert resume_checkpoint(cfg, pa, model_args) == str(earlier)


@pytest.mark.parametrize(
    "extra, field",
    [
        (["--label_mode", "sometimes"], "label_mode"),
        (["--online_rounds", "5"], "online_rounds"),  # 5 rounds in 3 updates
        (["--online_labels_per_round", "4", "4"], "online_labels_per_round"),  # 2 values for 3 rounds
        (["--online_rm_init", "warm"], "online_rm_init"),
        (["--num_label_queries", "0"], "num_label_queries"),  # 0 labels for 3 rounds: names the field to set
        (["--query_min_tokens", "100"], "query_min_tokens"),  # longer than the sentiment task's 64-token queries
    ],
)
def test_bad_online_configs_fail_before_training(extra, field, tmp_path):
    argv = _recipe_args("unused-model", tmp_path / "run", *extra)
    with pytest.raises(ValueError) as err:
        main(task="sentiment", argv=argv)
    assert field in str(err.value)


class _StopAt(TrainerCallback):
    """Ends training after update ``step`` (as if the process were killed right after that checkpoint)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def _online_run(tiny_base, out, stop_at=None, resume=None):
    """A simulated-label online run with real reward models (tiny GPT-2): 3 rounds before updates 0, 2, 4 of 6,
    checkpoints every 2 updates; returns (trainer, loop)."""
    tok = _tokenizer(tiny_base)
    cfg = _ppo_config(out, save_strategy="steps", save_steps=2, output_dir=str(out / "ppo"))
    pa = PipelineArguments(task="sentiment", num_candidates=2, rm_batch_size=4, rm_learning_rate=1e-3,
                           rm_eval_fraction=0.0, rm_normalize_samples=8, sampling_batch_size=16)
    rho = GPT2LMHeadModel.from_pretrained(tiny_base).eval()

    def train_rm(labels, init_model, r):
        return train_reward_model(pa, cfg, labels.select_columns(["query", "samples", "best"]), rho, tok, tiny_base,
                                  str(out / "rm"), init_model=init_model)

    torch.manual_seed(0)
    loop = OnlinePreferenceLoop(OnlineLabelSchedule(3, [4, 3, 5]), SimulatedLabeler(_char_count, seed=0), train_rm,
                                QUERIES[:20], tok, args=cfg, num_candidates=2, sampling_batch_size=16,
                                output_dir=str(out / "labels"))
    trainer = PPOTrainer(GPT2LMHeadModel.from_pretrained(tiny_base), reward_model=lambda q, r: torch.zeros(len(q)),
                         args=cfg, train_dataset=Dataset.from_dict({"query": QUERIES[20:]}), processing_class=tok)
    if stop_at is not None:
        trainer.add_callback(_StopAt(stop_at))
    loop.train(trainer, resume_from_checkpoint=resume)
    return trainer, loop


def test_online_run_resumes_from_a_checkpoint_like_an_uninterrupted_run(tiny_base, tmp_path):
    full_trainer, full_loop = _online_run(tiny_base, tmp_path / "full")
    # killed after update 4 (rounds 0 and 1 done, checkpoint-4 written), then a new process resumes from it
    first_trainer, first_loop = _online_run(tiny_base, tmp_path / "cut", stop_at=4)
    assert first_trainer.state.global_step == 4 and len(first_loop.rounds) == 2
    ckpt = str(tmp_path / "cut" / "ppo" / "checkpoint-4")
    assert {"online_state.json", "online_reward_model"} <= set(p.name for p in Path(ckpt).iterdir())
    trainer, loop = _online_run(tiny_base, tmp_path / "cut", resume=ckpt)
    assert trainer.state.global_step == full_trainer.state.global_step == 6
    assert loop.labels_dataset().to_list() == full_loop.labels_dataset().to_list()  # same labels, written once
    assert [r["labels_total"] for r in loop.rounds] == [r["labels_total"] for r in full_loop.rounds] == [4, 7, 12]
    assert trainer.kl_ctl.value == pytest.approx(full_trainer.kl_ctl.value, rel=1e-6)
    for (name, a), (_, b) in zip(trainer.model.named_parameters(), full_trainer.model.named_parameters()):
        assert torch.allclose(a, b, atol=1e-5), name
    for (name, a), (_, b) in zip(loop.reward_model.named_parameters(), full_loop.reward_model.named_parameters()):
        assert torch.allclose(a, b, atol=1e-5), name
    lines = (tmp_path / "cut" / "labels" / "online_labels.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == loop.rows  # the file holds each label once


def test_a_new_loop_keeps_the_label_files_until_it_writes(tiny_base, tmp_path):
    """Building the loop writes nothing: a resume that fails (no online state in the checkpoint) leaves the earlier
    run's labels as they were."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "online_labels.jsonl").write_text('{"query": "q", "samples": ["a", "b"], "best": 0}\n')
    before = (out / "online_labels.jsonl").read_text()
    loop = OnlinePreferenceLoop(OnlineLabelSchedule(rounds=2, labels_per_round=2), SimulatedLabeler(_char_count, seed=0),
                                lambda *a: None, QUERIES[:8], _tokenizer(tiny_base), args=_ppo_config(tmp_path),
                                num_candidates=2, output_dir=str(out))
    with pytest.raises(FileNotFoundError, match="online_state"):
        loop.restore(str(tmp_path / "checkpoint-3"))
    assert (out / "online_labels.jsonl").read_text() == before
    new = [{"query": "new", "samples": ["c", "d"], "best": 1}]
    loop.rows += new
    loop._append_labels(new)  # the run's first write: new files
    assert [json.loads(x)["query"] for x in (out / "online_labels.jsonl").read_text().splitlines()] == ["new"]
    assert (out / "online_rounds.jsonl").read_text() == "" and not (out / "online_labels.jsonl.tmp").exists()


def test_summarization_tasks_take_another_query_dataset(tmp_path):
    """TL;DR and CNN/DM take their Hub source, Austen offline, or a dataset of the user's (a local file or folder or
    another Hub id, read by its columns: tests/test_tasks.py) — the check passes them all."""
    cfg = _ppo_config(tmp_path)
    for task, ok in (("tldr", "trl-lib/tldr"), ("cnndm", "abisee/cnn_dailymail")):
        for name in (None, "austen", ok, "my/texts", str(tmp_path / "posts.jsonl")):
            validate_pipeline_config(PipelineArguments(task=task, label_source="human", label_queue_dir="q",
                                                       query_dataset=name), cfg)


def test_online_loop_refuses_zero3_and_ppo_refuses_fsdp(tmp_path):
    """Checks that stop a run before it would hang or crash: online rounds under ZeRO-3 (later rounds sample the policy
    on the main process alone; the rounds' reward models would be sharded) — in the loop itself, whatever its label
    source, so a script that builds the loop without the recipes is stopped too; PPO's rollout bypasses an FSDP root
    module."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from hf_prefs.trainers.launch import check_critic_warmup, check_ppo_sharding
    from hf_prefs.trainers.online import check_online_zero_stage

    def acc(stage=None, kind=DistributedType.MULTI_GPU):
        plugin = None if stage is None else SimpleNamespace(zero_stage=stage)
        return SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin), distributed_type=kind)

    with pytest.raises(NotImplementedError, match="ZeRO-3"):
        check_online_zero_stage(3)
    for ok in (None, 0, 1, 2):
        check_online_zero_stage(ok)
    with pytest.raises(NotImplementedError, match="FSDP"):
        check_ppo_sharding(acc(kind=DistributedType.FSDP))
    check_ppo_sharding(acc(3, DistributedType.DEEPSPEED))
    # the critic warm-up drops the policy's gradients before the step, which DeepSpeed takes inside the backward
    with pytest.raises(NotImplementedError, match="critic_warmup_updates"):
        check_critic_warmup(acc(2, DistributedType.DEEPSPEED), 1)
    for ok in [(acc(2, DistributedType.DEEPSPEED), 0), (acc(None), 3)]:
        check_critic_warmup(*ok)
