"""Sharded training on the CPU: DeepSpeed ZeRO-2 / ZeRO-3 with 2 gloo processes through `accelerate launch` and the
recipes' DeepSpeed configs, compared with the same work in one process; and the check that a requested FSDP (which
accelerate never enables on the CPU) stops the run instead of silently training plain DDP.

The DeepSpeed tests need `deepspeed` (`pip install wheel && pip install --no-build-isolation deepspeed`; on a CPU
machine it installs from the sdist in about 30 s) and are skipped without it. Every launch is a real 2-process run
(about 20-40 s each on 2 cores: DeepSpeed's import and engine set-up dominate).

What is compared (fp32):
- one PPO update on the same saved global batch (ZeRO-2 / ZeRO-3, full / LoRA / separate value model / one from the policy) against one
  process with the whole batch: parameters within 1e-5 (float32 sums in another order, as for DDP), loss, KL, beta;
  with gradient accumulation and SGD the update size too (DeepSpeed divides the loss by its accumulation steps);
- update 0's rollout of process 0 under ZeRO-3 against one process with process 0's queries and seed: the same tokens,
  scores, log-probs, reference log-probs and values; with `ds3_gather_for_generation=True` the weights are gathered
  in ONE block per `generate` call and no forward inside gathers again, with False every forward gathers;
- 3 updates against a run resumed from the 2nd update's checkpoint of that run (optimizer state from DeepSpeed's
  own checkpoint): identical parameters and beta;
- bf16 ZeRO-3 (the recipes' precision) with LoRA: the adapters and value head created after the sharded load train;
- the whole sentiment recipe (labels, reward model, PPO, evaluation) under ZeRO-2/3 against the same run under DDP,
  and with online labels under ZeRO-2 (a reward-model trainer started between PPO updates).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "accelerate_configs"
SCRIPTS = Path(__file__).resolve().parent / "multiproc"
sys.path.insert(0, str(SCRIPTS))

import ppo_run  # noqa: E402
import sharded_run  # noqa: E402
from conftest import short_recipe_args, tolerate_exit_abort  # noqa: E402

pytestmark = pytest.mark.multiprocess

PARAM_ATOL = 1e-5


@pytest.fixture(scope="module")
def deepspeed():
    return pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install wheel; pip install --no-build-isolation deepspeed)")


def launch(config: str, script: str, *args: str, mixed_precision: str = "no", check: bool = True):
    """`accelerate launch --config_file recipes/accelerate_configs/<config>` with 2 processes on the CPU."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config),
           "--num_processes", "2", "--main_process_port", "0", "--mixed_precision", mixed_precision,
           str(SCRIPTS / script), *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(SCRIPTS), os.environ.get("PYTHONPATH", "")])}
    env.pop("ACCELERATE_USE_CPU", None)  # it would make accelerate drop DeepSpeed; the scripts pass use_cpu=True
    env.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed on the CPU even where a GPU is visible
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if check and not tolerate_exit_abort(proc, script):  # a rank's abort at exit: the test checks the outputs
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def zero_config(stage: int) -> str:
    return f"deepspeed_zero{stage}.yaml"


def results(out: Path) -> list[dict]:
    return [json.loads((out / f"result_{r}.json").read_text()) for r in range(2)]


def max_param_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def one_process_update(base: str, out: Path, rollout: Path, variant: str = "full", **overrides) -> tuple[dict, dict]:
    trainer = ppo_run.make_trainer(base, str(out), variant, per_device=8, **overrides)
    result = ppo_run.run_update(trainer, torch.load(rollout, weights_only=False))
    params = {k: v.detach().clone() for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()}
    return result, params


@pytest.fixture(scope="module")
def global_rollout(tiny_base, tmp_path_factory):
    """8 episodes sampled once by one process: the global batch both sides train on."""
    trainer = ppo_run.make_trainer(tiny_base, str(tmp_path_factory.mktemp("roll") / "ppo"), "full", per_device=8)
    path = tmp_path_factory.mktemp("rollout") / "rollout.pt"
    torch.save(trainer.make_rollout(*trainer.sample_queries(0)), path)
    return path


