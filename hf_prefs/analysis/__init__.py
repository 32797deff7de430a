"""Layer 7: the paper's analysis — the label-count study (Figures 2 and 3), its report, evaluation metrics. The
frontier's math lives in :mod:`hf_prefs.core.frontier` and is re-exported here."""

from ..core.frontier import FrontierPoint, frontier_reward_at_kl, optimal_frontier, optimal_policy_stats

__all__ = ["FrontierPoint", "frontier_reward_at_kl", "optimal_frontier", "optimal_policy_stats"]
