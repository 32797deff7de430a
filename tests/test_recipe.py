"""The recipes end to end: artefacts, finite and consistent metrics, and bad configs rejected before training."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_prefs.core.kl import adaptive_kl_update
from conftest import load_recipe
from hf_prefs.labels.schema import load_label_file, to_pairwise
from hf_prefs.pipeline import main

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = str(ROOT / "recipes" / "configs" / "sentiment_offline.yaml")



def _tiny_args(base: str, out: Path, *extra: str) -> list[str]:
    return [
        "--config", OFFLINE, "--model_name_or_path", base, "--output_dir", str(out),
        "--use_peft", "false", "--rm_freeze_layers", "0", "--num_label_queries", "24", "--num_eval_queries", "6",
        "--num_ppo_queries", "40", "--rm_normalize_samples", "8", "--rm_batch_size", "8",
        "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2", "--total_episodes", "24",
        "--num_ppo_epochs", "2", "--sampling_batch_size", "16", "--kl_horizon", "100", "--disable_tqdm", "true",
        *extra,
    ]


def _check_run(out: Path, summary: dict, adaptive: bool, kl_target: float, horizon: int) -> None:
    for name in ("metrics.jsonl", "metrics.csv", "rm_metrics.jsonl", "eval.json", "kl_vs_reward.png", "samples.md",
                 "summary.json", "labels.jsonl", "policy/README.md", "reward_model/README.md",
                 "reward_model/config.json", "policy/value_head.safetensors"):
        assert (out / name).is_file(), name
    assert (out / "kl_vs_reward.png").stat().st_size > 5_000
    assert not (out / "reward_model_training").exists()  # the reward trainer's output folder, empty: removed
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == summary["ppo_updates"] == 3
    for row in rows:
        for key in ("objective/kl", "objective/scores", "objective/non_score_reward", "objective/rlhf_reward",
                    "objective/kl_coef", "objective/known_reward", "policy/approxkl_avg"):
            assert math.isfinite(row[key]), (key, row)
        # k1 estimator: the non-score reward is exactly -beta * KL, and the total is score + non-score
        assert row["objective/non_score_reward"] == pytest.approx(-row["objective/kl_coef"] * row["objective/kl"], rel=1e-4, abs=1e-6)
        assert row["objective/rlhf_reward"] == pytest.approx(row["objective/scores"] + row["objective/non_score_reward"], abs=1e-5)
    assert rows[0]["objective/kl"] == pytest.approx(0.0, abs=1e-5)  # pi = rho before the first update
    # beta after each update follows the adaptive rule applied to the logged KL of that update
    beta = rows[0]["objective/kl_coef"]
    for row in rows:
        assert row["objective/kl_coef"] == pytest.approx(beta, rel=1e-6)
        beta = adaptive_kl_update(beta, row["objective/kl"], kl_target, 8, horizon) if adaptive else beta
    assert summary["final_beta"] == pytest.approx(beta, rel=1e-6)
    ev = json.loads((out / "eval.json").read_text())
    for when in ("before", "after"):
        kl = ev[when]["kl"]
        assert ev[when]["summary"]["kl"] == pytest.approx(sum(kl) / len(kl))
        assert summary[when]["known_reward"] == pytest.approx(sum(ev[when]["known_rewards"]) / len(kl))
    assert summary["before"]["kl"] == pytest.approx(0.0, abs=1e-6)
    # the paired gain is the mean per-query difference of the known reward, after - before (same held-out queries)
    diffs = [a - b for a, b in zip(ev["after"]["known_rewards"], ev["before"]["known_rewards"])]
    assert summary["known_reward_gain"]["mean"] == pytest.approx(sum(diffs) / len(diffs))
    assert summary["known_reward_gain"]["n"] == len(diffs) and 0 <= summary["known_reward_gain"]["win_rate"] <= 1
    card = (out / "policy" / "README.md").read_text()
    assert "hf-prefs" in card and "1909.08593" in card and "[None]" not in card
    gain = summary["reward_model"]["gain"]
    assert f"{gain:.4g}"[:4] in (out / "reward_model" / "README.md").read_text()


def test_sentiment_recipe_tiny_end_to_end(tiny_base, tmp_path, monkeypatch):
    """recipes/sentiment.py itself (its stages top to bottom), in-process."""
    out = tmp_path / "run"
    extra = ("--kl_target", "0.5", "--eval_batch_size", "4")
    summary = load_recipe("sentiment").main(task="sentiment", argv=_tiny_args(tiny_base, out, *extra))
    _check_run(out, summary, adaptive=True, kl_target=0.5, horizon=100)
    assert summary["labels"]["labels"] == 24 and summary["labels"]["source"] == "simulated"
    # hf_prefs.run_pipeline (the same stages as one library call) gives the same run; the evaluation in batches of
    # eval_batch_size (sampling_batch_size is 16)
    import hf_prefs.pipeline.run as run

    batches = []
    evaluate = run.evaluate_policy
    monkeypatch.setattr(run, "evaluate_policy", lambda *a, **k: batches.append(k["batch_size"]) or evaluate(*a, **k))
    lib = main(task="sentiment", argv=_tiny_args(tiny_base, tmp_path / "lib", *extra))
    assert batches == [4, 4]
    for key in ("before", "after", "final_beta", "ppo_updates", "known_reward_gain", "labels"):
        assert lib[key] == summary[key], key
    untimed = lambda rm: {k: v for k, v in rm.items() if "runtime" not in k and "per_second" not in k}  # noqa: E731
    assert untimed(lib["reward_model"]) == untimed(summary["reward_model"])


def test_other_recipes_run_the_sentiment_flow_on_their_task(tiny_base, tmp_path):
    """descriptiveness.py runs sentiment.py's stages with its own task (and refuses another task)."""
    recipe = load_recipe("descriptiveness")
    assert recipe.main.__module__ == "sentiment"  # no copy of the flow: the one in recipes/sentiment.py
    summary = recipe.main(task="descriptiveness", argv=_tiny_args(tiny_base, tmp_path / "d", "--total_episodes", "8"))
    assert summary["task"] == "descriptiveness" and summary["ppo_updates"] == 1
    with pytest.raises(ValueError, match="task"):
        recipe.main(task="descriptiveness", argv=_tiny_args(tiny_base, tmp_path / "x", "--task", "tldr"))


