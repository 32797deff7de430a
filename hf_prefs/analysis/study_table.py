"""``study.csv``, the study's table: its columns, how a run's frontier columns are read, rows appended and re-read
under a lock (two study processes on other seeds share the folder), the frontier files, and the summary across seeds
(mean and standard error per point)."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock
    fcntl = None  # type: ignore[assignment]

import torch

from ..core.frontier import (
    FrontierPoint,
    best_frontier,
    frontier_at_kl,
    frontier_ess_at_kl,
    frontier_gain_se_at_kl,
    frontier_rho_reward,
)
from ..core.stats import mean_and_se

__all__ = ["STUDY_FIELDS", "append_row", "frontier_read", "frontier_share_error", "gain_fraction", "gain_fraction_se",
           "read_done", "read_frontier", "recompute_columns", "reread_rows", "study_csv_lock", "summarize",
           "write_frontier", "write_rows"]

STUDY_FIELDS = ["run", "seed", "labels", "known_reward", "kl", "gain", "gain_se", "frontier_reward_at_kl",
                "frontier_reward_se_at_kl", "frontier_gain_at_kl", "frontier_gain_se_at_kl", "frontier_ess_at_kl",
                "frontier_min_ess_at_kl", "frontier_qualified", "frontier_source", "frac_frontier", "frac_frontier_se",
                "frac_direct", "rho_known_reward", "rm_eval_accuracy", "ppo_updates", "precision"]


def gain_fraction(gain: float, reference_gain: float) -> float:
    """gain / reference_gain; NaN when the reference gain is 0."""
    return float(gain / reference_gain) if reference_gain != 0 else float("nan")


def gain_fraction_se(gain: float, gain_se: float, reference_gain: float, reference_se: float) -> float:
    """The standard error of f = g / G from independent errors of g and G (delta method):

        SE(f) = sqrt( SE(g)^2 + f^2 SE(G)^2 ) / |G|

    (a run's gain, measured on its own samples, and the frontier's gain over rho, estimated from rho's); NaN when
    G is 0."""
    if reference_gain == 0:
        return float("nan")
    f = gain / reference_gain
    return float(math.sqrt(gain_se**2 + f**2 * reference_se**2) / abs(reference_gain))


def frontier_read(frontiers: dict[str, list[FrontierPoint]], kl: float, gain: float, gain_se: float,
                  min_ess: float) -> dict[str, Any]:
    """A run's frontier columns, from the estimate (of those given by name: rho's; rho's pooled with a policy's) with
    the largest mean ESS at the run's KL (:func:`best_frontier`): its reward and ESS there (the mean over the
    frontier's queries, and the least-sampled query's), whether that read qualifies (mean ESS >= ``min_ess`` and the
    KL inside the grid), its name (``frontier_source``), the frontier's gain over rho there ``G = R_frontier(KL) -
    R_rho`` (rho's reward on that estimate: :func:`frontier_rho_reward`) with its bootstrap SE at that KL, and
    ``frac_frontier = gain / G`` with its SE from the run's ``gain_se`` and the frontier's (:func:`gain_fraction_se`)."""
    names, at = list(frontiers), max(kl, 0.0)
    source = names[best_frontier([frontiers[n] for n in names], at)]
    frontier = frontiers[source]
    f_reward, f_se, _ = frontier_at_kl(frontier, at)
    f_ess, f_min_ess = frontier_ess_at_kl(frontier, at)
    # at or below the estimate's first point (KL 0, or an importance-sampled estimate's small KL at beta = inf) the
    # frontier has nothing over rho to share
    f_gain = 0.0 if kl <= min(p.kl for p in frontier) else f_reward - frontier_rho_reward(frontier)
    f_gain_se = frontier_gain_se_at_kl(frontier, at)
    return {"frontier_reward_at_kl": f_reward, "frontier_reward_se_at_kl": f_se, "frontier_gain_at_kl": f_gain,
            "frontier_gain_se_at_kl": f_gain_se, "frontier_ess_at_kl": f_ess, "frontier_min_ess_at_kl": f_min_ess,
            "frontier_qualified": bool(f_ess >= min_ess and kl <= max(p.kl for p in frontier)),
            "frontier_source": source, "frac_frontier": gain_fraction(gain, f_gain),
            "frac_frontier_se": gain_fraction_se(gain, gain_se, f_gain, f_gain_se)}


@contextmanager
def study_csv_lock(output_dir: str) -> Iterator[None]:
    """Held around every read and write of ``study.csv``: two study processes on other seeds share the folder, and a
    row one appends while the other rewrites the file would be lost (``fcntl`` advisory lock on ``study.lock``;
    where there is no ``fcntl``, no lock)."""
    with open(os.path.join(output_dir, "study.lock"), "a") as f:
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_UN)


def reread_rows(output_dir: str, min_ess: float, frontier_files: dict[str, str] | None) -> None:
    """Columns of ``study.csv`` that follow from other rows, computed again for every row: ``frac_direct`` against the
    direct-RL row of the same seed now in the file (a direct run re-made after the RM runs of its seed, e.g. for a
    uniform table, changes their share), and with ``frontier_files`` (``policy_samples`` 0: name -> file in
    ``output_dir``, rho's and the pooled one) the frontier columns read at those estimates, which depend only on the
    run's KL and gain, so rows written before a frontier was redrawn or added are brought to what every run reads
    now."""
    path = os.path.join(output_dir, "study.csv")
    with study_csv_lock(output_dir):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        recompute_columns(output_dir, rows, min_ess, frontier_files)
        write_rows(path, rows)


def read_frontier(path: str) -> list[FrontierPoint]:
    with open(path, newline="") as f:
        return [FrontierPoint(**{k: float(v) for k, v in r.items()}) for r in csv.DictReader(f)]


def write_frontier(path: str, frontier: list[FrontierPoint]) -> None:
    """Whole or not at all (through this process's temporary file): another study process may read it."""
    with open(f"{path}.{os.getpid()}.tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(frontier[0])))
        writer.writeheader()
        writer.writerows(asdict(p) for p in frontier)
    os.replace(f"{path}.{os.getpid()}.tmp", path)


def recompute_columns(output_dir: str, rows: list[dict[str, Any]], min_ess: float,
                       frontier_files: dict[str, str] | None) -> None:
    """:func:`reread_rows`'s columns of ``rows``, in place."""
    frontiers = None
    if frontier_files:
        frontiers = {name: read_frontier(os.path.join(output_dir, file)) for name, file in frontier_files.items()}
    direct = {int(r["seed"]): float(r["gain"]) for r in rows if r["run"] == "direct"}
    for row in rows:
        if frontiers is not None:
            row.update(frontier_read(frontiers, float(row["kl"]), float(row["gain"]), _float(row.get("gain_se")),
                                     min_ess))
        if row["run"] == "direct":
            row["frac_direct"] = 1.0
        elif int(row["seed"]) in direct:
            row["frac_direct"] = gain_fraction(float(row["gain"]), direct[int(row["seed"])])


def write_rows(path: str, rows: list[dict[str, Any]]) -> None:
    """``study.csv`` rewritten whole (through this process's temporary file) with today's columns; values a row lacks
    are blank."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=STUDY_FIELDS)
        writer.writeheader()
        writer.writerows({k: row.get(k) for k in STUDY_FIELDS} for row in rows)
    os.replace(tmp, path)


def append_row(output_dir: str, row: dict[str, Any], done: dict) -> None:
    """One row more in ``study.csv`` (written at once: a crash loses no finished run). A file written with other
    columns (an older version's) is first rewritten with today's, its rows' missing values blank, so the new row
    lands under its own header."""
    path = os.path.join(output_dir, "study.csv")
    with study_csv_lock(output_dir):
        new = not os.path.exists(path)
        if not new:
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                old_rows = list(reader) if reader.fieldnames != STUDY_FIELDS else None
            if old_rows is not None:
                write_rows(path, old_rows)
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=STUDY_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow({k: row.get(k) for k in STUDY_FIELDS})
    done[(row["run"], int(row["seed"]), int(row["labels"]))] = row


def read_done(output_dir: str) -> dict[tuple[str, int, int], dict[str, Any]]:
    path = os.path.join(output_dir, "study.csv")
    if not os.path.exists(path):
        return {}
    with study_csv_lock(output_dir), open(path, newline="") as f:
        return {(r["run"], int(r["seed"]), int(r["labels"])): r for r in csv.DictReader(f)}


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard error across seeds per point (direct RL; RM with N labels) of the known reward, KL, gain and
    the fractions (``frac_frontier`` over the runs whose frontier read is ESS-qualified and whose share is defined: a
    run at KL <= 0 has no frontier gain to divide by; ``frontier_qualified_runs`` counts the runs in that mean).

    ``frac_frontier``'s SE holds two errors: the spread across seeds (SE_seeds: the seeds' labels, reward models,
    PPO and policy samples) and the frontier's, which every seed shares when all read one estimate (rho's; so it does
    not average out over seeds): SE_frontier = mean over the runs of f_i SE(G_i) / G_i (:func:`frontier_share_error`;
    taken as fully correlated across the runs' KLs, an upper bound), and SE = sqrt(SE_seeds^2 + SE_frontier^2)
    (``frac_frontier_se``; ``frac_frontier_se_frontier`` is SE_frontier alone; rows without the frontier's gain SE,
    from an older study.csv, give SE_seeds alone). Not in it: the error of the held-out queries and of rho's samples
    on them, the same for every run's paired gain (each row's ``gain_se`` is mostly that; it moves all runs alike, so
    SE_seeds, over seeds on fixed queries, can be far smaller). Conservative where runs read estimates of their
    own (``policy_samples`` > 0: their errors partly average out) and because the frontier's queries are some of the
    held-out ones (G and g err together, and their ratio less)."""
    points: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        points.setdefault((r["run"], int(r["labels"])), []).append(r)
    out = []
    for (run, labels), rs in sorted(points.items(), key=lambda kv: (kv[0][0] != "direct", kv[0][1])):
        entry: dict[str, Any] = {"run": run, "labels": labels, "seeds": len(rs)}
        for key in ("known_reward", "kl", "gain", "frac_direct", "frontier_ess_at_kl", "frontier_min_ess_at_kl"):
            entry[key], entry[f"{key}_se"] = mean_se([float(r[key]) for r in rs if r.get(key) not in (None, "")])
        qualified = [r for r in rs if str(r["frontier_qualified"]) in ("True", "true", "1")
                     and math.isfinite(_float(r.get("frac_frontier")))]
        entry["frac_frontier"], seeds_se = mean_se([_float(r["frac_frontier"]) for r in qualified])
        frontier_se = mean_se([frontier_share_error(r) for r in qualified])[0]
        entry["frac_frontier_se"] = seeds_se if math.isnan(frontier_se) else math.hypot(seeds_se, frontier_se)
        entry["frac_frontier_se_frontier"] = frontier_se
        entry["frontier_qualified_runs"] = len(qualified)
        out.append(entry)
    return out


def frontier_share_error(row: dict[str, Any]) -> float:
    """A run's share of the frontier's error, f SE(G) / |G| (``frac_frontier``, ``frontier_gain_se_at_kl``,
    ``frontier_gain_at_kl``): what the frontier's own error moves the share by; NaN where a column is missing."""
    f, g, g_se = (_float(row.get(k)) for k in ("frac_frontier", "frontier_gain_at_kl", "frontier_gain_se_at_kl"))
    return abs(f) * g_se / abs(g) if g else float("nan")


def _float(value: Any) -> float:
    """A study.csv cell as a float; NaN when blank or missing (a row written before its column existed)."""
    return float("nan") if value in (None, "") else float(value)


def mean_se(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return mean_and_se(torch.tensor(values, dtype=torch.float64))
