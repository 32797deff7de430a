"""``hf-prefs report`` on folders users hand it: a summary.json that is not a run's is named (was a JSONDecodeError
traceback, or a report of None cells), a metrics.jsonl whose last row a killed run cut reports the row before, and a
folder with metrics.jsonl alone (a run that has not finished) reports its last update."""

from __future__ import annotations

import json

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
    (run / "summary.json").write_text(json.dumps({"before": evaluation, "after": {**evaluation, "kl": 2.5}}))
    rows = [{"step": 1, "objective/kl": 0.75}, {"step": 2, "objective/kl": 1.5}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 3, "objective/k')
    text = write_report(run).read_text()
    assert "| after | 0.5 | 0.1 | 2.5 | 0 | 4 |" in text and "| objective/kl | 1.5 |" in text and "| step | 2 |" in text
    (run / "summary.json").unlink()  # a run killed during PPO: its metrics so far
    assert cli_main(["report", str(run)]) == 0
    text = (run / "report.md").read_text()
    assert "No `summary.json`: the run has not finished" in text and "holds is step 2." in text
    assert "| objective/kl | 1.5 |" in text and "## Summary" not in text