def test_the_tldr_recipe_runs_on_a_local_file_of_openai_posts(tiny_base, tmp_path):
    """recipes/tldr.py with --query_dataset a local JSONL of OpenAI's TL;DR posts (no Hub): queries in trl-lib/tldr's
    prompt form, the held-out posts' summaries scored with ROUGE before and after."""
    posts = tmp_path / "train.jsonl"
    with posts.open("w") as f:
        for i in range(40):
            f.write(json.dumps({"id": str(i), "subreddit": "AskReddit", "title": f"Question {i}",
                                "post": f"I have been wondering about thing number {i} for a while. What do you think?",
                                "summary": f"wondering about thing {i}"}) + "\n")
    out = tmp_path / "tldr"
    summary = load_recipe("tldr").main(task="tldr", argv=_tiny_args(
        tiny_base, out, "--query_dataset", str(posts), "--total_episodes", "8", "--response_length", "8",
        "--truncate_after", "4"))
    assert summary["task"] == "tldr" and summary["ppo_updates"] == 1
    assert set(summary["rouge"]) == {"before", "after", "n"} and 0 <= summary["rouge"]["after"]["rouge1"] <= 1
    assert summary["rouge"]["n"] == 6  # the held-out queries, each with its summary
    queries = [json.loads(line)["query"] for line in (out / "labels.jsonl").read_text().splitlines()]
    assert len(queries) == 24 and all(q.startswith("SUBREDDIT: r/AskReddit\n\nTITLE: Question ") and
                                      q.endswith("What do you think?\n\nTL;DR:") for q in queries)


def test_label_file_source_and_reload(tiny_base, tmp_path):
    """Labels from the first run's file train the second run's reward model (label_source=file)."""
    first = tmp_path / "first"
    main(task="sentiment", argv=_tiny_args(tiny_base, first, "--adaptive_kl", "false"))
    out = tmp_path / "second"
    summary = main(task="sentiment", argv=_tiny_args(
        tiny_base, out, "--label_source", "file", "--label_file", str(first / "labels.jsonl"), "--adaptive_kl", "false"))
    _check_run(out, summary, adaptive=False, kl_target=6.0, horizon=100)
    assert summary["labels"] == {"source": "file", "label_file": str(first / "labels.jsonl"), "labels": 24,
                                 "base_model": tiny_base, "task": "sentiment",
                                 "label_file_sha256": hashlib.sha256((first / "labels.jsonl").read_bytes()).hexdigest()}
    # the same labels as TRL pairwise rows (each best-of-4 label's 3 implied pairs) with K = 2
    pairs = tmp_path / "pairs.jsonl"
    to_pairwise(load_label_file(first / "labels.jsonl")).to_json(pairs)
    out = tmp_path / "pairwise"
    summary = main(task="sentiment", argv=_tiny_args(
        tiny_base, out, "--label_source", "file", "--label_file", str(pairs), "--num_candidates", "2", "--total_episodes", "8"))
    assert summary["labels"]["labels"] == 72 and summary["ppo_updates"] == 1
    assert math.isfinite(summary["reward_model"]["gain"]) and (out / "reward_model" / "config.json").is_file()
    saved = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    first_rows = [json.loads(line) for line in (first / "labels.jsonl").read_text().splitlines()]
    assert saved[0]["query"] == first_rows[0]["query"] and saved[0]["best"] == 0
    assert saved[0]["samples"][0] == first_rows[0]["samples"][first_rows[0]["best"]]


@pytest.mark.parametrize(
    "extra, field",
    [
        (["--task", "poetry"], "task"),
        (["--response_length", "16", "--truncate_token", ".", "--truncate_after", "16"], "truncate_after"),
        (["--label_source", "file", "--label_file", "/nonexistent/labels.jsonl"], "label_file"),
        (["--label_source", "file"], "label_file"),
        (["--label_limit", "0"], "label_limit"),
        (["--eval_batch_size", "0"], "eval_batch_size"),
        (["--label_source", "crowd"], "label_source"),
        (["--label_source", "human"], "label_queue_dir"),
        (["--num_ppo_queries", "1000000"], "num_ppo_queries"),
        (["--eval_strategy", "steps", "--eval_steps", "1"], "eval_strategy"),
        (["--reward_model_path", "/my/rm"], "reward_model_path: the recipes do not read it"),  # was ignored, silently
        (["--sft_model_path", "/my/sft"], "sft_model_path: the recipes do not read it; they use model_name_or_path"),
        (["--push_to_hub", "true"], "hub_model_id"),
        (["--push_to_hub", "true", "--hub_model_id", "me/run"], "unset HF_HUB_OFFLINE"),  # HF_HUB_OFFLINE=1 here: no Hub
        pytest.param(["--report_to", "wandb"], "report_to", marks=pytest.mark.skipif(
            importlib.util.find_spec("wandb") is not None, reason="wandb is installed")),
    ],
)
def test_bad_configs_fail_before_training_naming_the_field(extra, field, tmp_path):
    out = tmp_path / "run"
    argv = ["--config", OFFLINE, "--output_dir", str(out), *extra]
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        main(task="poetry" if field == "task" else "sentiment", argv=argv)
    assert field in str(err.value)
    assert not (out / "reward_model").exists()


