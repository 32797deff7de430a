"""Best-of-n against the optimal KL-reward frontier, both from the same samples of rho.

The study (``docs/study/``) reads its PPO runs against the frontier pi*_b ∝ rho · exp(r / b), estimated from rho's
samples on its frontier queries (``rho_rewards.csv`` and its ``.partNNN`` chunks: 8,192 known rewards per query).
Best-of-n — draw n samples of rho, keep the one with the highest reward — is the policy the frontier is usually
compared with; this script reads it on the same samples, as the frontier is read: its expected gain over rho and its
KL, both exact on the samples as the distribution (:func:`hf_prefs.core.frontier.best_of_n_reward`,
:func:`~hf_prefs.core.frontier.best_of_n_kl`: VADER gives many samples the same reward, so the KL lies below the
continuous bound log n − (n−1)/n, also printed), against the frontier's gain at that KL (``frontier_rho.csv``, ± its
bootstrap SE, with its mean and least ESS) and, more conservatively, at the bound. No model runs: numpy on the
committed files.

    python benchmarks/best_of_n_frontier.py
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from hf_prefs.analysis.rho_samples import rho_reward_files, rho_reward_matrix
from hf_prefs.analysis.study_table import frontier_read, read_frontier
from hf_prefs.core.frontier import best_of_n_kl, best_of_n_kl_bound, best_of_n_reward, frontier_rho_reward

STUDY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "study")


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rho_rewards", nargs="+", default=None,
                   help="rho's reward files (default: the study's rho_rewards.csv and its .partNNN chunks)")
    p.add_argument("--frontier", default=os.path.join(STUDY, "frontier_rho.csv"))
    p.add_argument("--n", nargs="+", type=int, default=[2, 4, 8, 16, 32, 64, 128, 256])
    p.add_argument("--min_ess", type=float, default=30.0)
    a = p.parse_args(argv)
    paths = a.rho_rewards or rho_reward_files(STUDY)
    rewards = rho_reward_matrix(paths)
    frontier = read_frontier(a.frontier)
    rho = frontier_rho_reward(frontier)
    if not np.isclose(rewards.mean(), rho, rtol=0, atol=1e-6):
        raise ValueError(f"rho's mean reward on these files ({rewards.mean():.6f}) is not the frontier's at beta = inf "
                         f"({rho:.6f}): the frontier was not made from these samples")
    print(f"{rewards.shape[0]} queries x {rewards.shape[1]} samples of rho; rho's reward {rho:.3f}")
    print("| n | KL (bound) | best-of-n gain | frontier's gain at that KL ± SE | ESS mean / min | share of the frontier's "
          "gain (at the bound) |")
    print("|---|---|---|---|---|---|")
    rows = []
    for n in a.n:
        kl, bound = float(best_of_n_kl(rewards, n).mean()), best_of_n_kl_bound(n)
        gain = float(best_of_n_reward(rewards, n).mean()) - rho
        # the study's read of a run's KL against the frontier (best-of-n's own gain is exact on the samples: SE 0)
        at, at_bound = (frontier_read({"rho": frontier}, k, gain, 0.0, a.min_ess) for k in (kl, bound))
        mark = "" if at["frontier_qualified"] else " (frontier not qualified)"
        print(f"| {n} | {kl:.2f} ({bound:.2f}) | +{gain:.3f} | +{at['frontier_gain_at_kl']:.3f} ± "
              f"{at['frontier_gain_se_at_kl']:.3f} | {at['frontier_ess_at_kl']:.0f} / {at['frontier_min_ess_at_kl']:.1f} | "
              f"{at['frac_frontier']:.3f} ({at_bound['frac_frontier']:.3f}){mark} |")
        rows.append({"n": n, "kl": kl, "kl_bound": bound, "gain": gain, "frontier_gain": at["frontier_gain_at_kl"],
                     "frontier_gain_se": at["frontier_gain_se_at_kl"], "ess": at["frontier_ess_at_kl"],
                     "min_ess": at["frontier_min_ess_at_kl"], "share": at["frac_frontier"],
                     "share_at_bound": at_bound["frac_frontier"]})
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
