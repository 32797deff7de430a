"""The paper-fidelity options, each measured on the offline default: known-reward gain (paired, with SE) and KL.

One full run of README command 1's recipe and config (``recipes/sentiment.py --config
recipes/configs/sentiment_offline.yaml``) per variant, the same seed, each in ``<output-dir>/<variant>/``; a variant
whose ``summary.json`` is already there is not run again (resumable: each variant's ``summary.json``,
``metrics.csv`` and ``eval.json`` — its queries by digest, :mod:`hf_prefs.analysis.study_files` — are committed
under ``docs/fidelity/``, the rest of its run folder is ignored by git, so a set of variants can be finished across
sessions). ``results.csv`` there has one row per variant measured, with its share of rho's frontier gain at its KL
(``--frontier``: the study's committed ``docs/study/frontier_rho.csv`` by default;
:func:`hf_prefs.analysis.study_table.frontier_read`, qualified where the frontier's ESS there is >= 30). Variants:

- ``baseline``:      the offline default as committed;
- ``tf1_adam``:      ``--tf1_adam true`` (TF1's Adam: epsilon added to sqrt(v) before the bias correction);
- ``rm_head_paper``: ``--rm_head_init paper`` (reward head ~ N(0, 1/sqrt(d_model + 1)), as the paper's code);
- ``critic_warmup``: ``--critic_warmup_updates 2`` (2 value-only PPO updates first);
- ``k2``:            ``--kl_estimator k2`` (0.5 * (log pi - log rho)^2 per token in the reward);
- ``k3``:            ``--kl_estimator k3``;
- ``no_whiten``:     ``--whiten_rewards false``;
- ``value_lr_x10``:  ``--value_learning_rate 3e-3`` (the value head at 10x the policy's learning rate). These two are
  not fidelity options: they are what moved the value function's explained variance in ``value_function.py``,
  measured here on the same footing.

    python benchmarks/fidelity_options.py                # 11-22 minutes per variant on 2 cores (by VM), into docs/fidelity/
    python benchmarks/fidelity_options.py --variants baseline k2 --extra --total_episodes 64   # shorter
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from hf_prefs.analysis.study_files import eval_without_query_text, query_digests
from hf_prefs.analysis.study_table import frontier_read, read_frontier
from hf_prefs.core.stats import paired_difference

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes" / "configs" / "sentiment_offline.yaml"
FRONTIER = ROOT / "docs" / "study" / "frontier_rho.csv"
MIN_ESS = 30.0
VARIANTS: dict[str, list[str]] = {
    "baseline": [],
    "tf1_adam": ["--tf1_adam", "true"],
    "rm_head_paper": ["--rm_head_init", "paper"],
    "critic_warmup": ["--critic_warmup_updates", "2"],
    "k2": ["--kl_estimator", "k2"],
    "k3": ["--kl_estimator", "k3"],
    "no_whiten": ["--whiten_rewards", "false"],
    "value_lr_x10": ["--value_learning_rate", "3e-3"],
}


def run(name: str, out: Path, extra: list[str]) -> dict:
    folder = out / name
    if not (folder / "summary.json").is_file():
        cmd = [sys.executable, str(ROOT / "recipes" / "sentiment.py"), "--config", str(CONFIG), "--output_dir",
               str(folder), "--disable_tqdm", "true", *VARIANTS[name], *extra]
        with open(out / f"{name}.log", "w") as log:
            code = subprocess.call(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})  # the log follows the run
        if code != 0:
            sys.exit(f"{name} failed ({code}); see {out / name}.log")
    evaluation = folder / "eval.json"  # committed: its queries (Austen's text) by digest only
    if evaluation.is_file():
        evaluation.write_text(json.dumps(eval_without_query_text(json.loads(evaluation.read_text())), indent=1))
    return json.loads((folder / "summary.json").read_text())


def main(argv: list[str] | None = None) -> dict[str, dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default=str(ROOT / "docs" / "fidelity"))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--frontier", default=str(FRONTIER), help="rho's frontier file (the study's frontier_rho.csv) to read "
                   "each variant's share of the frontier's gain at its KL; 'none': no share")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more recipe flags for every variant (last)")
    a = p.parse_args(argv)
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    if a.frontier not in ("none", str(FRONTIER)) and not os.path.isfile(a.frontier):
        p.error(f"--frontier {a.frontier}: no such file")
    frontier = read_frontier(a.frontier) if a.frontier != "none" and os.path.isfile(a.frontier) else None
    print(f"{'variant':<15}{'known reward gain':>22}{'KL (nats)':>11}{'final beta':>12}{'RM eval acc':>13}{'wall s':>8}"
          f"{'share of frontier gain (ESS)':>32}")
    for name in a.variants:
        s = results[name] = run(name, out, a.extra)
        gain = s["known_reward_gain"]
        acc = s["reward_model"].get("eval_accuracy")
        share = frontier_share(frontier, s)
        shown = "" if share is None else (f"{share['frac_frontier']:.2f} ± {share['frac_frontier_se']:.2f} "
                                          f"({share['frontier_ess_at_kl']:.0f}{_unqualified(share)})")
        print(f"{name:<15}{gain['mean']:>+14.3f} ± {gain['se']:.3f}{s['after']['kl']:>11.2f}{s['final_beta']:>12.4f}"
              f"{'-' if acc is None else f'{acc:.3f}':>13}{s['timings_s']['total_s']:>8.0f}{shown:>32}", flush=True)
    write_results(out, results, frontier)
    return results


def _unqualified(share: dict) -> str:
    """Why a share is not read off the frontier (empty where it is): the ESS there under MIN_ESS, or a KL past the
    frontier's last point."""
    if share["frontier_qualified"]:
        return ""
    return f": < {MIN_ESS:.0f}" if share["frontier_ess_at_kl"] < MIN_ESS else ": KL past the frontier's grid"