def test_push_to_hub_makes_the_repo_first_and_pushes_once_at_the_end(tiny_base, tmp_path, fake_hub):
    """``--push_to_hub``: the policy's repo is made before anything runs (no network: the run stops there, see the
    bad-config test), PPO's trainer does not push, and at the end ``policy/`` and ``reward_model/`` are pushed with
    their cards."""
    out = tmp_path / "run"
    summary = main(task="sentiment", argv=_tiny_args(tiny_base, out, "--total_episodes", "8", "--push_to_hub", "true",
                                                     "--hub_model_id", "me/tiny-run"))
    created = [path for method, path in fake_hub.requests if method == "POST" and path == "/api/repos/create"]
    assert len(created) == 4  # up front (both), then push_results' two
    assert set(summary["hub"]) == {"policy", "reward_model"}
    assert "README.md" in fake_hub.repos["me/tiny-run"] and "config.json" in fake_hub.repos["me/tiny-run-reward-model"]
    assert not any(name.startswith("checkpoint-") for name in fake_hub.repos["me/tiny-run"])


def test_lora_targets_missing_from_the_base_model_fail_before_the_labels(tiny_base, tmp_path, monkeypatch):
    """The offline YAML's Llama module names on a GPT-2 base: named, with the base's linear layers, right after rho is
    loaded — not by PEFT once the labels and reward model are made."""
    recipe = load_recipe("sentiment")

    def no_labels(*args, **kwargs):
        raise AssertionError("labels were made before the LoRA targets were checked")

    monkeypatch.setattr(recipe, "collect_labels", no_labels)
    with pytest.raises(ValueError, match=r"lora_target_modules: none of .*'q_proj'.* its linear layers are \[.*'c_attn'"):
        recipe.main(task="sentiment", argv=["--config", OFFLINE, "--output_dir", str(tmp_path / "r"),
                                            "--model_name_or_path", tiny_base])



@pytest.mark.parametrize("extra, message", [
    (["--rm_freeze_layers", "28"], r"rm_freeze_layers: 28 exceeds the model's 2 layers"),
    (["--response_length", "250"],
     r"the held-out queries row \d+: query of \d+ tokens \+ response_length 250 exceeds the model's 256 positions")])
def test_a_reward_model_deeper_freeze_or_queries_past_the_positions_fail_before_the_labels(
        tiny_base, tmp_path, monkeypatch, extra, message):
    """The offline YAML's rm_freeze_layers 28 on a 2-layer base was refused when the reward model was built, a query +
    response longer than a learned position table failed inside rho's forward (a bare IndexError) while the labels
    were sampled: both are named now before the labels stage, by the recipe script and by run_pipeline."""
    recipe = load_recipe("sentiment")

    def no_labels(*args, **kwargs):
        raise AssertionError("labels were made before the check")

    monkeypatch.setattr(recipe, "collect_labels", no_labels)
    argv = [*_tiny_args(tiny_base, tmp_path / "r"), *extra]
    with pytest.raises(ValueError, match=message):
        recipe.main(task="sentiment", argv=argv)
    import hf_prefs.pipeline.run as run

    monkeypatch.setattr(run, "collect_labels", no_labels)
    with pytest.raises(ValueError, match=message):
        main(task="sentiment", argv=[*_tiny_args(tiny_base, tmp_path / "p"), *extra])

def test_label_k_mismatch_fails_before_any_model_is_loaded(tmp_path, monkeypatch):
    labels = tmp_path / "k2.jsonl"
    labels.write_text(json.dumps({"query": "q", "samples": ["a", "b"], "best": 0}) + "\n")
    import transformers

    def no_model(*a, **k):  # any model load means validation came too late
        raise AssertionError("a model was loaded before the label file was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_model)
    with pytest.raises(ValueError, match="num_candidates"):
        main(task="sentiment", argv=["--config", OFFLINE, "--output_dir", str(tmp_path / "r"),
                                     "--label_source", "file", "--label_file", str(labels)])
    labels.write_text(json.dumps({"query": "q", "samples": ["a", "b", "c", "d"], "best": 7}) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"label_file {labels}: line 1: row 0, field 'best': best=7 is out of range")):
        main(task="sentiment", argv=["--config", OFFLINE, "--output_dir", str(tmp_path / "r"),
                                     "--label_source", "file", "--label_file", str(labels)])
    with pytest.raises(ValueError, match="sampling_batch_size: must be >= 1, got 0"):
        main(task="sentiment", argv=["--config", OFFLINE, "--output_dir", str(tmp_path / "r"), "--sampling_batch_size", "0"])


@pytest.mark.slow
def test_offline_default_shortened_with_accelerate_launch(tmp_path):
    """The README's main command, shortened: SmolLM2-135M + LoRA, through `accelerate launch`."""
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file",
        str(ROOT / "recipes" / "accelerate_configs" / "cpu.yaml"), str(ROOT / "recipes" / "sentiment.py"),
        "--config", OFFLINE, "--output_dir", str(out), "--num_label_queries", "16", "--num_eval_queries", "8",
        "--total_episodes", "8", "--gradient_accumulation_steps", "2", "--rm_normalize_samples", "8",
        "--rm_num_train_epochs", "1", "--num_ppo_epochs", "1",
    ]  # one PPO update of 8 episodes (other tests cover many updates, resume and 2 processes)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ppo_updates"] == 1 and summary["labels"]["labels"] == 16
    assert (out / "policy" / "adapter_model.safetensors").is_file()
    card = (out / "policy" / "README.md").read_text()  # an adapter's card: PEFT's library name and loading snippet
    assert "library_name: peft" in card and "base.resize_token_embeddings(49152)\nmodel = PeftModel.from_pretrained" in card
    assert all(math.isfinite(summary[w][k]) for w in ("before", "after") for k in ("known_reward", "rm_score", "kl"))
    from hf_prefs._compat import cpu_bf16_supported

    native = cpu_bf16_supported()  # the YAML asks for bf16: kept where the CPU has it, float32 where it does not
    assert summary["precision"] == {"bf16": native, "policy_dtype": "bfloat16" if native else "float32"}


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


