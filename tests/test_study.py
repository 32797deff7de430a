"""The label-count study (paper Figs. 2-3, with seeds and a frontier read where its ESS allows), its resume, and run
reports, end to end on a tiny GPT-2."""

from __future__ import annotations

import csv
import gzip
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from transformers import TrainerCallback

import hf_prefs.analysis.rho_samples as rho_mod
import hf_prefs.analysis.study as study_mod
from hf_prefs.analysis.report import write_report
from hf_prefs.analysis.study import STUDY_FIELDS, gain_fraction, study_main
from hf_prefs.analysis.study_table import gain_fraction_se, read_frontier
from hf_prefs.cli import main as cli_main
from hf_prefs.core.frontier import FrontierPoint, frontier_at_kl, frontier_rho_reward

# A tiny study end to end: minutes. One xdist worker runs the whole module (`--dist loadgroup`), so each module
# fixture (a study) runs once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("study")]

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = str(ROOT / "recipes" / "configs" / "sentiment_offline.yaml")
REQUIRED = ["run", "seed", "labels", "known_reward", "kl", "frontier_reward_at_kl", "frontier_ess_at_kl",
            "frac_frontier", "frac_direct"]


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> str:
    """The offline config without truncation: a random tiny GPT-2 never samples ".", so with it every score would be
    the constant penalty and all runs would train identically. Float32 on every CPU (the offline config's bf16 would
    run bf16 on CPUs with bf16 units and fall back to float32 on the others: the tests read the rows' precision)."""
    cfg = yaml.safe_load(Path(OFFLINE).read_text())
    cfg.update(truncate_token=None, dtype="float32", bf16=False)
    path = tmp_path_factory.mktemp("cfg") / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _tiny_args(config: str, base: str, out: Path, *extra: str) -> list[str]:
    return [
        "--config", config, "--model_name_or_path", base, "--output_dir", str(out),
        "--use_peft", "false", "--rm_freeze_layers", "0", "--num_eval_queries", "6", "--num_ppo_queries", "32",
        "--num_label_queries", "16", "--rm_normalize_samples", "8", "--rm_batch_size", "8", "--rm_num_train_epochs", "1",
        "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2", "--total_episodes", "16",
        "--num_ppo_epochs", "1", "--sampling_batch_size", "16", "--disable_tqdm", "true", *extra,
    ]


STUDY_ARGS = ("--label_counts", "8", "16", "--seeds", "0", "1", "--frontier_queries", "3", "--frontier_samples", "6",
              "--policy_samples", "4", "--min_ess", "2",
              "--label_chunk", "6")


