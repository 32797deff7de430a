"""``hf-prefs report`` on folders users hand it: a summary.json that is not a run's is named (was a JSONDecodeError
traceback, or a report of None cells), a metrics.jsonl whose last row a killed run cut reports the row before, and a
folder with metrics.jsonl alone (a run that has not finished) reports its last update."""

from __future__ import annotations

import json
import os

import pytest

from hf_prefs.analysis.report import write_report
from hf_prefs.cli import main as cli_main


def test_report_names_a_summary_that_is_not_one_and_reads_past_a_cut_metrics_row(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for text, said in (("{not json", "is not valid JSON"), ("{}", "is not an hf_prefs run summary"),
                       ('{"before": 1, "after": 2}', "is not an hf_prefs run summary")):
        (run / "summary.json").write_text(text)
        with pytest.raises(ValueError, match=said):
            write_report(run)
        assert cli_main(["report", str(run)]) == 2
        assert capsys.readouterr().err.startswith(f"hf-prefs report: error: {run / 'summary.json'} {said}")
        assert not (run / "report.md").exists()
    evaluation = {"known_reward": 0.5, "rm_score": 0.1, "kl": 1.25, "penalized_frac": 0.0, "n": 4}
    rows = [{"step": 1, "objective/kl": 0.75}, {"step": 2, "objective/kl": 1.5}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 3, "objective/k')
    (run / "summary.json").write_text(json.dumps({"before": evaluation, "after": {**evaluation, "kl": 2.5}}))
    os.utime(run / "metrics.jsonl", ns=(1_000_000_000, 1_000_000_000))  # a run writes its summary last
    text = write_report(run).read_text()
    assert "| after | 0.5 | 0.1 | 2.5 | 0 | 4 |" in text and "| objective/kl | 1.5 |" in text and "| step | 2 |" in text
    (run / "summary.json").unlink()  # a run killed during PPO: its metrics so far
    assert cli_main(["report", str(run)]) == 0
    text = (run / "report.md").read_text()
    assert "No `summary.json`: the run has not finished" in text and "holds is step 2." in text
    assert "| objective/kl | 1.5 |" in text and "## Summary" not in text


def test_an_earlier_runs_summary_beside_a_later_unfinished_run_is_not_reported_as_its_result(tmp_path):
    """A run started in the folder of a finished one (not resumed) replaces its stages as they finish: killed during
    PPO, it left its labels and 1 PPO update beside the earlier run's summary.json, which the report gave as this run's
    result (its 20 updates and final beta beside the new run's step 1)."""
    run = tmp_path / "run"
    run.mkdir()
    evaluation = {"known_reward": 0.5, "rm_score": 0.1, "kl": 1.25, "penalized_frac": 0.0, "n": 4}
    (run / "summary.json").write_text(json.dumps({"before": evaluation, "after": evaluation, "ppo_updates": 20}))
    os.utime(run / "summary.json", ns=(1_000_000_000, 1_000_000_000))
    (run / "labels_info.json").write_text("{}")  # the later run's, written after the summary
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "objective/kl": 0.25}) + "\n")
    text = write_report(run).read_text()
    assert "`summary.json` is an earlier run's (this run's `labels_info.json`, `metrics.jsonl` were written after it)" in text
    assert "holds is step 1." in text and "PPO updates: 20" not in text and "## Summary" not in text
    (run / "kl_vs_reward.png").write_bytes(b"png")  # the earlier run's plot: not this run's
    os.utime(run / "kl_vs_reward.png", ns=(1_000_000_000, 1_000_000_000))
    assert "kl_vs_reward" not in write_report(run).read_text()


def test_a_run_stopped_before_ppo_is_reported_as_unfinished(tmp_path):
    """Stopped while its reward model trained: labels written, no metrics.jsonl; the report refused the folder."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "labels.jsonl").write_text("{}\n")
    (run / "labels_info.json").write_text("{}")
    text = write_report(run).read_text()
    assert "No `summary.json`: the run has not finished" in text and "no PPO update is logged yet" in text
    with pytest.raises(FileNotFoundError, match="a stage's file"):
        write_report(tmp_path)