@pytest.mark.skipif(not _cpu_flags(), reason="needs /proc/cpuinfo (Linux)")
def test_cpu_bf16_probe_follows_the_cpu_flags():
    import torch

    from hf_prefs._compat import cpu_bf16_supported, cpu_matmul_dtype

    flags = _cpu_flags()
    if flags & {"avx512_bf16", "amx_bf16"}:
        assert cpu_bf16_supported() and cpu_matmul_dtype() == torch.bfloat16
    if "avx512bw" not in flags:  # AVX2-only: torch's bf16 GEMM is a slow reference loop
        assert not cpu_bf16_supported() and cpu_matmul_dtype() == torch.float32


def test_bf16_falls_back_to_float32_on_a_cpu_without_bf16(tmp_path, monkeypatch):
    from trl import ModelConfig

    import hf_prefs.trainers.ppo_config as ppo_config
    from hf_prefs import PPOConfig
    from hf_prefs.pipeline import PipelineArguments, resolve_cpu_precision

    def fresh(supported: bool, **pa):
        monkeypatch.setattr(ppo_config, "cpu_bf16_supported", lambda: supported)
        cfg = PPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=True, report_to=[])
        return PipelineArguments(task="sentiment", **pa), cfg, ModelConfig(dtype="bfloat16")

    pa, cfg, ma = fresh(False)
    assert cfg.mixed_precision == "bf16"
    assert resolve_cpu_precision(pa, cfg, ma)
    assert (ma.dtype, cfg.bf16, cfg.mixed_precision) == ("float32", False, "no")
    for supported, pa_kwargs in ((True, {}), (False, {"cpu_bf16_fallback": False})):  # kept: the CPU has bf16 / asked to
        pa, cfg, ma = fresh(supported, **pa_kwargs)
        assert not resolve_cpu_precision(pa, cfg, ma)
        assert (ma.dtype, cfg.bf16, cfg.mixed_precision) == ("bfloat16", True, "bf16")
    monkeypatch.setattr(ppo_config, "cpu_bf16_supported", lambda: False)
    cfg = PPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[])
    ma = ModelConfig(dtype="float32")
    assert not resolve_cpu_precision(PipelineArguments(task="sentiment"), cfg, ma)
    assert (ma.dtype, cfg.bf16) == ("float32", False)


@pytest.mark.parametrize("native", [False, True])
def test_ppo_config_keeps_bf16_on_a_cpu_without_bf16(tmp_path, monkeypatch, native):
    """PPOConfig used directly (TRL's drop-in) keeps the user's bf16 and knows where the CPU lacks bf16 units; it does
    not warn at construction (the recipes fall back to float32 after it): the trainer warns
    (test_ppo_trainer.py::test_bf16_on_a_cpu_without_bf16_units_warns_when_the_trainer_is_built_not_the_config)."""
    import warnings

    import hf_prefs.trainers.ppo_config as ppo_config

    monkeypatch.setattr(ppo_config, "cpu_bf16_supported", lambda: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = ppo_config.PPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=True, report_to=[])
    assert cfg.bf16 is True and cfg.cpu_lacks_bf16 == (not native)
    assert not any("bf16 matmul units" in str(w.message) for w in caught)


def test_model_dtype_follows_trl_model_config():
    from types import SimpleNamespace

    from hf_prefs.pipeline import model_dtype

    assert model_dtype(None) is torch.float32
    assert model_dtype(SimpleNamespace(dtype="bfloat16")) is torch.bfloat16
    assert model_dtype(SimpleNamespace(dtype="auto")) == "auto"
    with pytest.raises(ValueError, match="dtype"):
        model_dtype(SimpleNamespace(dtype="int8"))


def test_yaml_values_of_the_wrong_type_are_named_before_anything_runs(tmp_path):
    """A YAML file's values reach the dataclasses unconverted (TrlParser converts command-line strings only): a float
    or a list in an int field failed deep in a stage, after the labels were made. Named now; 8.0 means 8."""
    import yaml

    from hf_prefs.pipeline.run import parse_args

    config = yaml.safe_load(open(OFFLINE))
    for field, value, said in (("num_label_queries", 32.5, "num_label_queries: takes int, got float 32.5"),
                               ("rm_num_train_epochs", [1, 2], "rm_num_train_epochs: takes float, got list [1, 2]"),
                               ("num_ppo_epochs", "four", None), ("kl_estimator", "k4", "PPOConfig.kl_estimator must be one of ('k1', 'k2', 'k3')"),
                               ("whiten_rewards", 1, "whiten_rewards: takes bool, got int 1"),
                               # TrainingArguments' and ModelConfig's numbers (were taken: 4.5 rows per micro-batch)
                               ("per_device_train_batch_size", 4.5, "per_device_train_batch_size: takes int, got float 4.5"),
                               ("lora_r", 8.5, "lora_r: takes int, got float 8.5")):
        path = tmp_path / f"{field}.yaml"
        path.write_text(yaml.safe_dump({**config, field: value, "output_dir": str(tmp_path / "out")}))
        if said is None:  # a string is converted by argparse, which names the field itself
            with pytest.raises(SystemExit):
                parse_args("sentiment", ["--config", str(path)])
            continue
        with pytest.raises(ValueError, match=re.escape(said)):
            main(task="sentiment", argv=["--config", str(path)])
        assert not (tmp_path / "out").exists()  # nothing ran
    afile = tmp_path / "a_file"
    afile.write_text("mine")
    with pytest.raises(ValueError, match=f"output_dir: {afile} is a file"):
        main(task="sentiment", argv=["--config", OFFLINE, "--output_dir", str(afile)])
    assert afile.read_text() == "mine"
    for flag in ("--model_name_or_path", "--reward_model_name_or_path"):  # not transformers' "Repo id must be ..."
        with pytest.raises(ValueError, match=f"{flag[2:]}: no file or folder at '/nonexistent/model'"):
            main(task="sentiment", argv=["--config", OFFLINE, "--output_dir", str(tmp_path / "o"), flag, "/nonexistent/model"])
    path.write_text(yaml.safe_dump({**config, "rm_batch_size": 8.0}))
    pa, cfg, model_args = parse_args("sentiment", ["--config", str(path)])
    from hf_prefs.field_types import check_field_types

    check_field_types(pa)
    assert pa.rm_batch_size == 8 and isinstance(pa.rm_batch_size, int)