# Adam's first step is lr * g / (|g| + eps): with eps 1e-8 a gradient near 0 turns sum-order noise of 1e-10 into a
# parameter difference of 1e-5 (the separate value model's MLP read 1.03e-5); eps 1e-6 keeps the comparison about the
# distributed update, not about Adam's amplification of rounding
ADAM = {"adam_epsilon": 1e-6}
# 2 micro-batches per step: DeepSpeed must not divide the (already averaged) loss by its accumulation steps again. SGD,
# so that a wrong gradient scale shows in the parameters (Adam would hide it)
SGD = {"optim": "sgd", "learning_rate": 0.5}
UPDATE_CASES = {
    2: {"full": {"variant": "full", "per_device": 4, "set": ADAM},
        "accumulation": {"per_device": 2, "set": {**SGD, "gradient_accumulation_steps": 2}}},
    3: {**{v: {"variant": v, "per_device": 4, "set": ADAM} for v in ("full", "lora", "separate", "policy")},
        "accumulation": {"per_device": 2, "set": {**SGD, "gradient_accumulation_steps": 2}}},
}


@pytest.fixture(scope="module")
def zero_updates(deepspeed, tiny_base, global_rollout, tmp_path_factory):
    """``stage -> folder``: one launch per ZeRO stage runs every case of UPDATE_CASES[stage] (a trainer of its own
    each, one after another in the same processes), the first time a test asks for that stage."""
    runs: dict[int, Path] = {}

    def run(stage: int) -> Path:
        if stage not in runs:
            out = tmp_path_factory.mktemp(f"zero{stage}_updates")
            launch(zero_config(stage), "ppo_run.py", "update", "--base", tiny_base, "--out", str(out),
                   "--rollout", str(global_rollout), "--cases", json.dumps(UPDATE_CASES[stage]))
            runs[stage] = out
        return runs[stage]

    return run


def by_stage(*cases: tuple) -> list:
    """Parameters grouped on one xdist worker per stage, so that each stage's cases are launched once."""
    return [pytest.param(*case, marks=pytest.mark.xdist_group(f"zero{case[0]}_updates")) for case in cases]


@pytest.mark.parametrize("stage,variant", by_stage((2, "full"), (3, "full"), (3, "lora"), (3, "separate"), (3, "policy")))
def test_zero_update_equals_one_process(zero_updates, tiny_base, tmp_path, global_rollout, stage, variant):
    single, single_params = one_process_update(tiny_base, tmp_path / "one", global_rollout, variant, **ADAM)
    two = zero_updates(stage) / variant
    for r in results(two):
        assert r["world"] == 2
        assert r["kl"] == pytest.approx(single["kl"], rel=1e-6) and r["beta"] == pytest.approx(single["beta"], rel=1e-6)
        assert r["loss"] == pytest.approx(single["loss"], rel=1e-5, abs=1e-6)
    worst = max_param_difference(single_params, torch.load(two / "params.pt"))
    print(f"ZeRO-{stage} {variant}: max |param difference| after one update = {worst:.2e}")
    assert worst <= PARAM_ATOL


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_non_finite_gradients_stop_the_run(deepspeed, tiny_base, tmp_path, global_rollout, stage):
    """A NaN gradient under DeepSpeed (fp32: its overflow check skips the step): PPO stops at the first minibatch
    and says what DeepSpeed did, instead of training on or failing later."""
    proc = launch(zero_config(stage), "ppo_run.py", "update", "--base", tiny_base, "--out", str(tmp_path / "two"),
                  "--per_device", "4", "--rollout", str(global_rollout), "--nan_grad", check=False)
    assert proc.returncode != 0
    assert "PPO update step 1: non-finite values (NaN/inf) in the gradients (DeepSpeed" in proc.stderr, proc.stderr[-3000:]


