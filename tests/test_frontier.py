"""The optimal frontier against the closed form on a discrete toy rho."""

import math
import os

import numpy as np
import pytest

from hf_prefs.analysis import frontier_reward_at_kl, optimal_frontier, optimal_policy_stats
from hf_prefs.core.frontier import mixture_log_ratio

# A discrete rho over 4 outcomes with known rewards.
RHO = np.array([0.1, 0.2, 0.3, 0.4])
R = np.array([2.0, 1.0, -0.5, 0.0])


def exact(beta: float) -> tuple[float, float]:
    """pi* = rho exp(r/beta) / Z: E_pi*[r] and KL(pi*, rho) = sum pi* log(pi*/rho)."""
    pi = RHO * np.exp(R / beta)
    pi /= pi.sum()
    return float((pi * R).sum()), float((pi * np.log(pi / RHO)).sum())


def test_exact_on_samples_that_reproduce_rho():
    # 10 samples in rho's exact proportions: the self-normalised estimate is then exact.
    samples = np.repeat(R, (RHO * 10).astype(int))
    for beta in (0.1, 0.5, 1.0, 3.0):
        reward, kl, ess = optimal_policy_stats(samples, beta)
        er, ekl = exact(beta)
        assert reward[0] == pytest.approx(er, rel=1e-12)
        assert kl[0] == pytest.approx(ekl, rel=1e-10, abs=1e-12)
        assert 1.0 <= ess[0] <= 10.0


def test_monte_carlo_within_bootstrap_error():
    rng = np.random.default_rng(1)
    samples = rng.choice(R, size=(4, 5000), p=RHO)  # 4 queries with the same rho
    front = optimal_frontier(samples, [0.3, 1.0], n_bootstrap=100)
    for p in front:
        er, ekl = exact(p.beta)
        assert abs(p.reward - er) < 4 * p.reward_se + 1e-3
        assert abs(p.kl - ekl) < 4 * p.kl_se + 1e-3
        assert p.reward_se > 0 and p.kl_se > 0


def test_large_rewards_do_not_overflow_and_frontier_is_monotone():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(3, 256)) * 50.0  # r/beta up to ~1e4
    front = optimal_frontier(r, np.geomspace(0.01, 100, 12), n_bootstrap=0)
    kls = [p.kl for p in front]
    rewards = [p.reward for p in front]
    assert np.all(np.isfinite(kls)) and np.all(np.isfinite(rewards))
    assert np.all(np.diff(rewards) >= -1e-9)  # more KL buys more reward
    # KL of pi* can never exceed log N (it is at most the KL of a point mass on one sample).
    assert max(kls) <= np.log(256) + 1e-9
    assert frontier_reward_at_kl(front, kls[3]) == pytest.approx(rewards[3])


def test_beta_to_infinity_is_rho():
    r = np.array([[1.0, 2.0, 3.0, 6.0]])
    reward, kl, ess = optimal_policy_stats(r, 1e9)
    assert reward[0] == pytest.approx(3.0)
    assert kl[0] == pytest.approx(0.0, abs=1e-9)
    assert ess[0] == pytest.approx(4.0)


def test_bad_input_names_position():
    with pytest.raises(ValueError, match="query 1, sample 2"):
        optimal_policy_stats(np.array([[0.0, 1.0, 2.0], [0.0, 1.0, np.nan]]), 1.0)
    with pytest.raises(ValueError, match="beta"):
        optimal_policy_stats(np.zeros(3), 0.0)
    with pytest.raises(ValueError, match="beta must be > 0"):
        optimal_policy_stats(np.zeros(3), float("nan"))  # nan <= 0 is False: it used to give NaN rewards
    with pytest.raises(ValueError, match=r"shape \(2, 1, 3\)"):
        optimal_policy_stats(np.zeros((2, 1, 3)), 1.0)  # summed over the wrong axis before
    with pytest.raises(ValueError, match="at least one sample"):
        optimal_policy_stats(np.zeros((2, 0)), 1.0)


def test_best_of_n_refuses_a_count_that_is_not_a_whole_number():
    from hf_prefs.core.frontier import best_of_n_kl, best_of_n_kl_bound, best_of_n_reward

    r = np.array([[0.0, 1.0, 2.0]])
    for fn in (best_of_n_reward, best_of_n_kl):
        with pytest.raises(ValueError, match="whole number >= 1, got 2.5"):
            fn(r, 2.5)
        assert fn(r, np.int64(2)) == pytest.approx(fn(r, 2))
    with pytest.raises(ValueError, match="whole number"):
        best_of_n_kl_bound(0)
    with pytest.raises(ValueError, match="at least one sample"):
        best_of_n_reward(np.zeros((1, 0)), 2)


