"""The study's figures: Fig. 3 style (KL vs known reward, with the frontier and best-of-n on the samples of rho the
frontier is made of) and Fig. 2 style (known reward vs labels, with direct RL's band), each point
mean +- SE over seeds. No pyplot: the caller's matplotlib backend is left alone."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..core.frontier import best_of_n_kl, best_of_n_reward
from .pooled_frontier import POOLED_FRONTIER
from .study_table import read_frontier

__all__ = ["BEST_OF_N", "best_of_n_points", "plot_study"]

#: The n of the best-of-n points drawn beside the frontier.
BEST_OF_N = (2, 4, 8, 16, 32, 64, 128, 256)


def best_of_n_points(rewards: np.ndarray, ns: tuple[int, ...] = BEST_OF_N) -> list[tuple[int, float, float]]:
    """``(n, KL, reward)`` of best-of-n for each ``n`` on ``rewards`` (``(Q, M)`` samples of rho per query, those the
    frontier is made of: :func:`~hf_prefs.core.frontier.best_of_n_reward`, :func:`~hf_prefs.core.frontier.best_of_n_kl`),
    averaged over the queries as the frontier is."""
    return [(n, float(best_of_n_kl(rewards, n).mean()), float(best_of_n_reward(rewards, n).mean())) for n in ns]


def plot_study(summary: list[dict[str, Any]], rows: list[dict[str, Any]], out: str, pooled: str | None = None,
               min_ess: float = 30.0, rho_rewards: np.ndarray | None = None) -> None:
    """Fig. 3 style (KL vs known reward, each point mean +- SE over seeds, with rho's frontier — solid where its mean
    ESS is >= ``min_ess``, dotted past that —, best-of-n on ``rho_rewards`` (the ``(Q, M)`` rewards the frontier of
    ``frontier_rho.csv`` is made of: :func:`best_of_n_points`) and, named ``pooled``, the pooled frontier) and Fig. 2
    style (known reward vs labels, with direct RL's band)."""
    frontier = sorted(read_frontier(os.path.join(out, "frontier_rho.csv")), key=lambda p: p.kl)
    direct = next((s for s in summary if s["run"] == "direct"), None)
    rm = [s for s in summary if s["run"] == "rm"]
    rho = float(rows[0]["rho_known_reward"])
    fig = Figure(figsize=(6.4, 4.4))  # no pyplot: the caller's matplotlib backend is left alone
    ax = fig.subplots()
    cut = next((i for i, p in enumerate(frontier) if p.mean_ess < min_ess), len(frontier))  # first untrusted point
    trusted, beyond = frontier[:cut], frontier[max(cut - 1, 0):]  # the dotted part starts at the last trusted point
    ax.plot([p.kl for p in trusted], [p.reward for p in trusted], "-", color="black",
            label=f"optimal frontier (rho samples, ESS >= {min_ess:g})")
    ax.plot([p.kl for p in beyond], [p.reward for p in beyond], ":", color="black", label=f"(ESS < {min_ess:g})")
    if rho_rewards is not None:
        bon = best_of_n_points(rho_rewards)
        ax.plot([kl for _, kl, _ in bon], [r for _, _, r in bon], "x", color="tab:gray",
                label=f"best-of-n, n = {bon[0][0]}..{bon[-1][0]} (rho samples)")
    if pooled:
        other = read_frontier(os.path.join(out, POOLED_FRONTIER))
        ax.plot([p.kl for p in other], [p.reward for p in other], "--", color="black", label=f"optimal frontier ({pooled} samples)")
    for s, style, name in ([(direct, "*", "direct RL")] if direct else []) + [(s, "o", f"RM, N={s['labels']}") for s in rm]:
        ax.errorbar([s["kl"]], [s["known_reward"]], xerr=[s["kl_se"]], yerr=[s["known_reward_se"]], fmt=style, ms=8,
                    capsize=3, label=f"{name} ({s['seeds']} seeds)")
    ax.axhline(rho, color="tab:gray", ls=":", lw=1, label="rho")
    _save(fig, ax, "KL(pi, rho) [nats]", "KL vs known reward", 7, os.path.join(out, "kl_vs_reward.png"))
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    if rm:
        ax.errorbar([s["labels"] for s in rm], [s["known_reward"] for s in rm], yerr=[s["known_reward_se"] for s in rm],
                    fmt="-o", capsize=3, color="tab:blue", label="RL on reward model")
        ax.set_xscale("log")
        ax.set_xticks([s["labels"] for s in rm], [str(s["labels"]) for s in rm])
        ax.minorticks_off()
    if direct:
        ax.axhspan(direct["known_reward"] - direct["known_reward_se"], direct["known_reward"] + direct["known_reward_se"],
                   color="tab:red", alpha=0.2)
        ax.axhline(direct["known_reward"], color="tab:red", ls="--", label="direct RL on the known reward")
    ax.axhline(rho, color="tab:gray", ls=":", label="rho")
    _save(fig, ax, "labels N", "Known reward vs number of labels", 8, os.path.join(out, "reward_vs_labels.png"))


def _save(fig: Figure, ax: Any, xlabel: str, title: str, legend_size: int, path: str) -> None:
    """Both figures' common finish: the known reward on y, a grid, the legend, the title (mean +- SE over seeds)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("known reward (held-out)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)
    ax.set_title(f"{title} (mean +- SE over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