def frontier_share(frontier: list | None, summary: dict) -> dict | None:
    """The run's share of rho's frontier gain at its KL (:func:`~hf_prefs.analysis.study_table.frontier_read` with the
    run's paired gain and SE); None without a frontier."""
    if frontier is None:
        return None
    gain = summary["known_reward_gain"]
    return frontier_read({"rho": frontier}, summary["after"]["kl"], gain["mean"], gain["se"], MIN_ESS)


def vs_baseline(out: Path, name: str) -> tuple[float, float]:
    """The variant's paired difference from the baseline on the same held-out queries: mean and SE over queries of
    pi_variant's known reward minus pi_baseline's (both runs' ``eval.json``; their rho samples are the same draws, so
    this is the difference of the two gains, paired). NaN where either ``eval.json`` is missing or the runs were not
    evaluated on the same queries with the same rho rewards."""
    files = [out / v / "eval.json" for v in ("baseline", name)]
    if name == "baseline" or not all(f.is_file() for f in files):
        return float("nan"), float("nan")
    base, var = (json.loads(f.read_text()) for f in files)
    if query_digests(base["before"]) != query_digests(var["before"]) or base["before"]["known_rewards"] != var["before"]["known_rewards"]:
        return float("nan"), float("nan")
    return paired_difference(var["after"]["known_rewards"], base["after"]["known_rewards"])


def write_results(out: Path, results: dict[str, dict], frontier: list | None = None) -> None:
    """``results.csv``: one row per variant in ``out`` with a ``summary.json`` (this call's and earlier ones'), with the
    value function's explained variance over the last half of the run's updates (from its ``metrics.csv``), the
    paired difference from the baseline (:func:`vs_baseline`) and, given rho's ``frontier``, the share of its gain at
    the run's KL with SE and the frontier's ESS there (:func:`frontier_share`). The caller's ``results`` is left as
    it was."""
    results = dict(results)
    for folder in sorted(out.iterdir()):
        if folder.name in VARIANTS and folder.name not in results and (folder / "summary.json").is_file():
            results[folder.name] = json.loads((folder / "summary.json").read_text())
    rows = []
    for name in [v for v in VARIANTS if v in results]:
        s = results[name]
        ev = float("nan")
        if (out / name / "metrics.csv").is_file():
            with open(out / name / "metrics.csv", newline="") as f:
                values = [float(r["val/explained_variance"]) for r in csv.DictReader(f) if r.get("val/explained_variance")]
            ev = statistics.mean(values[len(values) // 2 :]) if values else ev
        diff, diff_se = vs_baseline(out, name)
        rows.append({"variant": name, "flags": " ".join(VARIANTS[name]), "gain": s["known_reward_gain"]["mean"],
                     "gain_se": s["known_reward_gain"]["se"], "kl": s["after"]["kl"], "final_beta": s["final_beta"],
                     "rm_eval_accuracy": s["reward_model"].get("eval_accuracy"), "explained_variance_last_half": ev,
                     "vs_baseline": diff, "vs_baseline_se": diff_se, "wall_s": s["timings_s"]["total_s"]})
        if (share := frontier_share(frontier, s)) is not None:
            rows[-1].update({k: share[k] for k in ("frac_frontier", "frac_frontier_se", "frontier_ess_at_kl")})
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