def test_simulated_labels_need_a_known_reward(tmp_path):
    with pytest.raises(ValueError, match="known_reward"):
        main(task="sentiment", argv=["--config", OFFLINE, "--output_dir", str(tmp_path), "--known_reward", "none"])


def test_summarization_eval_references_and_rouge(monkeypatch, caplog):
    """Held-out queries keep their reference summaries (split_queries) and the run reports ROUGE before/after."""
    from datasets import Dataset

    import hf_prefs.pipeline.setup as setup
    from hf_prefs.pipeline import PipelineArguments, rouge_before_after, split_queries
    from hf_prefs.trainers.ppo_config import PPOConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = {"query": [f"article {i}\n\nTL;DR:" for i in range(10)], "reference": [f"summary {i}" for i in range(10)]}
    monkeypatch.setattr(setup, "load_task_queries", lambda task, tok, n=None, seed=0, **_: Dataset.from_dict(rows))
    pa = PipelineArguments(task="tldr", num_eval_queries=3, num_label_queries=4)
    eval_q, label_q, ppo_q, refs = split_queries(pa, PPOConfig(output_dir="/tmp/unused", use_cpu=True), None)
    assert eval_q == rows["query"][:3] and refs == ["summary 0", "summary 1", "summary 2"]
    assert label_q == rows["query"][3:7] and len(ppo_q) == 3
    scores = rouge_before_after(["summary 0", "x", "y"], ["summary 0", "summary 1", "summary 2"], refs)
    assert scores["after"]["rouge1"] == pytest.approx(1.0) and scores["before"]["rouge1"] == pytest.approx(1 / 3)
    assert scores["n"] == 3
    # a held-out query without a reference would score 0 whatever the summary: left out, counted, said
    with caplog.at_level("WARNING", logger="hf_prefs.pipeline.results"):
        scores = rouge_before_after(["summary 0", "x", "y"], ["summary 0", "x", "summary 2"], ["summary 0", " ", "summary 2"])
    assert scores["after"]["rouge1"] == pytest.approx(1.0) and scores["n"] == 2
    assert "1 of 3 held-out queries have no reference summary" in caplog.text
    assert rouge_before_after(["a"], ["b"], [""]) is None
    # labels from a file: no queries set aside for them (their rows are the labels), said when asked for
    file_pa = PipelineArguments(task="tldr", num_eval_queries=3, num_label_queries=4, label_source="file",
                                label_file="x.jsonl")
    with caplog.at_level("WARNING", logger="hf_prefs.pipeline.setup"):
        eval_q, label_q, ppo_q, _ = split_queries(file_pa, PPOConfig(output_dir="/tmp/unused", use_cpu=True), None)
    assert eval_q == rows["query"][:3] and label_q == [] and len(ppo_q) == 7
    assert "num_label_queries: 4 ignored with label_source=file" in caplog.text
    caplog.clear()  # online, it still counts the rounds' labels (online_schedule): not said to be ignored
    online_pa = PipelineArguments(task="tldr", num_eval_queries=3, num_label_queries=4, label_source="file",
                                  label_file="x.jsonl", label_mode="online")
    with caplog.at_level("WARNING", logger="hf_prefs.pipeline.setup"):
        assert split_queries(online_pa, PPOConfig(output_dir="/tmp/unused", use_cpu=True), None).label == []
    assert "ignored" not in caplog.text