def test_mixture_log_ratio_refuses_counts_that_do_not_match_the_proposals():
    lp = np.log(np.full((2, 4), 0.25))
    with pytest.raises(ValueError, match="2 proposals' log-probabilities but 1 counts"):
        mixture_log_ratio(lp, [lp, lp], [8])  # zip used to drop the second proposal
    with pytest.raises(ValueError, match=r"proposal 1 .* got count 4 and shape \(2, 3\)"):
        mixture_log_ratio(lp, [lp, lp[:, :3]], [4, 4])
    assert mixture_log_ratio(lp, [lp, lp], [4, 4]) == pytest.approx(np.zeros((2, 4)))


def test_importance_sampling_from_another_policy_matches_the_closed_form():
    """Samples of q (not rho) weighted by rho/q: exact when they reproduce q; and at high KL, where rho's samples
    are too few (ESS ~ 1), samples of a policy near pi* keep a large effective sample size."""
    q_probs = np.array([0.55, 0.25, 0.1, 0.1])  # a proposal that favours the high-reward outcome
    samples = np.repeat(np.arange(4), (q_probs * 20).astype(int))  # 20 samples in q's exact proportions
    log_ratio = np.log(RHO[samples]) - np.log(q_probs[samples])
    for beta in (0.2, 0.5, 2.0):
        reward, kl, _ = optimal_policy_stats(R[samples], beta, log_ratio)
        er, ekl = exact(beta)
        assert reward[0] == pytest.approx(er, rel=1e-10) and kl[0] == pytest.approx(ekl, rel=1e-9, abs=1e-12)
    rng = np.random.default_rng(0)
    rho_draws = rng.choice(4, size=(50, 8), p=RHO)
    pi_draws = rng.choice(4, size=(50, 8), p=q_probs)
    from hf_prefs.core.frontier import frontier_at_kl, mixture_log_ratio

    pooled = np.concatenate([rho_draws, pi_draws], axis=1)  # (Q, 16): 8 from rho, 8 from the policy
    lr = mixture_log_ratio(np.log(RHO[pooled]), [np.log(RHO[pooled]), np.log(q_probs[pooled])], [8, 8])
    rho_only = optimal_frontier(R[rho_draws], [0.15], n_bootstrap=0)[0]
    mixed = optimal_frontier(R[pooled], [0.15], n_bootstrap=0, log_ratio=lr)[0]
    assert mixed.mean_ess > 2 * rho_only.mean_ess
    assert abs(mixed.reward - exact(0.15)[0]) < 0.05
    reward, se, ess = frontier_at_kl(optimal_frontier(R[pooled], [0.15, 1.0], n_bootstrap=20, log_ratio=lr), 0.3)
    assert np.isfinite(reward) and se >= 0 and ess > 1


def test_frontier_ess_read_between_grid_points_is_geometric():
    """Between two grid points the ESS is read on a straight line in log ESS (it falls about geometrically with KL):
    halfway between ESS 100 and 4 it is 20, not the 52 a straight line gives; min and mean are both read."""
    from hf_prefs.core.frontier import FrontierPoint, frontier_at_kl, frontier_ess_at_kl

    grid = [FrontierPoint(1.0, 1.0, 1.0, 0.1, 0.0, 50.0, 100.0), FrontierPoint(0.5, 2.0, 3.0, 0.3, 0.0, 2.0, 4.0)]
    assert frontier_ess_at_kl(grid, 2.0) == pytest.approx((20.0, 10.0))
    assert frontier_at_kl(grid, 2.0) == pytest.approx((1.5, 0.2, 20.0))
    assert frontier_ess_at_kl(grid, 9.0) == pytest.approx((4.0, 2.0))  # clamped past the grid's end


def test_frontier_bootstrap_can_resample_queries():
    """Queries whose samples all share one reward: resampling samples within them sees no error at all, resampling
    the queries too gives about the standard error of the query means (here std 1.5 over 4 queries: ~0.75 x
    sqrt(3/4))."""
    rewards = np.repeat(np.array([[0.0], [1.0], [2.0], [4.0]]), 16, axis=1)  # (4, 16)
    within = optimal_frontier(rewards, [1.0], n_bootstrap=400, seed=0)[0]
    both = optimal_frontier(rewards, [1.0], n_bootstrap=400, seed=0, resample_queries=True)[0]
    assert within.reward_se == 0.0 and within.reward == pytest.approx(1.75)
    assert both.reward_se == pytest.approx(np.std([0.0, 1.0, 2.0, 4.0]) / 2, rel=0.15)
    assert both.gain_se == 0.0  # every query's pi* is its rho: no gain over rho in any resample


