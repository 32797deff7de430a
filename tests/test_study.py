"""The label-count study (paper Figs. 2-3) and run reports, end to end on a tiny GPT-2."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from hf_prefs.core.frontier import FrontierPoint, frontier_reward_at_kl
from hf_prefs.analysis.report import write_report
from hf_prefs.analysis.study import gain_fraction, study_main
from hf_prefs.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = str(ROOT / "recipes" / "configs" / "sentiment_offline.yaml")


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> str:
    """The offline config without truncation: a random tiny GPT-2 never samples ".", so with it every score would be
    the constant penalty and all runs would train identically."""
    cfg = yaml.safe_load(Path(OFFLINE).read_text())
    cfg["truncate_token"] = None
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


@pytest.fixture(scope="module")
def study(config, tiny_base, tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    rows = study_main(argv=_tiny_args(config, tiny_base, out, "--label_counts", "8", "16", "--frontier_samples", "4"))
    return out, rows


def test_study_outputs_and_consistent_frontier(study):
    out, rows = study
    for name in ("study.csv", "frontier.csv", "study.json", "labels.jsonl", "runs/direct/metrics.jsonl",
                 "runs/rm_8/metrics.jsonl", "runs/rm_16/reward_model/config.json"):
        assert (out / name).is_file(), name
    for png in ("kl_vs_reward.png", "reward_vs_labels.png"):
        assert (out / png).stat().st_size > 5_000, png
    with open(out / "study.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert [(r["kind"], int(r["N"])) for r in csv_rows] == [("direct", 0), ("rm", 8), ("rm", 16)]
    info = json.loads((out / "study.json").read_text())
    for run in info["runs"]:  # each run: 2 PPO updates, evaluated on the 6 held-out queries
        assert run["ppo_updates"] == 2 and run["n"] == 6
        ev = json.loads((out / "runs" / ("direct" if run["kind"] == "direct" else f"rm_{run['N']}") / "eval.json").read_text())
        assert run["known_reward"] == pytest.approx(np.mean(ev["known_rewards"])) and run["kl"] == pytest.approx(np.mean(ev["kl"]))
    with open(out / "frontier.csv", newline="") as f:
        frontier = [FrontierPoint(**{k: float(v) for k, v in r.items()}) for r in csv.DictReader(f)]
    assert math.isinf(frontier[0].beta) and frontier[0].kl == 0.0
    kls = [p.kl for p in frontier]
    assert kls == sorted(kls) and kls[-1] > 0
    rho = info["rho_known_reward"]  # the beta -> inf point is rho's mean known reward
    assert frontier_reward_at_kl(frontier, 0.0) == pytest.approx(rho, abs=1e-6)
    assert [p.reward for p in frontier] == sorted(p.reward for p in frontier)  # more KL buys more reward
    direct = rows[0]["known_reward"]
    for r, c in zip(rows, csv_rows):
        f_at = frontier_reward_at_kl(frontier, r["kl"])
        assert float(c["frontier_reward_at_kl"]) == pytest.approx(f_at, abs=1e-9)
        # a run whose KL estimate is <= 0 sits at the frontier's KL-0 point (rho): its fraction is undefined (NaN)
        expected = (r["known_reward"] - rho) / (f_at - rho) if f_at != rho else math.nan
        assert r["frac_of_frontier"] == pytest.approx(expected, nan_ok=True)
        assert r["frac_of_direct_rl"] == pytest.approx((r["known_reward"] - rho) / (direct - rho))
    assert rows[0]["frac_of_direct_rl"] == pytest.approx(1.0)
    # untruncated responses: every run is scored by its own reward, so the RM runs are not copies of direct RL
    last = [json.loads((out / "runs" / n / "metrics.jsonl").read_text().splitlines()[-1]) for n in ("direct", "rm_8")]
    assert all(m["objective/penalized_frac"] == 0 for m in last)
    assert last[0]["objective/scores"] == pytest.approx(last[0]["objective/known_reward"])
    assert last[1]["objective/scores"] != pytest.approx(last[1]["objective/known_reward"])


def test_gain_fraction():
    assert gain_fraction(3.0, 5.0, 1.0) == 0.5 and gain_fraction(-1.0, 1.0, -3.0) == 0.5
    assert math.isnan(gain_fraction(2.0, 1.0, 1.0))


def test_report_for_study_and_pipeline_run_and_cli(study, config, tiny_base, tmp_path):
    out, _ = study
    text = write_report(out).read_text()
    assert "![kl_vs_reward](kl_vs_reward.png)" in text and "![reward_vs_labels](reward_vs_labels.png)" in text
    assert "| kind | N |" in text and text.count("| rm |") == 2 and "| direct |" in text
    assert "## Last PPO update" in text and "| objective/kl |" in text

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
    assert proc.returncode != 0 and "summary.json" in proc.stderr