@pytest.mark.parametrize("stage", by_stage((2,), (3,)))
def test_zero_gradient_accumulation_scales_the_loss_once(zero_updates, tiny_base, tmp_path, global_rollout, stage):
    """2 micro-batches of 2 per process and step (SGD; see UPDATE_CASES) against one process with the whole batch."""
    _, single_params = one_process_update(tiny_base, tmp_path / "one", global_rollout, **SGD)
    two = zero_updates(stage) / "accumulation"
    assert [r["world"] for r in results(two)] == [2, 2]
    worst = max_param_difference(single_params, torch.load(two / "params.pt"))
    print(f"ZeRO-{stage}, 2 micro-batches, SGD: max |param difference| = {worst:.2e}")
    assert worst <= PARAM_ATOL


@pytest.fixture(scope="module")
def zero3_rollouts(deepspeed, tiny_base, tmp_path_factory) -> tuple[Path, Path]:
    """``(one, two)``: process 0's share of update 0 sampled by one process, and by a ZeRO-3 launch that samples it
    once with ``ds3_gather_for_generation`` true and once false (in two/gather_true, two/gather_false)."""
    one, two = tmp_path_factory.mktemp("rollout_one"), tmp_path_factory.mktemp("rollout_two")
    sharded_run.run_rollout(ppo_run.make_trainer(tiny_base, str(one), "full", per_device=4, reward_model=True), one,
                            share=(2, 0))
    launch(zero_config(3), "sharded_run.py", "rollout", "--base", tiny_base, "--out", str(two), "--per_device", "4",
           "--reward_model", "--gathers", "true", "false")
    return one, two


@pytest.mark.xdist_group("zero3_rollouts")  # on one worker: the launch is made once
@pytest.mark.parametrize("gather", [True, False])
def test_zero3_rollout_equals_one_process_and_gathers_once_per_generate(zero3_rollouts, gather):
    """Process 0 samples the same queries with the same seed as one process with 4 episodes given process 0's share
    (queries_for(0, 2, 0)); a reward MODEL (sharded too under ZeRO-3) scores them."""
    one, two = zero3_rollouts
    two = two / f"gather_{json.dumps(gather)}"
    expected = torch.load(one / "rollout_0.pt", weights_only=False)
    got = torch.load(two / "rollout_0.pt", weights_only=False)
    assert torch.equal(got.response_ids, expected.response_ids) and got.response_texts == expected.response_texts
    for field in ("scores", "logprobs", "ref_logprobs", "values", "kl", "rewards"):
        torch.testing.assert_close(getattr(got, field), getattr(expected, field), atol=1e-5, rtol=1e-5, msg=field)
    for r in results(two):
        assert r["world"] == 2 and r["zero_stage"] == 3 and r["gather"] is gather
        (calls,) = r["generate_calls"]  # one generate call per rollout
        print(f"ds3_gather_for_generation={gather}: {calls}")
        if gather:  # one gathered block; every all-gather is made on entering it, none by the sampling forwards
            assert calls["gathered_blocks"] == 1 and calls["all_gathers"] == calls["all_gathers_of_blocks"] > 0
        else:  # sharded: each forward fetches its layers
            assert calls["gathered_blocks"] == 0 and calls["all_gathers"] > 0


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_resume_equals_an_uninterrupted_run(deepspeed, tiny_base, tmp_path, stage):
    """3 updates (a checkpoint after each) against a new run resumed from the 2nd update's checkpoint of that run (what
    a run killed after it would have left)."""
    common = ["--base", tiny_base, "--steps", "3"]
    launch(zero_config(stage), "ppo_run.py", "train", *common, "--out", str(tmp_path / "full"))
    checkpoint = tmp_path / "full" / "ppo" / "checkpoint-2"
    names = {p.name for p in checkpoint.iterdir()}
    assert {"model.safetensors", "value_head.safetensors", "ppo_state_0.json", "ppo_state_1.json"} <= names
    assert any(name.startswith("global_step") for name in names)  # DeepSpeed's engine checkpoint (optimizer)
    launch(zero_config(stage), "ppo_run.py", "train", *common, "--out", str(tmp_path / "resumed"), "--resume", str(checkpoint))
    full, resumed = results(tmp_path / "full"), results(tmp_path / "resumed")
    assert resumed[0]["steps"] == full[0]["steps"] == 3
    assert resumed[0]["beta"][-1] == pytest.approx(full[0]["beta"][-1], rel=1e-6)
    worst = max_param_difference(torch.load(tmp_path / "full" / "params.pt"), torch.load(tmp_path / "resumed" / "params.pt"))
    print(f"ZeRO-{stage} resume: max |param difference| vs uninterrupted = {worst:.2e}")
    assert worst <= PARAM_ATOL


