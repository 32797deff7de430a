"""N processes compute what 1 does: real 2-process runs through `accelerate launch --config_file
recipes/accelerate_configs/multi_cpu.yaml` (gloo on the CPU), compared with the same work in one process.

Equivalence (fp32): 2 processes x local batch b against 1 process x 2b on the SAME episodes (sampling differs by
process by design, so a saved global batch of episodes is fed to both sides): the parameters after one PPO update,
the loss, the batch's mean KL and the next beta; the K-way reward trainer's loss and parameters after one step and
its normalization gain/bias. Tolerance: 1e-5 absolute on parameters (float32 sums in another order), 1e-6 relative
on beta.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import RECIPES, short_recipe_args, tolerate_exit_abort

ROOT = Path(__file__).resolve().parents[1]
MULTI_CPU = ROOT / "recipes" / "accelerate_configs" / "multi_cpu.yaml"
SCRIPTS = Path(__file__).resolve().parent / "multiproc"
sys.path.insert(0, str(SCRIPTS))

import ppo_run  # noqa: E402
import rm_run  # noqa: E402

pytestmark = pytest.mark.multiprocess


def launch(script: str, *args: str, processes: int = 2, must_pass: bool = True, timeout: float = 900
           ) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file multi_cpu.yaml` with `processes` processes; fails the test on an error unless
    ``must_pass`` is False (and on a run longer than ``timeout`` seconds) — but for a rank's abort at exit
    (:func:`conftest.aborted_only_at_exit`: the test then checks the run's outputs)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(MULTI_CPU), "--num_processes",
           str(processes), str(SCRIPTS / script), *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(SCRIPTS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if must_pass and not tolerate_exit_abort(proc, script):
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def results(out: Path) -> list[dict]:
    return [json.loads((out / f"result_{r}.json").read_text()) for r in range(2) if (out / f"result_{r}.json").exists()]


def assert_same_params(a: dict, b: dict, atol: float = 1e-5) -> float:
    worst = 0.0
    assert a.keys() == b.keys()
    for name in a:
        diff = (a[name].float() - b[name].float()).abs().max().item()
        worst = max(worst, diff)
        assert diff <= atol, (name, diff)
    return worst


@pytest.fixture(scope="module")
def global_rollout(tiny_base, tmp_path_factory):
    """8 episodes sampled once by one process: the global batch both sides train on."""
    trainer = ppo_run.make_trainer(tiny_base, str(tmp_path_factory.mktemp("roll") / "ppo"), "full", per_device=8)
    rollout = trainer.make_rollout(*trainer.sample_queries(0))
    path = tmp_path_factory.mktemp("rollout") / "rollout.pt"
    torch.save(rollout, path)
    return path


# Adam's epsilon at 1e-3 (default 1e-8): with a tiny epsilon Adam's step is ~lr * sign(g) wherever |g| is near zero, so
# summation-order noise in such a gradient (two halves all-reduced) flips whole steps, and a gradient scaled by a
# constant (e.g. summed instead of averaged over processes) leaves the step unchanged; with epsilon above the small
# gradients the step follows g itself: order noise stays noise and a scale error shows.
VARIANTS = ("full", "lora", "separate", "policy")


@pytest.fixture(scope="module")
def two_process_updates(tiny_base, global_rollout, tmp_path_factory) -> Path:
    """One launch: one PPO update per variant on 2 processes x 4 episodes (a trainer of its own each), in out/<variant>."""
    out = tmp_path_factory.mktemp("two")
    cases = {v: {"variant": v, "per_device": 4, "set": {"adam_epsilon": 1e-3}} for v in VARIANTS}
    launch("ppo_run.py", "update", "--base", tiny_base, "--out", str(out), "--rollout", str(global_rollout),
           "--cases", json.dumps(cases))
    return out


@pytest.mark.xdist_group("two_process_updates")  # on one worker: the variants' launch is made once
@pytest.mark.parametrize("variant", VARIANTS)
def test_ppo_update_on_two_processes_equals_one_process(tiny_base, tmp_path, global_rollout, two_process_updates, variant):
    one = ppo_run.make_trainer(tiny_base, str(tmp_path / "one"), variant, per_device=8, adam_epsilon=1e-3)
    single = ppo_run.run_update(one, torch.load(global_rollout, weights_only=False))
    ranks = results(two_process_updates / variant)
    assert [r["world"] for r in ranks] == [2, 2]  # really two processes
    for r in ranks:  # every process saw the global batch's mean KL and moved beta by the global batch size
        assert r["kl"] == pytest.approx(single["kl"], rel=1e-6) and r["beta"] == pytest.approx(single["beta"], rel=1e-6)
        assert r["loss"] == pytest.approx(single["loss"], rel=1e-5, abs=1e-6)
    single_params = {k: v.detach() for k, v in one.accelerator.unwrap_model(one.model).state_dict().items()}
    # 2 PPO epochs of Adam at lr 1e-3; allowed: 0.1 % of one step's bound (lr). With epsilon 1e-8 the largest
    # difference reached 1.03e-5 (AMX VM) and 2.26e-5 (AVX2 VM), in 'separate', from near-zero gradients.
    worst = assert_same_params(single_params, torch.load(two_process_updates / variant / "params.pt"), atol=1e-6)
    print(f"{variant}: max |param difference| after one update = {worst:.2e}")


@pytest.fixture(scope="module")
def three_updates_on_two_processes(tiny_base, tmp_path_factory) -> Path:
    """`ppo_run.py train --steps 3` on 2 processes (a checkpoint each update): the beta test's run and the
    uninterrupted run the resume test compares with."""
    out = tmp_path_factory.mktemp("three_updates")
    launch("ppo_run.py", "train", "--base", tiny_base, "--out", str(out), "--steps", "3")
    return out


@pytest.mark.xdist_group("three_updates_on_two_processes")
def test_two_process_training_keeps_beta_identical_on_all_processes(tiny_base, tmp_path, three_updates_on_two_processes):
    ranks = results(three_updates_on_two_processes)
    assert [r["world"] for r in ranks] == [2, 2] and ranks[0]["batch_size"] == 8
    # the processes split each update's global batch (the one process of the same batch size draws) between them,
    # dealt by length: each process the share queries_for computes for it
    one = ppo_run.make_trainer(tiny_base, str(tmp_path / "one"), "full", per_device=8, steps=3)
    half = ppo_run.make_trainer(tiny_base, str(tmp_path / "half"), "full", per_device=4, steps=3)
    for update in range(3):
        mine, theirs = ranks[0]["queries"][update], ranks[1]["queries"][update]
        assert len(mine) == len(theirs) == 4 and sorted(mine + theirs) == sorted(one.sample_queries(update)[2])
        assert [half.queries_for(update, 2, r)[2] for r in (0, 1)] == [mine, theirs]
    assert ranks[0]["kl"] == ranks[1]["kl"] and ranks[0]["beta"] == ranks[1]["beta"]
    beta = ranks[0]["beta"][0]
    for kl, nxt in zip(ranks[0]["kl"], ranks[0]["beta"][1:]):  # the adaptive rule with the global batch of 8
        beta = beta * (1 + min(max(kl / 0.05 - 1, -0.2), 0.2) * 8 / 20)
        assert nxt == pytest.approx(beta, rel=1e-6)


@pytest.mark.slow
def test_two_process_compiled_lora_run_equals_the_eager_one(tiny_base, tmp_path):
    """torch_compile=True under DDP with LoRA (the reference is the compiled policy with adapters off, reached
    through DDP's module): the same KL, beta and weights as the eager 2-process run (float32)."""
    cases = {"eager": {"variant": "lora", "per_device": 4}, "compiled": {"variant": "lora", "per_device": 4,
                                                                       "set": {"torch_compile": True}}}
    launch("ppo_run.py", "train", "--base", tiny_base, "--out", str(tmp_path), "--steps", "2", "--cases", json.dumps(cases))
    eager, compiled = results(tmp_path / "eager"), results(tmp_path / "compiled")
    assert [r["world"] for r in compiled] == [2, 2] and compiled[0]["kl"][0] == 0.0
    assert compiled[0]["kl"] == pytest.approx(eager[0]["kl"], rel=1e-3, abs=1e-6)
    assert compiled[0]["beta"] == pytest.approx(eager[0]["beta"], rel=1e-6)
    # the state dict of the compiled copy names its blocks' parameters through the compiled wrapper (_orig_mod)
    # (and, since accelerate unwraps a compiled DDP model to the DDP wrapper, with DDP's "module." prefix)
    params = {k.removeprefix("module.").replace("._orig_mod", ""): v
              for k, v in torch.load(tmp_path / "compiled" / "params.pt").items()}
    worst = assert_same_params(torch.load(tmp_path / "eager" / "params.pt"), params, atol=1e-5)
    print(f"compiled vs eager on 2 processes: max |param difference| = {worst:.2e}")


@pytest.mark.xdist_group("three_updates_on_two_processes")
def test_two_process_resume_equals_an_uninterrupted_two_process_run(tiny_base, tmp_path, three_updates_on_two_processes):
    """A new 2-process run resumed from the 2nd update's checkpoint of the 3-update run (what a run killed after it
    would have left) ends where that run ended."""
    checkpoint = three_updates_on_two_processes / "ppo" / "checkpoint-2"
    assert {"ppo_state_0.json", "ppo_state_1.json"} <= {p.name for p in checkpoint.iterdir()}
    launch("ppo_run.py", "train", "--base", tiny_base, "--out", str(tmp_path / "resumed"), "--steps", "3",
           "--resume", str(checkpoint))
    full, resumed = results(three_updates_on_two_processes), results(tmp_path / "resumed")
    assert resumed[0]["steps"] == full[0]["steps"] == 3
    assert resumed[0]["beta"][-1] == pytest.approx(full[0]["beta"][-1], rel=1e-6)
    worst = assert_same_params(torch.load(three_updates_on_two_processes / "params.pt"),
                               torch.load(tmp_path / "resumed" / "params.pt"))
    print(f"resume on 2 processes: max |param difference| vs uninterrupted = {worst:.2e}")


@pytest.mark.parametrize("frozen_cache, evaluate_first", [(False, False), (True, False), (False, True)])
def test_reward_trainer_on_two_processes_equals_one_process(tiny_base, tmp_path, frozen_cache, evaluate_first):
    """frozen_cache: the bottom block frozen, 2 epochs; 2 processes serve it from stored outputs
    (cache_frozen_features), 1 process runs it plainly: the same parameters. evaluate_first: an evaluate() before
    train() on the 2 processes (transformers' evaluation loop left the model without DDP: each process trained its own
    copy on its half of the batch)."""
    single = rm_run.run(tiny_base, str(tmp_path / "one"), per_device=8, frozen=frozen_cache, evaluate_first=evaluate_first)
    flags = (["--frozen", "--cache"] if frozen_cache else []) + (["--evaluate_first"] if evaluate_first else [])
    launch("rm_run.py", "--base", tiny_base, "--out", str(tmp_path / "two"), "--per_device", "4", *flags)
    ranks = results(tmp_path / "two")
    assert [r["world"] for r in ranks] == [2, 2]
    if frozen_cache:  # each rank: 4 labels x 4 rows per epoch read back, each distinct row computed once
        assert single["steps"] == 2 and single["rows_read"] is None
        for r in ranks:
            assert r["steps"] == 2 and r["rows_read"] == 2 * 16 and 0 < r["rows_computed"] < r["rows_read"]
    for r in ranks:
        assert r["loss"] == pytest.approx(single["loss"], rel=1e-5)
        assert r["gain"] == ranks[0]["gain"] and r["bias"] == ranks[0]["bias"]  # identical on all ranks
        # 7 labels on 2 processes: accelerate repeats one to fill the last batch; each counts once (the loss counted it)
        assert r["eval"].keys() == single["eval"].keys() and r["eval"] == pytest.approx(single["eval"], rel=1e-6)
    worst = assert_same_params(torch.load(tmp_path / "one" / "params.pt"), torch.load(tmp_path / "two" / "params.pt"))
    print(f"reward trainer: max |param difference| after one step = {worst:.2e}")


def test_multi_cpu_config_really_starts_two_processes_and_the_recipe_runs_online(tiny_base, tmp_path):
    """The shortened recipe with online labels on 2 processes: files written once, labels as scheduled."""
    out = tmp_path / "run"
    args = [
        *short_recipe_args(tiny_base, out), "--num_label_queries", "24", "--label_mode", "online", "--online_rounds",
        "2", "--rm_eval_fraction", "0", "--save_strategy", "steps", "--save_steps", "1",
    ]
    launch(str(RECIPES / "sentiment.py"), *args)
    summary = json.loads((out / "summary.json").read_text())
    labels = (out / "labels.jsonl").read_text().splitlines()
    assert len(labels) == 24 and summary["labels"]["labels"] == 24 and summary["online"]["rounds_run"] == 2
    assert summary["after"]["n"] == 6 and summary["ppo_updates"] == 3  # 24 episodes / (4 x 2 processes)
    betas = [[json.loads((out / f"checkpoint-{s}" / f"ppo_state_{r}.json").read_text())["kl_controller"]["value"]
              for s in (1, 2, 3)] for r in (0, 1)]
    assert betas[0] == betas[1]  # beta after each update, on both processes
    print(f"online recipe on 2 processes: {len(labels)} labels, eval n={summary['after']['n']}, beta per update {betas}")


def test_processes_end_their_process_group_at_a_normal_exit_and_leave_it_after_a_failure(tmp_path):
    # without the exit hook a gloo process sometimes aborts while Python finalizes (SIGABRT; CI saw it in
    # test_scaling_tiny): the hook waits for all ranks and destroys the group, unless the process raised
    launch("exit_run.py", "--out", str(tmp_path))
    ends = [json.loads((tmp_path / f"exit_{r}.json").read_text()) for r in range(2)]
    # and the group is freed with it, its gloo threads joined before Python finalizes (with the DDP module alive, as
    # a script's top-level trainer is: it held the group, as torch.distributed.nn.functional's defaults did)
    assert ends == [{"world": 2, "initialized": False, "gloo_threads": []}] * 2
    (tmp_path / "fail").mkdir()
    proc = launch("exit_run.py", "--out", str(tmp_path / "fail"), "--fail_rank", "1", must_pass=False)
    assert proc.returncode != 0 and "rank 1 fails on purpose" in proc.stderr
    # the failed rank skipped the barrier (its peer may be inside a collective): its group was left as it was
    assert json.loads((tmp_path / "fail" / "exit_1.json").read_text())["initialized"] is True
    # a training error caught by the script, then sys.exit(1) (no sys.excepthook): the barrier is skipped too — both
    # processes hung there (the peer inside a step's all-reduce), now both end when the failed one exits
    (tmp_path / "caught").mkdir()
    proc = launch("exit_run.py", "--out", str(tmp_path / "caught"), "--catch_rank", "1", must_pass=False, timeout=120)
    assert proc.returncode != 0 and "caught: rank 1 fails in training" in proc.stdout
    assert json.loads((tmp_path / "caught" / "exit_1.json").read_text())["initialized"] is True


def test_main_process_work_longer_than_the_group_timeout_reaches_every_process(tmp_path):
    """A human label round outlasts ``ddp_timeout``: a plain broadcast after it times the other process out (gloo, 3 s
    group timeout, 8 s of work); ``result_from_main_process`` delivers the result, and the main process's error."""
    runs = {how: tmp_path / how for how in ("plain", "heartbeat", "fail")}
    for d in runs.values():
        d.mkdir()
    proc = launch("wait_run.py", "--out", str(runs["plain"]), "--how", "plain", must_pass=False)
    assert proc.returncode != 0
    assert "Timed out" in json.loads((runs["plain"] / "wait_1.json").read_text())["error"]
    launch("wait_run.py", "--out", str(runs["heartbeat"]))
    got = [json.loads((runs["heartbeat"] / f"wait_{r}.json").read_text()) for r in range(2)]
    assert got == [{"result": {"labels": [1, 2, 3], "by": 0}, "exit_hook": True}] * 2
    proc = launch("wait_run.py", "--out", str(runs["fail"]), "--fail", must_pass=False)
    assert proc.returncode != 0
    errors = [json.loads((runs["fail"] / f"wait_{r}.json").read_text())["error"] for r in range(2)]
    assert errors[0] == "ValueError: no labels today"
    assert errors[1] == "RuntimeError: the main process failed while this process waited for it: ValueError('no labels today')"


def test_label_stage_on_two_processes_with_an_empty_or_fully_dropped_share(tiny_base, tmp_path):
    """One label query on 2 processes (one process samples nothing): both get the query's label row (before: that
    process raised "all 0 queries were dropped" alone), and log the stage's counts. Every query dropped: both raise the
    same error."""
    one, dropped = tmp_path / "one", tmp_path / "dropped"
    one.mkdir(), dropped.mkdir()
    launch("labels_run.py", "--base", tiny_base, "--out", str(one), "--case", "one_query")
    got = [json.loads((one / f"labels_{r}.json").read_text()) for r in range(2)]
    assert got[0] == got[1] and got[0]["queries"] == 1 and len(got[0]["rows"]) == 1
    assert got[0]["rows"][0]["query_index"] == 0 and len(got[0]["rows"][0]["samples"]) == 4
    # the counts logged are the whole stage's (each process logged its own share: the empty one nothing)
    assert got[0]["kept_logged"] == got[1]["kept_logged"] == [
        "1 of 1 queries kept; dropped 0 with an invalid sample (no truncate token at index >= 0) and 0 with a blank sample"]
    proc = launch("labels_run.py", "--base", tiny_base, "--out", str(dropped), "--case", "all_dropped", must_pass=False)
    assert proc.returncode != 0
    errors = [json.loads((dropped / f"labels_{r}.json").read_text())["error"] for r in range(2)]
    assert errors[0] == errors[1] and errors[0].startswith("ValueError: all 3 queries were dropped")


def test_evaluation_runs_equal_forward_passes_on_every_process(tiny_base, gpt2_tokenizer, tmp_path):
    """3 held-out queries on 2 processes (shares of 2 and 1): each process runs the same number of forward passes
    (under ZeRO-3 a forward needs every process; the shorter share is padded), and the merged evaluation is each
    share's own evaluation, the padding dropped. ``generate_completions``' table holds the eval set's rows in its
    order on every process (it was rank 0's rows, then rank 1's: 0, 2, 4, 1, 3), each process scoring batches of as
    many rows."""
    from transformers import AutoModelForCausalLM

    import eval_run
    from hf_prefs.core.rollout import RolloutSpec
    from hf_prefs.pipeline.evaluate import _evaluate

    launch("eval_run.py", "--base", tiny_base, "--out", str(tmp_path))
    got = [json.loads((tmp_path / f"eval_{r}.json").read_text()) for r in range(2)]
    assert got[0]["forwards"] == got[1]["forwards"] > 0 and got[0]["eval"] == got[1]["eval"]
    table = got[0]["completions"]
    assert table["query"] == eval_run.COMPLETION_QUERIES and got[1]["completions"] == table
    assert got[0]["scored"] == got[1]["scored"] == [2, 2]
    assert table["score"] == [float(len(r)) for r in table["response"]]  # each row's response stays with its query
    merged = got[0]["eval"]
    assert merged["queries"] == eval_run.QUERIES and len(merged["known_rewards"]) == len(merged["responses"]) == 3
    policy = AutoModelForCausalLM.from_pretrained(tiny_base)
    spec = RolloutSpec(response_length=4, pad_token_id=gpt2_tokenizer.eos_token_id)
    known = lambda texts: [float(len(t)) for t in texts]  # noqa: E731
    for rank, indices in ((0, [0, 2]), (1, [1])):
        alone = _evaluate(policy, gpt2_tokenizer, [eval_run.QUERIES[i] for i in indices], spec, None, known, None, 1,
                          5 + 1_000_003 * rank)
        assert [merged["responses"][i] for i in indices] == alone.responses
        assert [merged["known_rewards"][i] for i in indices] == alone.known_rewards
