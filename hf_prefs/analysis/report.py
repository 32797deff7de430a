"""``report.md`` for a run folder: a pipeline run (``summary.json``, ``metrics.jsonl``; ``metrics.jsonl`` alone while
it runs or after it stopped) or a study (``study.csv``).

The report has a summary table (for a study: each point's mean ± SE over seeds, then one row per run), links to the folder's PNG plots and the metrics of the last PPO update
(one column per run for a study).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

__all__ = ["write_report"]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows
    ]


def _last_update(metrics: Path) -> dict[str, Any]:
    """The last whole row of ``metrics.jsonl`` (a run killed while appending one can leave it cut); {} if none."""
    for line in reversed(metrics.read_text().splitlines() if metrics.is_file() else []):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            return row
    return {}


def _written_after_summary(run: Path) -> list[str]:
    """The stage files of ``run`` written after its ``summary.json`` (the last file a run writes): a later run in the
    same folder that has not finished (its labels, reward model or PPO log beside an earlier run's results)."""
    summary = (run / "summary.json").stat().st_mtime_ns
    return [n for n in STAGE_FILES if (run / n).is_file() and (run / n).stat().st_mtime_ns > summary]


#: The files a pipeline run writes before its ``summary.json``, stage by stage.
STAGE_FILES = ("labels.jsonl", "labels_info.json", "rm_metrics.jsonl", "metrics.jsonl")


def _read_summary(path: Path) -> dict[str, Any]:
    """A pipeline run's ``summary.json``; a ValueError naming the file where it is not one."""
    try:
        summary = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(summary, dict) or not all(isinstance(summary.get(k), dict) for k in ("before", "after")):
        raise ValueError(f"{path} is not an hf_prefs run summary (it needs the 'before' and 'after' evaluations)")
    return summary


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.md`` and return its path: a study's, a finished run's, or the last logged update of a
    run that has not finished (``metrics.jsonl`` without ``summary.json``, or beside an earlier run's: stage files
    written after it, :func:`_written_after_summary`); raises FileNotFoundError if the folder holds none of them,
    ValueError naming a ``summary.json`` that is not a run's summary."""
    run = Path(run_dir)
    lines = [f"# Report: {run.name}", ""]
    last: dict[str, dict[str, Any]] = {}
    if (run / "study.csv").is_file():
        with open(run / "study.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        lines += _study_summary(run / "study_summary.csv")
        lines += ["", "## Runs (known reward on held-out queries)", ""]
        lines += _table(list(rows[0]), [[_num(v) for v in r.values()] for r in rows]) if rows else ["(no runs)"]
        for d in sorted((run / "runs").glob("*/metrics.jsonl")):
            last[d.parent.name] = _last_update(d)
    elif (run / "summary.json").is_file() and not (newer := _written_after_summary(run)):
        s = _read_summary(run / "summary.json")
        lines += ["## Summary (held-out queries)", ""]
        keys = ["known_reward", "rm_score", "kl", "penalized_frac", "n"]
        lines += _table(["", *keys], [[w, *[s.get(w, {}).get(k) for k in keys]] for w in ("before", "after")])
        lines += ["", f"- task: {s.get('task')}, base model: `{s.get('base_model')}`",
                  f"- labels: {s.get('labels', {}).get('labels')} ({s.get('labels', {}).get('source')})",
                  f"- PPO updates: {s.get('ppo_updates')}, final beta: {_fmt(s.get('final_beta'))}"]
        last["run"] = _last_update(run / "metrics.jsonl")
    elif (run / "summary.json").is_file() or any((run / n).is_file() for n in STAGE_FILES):  # running, or stopped
        last["run"] = _last_update(run / "metrics.jsonl") if (run / "metrics.jsonl").is_file() else {}
        said = (f"`summary.json` is an earlier run's (this run's {', '.join(f'`{n}`' for n in newer)} were written "
                "after it)" if (run / "summary.json").is_file() else "No `summary.json`")
        step = last["run"].get("step")
        lines += [f"{said}: the run has not finished (it is running, or it stopped); " + (
            f"the last PPO update its `metrics.jsonl` holds is step {step}." if step is not None else
            "no PPO update is logged yet (its labels or reward model stage).")]
    else:
        raise FileNotFoundError(f"run_dir: {run} has neither summary.json (pipeline run), a stage's file "
                                f"({', '.join(STAGE_FILES)}: a run that has not finished) nor study.csv (study)")
    finished = "## Summary (held-out queries)" in lines or (run / "study.csv").is_file()
    pngs = sorted(run.glob("*.png")) if finished else []  # an unfinished run's plots would be an earlier run's
    if pngs:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in pngs]
    last = {k: v for k, v in last.items() if v}
    if last:
        keys = sorted({k for v in last.values() for k in v})
        lines += ["", "## Last PPO update", ""]
        lines += _table(["metric", *last], [[k, *[v.get(k) for v in last.values()]] for k in keys])
    path = run / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _study_summary(path: Path) -> list[str]:
    """The study's points as ``mean +- SE (seeds)``: known reward, KL, gain over rho and the two fractions."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    keys = ["known_reward", "kl", "gain", "frac_frontier", "frac_direct", "frontier_ess_at_kl", "frontier_min_ess_at_kl"]

    def cell(r: dict[str, str], k: str) -> str:
        return f"{float(r[k]):.3g} ± {float(r[k + '_se']):.2g}"

    header = ["run", "labels", "seeds", *keys, "frontier_qualified_runs"]
    body = [[r["run"], r["labels"], r["seeds"], *[cell(r, k) for k in keys], r["frontier_qualified_runs"]] for r in rows]
    return ["## Study summary (mean ± SE over seeds; frac_frontier's SE also holds the frontier's own error)", "",
            *_table(header, body)]


def _num(v: str) -> Any:
    try:
        return float(v) if any(c in v for c in ".en") else int(v)
    except ValueError:
        return v