def test_resumed_run_takes_the_labels_and_reward_model_it_saved(tiny_base, tmp_path, monkeypatch):
    """``--resume_from_checkpoint``: the labels and reward model saved before PPO are read back, not made again
    (sampling and labeling and the reward model's training raise here), and the run ends where the uninterrupted
    one did."""
    recipe = load_recipe("sentiment")
    out = tmp_path / "run"
    argv = _tiny_args(tiny_base, out, "--save_strategy", "steps", "--save_steps", "1")
    full = recipe.main(task="sentiment", argv=argv)
    info = json.loads((out / "labels_info.json").read_text())
    assert info["source"] == "simulated" and info["labels"] == 24

    def boom(*args, **kwargs):
        raise AssertionError("a resumed run made its labels or reward model again")

    monkeypatch.setattr(recipe, "collect_labels", boom)
    monkeypatch.setattr(recipe, "train_reward_model", boom)
    # a new run there, not resuming, is told first that it replaces this one's (it would label again: boom)
    with pytest.warns(UserWarning, match=r"holds an earlier run's .*--resume_from_checkpoint continues that run"):
        with pytest.raises(AssertionError, match="made its labels"):
            recipe.main(task="sentiment", argv=argv)
    labels_before = (out / "labels.jsonl").read_text()
    resumed = recipe.main(task="sentiment", argv=[*argv, "--resume_from_checkpoint", str(out / "checkpoint-2")])
    assert (out / "labels.jsonl").read_text() == labels_before
    assert resumed["labels"] == full["labels"]
    untimed = lambda rm: {k: v for k, v in rm.items() if "runtime" not in k and "per_second" not in k}  # noqa: E731
    assert untimed(resumed["reward_model"]) == untimed(full["reward_model"])
    assert resumed["final_beta"] == pytest.approx(full["final_beta"], rel=1e-9)
    for when in ("before", "after"):
        assert resumed[when]["known_reward"] == pytest.approx(full[when]["known_reward"], rel=1e-4, abs=1e-5)
        assert resumed[when]["kl"] == pytest.approx(full[when]["kl"], rel=1e-4, abs=1e-5)
    # a checkpoint saved by 2 processes is refused on 1 before anything is loaded (it used to be after the labels,
    # the reward model and the PPO trainer), named or found by true (the newest, checkpoint-3)
    for folder in out.glob("checkpoint-*"):
        state = json.loads((folder / "ppo_state.json").read_text())
        (folder / "ppo_state.json").write_text(json.dumps({**state, "num_processes": 2}))
    monkeypatch.setattr(recipe, "load_base", boom)
    for spec, name in ((str(out / "checkpoint-2"), "checkpoint-2"), ("true", "checkpoint-3")):
        with pytest.raises(ValueError, match=rf"{name} was saved by 2 process\(es\) and is resumed on 1"):
            recipe.main(task="sentiment", argv=[*argv, "--resume_from_checkpoint", spec])


def test_a_run_stopped_before_ppo_resumes_onto_its_saved_stages(tiny_base, tmp_path, monkeypatch):
    """A run that stops after its labels and reward model but before any PPO checkpoint (an error setting PPO up):
    ``--resume_from_checkpoint true`` takes both back and runs PPO from update 1 — the same results as a run that
    never stopped; with nothing saved the flag is an error naming the folder."""
    recipe = load_recipe("sentiment")
    out = tmp_path / "run"
    argv = _tiny_args(tiny_base, out)
    with pytest.raises(ValueError, match="no checkpoint, labels or reward model in"):
        recipe.main(task="sentiment", argv=[*argv, "--resume_from_checkpoint", "true"])
    full = recipe.main(task="sentiment", argv=_tiny_args(tiny_base, tmp_path / "full"))

    def stop(*args, **kwargs):
        raise RuntimeError("PPO set-up failed")

    make_ppo_trainer = recipe.make_ppo_trainer
    monkeypatch.setattr(recipe, "make_ppo_trainer", stop)
    with pytest.raises(RuntimeError, match="PPO set-up failed"):
        recipe.main(task="sentiment", argv=argv)
    assert not list(out.glob("checkpoint-*"))

    def boom(*args, **kwargs):
        raise AssertionError("a resumed run made its labels or reward model again")

    monkeypatch.setattr(recipe, "make_ppo_trainer", make_ppo_trainer)
    monkeypatch.setattr(recipe, "collect_labels", boom)
    monkeypatch.setattr(recipe, "train_reward_model", boom)
    # stages made otherwise than a run asks are not taken: the fields are named
    with pytest.raises(ValueError, match=r"made otherwise than this run asks \(num_label_queries: saved 24, asked 20; "
                                         r"num_candidates: saved 4, asked 3\)"):
        recipe.main(task="sentiment", argv=[*argv, "--resume_from_checkpoint", "true", "--num_label_queries", "20",
                                            "--num_candidates", "3"])
    # and labels sampled otherwise (they were reused, the reward model normalized on them, in silence)
    with pytest.raises(ValueError, match=r"made otherwise than this run asks \(temperature: saved 0.7, asked 1.0; "
                                         r"seed: saved 0, asked 5\)"):
        recipe.main(task="sentiment", argv=[*argv, "--resume_from_checkpoint", "true", "--temperature", "1.0",
                                            "--seed", "5"])
    resumed = recipe.main(task="sentiment", argv=[*argv, "--resume_from_checkpoint", "true"])
    assert resumed["labels"] == full["labels"] and resumed["ppo_updates"] == full["ppo_updates"]
    assert resumed["final_beta"] == pytest.approx(full["final_beta"], rel=1e-9)
    for when in ("before", "after"):
        assert resumed[when]["known_reward"] == pytest.approx(full[when]["known_reward"], rel=1e-4, abs=1e-5)
        assert resumed[when]["kl"] == pytest.approx(full[when]["kl"], rel=1e-4, abs=1e-5)