RECIPE = ROOT / "recipes" / "sentiment.py"


def recipe_args(base: str, out: Path) -> list[str]:
    """The shortened offline recipe, full fine-tuning, float32: labels from rho, reward model, 3 PPO updates on 2
    processes, evaluation."""
    return [*short_recipe_args(base, out), "--dtype", "float32", "--bf16", "false", "--use_cpu", "true"]


@pytest.fixture(scope="module")
def ddp_recipe_run(tiny_base, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "run"
    launch("multi_cpu.yaml", str(RECIPE), *recipe_args(tiny_base, out))
    return out


@pytest.mark.xdist_group("ddp_recipe_run")  # both stages on one worker: the DDP run they compare with is made once
@pytest.mark.parametrize("stage", [2, 3])
def test_recipe_under_zero_equals_the_ddp_run(deepspeed, tiny_base, tmp_path, ddp_recipe_run, stage):
    """The whole recipe (labels sampled from rho, the K-way reward model trained and normalized, PPO, evaluation of
    rho and pi) on 2 processes under ZeRO-2/3 computes what the same run computes under DDP (fp32): the same labels,
    the same reward model (gain/bias to 1e-4), the same first PPO update (its metrics to 1e-5), rho's evaluation to
    1e-4, and a finished run. Later updates are not compared: the parameters after an update agree to ~1e-7 (sums
    in another order), and sampling is discontinuous: one of the ~600 tokens a rollout draws flips sooner or later,
    and the runs part (the PPO-level tests above compare updates on a fixed rollout instead).

    Each stage had its own failure under DeepSpeed: rho loaded as ZeRO-3 shards could not sample the labels
    ("'weight' must be 2-D"); the reward model's normalization scored shards before any engine held them; the reward
    model trained on unnormalized rewards (its gain was read from the DeepSpeed engine's own `config`); PPO's trainer
    could not start after the reward model's (accelerate refuses a second Accelerator given a DeepSpeed plugin); and
    the trained reward model carried its engine's ZeRO-3 hooks into PPO's engine."""
    out = tmp_path / "run"
    launch(zero_config(stage), str(RECIPE), *recipe_args(tiny_base, out))
    ddp, zero = (json.loads((run / "summary.json").read_text()) for run in (ddp_recipe_run, out))
    assert (out / "labels.jsonl").read_text() == (ddp_recipe_run / "labels.jsonl").read_text()  # sampled by rho
    first = [json.loads((run / "metrics.jsonl").read_text().splitlines()[0]) for run in (ddp_recipe_run, out)]
    numbers = {
        "reward gain": (zero["reward_model"]["gain"], ddp["reward_model"]["gain"], 1e-4),
        "reward bias": (zero["reward_model"]["bias"], ddp["reward_model"]["bias"], 1e-4),
        **{f"before {key}": (zero["before"][key], ddp["before"][key], 1e-4) for key in ("known_reward", "rm_score", "kl")},
        **{f"update 1 {key}": (first[1][key], first[0][key], 1e-5)
           for key in ("objective/kl", "objective/scores", "loss/policy_avg", "loss/value_avg", "val/mean")},
    }
    worst = max(abs(a - b) for a, b, _ in numbers.values())
    print(f"recipe under ZeRO-{stage} vs DDP, 2 processes: max |difference| {worst:.1e} over {len(numbers)} numbers")
    for name, (a, b, tol) in numbers.items():
        assert a == pytest.approx(b, abs=tol), name
    assert zero["ppo_updates"] == ddp["ppo_updates"] == 3 and zero["after"]["n"] == ddp["after"]["n"] == 6
    assert all(math.isfinite(zero["after"][key]) for key in ("known_reward", "rm_score", "kl"))


def test_online_recipe_under_zero2_trains_reward_models_between_ppo_updates(deepspeed, tiny_base, tmp_path):
    """Online labels under ZeRO-2: a round's reward-model trainer starts while PPO's Accelerator exists (its DeepSpeed
    plugin is added to the process's state and selected; PPO's is selected again after the round)."""
    out = tmp_path / "run"
    launch(zero_config(2), str(RECIPE), *recipe_args(tiny_base, out), "--num_label_queries", "24", "--label_mode",
           "online", "--online_rounds", "2", "--rm_eval_fraction", "0")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["online"]["rounds_run"] == 2 and summary["labels"]["labels"] == 24
    assert summary["ppo_updates"] == 3 and len((out / "labels.jsonl").read_text().splitlines()) == 24


def test_online_labels_under_zero3_are_refused_before_anything_runs(deepspeed, tiny_base, tmp_path):
    out = tmp_path / "run"
    proc = launch(zero_config(3), str(RECIPE), *recipe_args(tiny_base, out), "--label_mode", "online", "--online_rounds",
                  "2", check=False)
    assert proc.returncode != 0 and "label_mode: online labels are not supported under DeepSpeed ZeRO-3" in proc.stderr
    assert not out.exists()


def test_whole_weights_at_load_under_zero3_and_the_config_put_back(deepspeed, tiny_base):
    from transformers import AutoModelForCausalLM
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled, unset_hf_deepspeed_config

    from hf_prefs._compat import active_hf_deepspeed_config
    from hf_prefs.models.sharding import is_partitioned, whole_weights_at_load

    config = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1})
    try:
        assert active_hf_deepspeed_config() is config and is_deepspeed_zero3_enabled()
        with whole_weights_at_load():
            assert not is_deepspeed_zero3_enabled()
            model = AutoModelForCausalLM.from_pretrained(tiny_base)
        assert active_hf_deepspeed_config() is config and not is_partitioned(model)
    finally:
        unset_hf_deepspeed_config()


