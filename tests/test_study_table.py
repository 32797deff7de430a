"""study.csv's columns and summary (:mod:`hf_prefs.analysis.study_table`): the shares of the frontier and of direct RL,
their standard errors, which runs count."""

import math

import numpy as np
import pytest

from hf_prefs.analysis.study_table import gain_fraction, gain_fraction_se, summarize


def test_gain_fraction_and_summarize_skip_unqualified():
    assert gain_fraction(1.0, 2.0) == 0.5 and math.isnan(gain_fraction(1.0, 0.0))
    rows = [{"run": "rm", "labels": "8", "known_reward": "1", "kl": "2", "gain": "0.5", "frac_direct": "0.5",
             "frontier_ess_at_kl": e, "frac_frontier": f, "frontier_qualified": q}
            for e, f, q in (("40", "0.8", "True"), ("3", "0.1", "False"), ("50", "0.6", "True"), ("2048", "nan", "True"))]
    (s,) = summarize(rows)
    assert s["seeds"] == 4 and s["frontier_qualified_runs"] == 2 and s["frac_frontier"] == pytest.approx(0.7)
    assert s["frac_frontier_se"] == pytest.approx(0.1)  # rows without the frontier's gain SE: the seeds' alone
    assert math.isnan(s["frac_frontier_se_frontier"])


def test_share_of_the_frontier_carries_the_frontiers_own_error():
    """Per run: SE(g/G) = sqrt(SE(g)^2 + f^2 SE(G)^2) / |G| (delta method; hand numbers). Over seeds: the frontier's
    error is shared by every seed, so it is added in quadrature to the seeds' SE, not divided by their number."""
    # g = 1.2 +- 0.1, G = 2.4 +- 0.3: f = 0.5, SE = sqrt(0.01 + 0.25 * 0.09) / 2.4 = sqrt(0.0325) / 2.4
    assert gain_fraction_se(1.2, 0.1, 2.4, 0.3) == pytest.approx(math.sqrt(0.0325) / 2.4)
    assert gain_fraction_se(0.0, 0.1, 2.0, 0.5) == pytest.approx(0.05) and math.isnan(gain_fraction_se(1.0, 0.1, 0.0, 0.1))
    rows = [{"run": "direct", "labels": "0", "known_reward": "1", "kl": "3", "gain": "1", "frac_direct": "1",
             "frontier_ess_at_kl": "50", "frontier_qualified": "True", "frac_frontier": f, "frontier_gain_at_kl": G,
             "frontier_gain_se_at_kl": "0.2"} for f, G in (("0.5", "2.0"), ("0.6", "2.5"), ("0.4", "2.2"))]
    (s,) = summarize(rows)
    seeds_se = np.std([0.5, 0.6, 0.4], ddof=1) / math.sqrt(3)  # 0.0577
    frontier_se = np.mean([0.5 * 0.2 / 2.0, 0.6 * 0.2 / 2.5, 0.4 * 0.2 / 2.2])  # 0.0445: not / sqrt(3)
    assert s["frac_frontier"] == pytest.approx(0.5)
    assert s["frac_frontier_se_frontier"] == pytest.approx(frontier_se)
    assert s["frac_frontier_se"] == pytest.approx(math.hypot(seeds_se, frontier_se))


def test_frontier_read_measures_the_gain_from_rhos_point_and_none_below_it():
    """The frontier's gain at a run's KL is read against the estimate's beta = inf point (rho itself), which an
    importance-sampled estimate may put at a KL above 0; a run at or below that point's KL has no frontier gain to
    share (NaN), not a ratio of two noises."""
    from hf_prefs.analysis.study_table import frontier_read
    from hf_prefs.core.frontier import FrontierPoint

    front = [FrontierPoint(math.inf, 1.0, 0.01, 0.1, 0.0, 50.0, 50.0, 0.0),
             FrontierPoint(1.0, 2.0, 0.51, 0.1, 0.1, 40.0, 45.0, 0.2)]
    below = frontier_read({"rho": front}, 0.005, 0.1, 0.05, 30.0)
    assert below["frontier_gain_at_kl"] == 0.0 and math.isnan(below["frac_frontier"])
    at = frontier_read({"rho": front}, 0.51, 0.5, 0.05, 30.0)
    assert at["frontier_gain_at_kl"] == pytest.approx(1.0) and at["frac_frontier"] == pytest.approx(0.5)
    assert at["frac_frontier_se"] == pytest.approx(gain_fraction_se(0.5, 0.05, 1.0, 0.2))
    assert at["frontier_qualified"] and at["frontier_source"] == "rho"