def test_a_new_run_in_a_used_folder_replaces_its_models_and_a_resume_skips_the_earlier_runs_checkpoints(
    tiny_base, tmp_path, monkeypatch, capsys
):
    """A run into an output_dir an earlier run wrote: its policy/ and reward_model/ are replaced whole (an earlier LoRA
    run's adapter files beside a full model's weights made policy/ load as that adapter); a resume takes only PPO
    checkpoints of the run whose labels are saved there (labels_info.json's run id, in each checkpoint), so an
    earlier run's checkpoints are passed over (`true`) or refused (named); a resume of another task's stages is
    refused, naming the task."""
    from transformers import AutoModelForCausalLM

    from hf_prefs.pipeline import resume_checkpoint
    from hf_prefs.pipeline.run import parse_args
    from hf_prefs.pipeline.saved_stages import RUN_FILE

    recipe = load_recipe("sentiment")
    out = tmp_path / "run"
    for stale in ("policy/adapter_config.json", "reward_model/adapter_config.json"):  # an earlier LoRA run's
        (out / stale).parent.mkdir(parents=True, exist_ok=True)
        (out / stale).write_text('{"peft_type": "LORA"}')
    argv = _tiny_args(tiny_base, out, "--save_strategy", "steps", "--save_steps", "1")
    recipe.main(task="sentiment", argv=argv)
    assert not (out / "policy" / "adapter_config.json").exists() and not (out / "reward_model" / "adapter_config.json").exists()
    AutoModelForCausalLM.from_pretrained(out / "policy")  # loads: no stale adapter beside the weights
    first_id = json.loads((out / "labels_info.json").read_text())["run_id"]
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert checkpoints and all(json.loads((c / RUN_FILE).read_text())["run_id"] == first_id for c in checkpoints)

    def stop(*args, **kwargs):
        raise RuntimeError("PPO set-up failed")

    monkeypatch.setattr(recipe, "make_ppo_trainer", stop)  # a second run, stopped after its labels and reward model
    with pytest.warns(UserWarning, match="holds an earlier run's"), pytest.raises(RuntimeError, match="PPO set-up"):
        recipe.main(task="sentiment", argv=[*argv, "--seed", "1"])
    second_id = json.loads((out / "labels_info.json").read_text())["run_id"]
    assert second_id != first_id and sorted(out.glob("checkpoint-*")) == checkpoints  # the first run's are still there
    pa, cfg, model_args = parse_args("sentiment", [*argv, "--seed", "1", "--resume_from_checkpoint", "true"])
    capsys.readouterr()
    assert resume_checkpoint(cfg, pa, model_args) is None  # the second run's stages, PPO from update 1
    assert f"{len(checkpoints)} checkpoint(s) in {out} were written by another run" in capsys.readouterr().out
    cfg.resume_from_checkpoint = str(checkpoints[-1])
    with pytest.raises(ValueError, match=rf"{checkpoints[-1].name} was written by another run \({first_id}\) than the "
                                         rf"labels and reward model saved in {out} \(run {second_id}\)"):
        resume_checkpoint(cfg, pa, model_args)
    pa.task = "descriptiveness"  # another task's saved stages are not taken
    cfg.resume_from_checkpoint = "true"
    with pytest.raises(ValueError, match="task: saved 'sentiment', asked 'descriptiveness'"):
        resume_checkpoint(cfg, pa, model_args)


def test_rho_is_placed_on_the_process_device(tiny_base, monkeypatch):
    """rho samples the labels, the normalization samples and the evaluation before any trainer places a model: it is
    loaded onto the process's device (a GPU run sampled all of that on the CPU: 2,048 label samples of GPT-2 took
    minutes on the H200 machine's CPU cores). A stand-in device, as no GPU is here: the meta device."""
    from types import SimpleNamespace

    import hf_prefs.pipeline.setup as setup

    monkeypatch.setattr(setup, "PartialState", lambda: SimpleNamespace(device=torch.device("meta")))
    base = setup.load_base(SimpleNamespace(model_name_or_path=tiny_base, dtype="float32"))
    assert {p.device.type for p in base.rho.parameters()} == {"meta"} and not base.rho.training


def test_metrics_of_a_run_that_stops_during_ppo_are_on_disk(tiny_base, tmp_path, monkeypatch):
    """metrics.jsonl grows as PPO updates are logged: a run stopped after its second update keeps both rows, as the
    trainer logged them, though no results were written; its resume from the checkpoint of update 1 drops the row of
    the update it redoes and ends with one row per update."""
    from transformers import TrainerCallback

    recipe = load_recipe("sentiment")
    out = tmp_path / "run"
    argv = _tiny_args(tiny_base, out, "--save_strategy", "steps", "--save_steps", "2")
    make_ppo_trainer = recipe.make_ppo_trainer
    logged = []

    class Stop(TrainerCallback):  # a crash (or a kill) right after update 3 is logged, before its checkpoint
        def on_log(self, args, state, control, logs=None, **kwargs):
            logged.append(dict(state.log_history[-1]))
            if state.global_step == 3:
                raise RuntimeError("killed")

    def stopping(*args, **kwargs):
        trainer = make_ppo_trainer(*args, **kwargs)
        trainer.add_callback(Stop())
        return trainer

    monkeypatch.setattr(recipe, "make_ppo_trainer", stopping)
    with pytest.raises(RuntimeError, match="killed"):
        recipe.main(task="sentiment", argv=[*argv, "--total_episodes", "32"])  # 4 updates of 8
    assert not (out / "summary.json").exists() and not (out / "metrics.csv").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and rows == logged
    assert [c.name for c in out.glob("checkpoint-*")] == ["checkpoint-2"]

    monkeypatch.setattr(recipe, "make_ppo_trainer", make_ppo_trainer)
    seen_at_resume = []

    class Probe(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):  # after MetricsFileCallback's
            seen_at_resume.append([json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()])

    def probing(*args, **kwargs):
        trainer = make_ppo_trainer(*args, **kwargs)
        trainer.add_callback(Probe())
        return trainer

    monkeypatch.setattr(recipe, "make_ppo_trainer", probing)
    summary = recipe.main(task="sentiment", argv=[*argv, "--total_episodes", "32", "--resume_from_checkpoint", "true"])
    assert seen_at_resume == [[1, 2]]  # update 3 is redone: its row from the stopped run is gone
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] == list(range(1, summary["ppo_updates"] + 1))
    assert rows[:2] == logged[:2]  # the checkpoint's history, as logged before the stop


