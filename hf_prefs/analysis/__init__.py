"""The paper's analysis tools: the optimal KL-reward frontier (Figure 3), study reports, evaluation metrics."""

from .frontier import FrontierPoint, frontier_reward_at_kl, optimal_frontier, optimal_policy_stats

__all__ = ["FrontierPoint", "frontier_reward_at_kl", "optimal_frontier", "optimal_policy_stats"]