def test_frontier_gain_se_ignores_what_a_query_adds_to_all_its_samples():
    """The gain over rho, E_pi*[r] - E_rho[r], is the same for a query whose rewards all move by a constant (pi* and
    rho move alike); with the queries resampled, query offsets blow up the reward's SE but leave the gain's SE as it
    is, bit for bit for the same resamples; at beta = inf (pi* = rho) the gain and its SE are 0; between grid points
    it is read by linear interpolation."""
    from hf_prefs.core.frontier import frontier_gain_se_at_kl

    rng = np.random.default_rng(3)
    rewards = rng.normal(size=(6, 200))
    offsets = np.array([[-5.0], [0.0], [3.0], [8.0], [-2.0], [11.0]])
    betas = [math.inf, 2.0, 0.5]
    plain = optimal_frontier(rewards, betas, n_bootstrap=50, seed=1, resample_queries=True)
    moved = optimal_frontier(rewards + offsets, betas, n_bootstrap=50, seed=1, resample_queries=True)
    assert plain[0].beta == math.inf and plain[0].gain_se == moved[0].gain_se == 0.0
    for a, b in zip(plain[1:], moved[1:]):
        assert a.gain_se > 0 and b.gain_se == pytest.approx(a.gain_se, rel=1e-9)
        assert b.reward_se > 5 * a.reward_se  # the offsets' spread (std ~5.5 over 6 queries) dominates the reward's
    mid = (plain[1].kl + plain[2].kl) / 2
    assert frontier_gain_se_at_kl(plain, mid) == pytest.approx((plain[1].gain_se + plain[2].gain_se) / 2)


def test_frontier_gain_se_is_the_curves_error_at_a_fixed_kl():
    """``gain_se`` is what reading the frontier at a run's KL needs: the spread of the gain over rho at a fixed KL
    across independent draws of the queries and their samples (Monte Carlo here: 200 draws of 8 queries with random
    offsets x 256 Gumbel samples each). The bootstrap's median over 5 datasets lands within [0.5, 1.5] of it; the SE at
    a fixed beta (each resample's point also slides along the curve) was ~2.5x too large on these data."""
    from hf_prefs.core.frontier import frontier_gain_se_at_kl

    q, n, kl0 = 8, 256, 1.5
    betas = [math.inf, *np.geomspace(5.0, 0.3, 30)]

    def draw(rng):
        return rng.normal(size=(q, 1)) + rng.gumbel(size=(q, n))

    def gain_at_kl0(rewards):
        front = optimal_frontier(rewards, betas, n_bootstrap=0)
        return np.interp(kl0, [p.kl for p in front], [p.reward for p in front]) - front[0].reward

    rng = np.random.default_rng(0)
    truth = np.std([gain_at_kl0(draw(rng)) for _ in range(200)], ddof=1)
    boot = [frontier_gain_se_at_kl(optimal_frontier(draw(np.random.default_rng(s)), betas, n_bootstrap=100, seed=s,
                                                    resample_queries=True), kl0) for s in range(3, 8)]
    assert 0.5 * truth < np.median(boot) < 1.5 * truth