def test_zero3_bf16_with_lora_trains(deepspeed, tiny_base, tmp_path):
    """The recipes' precision: zero.Init loads the weights as bf16 shards; LoRA adapters and the value head, created
    afterwards in fp32, must join them in one dtype."""
    launch(zero_config(3), "ppo_run.py", "train", "--base", tiny_base, "--out", str(tmp_path / "run"), "--steps", "2",
           "--variant", "lora", "--set", "bf16=true", mixed_precision="bf16")
    ranks = results(tmp_path / "run")
    assert [r["steps"] for r in ranks] == [2, 2] and ranks[0]["beta"] == ranks[1]["beta"]
    assert ranks[0]["kl"][0] == pytest.approx(0.0, abs=1e-6)  # the reference starts equal to the policy, same dtype


def test_fsdp_config_on_the_cpu_stops_instead_of_training_ddp(tiny_base, tmp_path):
    """accelerate never enables FSDP for gloo processes (it would silently train DDP): the trainer says so."""
    proc = launch("fsdp.yaml", "ppo_run.py", "train", "--base", tiny_base, "--out", str(tmp_path / "run"), "--steps", "1",
                  check=False)
    assert proc.returncode != 0
    assert "asks for FSDP (ACCELERATE_USE_FSDP=true) but accelerate" in proc.stderr
    assert "runs MULTI_CPU" in proc.stderr