def _rows(out: Path, name: str = "study.csv") -> list[dict[str, str]]:
    with open(out / name, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def study(config, tiny_base, tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    summary = study_main(argv=_tiny_args(config, tiny_base, out, *STUDY_ARGS))
    return out, summary


def test_study_rows_follow_their_definitions(study):
    out, _ = study
    for name in ("study.csv", "study_summary.csv", "frontier_rho.csv", "labels_s0.jsonl.gz", "labels_s1.jsonl.gz",
                 "runs/direct_s0/metrics.jsonl", "runs/rm8_s1/eval.json", "runs/rm16_s0/reward_model/config.json",
                 "runs/direct_s1/policy/config.json", "runs/rm8_s0/policy/config.json"):  # each run's policy kept
        assert (out / name).is_file(), name
    for png in ("kl_vs_reward.png", "reward_vs_labels.png"):
        assert (out / png).stat().st_size > 5_000, png
    rows = _rows(out)
    assert set(REQUIRED) <= set(rows[0]) and list(rows[0]) == STUDY_FIELDS
    assert sorted((r["run"], int(r["seed"]), int(r["labels"])) for r in rows) == [
        ("direct", 0, 0), ("direct", 1, 0), ("rm", 0, 8), ("rm", 0, 16), ("rm", 1, 8), ("rm", 1, 16)]
    # a seed changes the labels
    assert gzip.decompress((out / "labels_s0.jsonl.gz").read_bytes()) != gzip.decompress((out / "labels_s1.jsonl.gz").read_bytes())
    direct = {int(r["seed"]): float(r["gain"]) for r in rows if r["run"] == "direct"}
    for r in rows:
        name = "direct" if r["run"] == "direct" else f"rm{r['labels']}"
        ev = json.loads((out / "runs" / f"{name}_s{r['seed']}" / "eval.json").read_text())
        kl, known, rho = float(r["kl"]), float(r["known_reward"]), float(r["rho_known_reward"])
        assert int(r["ppo_updates"]) == 2 and len(ev["known_rewards"]) == 6
        assert r["precision"] == "float32"  # the tiny study's float32 policy, no autocast
        assert known == pytest.approx(np.mean(ev["known_rewards"])) and kl == pytest.approx(np.mean(ev["kl"]))
        assert float(r["gain"]) == pytest.approx(known - rho, abs=1e-9)  # paired mean difference = difference of means
        frontier = [FrontierPoint(**p) for p in ev["frontier"]]
        f_reward, _, f_ess = frontier_at_kl(frontier, max(kl, 0.0))
        assert float(r["frontier_reward_at_kl"]) == pytest.approx(f_reward)
        assert float(r["frontier_ess_at_kl"]) == pytest.approx(f_ess)
        assert (r["frontier_qualified"] == "True") == (f_ess >= 2 and kl <= max(p.kl for p in frontier))
        f_gain = 0.0 if kl <= min(p.kl for p in frontier) else f_reward - frontier_rho_reward(frontier)
        assert float(r["frac_frontier"]) == pytest.approx(gain_fraction(float(r["gain"]), f_gain), nan_ok=True)
        assert float(r["frac_direct"]) == pytest.approx(float(r["gain"]) / direct[int(r["seed"])])
        # the frontier pools rho's samples with the policy's: KL grows along it, and at KL 0 it is rho's mean
        assert [p.kl for p in frontier] == sorted(p.kl for p in frontier) and math.isinf(frontier[0].beta)
    # untruncated responses: every run is scored by its own reward, so the RM runs are not copies of direct RL
    last = [json.loads((out / "runs" / n / "metrics.jsonl").read_text().splitlines()[-1]) for n in ("direct_s0", "rm8_s0")]
    assert last[0]["objective/scores"] == pytest.approx(last[0]["objective/known_reward"])
    assert last[1]["objective/scores"] != pytest.approx(last[1]["objective/known_reward"])


def test_summary_is_mean_and_se_over_seeds(study):
    out, summary = study
    rows = _rows(out)
    assert [(s["run"], s["labels"], s["seeds"]) for s in summary] == [("direct", 0, 2), ("rm", 8, 2), ("rm", 16, 2)]
    for s in summary:
        mine = [r for r in rows if r["run"] == s["run"] and int(r["labels"]) == s["labels"]]
        for key in ("known_reward", "kl", "gain"):
            v = np.array([float(r[key]) for r in mine])
            assert s[key] == pytest.approx(v.mean()) and s[f"{key}_se"] == pytest.approx(v.std(ddof=1) / math.sqrt(2))
        qualified = [float(r["frac_frontier"]) for r in mine if r["frontier_qualified"] == "True"]
        defined = [v for v in qualified if math.isfinite(v)]  # a run at KL <= 0 has no frontier gain: no share
        assert s["frontier_qualified_runs"] == len(defined)
        assert s["frac_frontier"] == pytest.approx(np.mean(defined) if defined else float("nan"), nan_ok=True)
    assert _rows(out, "study_summary.csv")[0]["run"] == "direct"
    for r in rows:  # each run's share of the frontier carries its own gain's error and the frontier's
        g, g_se, f_gain, f_gain_se = (float(r[k]) for k in ("gain", "gain_se", "frontier_gain_at_kl", "frontier_gain_se_at_kl"))
        assert f_gain_se > 0 or f_gain == 0  # at or below the frontier's first point (KL <= 0 here) no gain, no error
        assert float(r["frac_frontier_se"]) == pytest.approx(gain_fraction_se(g, g_se, f_gain, f_gain_se), nan_ok=True)


def test_study_resumes_only_missing_runs(study, config, tiny_base, monkeypatch):
    out, _ = study
    before = (out / "study.csv").read_text().splitlines()
    kept = [r for r in csv.DictReader(before) if (r["run"], r["seed"], r["labels"]) != ("rm", "1", "16")]
    assert len(kept) == len(before) - 2
    older = [k for k in STUDY_FIELDS if k != "precision"]  # a study.csv written before the precision column
    with open(out / "study.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=older)
        writer.writeheader()
        writer.writerows({k: r[k] for k in older} for r in kept)
    ran: list[str] = []
    real = study_mod._ppo_run
    monkeypatch.setattr(study_mod, "_ppo_run", lambda ctx, name, *a: ran.append(name) or real(ctx, name, *a))
    collected: list[int] = []
    real_labels = study_mod.collect_labels
    monkeypatch.setattr(study_mod, "collect_labels", lambda *a, **k: collected.append(1) or real_labels(*a, **k))
    trained: list[int] = []
    real_rm = study_mod.train_reward_model
    monkeypatch.setattr(study_mod, "train_reward_model", lambda *a, **k: trained.append(1) or real_rm(*a, **k))
    sampled: list[int] = []
    real_sample = rho_mod.sample_with_logprobs
    monkeypatch.setattr(rho_mod, "sample_with_logprobs", lambda *a, **k: sampled.append(1) or real_sample(*a, **k))
    evaluated: list[int] = []
    real_eval = study_mod.evaluate_policy
    counted_eval = (lambda *a, **k: evaluated.append(1) or real_eval(*a, **k))
    monkeypatch.setattr(study_mod, "evaluate_policy", counted_eval)  # a run's evaluation
    monkeypatch.setattr(rho_mod, "evaluate_policy", counted_eval)  # rho's (rho_eval.json), were it not read back
    labels_file = (out / "labels_s1.jsonl.gz").read_bytes()
    study_main(argv=_tiny_args(config, tiny_base, out, *STUDY_ARGS))
    assert ran == ["rm16_s1"]
    assert evaluated == [1]  # the run's own evaluation; rho's held-out rewards read back from rho_eval.json
    assert sampled == [1]  # the run's own policy samples; rho's frontier samples read back from rho_samples.pt
    assert collected == [] and (out / "labels_s1.jsonl.gz").read_bytes() == labels_file  # the seed's labels read back
    assert trained == []  # the finished reward model of rm16_s1 read back from runs/rm16_s1/
    after = (out / "study.csv").read_text().splitlines()
    assert after[0] == before[0] and len(after) == len(before) and after[-1].startswith("rm,1,16,")  # today's header
    rows = list(csv.DictReader(after))
    assert [{k: r[k] for k in older} for r in rows[:-1]] == [{k: r[k] for k in older} for r in kept]  # kept as they were
    assert [r["precision"] for r in rows] == [""] * len(kept) + ["float32"]  # unknown for the older rows
    old = next(r for r in csv.DictReader(before) if r["run"] == "rm" and r["seed"] == "1" and r["labels"] == "16")
    new = next(csv.DictReader([before[0], after[-1]]))
    assert new["rm_eval_accuracy"] == old["rm_eval_accuracy"]
    assert float(new["known_reward"]) == pytest.approx(float(old["known_reward"]), abs=1e-6)  # same RM, same PPO seed
    ran.clear()
    study_main(argv=_tiny_args(config, tiny_base, out, *STUDY_ARGS))  # complete: nothing runs
    assert ran == []


RHO_ARGS = [a if a != "4" else "0" for a in STUDY_ARGS]  # --policy_samples 4 -> 0
RHO_ARGS[RHO_ARGS.index("--seeds") + 1 : RHO_ARGS.index("--seeds") + 3] = ["0"]
POOLED_ARGS = [*RHO_ARGS, "--frontier_policy", "auto", "--frontier_policy_samples", "8"]  # direct_s0's policy
RHO_ARGS += ["--frontier_policy", "none"]


@pytest.fixture(scope="module")
def rho_study(config, tiny_base, tmp_path_factory):
    """One seed with ``--policy_samples 0``: every run reads rho's frontier."""
    out = tmp_path_factory.mktemp("rho_study")
    mp = pytest.MonkeyPatch()
    mp.setattr(study_mod, "run_frontier", lambda *a, **k: pytest.fail("pooled frontier with policy_samples 0"))
    try:
        study_main(argv=_tiny_args(config, tiny_base, out, *RHO_ARGS))
    finally:
        mp.undo()
    return out


def test_every_run_reads_rhos_frontier_without_policy_samples(rho_study, config, tiny_base):
    """``--policy_samples 0``: no per-run frontier sampling; each run reads rho's frontier (frontier_rho.csv) at its
    KL, and rho's samples carry no log-probabilities (none needed)."""
    tmp_path, args = rho_study, RHO_ARGS
    with open(tmp_path / "frontier_rho.csv", newline="") as f:
        rho = [FrontierPoint(**{k: float(v) for k, v in r.items()}) for r in csv.DictReader(f)]
    rows = _rows(tmp_path)
    assert len(rows) == 3
    for r in rows:
        name = "direct" if r["run"] == "direct" else f"rm{r['labels']}"
        ev = json.loads((tmp_path / "runs" / f"{name}_s0" / "eval.json").read_text())
        assert [FrontierPoint(**p) for p in ev["frontier"]] == rho
        f_reward, _, f_ess = frontier_at_kl(rho, max(float(r["kl"]), 0.0))
        assert float(r["frontier_reward_at_kl"]) == pytest.approx(f_reward) and float(r["frontier_ess_at_kl"]) == pytest.approx(f_ess)
    assert not (tmp_path / "rho_samples.pt").exists()  # no ids or log rho needed: the rewards alone, as text
    text = (tmp_path / "rho_rewards.csv").read_text().splitlines()
    key = json.loads(text[0][7:])
    assert text[0].startswith("# key: ") and key["m"] == 6 and key["dtype"] == "float32" and text[1] == "known"
    # rho's paired evaluation is cached under the same description of rho (a bf16 rho draws other samples)
    eval_key = json.loads((tmp_path / "rho_eval.json").read_text())["key"]
    assert {k: eval_key[k] for k in ("model", "dtype", "spec")} == {k: key[k] for k in ("model", "dtype", "spec")}
    assert len(text) == 2 + 3 * 6 and all(math.isfinite(float(x)) for x in text[2:])
    # rows written with another frontier are read again at rho's: the columns follow from KL and gain alone
    lines = (tmp_path / "study.csv").read_text().splitlines()
    stale = dict(rows[0], frontier_reward_at_kl="9", frontier_ess_at_kl="999", frontier_qualified="True", frac_frontier="0.01")
    with open(tmp_path / "study.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=STUDY_FIELDS)
        writer.writeheader()
        writer.writerows([stale, *rows[1:]])
    study_main(argv=_tiny_args(config, tiny_base, tmp_path, *args))  # nothing to run
    assert (tmp_path / "study.csv").read_text().splitlines() == lines


def test_frac_direct_follows_the_direct_row_now_in_the_file(rho_study, config, tiny_base):
    """A direct run re-made after its seed's RM runs (e.g. for a uniform table): every RM row's ``frac_direct`` is
    computed again against the direct row now in ``study.csv``, and written over whatever it held."""
    path = rho_study / "study.csv"
    original = path.read_text()
    rows = _rows(rho_study)
    new_gain = 2 * float(next(r for r in rows if r["run"] == "direct")["gain"]) + 0.5
    edited = [dict(r, gain=repr(new_gain)) if r["run"] == "direct" else dict(r, frac_direct="7") for r in rows]
    try:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=STUDY_FIELDS)
            writer.writeheader()
            writer.writerows(edited)
        study_main(argv=_tiny_args(config, tiny_base, rho_study, *RHO_ARGS))  # nothing to run
        after = _rows(rho_study)
        assert len(after) == len(rows) == 3
        for r in after:
            expected = 1.0 if r["run"] == "direct" else float(r["gain"]) / new_gain
            assert float(r["frac_direct"]) == pytest.approx(expected, rel=1e-12)
    finally:
        path.write_text(original)
        study_main(argv=_tiny_args(config, tiny_base, rho_study, *RHO_ARGS))


def test_an_interrupted_ppo_run_continues_from_its_last_update(rho_study, config, tiny_base, tmp_path, monkeypatch):
    """Killed after its first PPO update (checkpoint written), the run resumes there on the next invocation and ends
    as the uninterrupted one; its checkpoints are dropped once its row is written."""

    class Kill(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 1:
                raise KeyboardInterrupt("killed after update 1")

    real = study_mod.train_policy
    resumed_from: list[str | None] = []

    def train(trainer, resume_from_checkpoint=None):
        resumed_from.append(resume_from_checkpoint)
        if len(resumed_from) == 1:
            trainer.add_callback(Kill())
        return real(trainer, resume_from_checkpoint=resume_from_checkpoint)

    monkeypatch.setattr(study_mod, "train_policy", train)
    with pytest.raises(KeyboardInterrupt):
        study_main(argv=_tiny_args(config, tiny_base, tmp_path, *RHO_ARGS))
    assert (tmp_path / "runs" / "direct_s0" / "checkpoint-1").is_dir() and not (tmp_path / "study.csv").exists()
    study_main(argv=_tiny_args(config, tiny_base, tmp_path, *RHO_ARGS))
    assert resumed_from[:2] == [None, str(tmp_path / "runs" / "direct_s0" / "checkpoint-1")]
    assert not [p for p in (tmp_path / "runs").glob("*/checkpoint-*")]
    steps = [json.loads(line)["step"] for line in (tmp_path / "runs" / "direct_s0" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    for got, want in zip(_rows(tmp_path), _rows(rho_study)):
        assert (got["run"], got["labels"]) == (want["run"], want["labels"])
        for key in ("known_reward", "kl", "gain"):
            assert float(got[key]) == pytest.approx(float(want[key]), abs=1e-5), (got["run"], got["labels"], key)


def test_rhos_frontier_pooled_with_the_direct_policy(rho_study, config, tiny_base, tmp_path, monkeypatch):
    """``frontier_policy auto``: rho's frontier is estimated a second time from 8 samples of rho and 8 of the direct
    run's saved policy per frontier query (balance heuristic), cached with the policy's digest; each row reads the
    estimate with the larger ESS at its KL (``frontier_source``). A rerun reads the cache back, a checkout without
    the policy too; another policy's cache is drawn again; ``none`` goes back to rho's alone."""
    import shutil

    from hf_prefs.analysis.pooled_frontier import POOLED_FRONTIER, POOLED_SAMPLES, policy_digest, pooled_frontier, read_pooled_samples
    from hf_prefs.analysis.study import frontier_read

    out = tmp_path / "pooled"
    shutil.copytree(rho_study, out)
    drawn: list[int] = []
    real_draw = study_mod.draw_pooled_samples
    monkeypatch.setattr(study_mod, "draw_pooled_samples", lambda *a, **k: drawn.append(1) or real_draw(*a, **k))
    study_main(argv=_tiny_args(config, tiny_base, out, *POOLED_ARGS))
    assert drawn == [1]
    key, samples = read_pooled_samples(str(out / POOLED_SAMPLES))
    assert key["run"] == "direct_s0" and key["policy_sha256"] == policy_digest(str(out / "runs" / "direct_s0" / "policy"))
    assert key["m"] == key["p"] == 8 and samples.known.shape == samples.log_rho.shape == samples.log_pi.shape == (3, 16)
    assert np.all(samples.log_rho < 0) and np.all(samples.log_pi < 0)
    assert not np.allclose(samples.log_rho, samples.log_pi)  # the trained policy is not rho
    pooled = read_frontier(str(out / POOLED_FRONTIER))
    assert pooled == pooled_frontier(samples, study_mod.DEFAULT_BETAS, seed=key["seed"] - 400)
    frontiers = {"rho": read_frontier(str(out / "frontier_rho.csv")), "rho+direct_s0": pooled}
    rows = _rows(out)
    for r in rows:
        want = frontier_read(frontiers, float(r["kl"]), float(r["gain"]), float(r["gain_se"]), 2.0)
        assert r["frontier_source"] == want["frontier_source"]
        assert float(r["frontier_reward_at_kl"]) == pytest.approx(want["frontier_reward_at_kl"])
        assert float(r["frontier_ess_at_kl"]) == pytest.approx(want["frontier_ess_at_kl"])
    cache = (out / POOLED_SAMPLES).read_text()
    study_main(argv=_tiny_args(config, tiny_base, out, *POOLED_ARGS))  # read back
    shutil.rmtree(out / "runs" / "direct_s0" / "policy")  # a checkout: the cache, not the policy
    study_main(argv=_tiny_args(config, tiny_base, out, *POOLED_ARGS))
    assert drawn == [1] and (out / POOLED_SAMPLES).read_text() == cache and _rows(out) == rows
    # a cache of other weights is no cache of this policy: drawn again
    shutil.copytree(rho_study / "runs" / "direct_s0" / "policy", out / "runs" / "direct_s0" / "policy")
    (out / POOLED_SAMPLES).write_text(cache.replace(key["policy_sha256"], "0" * 64, 1))
    study_main(argv=_tiny_args(config, tiny_base, out, *POOLED_ARGS))
    assert drawn == [1, 1] and (out / POOLED_SAMPLES).read_text() == cache  # the same samples again (same seed)
    study_main(argv=_tiny_args(config, tiny_base, out, *RHO_ARGS))
    assert {r["frontier_source"] for r in _rows(out)} == {"rho"}


def test_a_saved_lora_policy_loads_on_a_copy_of_rho(tiny_base, tmp_path):
    """A LoRA policy is read back as the same function on a copy of rho; rho keeps no adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from hf_prefs.analysis.pooled_frontier import load_saved_policy

    rho = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
    torch.manual_seed(0)
    trained = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_base), LoraConfig(r=4, target_modules=["c_attn"],
                                                                                          init_lora_weights=False))
    trained.save_pretrained(tmp_path / "policy")
    ids = torch.tensor([[464, 3290, 318, 257]])
    policy, ref = load_saved_policy(rho, str(tmp_path / "policy"))
    assert ref is None and not any("lora" in n for n, _ in rho.named_parameters())
    with torch.no_grad():
        got, want, base = policy(ids).logits, trained.eval()(ids).logits, rho(ids).logits
        with policy.disable_adapter():
            assert torch.allclose(policy(ids).logits, base)
    assert torch.allclose(got, want, atol=1e-5) and not torch.allclose(got, base, atol=1e-3)


def test_report_for_study_and_pipeline_run_and_cli(study, config, tiny_base, tmp_path):
    out, _ = study
    text = write_report(out).read_text()
    assert "![kl_vs_reward](kl_vs_reward.png)" in text and "![reward_vs_labels](reward_vs_labels.png)" in text
    assert "## Study summary (mean ± SE over seeds" in text and text.count("| rm | 8 | 2 |") == 1
    assert "| run | seed | labels |" in text and text.count("| rm |") >= 4 and "## Last PPO update" in text

    from hf_prefs.pipeline import main

    run = tmp_path / "run"
    summary = main(task="sentiment", argv=_tiny_args(config, tiny_base, run, "--num_label_queries", "8"))
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    report = write_report(run)
    text = report.read_text()
    assert report == run / "report.md" and "![kl_vs_reward](kl_vs_reward.png)" in text
    assert f"| after | {summary['after']['known_reward']:.4g} |" in text
    assert f"| objective/kl | {last['objective/kl']:.4g} |" in text
    report.unlink()
    assert cli_main(["report", str(run)]) == 0 and report.is_file()
    proc = subprocess.run([sys.executable, "-m", "hf_prefs.cli", "report", str(tmp_path)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("hf-prefs report: error: run_dir:") and "summary.json" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_rhos_cached_samples_are_drawn_again_for_rho_in_another_dtype(tiny_base, gpt2_tokenizer, tmp_path):
    """A study resumed on a CPU of another kind may load rho in bf16 instead of float32: its samples differ, so
    neither cache (rho's paired evaluation, the frontier's rewards) is read back; the same dtype reads both back."""
    from transformers import AutoModelForCausalLM

    from hf_prefs.core.rollout import RolloutSpec
    from hf_prefs.pipeline.setup import Base

    tok = gpt2_tokenizer
    rho = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
    spec = RolloutSpec(response_length=4, pad_token_id=tok.eos_token_id)
    queries, known = ["It was a fine day.", "She wrote a letter."], (lambda texts: [float(len(t)) for t in texts])
    cache = str(tmp_path / "rho_eval.json")

    def draws(model: torch.nn.Module) -> tuple[list[float], list[float]]:
        base = Base(tiny_base, tok, model)
        evaluated = rho_mod.cached_rho_eval(base, spec, queries, known, batch_size=2, seed=0, cache=cache, known_name="vader")
        frontier = rho_mod.draw_rho_samples(base, spec, queries, 3, known, seed=1, with_logp=False, cache_dir=str(tmp_path))
        return evaluated, frontier.known.tolist()

    first = draws(rho)
    files = {p: (tmp_path / p).read_text() for p in ("rho_eval.json", "rho_rewards.csv")}
    assert draws(rho) == first and all((tmp_path / p).read_text() == t for p, t in files.items())  # read back
    draws(rho.to(torch.bfloat16))
    for p, text in files.items():  # drawn again and cached under the new key
        assert (tmp_path / p).read_text() != text and '"dtype": "bfloat16"' in (tmp_path / p).read_text()


def test_rhos_frontier_samples_grow_by_chunks(tiny_base, gpt2_tokenizer, tmp_path, monkeypatch):
    """rho's frontier rewards are drawn and cached a chunk per query at a time: asking for 6 per query after 3 keeps
    the 3 already drawn (rho_rewards.csv, the old single-draw cache) as each query's first 3 and draws one chunk more
    (rho_rewards.part001.csv, another seed); asking again reads both back; a count that is no multiple is refused."""
    from transformers import AutoModelForCausalLM

    from hf_prefs.core.rollout import RolloutSpec
    from hf_prefs.pipeline.setup import Base

    base = Base(tiny_base, gpt2_tokenizer, AutoModelForCausalLM.from_pretrained(tiny_base).eval())
    spec = RolloutSpec(response_length=4, pad_token_id=gpt2_tokenizer.eos_token_id)
    queries, known = ["It was a fine day.", "She wrote a letter."], (lambda texts: [float(len(t)) for t in texts])
    drawn: list[int] = []
    real = rho_mod.sample_texts
    monkeypatch.setattr(rho_mod, "sample_texts", lambda *a, **k: drawn.append(a[4]) or real(*a, **k))
    three = rho_mod.draw_rho_samples(base, spec, queries, 3, known, seed=1, with_logp=False, cache_dir=str(tmp_path), chunk=3)
    six = rho_mod.draw_rho_samples(base, spec, queries, 6, known, seed=1, with_logp=False, cache_dir=str(tmp_path), chunk=3)
    assert drawn == [3, 3, 3, 3]  # per chunk, a draw per query
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rho_rewards.csv", "rho_rewards.part001.csv"]
    assert six.known.shape == (12,) and six.per_query == 6
    assert torch.equal(six.known.view(2, 6)[:, :3], three.known.view(2, 3))  # each query's first chunk kept
    key = json.loads((tmp_path / "rho_rewards.part001.csv").read_text().splitlines()[0][7:])
    assert key["m"] == 3 and key["seed"] == 1 + 7919
    again = rho_mod.draw_rho_samples(base, spec, queries, 6, known, seed=1, with_logp=False, cache_dir=str(tmp_path), chunk=3)
    assert drawn == [3, 3, 3, 3] and torch.equal(again.known, six.known)
    with pytest.raises(ValueError, match="frontier_samples 5 must be a multiple of 3"):
        rho_mod.draw_rho_samples(base, spec, queries, 5, known, seed=1, with_logp=False, cache_dir=str(tmp_path), chunk=3)



def test_an_interrupted_chunk_of_rhos_samples_keeps_its_finished_queries(tiny_base, gpt2_tokenizer, tmp_path, monkeypatch):
    """A chunk of rho's frontier samples is drawn query by query, the finished queries kept in
    ``rho_rewards.csv.partial``: a draw interrupted in its second query resumes at that query (the first is not drawn
    again) and gives what an uninterrupted draw gives; the partial file is gone once the chunk is written."""
    from transformers import AutoModelForCausalLM

    from hf_prefs.core.rollout import RolloutSpec
    from hf_prefs.pipeline.setup import Base

    base = Base(tiny_base, gpt2_tokenizer, AutoModelForCausalLM.from_pretrained(tiny_base).eval())
    spec = RolloutSpec(response_length=4, pad_token_id=gpt2_tokenizer.eos_token_id)
    queries = ["It was a fine day.", "She wrote a letter.", "The rain had stopped."]
    known = (lambda texts: [float(len(t)) + 0.01 * sum(map(ord, t)) for t in texts])
    (tmp_path / "a").mkdir()
    whole = rho_mod.draw_rho_samples(base, spec, queries, 4, known, seed=5, with_logp=False, cache_dir=str(tmp_path / "a"))
    real, drawn = rho_mod.sample_texts, []

    def interrupted_at_second_query(*a, **k):
        drawn.append(a[2][0])
        if len(drawn) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    out = tmp_path / "b"
    out.mkdir()
    monkeypatch.setattr(rho_mod, "sample_texts", interrupted_at_second_query)
    with pytest.raises(KeyboardInterrupt):
        rho_mod.draw_rho_samples(base, spec, queries, 4, known, seed=5, with_logp=False, cache_dir=str(out))
    assert sorted(p.name for p in out.iterdir()) == ["rho_rewards.csv.partial"]
    assert (out / "rho_rewards.csv.partial").read_text().splitlines()[1:] == ["known"] + [
        f"{x:.9g}" for x in whole.known[:4].tolist()]  # the first query's 4 rewards, as drawn uninterrupted
    drawn.clear()
    monkeypatch.setattr(rho_mod, "sample_texts", lambda *a, **k: drawn.append(a[2][0]) or real(*a, **k))
    resumed = rho_mod.draw_rho_samples(base, spec, queries, 4, known, seed=5, with_logp=False, cache_dir=str(out))
    assert drawn == queries[1:] and torch.equal(resumed.known, whole.known)
    assert sorted(p.name for p in out.iterdir()) == ["rho_rewards.csv"]
    (out / "rho_rewards.csv.partial").write_text("stale")  # left by a draw stopped between its last two writes
    rho_mod.draw_rho_samples(base, spec, queries, 4, known, seed=5, with_logp=False, cache_dir=str(out))
    assert sorted(p.name for p in out.iterdir()) == ["rho_rewards.csv"] and drawn == queries[1:]
    other = tmp_path / "c"  # a partial written under another key (another seed) is not taken for this draw's
    other.mkdir()
    rho_mod.write_rho_rewards(str(other / "rho_rewards.csv.partial"),
                              (out / "rho_rewards.csv").read_text().splitlines()[0][7:].replace('"seed": 5', '"seed": 6'),
                              torch.zeros(8))
    drawn.clear()
    assert torch.equal(rho_mod.draw_rho_samples(base, spec, queries, 4, known, seed=5, with_logp=False,
                                                cache_dir=str(other)).known, whole.known)
    assert drawn == queries

def test_rhos_caches_follow_the_known_reward_and_move_between_machines(tiny_base, gpt2_tokenizer, tmp_path):
    """The caches hold known rewards: another known reward draws them again. The offline SmolLM2 asset is keyed by its
    folder's name, so a cache written on a machine whose asset cache lies elsewhere (the committed ones: /root/...,
    written before the known reward was in the key) is read back."""
    from transformers import AutoModelForCausalLM

    from hf_prefs.core.rollout import RolloutSpec
    from hf_prefs.pipeline.setup import Base

    tok = gpt2_tokenizer
    base = Base("/somewhere/else/hf_prefs/smollm2-135m", tok, AutoModelForCausalLM.from_pretrained(tiny_base).eval())
    spec = RolloutSpec(response_length=4, pad_token_id=tok.eos_token_id)
    queries, known = ["It was a fine day.", "She wrote a letter."], (lambda texts: [float(len(t)) for t in texts])
    cache = tmp_path / "rho_eval.json"

    def draws(known_name: str) -> tuple[list[float], list[float]]:
        evaluated = rho_mod.cached_rho_eval(base, spec, queries, known, 2, 0, str(cache), known_name)
        frontier = rho_mod.draw_rho_samples(base, spec, queries, 3, known, seed=1, with_logp=False, cache_dir=str(tmp_path),
                                          known_name=known_name)
        return evaluated, frontier.known.tolist()

    first = draws("vader")
    # rewrite both keys as an older version on another machine wrote them: the asset's path, no known reward
    stored = json.loads(cache.read_text())
    assert stored["key"].pop("known_reward") == "vader" and stored["key"]["model"] == "hf_prefs asset smollm2-135m"
    stored["key"]["model"] = "/root/.cache/hf_prefs/smollm2-135m"
    cache.write_text(json.dumps(stored))
    rewards = tmp_path / "rho_rewards.csv"
    head, rest = rewards.read_text().split("\n", 1)
    key = json.loads(head.removeprefix("# key: "))
    del key["known_reward"]
    key["model"] = "/root/.cache/hf_prefs/smollm2-135m"
    rewards.write_text(f"# key: {json.dumps(key)}\n{rest}")
    old = {p: (tmp_path / p).read_text() for p in ("rho_eval.json", "rho_rewards.csv")}
    assert draws("vader") == first and all((tmp_path / p).read_text() == t for p, t in old.items())  # read back
    draws("my/classifier:POSITIVE")
    for p in old:  # another known reward: drawn again, cached under its key
        assert '"known_reward": "my/classifier:POSITIVE"' in (tmp_path / p).read_text()