def test_pooled_rho_and_policy_stay_right_where_the_policy_misses_rhos_mass():
    """A policy sharply tilted towards the best outcome (it almost never samples the others) pooled with rho by the
    balance heuristic: near rho (beta 3) the policy's samples alone would read E[r] ~ 2 with a perfect-looking ESS,
    but rho's share of the mixture keeps every weight bounded, so the pooled frontier stays within its bootstrap
    error of the closed form there and far out (beta 0.1), where it lifts the ESS over rho's samples alone. The
    bootstrap resamples within each proposal's block (``strata``)."""
    from hf_prefs.core.frontier import best_frontier, frontier_ess_at_kl

    rng = np.random.default_rng(3)
    tilt = RHO * np.exp(R / 0.1)
    tilt /= tilt.sum()
    draws = np.concatenate([rng.choice(4, size=(40, 64), p=RHO), rng.choice(4, size=(40, 64), p=tilt)], axis=1)
    policy_only = optimal_policy_stats(R[draws[:, 64:]], 3.0, np.log(RHO[draws[:, 64:]]) - np.log(tilt[draws[:, 64:]]))
    assert abs(policy_only[0].mean() - exact(3.0)[0]) > 1.0 and policy_only[2].mean() > 60  # wrong, yet "ESS 64"
    lr = mixture_log_ratio(np.log(RHO[draws]), [np.log(RHO[draws]), np.log(tilt[draws])], [64, 64])
    rho_only = optimal_frontier(R[draws[:, :64]], [0.1, 0.5, 3.0], n_bootstrap=0)
    pooled = optimal_frontier(R[draws], [0.1, 0.5, 3.0], n_bootstrap=100, log_ratio=lr, strata=[64, 64])
    for p in pooled:
        er, ekl = exact(p.beta)
        assert abs(p.reward - er) < 4 * p.reward_se + 1e-3 and abs(p.kl - ekl) < 4 * p.kl_se + 1e-3
    assert pooled[-1].beta == 0.1 and pooled[-1].mean_ess > 2 * rho_only[-1].mean_ess
    # each estimate is read where it rests on more samples
    far = pooled[-1].kl
    assert frontier_ess_at_kl(pooled, far)[0] > frontier_ess_at_kl(rho_only, far)[0]
    assert best_frontier([rho_only, pooled], far) == 1 and best_frontier([pooled, rho_only], far) == 0
    with pytest.raises(ValueError, match="strata"):
        optimal_frontier(R[draws], [0.5], n_bootstrap=2, log_ratio=lr, strata=[64, 60])


def test_one_stratum_bootstrap_is_the_plain_bootstrap():
    rng = np.random.default_rng(5)
    r = rng.normal(size=(3, 32))
    assert optimal_frontier(r, [0.5, 2.0], n_bootstrap=30, seed=1) == optimal_frontier(r, [0.5, 2.0], n_bootstrap=30, seed=1, strata=[32])


def test_best_of_n_reward_is_the_mean_of_the_best_of_every_n_draws():
    import itertools

    from hf_prefs.core.frontier import best_of_n_reward

    rows = np.array([[3.0, 1.0, 2.0, 2.0], [0.5, -1.0, 4.0, 0.0]])
    for n in (1, 2, 3):
        enumerated = [np.mean([max(draw) for draw in itertools.product(row, repeat=n)]) for row in rows]
        assert best_of_n_reward(rows, n) == pytest.approx(enumerated, abs=1e-12)
    assert best_of_n_reward(rows, 1) == pytest.approx(rows.mean(axis=1))
    grid = (np.arange(20000) + 0.5) / 20000  # ~ Uniform(0, 1): E[max of n] = n / (n + 1)
    assert best_of_n_reward(grid, 4)[0] == pytest.approx(4 / 5, abs=1e-4)
    with pytest.raises(ValueError, match="n must be a whole number >= 1"):
        best_of_n_reward(rows, 0)


def test_best_of_n_kl_bound_is_reached_by_fine_distributions_and_exceeds_coarse_ones():
    from hf_prefs.core.frontier import best_of_n_kl, best_of_n_kl_bound

    assert best_of_n_kl_bound(1) == 0.0
    for n in (2, 4, 16):
        for outcomes in (20000, 4):  # equiprobable outcomes with distinct rewards: the exact KL of best-of-n
            k = np.arange(1, outcomes + 1)
            p_best = (k / outcomes) ** n - ((k - 1) / outcomes) ** n
            gap = best_of_n_kl_bound(n) - float(np.sum(p_best * np.log(p_best * outcomes)))
            assert 0 <= gap < 1e-6 if outcomes > 4 else gap > 0.01
            rewards = np.random.default_rng(n).permutation(outcomes).astype(float)  # distinct, unsorted
            assert best_of_n_kl(rewards, n)[0] == pytest.approx(best_of_n_kl_bound(n) - gap, abs=1e-9)
    # ties: two outcomes of four share the top reward, so best-of-2 puts 1 - (1/2)^2 = 3/4 on them (rho: 1/2), 1/4 on
    # the other two; between the tied ones rho's odds stay
    tied = np.array([[0.0, 1.0, 2.0, 2.0]])
    expected = 0.75 * math.log(0.75 / 0.5) + (0.25 - 1 / 16) * math.log((0.25 - 1 / 16) / 0.25) + (1 / 16) * math.log(
        (1 / 16) / 0.25)
    assert best_of_n_kl(tied, 2) == pytest.approx([expected], abs=1e-12)
    assert best_of_n_kl(tied, 2)[0] < best_of_n_kl_bound(2)
    assert best_of_n_kl(tied, 1) == pytest.approx([0.0], abs=1e-12)