def test_recipe_logging_says_things_once_on_several_processes():
    """A 2-process launch printed hf_prefs's INFO lines (dropout off, the float32 fallback) and datasets' progress bars
    once per process: :func:`configure_logging` keeps INFO on each machine's main process, warnings on the others."""
    import subprocess
    import sys

    code = ("import logging, datasets; from hf_prefs.pipeline import configure_logging; configure_logging(); "
            "log = logging.getLogger('hf_prefs.x'); log.info('INFO-LINE'); log.warning('WARN-LINE'); "
            "print('bars', datasets.is_progress_bar_enabled())")
    seen = {}
    for rank in ("0", "1"):
        env = {**os.environ, "LOCAL_RANK": rank}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        seen[rank] = done.stdout + done.stderr
    assert "INFO-LINE" in seen["0"] and "WARN-LINE" in seen["0"] and "bars True" in seen["0"]
    assert "INFO-LINE" not in seen["1"] and "WARN-LINE" in seen["1"] and "bars False" in seen["1"]


def test_a_resume_refuses_labels_from_a_label_file_edited_since(tmp_path):
    """A resumed offline run reuses the labels and reward model saved from ``label_file``: after the file was edited
    (labels fixed) that was silent — only the path was compared — and the run went on with the old labels."""
    from types import SimpleNamespace

    from hf_prefs.labels.schema import label_file_digest
    from hf_prefs.pipeline.saved_stages import LABELS_INFO_FILE, stale_stage_fields

    labels = tmp_path / "data" / "fixed.jsonl"
    labels.parent.mkdir()
    labels.write_text(json.dumps({"query": "q", "samples": ["a", "b"], "best": 0}) + "\n")
    (tmp_path / LABELS_INFO_FILE).write_text(json.dumps({
        "source": "file", "label_file": str(labels), "label_file_sha256": label_file_digest(labels), "task": "sentiment",
        "base_model": "m"}))
    pa = SimpleNamespace(task="sentiment", label_source="file", label_mode="offline", label_file=str(labels),
                         num_candidates=2)
    assert stale_stage_fields(str(tmp_path), pa, "m") == []
    before = label_file_digest(labels)
    labels.write_text(json.dumps({"query": "q", "samples": ["a", "b"], "best": 1}) + "\n")
    assert stale_stage_fields(str(tmp_path), pa, "m") == [
        f"label_file contents (sha256): saved {before!r}, asked {label_file_digest(labels)!r}"]
    labels.unlink()  # the file gone: the saved labels are all there is, and they are taken
    assert stale_stage_fields(str(tmp_path), pa, "m") == []
    folder = tmp_path / "folder"  # a label folder: every file counts
    folder.mkdir()
    (folder / "a.jsonl").write_text("x")
    one = label_file_digest(folder)
    (folder / ".hidden").write_text("y")
    (folder / "cache-123.arrow").write_text("z")
    assert label_file_digest(folder) == one  # what a `.map` or an editor leaves there is not an edit
    (folder / "b.jsonl").write_text("")
    assert one != label_file_digest(folder) and label_file_digest("someone/labels") is None  # a Hub id: not compared


def test_null_on_the_command_line_unsets_a_field_as_in_the_yaml(tmp_path, gpt2_tokenizer):
    """``--truncate_token null`` reached the run as the one-token text "null" (every response then cut at that word,
    or all dropped), ``--query_dataset None`` as a Hub id "None": YAML's null spellings are None where a field may be
    None, as a YAML file's ``null`` is; a field that may not be None keeps its text. PPOConfig reads them so when
    built: its checks saw the text, and refused the YAML's truncate_after 16 for a response_length of 12 (a cut at
    "null" needs its token at index >= 16), though nothing is cut."""
    from hf_prefs.core.rollout import RolloutSpec
    from hf_prefs.pipeline.arguments import validate_pipeline_config
    from hf_prefs.pipeline.run import parse_args

    paper = Path(OFFLINE).with_name("sentiment.yaml")
    pa, cfg, model_args = parse_args("sentiment", ["--config", str(paper), "--output_dir", str(tmp_path / "out"),
                                                   "--truncate_token", "null", "--query_dataset", "None",
                                                   "--response_length", "12", "--known_reward", "vader"])
    assert cfg.truncate_token is None and cfg.truncate_after == 16 and pa.query_dataset == "None"  # as parsed
    validate_pipeline_config(pa, cfg, model_args)
    assert cfg.truncate_token is None and pa.query_dataset is None
    assert RolloutSpec.from_config(cfg, gpt2_tokenizer).truncate_token_id is None  # no cut (was the token "null")


def test_a_hub_reward_model_base_offline_is_named_before_any_label_is_made(tmp_path, monkeypatch):
    """``--reward_model_name_or_path <Hub id>`` offline failed with transformers' OSError after the labels stage had
    run (and written its files); a local label file with the recipes' Hub base failed unnamed in the check."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "run"
    with pytest.raises(OSError, match=r"^reward_model_name_or_path: 'no-such-org/no-such-rm' is not a local folder"):
        main(task="sentiment", argv=["--config", OFFLINE, "--output_dir", str(out),
                                     "--reward_model_name_or_path", "no-such-org/no-such-rm"])
    assert not (out / "labels.jsonl").exists()
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"query": "q", "samples": [" a", " b", " c", " d"], "best": 0}) + "\n")
    with pytest.raises(OSError, match=r"^model_name_or_path: 'no-such-org/no-such-base' is not a local folder"):
        main(task="sentiment", argv=["--config", OFFLINE, "--output_dir", str(out), "--label_source", "file",
                                     "--label_file", str(labels), "--model_name_or_path", "no-such-org/no-such-base"])