def test_best_of_n_lies_under_the_frontier_of_the_same_samples():
    from hf_prefs.core.frontier import best_of_n_kl_bound, best_of_n_reward

    r = np.random.default_rng(3).normal(size=(4, 4000))
    frontier = optimal_frontier(r, [math.inf, 8, 4, 2, 1.5, 1, 0.7, 0.5, 0.35], n_bootstrap=0)
    rho = r.mean()
    for n in (2, 4, 8, 16):
        bon = best_of_n_reward(r, n).mean() - rho
        best = frontier_reward_at_kl(frontier, best_of_n_kl_bound(n)) - rho
        assert 0.8 * best < bon < best  # close under, never over (here the frontier is read on a grid: conservative)


def test_rho_reward_matrix_puts_chunks_side_by_side_and_best_of_n_points_read_it(tmp_path):
    import json

    import torch

    from hf_prefs.analysis.rho_samples import rho_reward_files, rho_reward_matrix, write_rho_rewards
    from hf_prefs.analysis.study_plots import best_of_n_points
    from hf_prefs.core.frontier import best_of_n_kl, best_of_n_reward

    assert rho_reward_files(str(tmp_path)) == []
    rng = np.random.default_rng(0)
    chunks = [rng.normal(size=(3, 16)).round(2) for _ in range(2)]  # 3 queries, 16 samples per chunk, ties from rounding
    key = {"queries_sha256": "abc", "m": 16, "model": "m", "dtype": "float32", "spec": "s", "known_reward": "vader"}
    for c, (name, block) in enumerate(zip(["rho_rewards.csv", "rho_rewards.part001.csv"], chunks)):
        write_rho_rewards(str(tmp_path / name), json.dumps({**key, "seed": 100 + c}), torch.tensor(block.reshape(-1)))
    files = rho_reward_files(str(tmp_path))
    assert [os.path.basename(f) for f in files] == ["rho_rewards.csv", "rho_rewards.part001.csv"]
    whole = np.concatenate([c.astype(np.float32).astype(np.float64) for c in chunks], axis=1)  # (3, 32), per query
    assert np.array_equal(rho_reward_matrix(files), whole)
    points = best_of_n_points(whole, (2, 8))
    assert [n for n, _, _ in points] == [2, 8]
    for n, kl, reward in points:
        assert kl == pytest.approx(best_of_n_kl(whole, n).mean()) and reward == pytest.approx(best_of_n_reward(whole, n).mean())
    other = tmp_path / "rho_rewards.part002.csv"
    write_rho_rewards(str(other), json.dumps({**key, "queries_sha256": "other", "seed": 1}), torch.zeros(48))
    with pytest.raises(ValueError, match=r"rho_rewards\.part002\.csv: another draw"):
        rho_reward_matrix(rho_reward_files(str(tmp_path)))
    write_rho_rewards(str(other), json.dumps({**key, "seed": 1}), torch.zeros(40))  # not whole queries
    with pytest.raises(ValueError, match=r"part002\.csv: 40 rewards, not whole queries of 16"):
        rho_reward_matrix(rho_reward_files(str(tmp_path)))
    with_nan = np.array([[0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, np.nan]])
    for f in (best_of_n_kl, best_of_n_reward):
        with pytest.raises(ValueError, match="query 1, sample 3 is nan"):
            f(with_nan, 2)


def test_a_bad_input_is_named_where_it_is_before_any_bootstrap_resample():
    """With standard errors on, a NaN at query 1, sample 2 was named "query 1, sample 0" (the check ran on a
    resample), and a log_ratio of the wrong shape failed as numpy's IndexError; n_bootstrap 1 gave NaN SEs."""
    r = np.arange(12, dtype=float).reshape(2, 6) / 6
    r[1, 2] = np.nan
    with pytest.raises(ValueError, match="query 1, sample 2 is nan"):
        optimal_frontier(r, betas=[1.0], n_bootstrap=20, seed=0)
    good = np.arange(12, dtype=float).reshape(2, 6) / 6
    with pytest.raises(ValueError, match=r"log_ratio must be finite with the rewards' shape \(2, 6\), got \(2, 3\)"):
        optimal_frontier(good, betas=[1.0], log_ratio=np.zeros((2, 3)), n_bootstrap=20, seed=0)
    for n in (1, -1):
        with pytest.raises(ValueError, match=f"n_bootstrap must be 0 .* or >= 2 .*, got {n}"):
            optimal_frontier(good, betas=[1.0], n_bootstrap=n)
