"""The K-way softmax preference loss and its accuracy, against hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hf_prefs.core.losses import kway_accuracy, kway_margin, kway_preference_loss, reward_centering_penalty


def _hand_loss(rewards: list[float], best: int) -> float:
    """-log(exp(r_b) / Σ_i exp(r_i)) written out with math.exp."""
    return -math.log(math.exp(rewards[best]) / sum(math.exp(r) for r in rewards))


def test_kway_loss_matches_hand_computation():
    rows = [[0.5, -1.0, 2.0, 0.25], [1.0, 1.0, 1.0, 1.0], [3.0, 3.0, -2.0, 0.0], [-0.7, 0.1, 0.2, -5.0]]
    best = [2, 1, 1, 0]
    rewards = torch.tensor(rows)
    per_label = kway_preference_loss(rewards, torch.tensor(best), reduction="none")
    expected = [_hand_loss(r, b) for r, b in zip(rows, best)]
    assert per_label.tolist() == pytest.approx(expected, abs=1e-6)
    # a tie: all four equal -> log 4; two tied maxima, best among them -> log(2 + e^-5 + e^-3) - 0
    assert per_label[1].item() == pytest.approx(math.log(4), abs=1e-6)
    assert per_label[2].item() == pytest.approx(math.log(2 + math.exp(-5) + math.exp(-3)), abs=1e-6)
    assert kway_preference_loss(rewards, torch.tensor(best)).item() == pytest.approx(sum(expected) / 4, abs=1e-6)
    assert kway_preference_loss(rewards, torch.tensor(best), reduction="sum").item() == pytest.approx(
        sum(expected), abs=1e-5
    )


def test_kway_loss_is_shift_invariant_and_gradient_is_softmax_minus_onehot():
    rewards = torch.tensor([[0.3, -0.2, 1.1]], requires_grad=True)
    best = torch.tensor([0])
    loss = kway_preference_loss(rewards, best)
    loss.backward()
    p = torch.softmax(rewards.detach(), -1)
    assert torch.allclose(rewards.grad, p - F.one_hot(best, 3).float(), atol=1e-6)
    shifted = kway_preference_loss(rewards.detach() + 7.0, best)
    assert shifted.item() == pytest.approx(loss.item(), abs=1e-5)


def test_centering_penalty_is_the_squared_sum_per_label_as_trl_for_k2():
    rewards = torch.tensor([[1.0, -3.0, 0.5], [2.0, 2.0, -1.0]])
    assert reward_centering_penalty(rewards).item() == pytest.approx(((1 - 3 + 0.5) ** 2 + (2 + 2 - 1) ** 2) / 2)
    assert reward_centering_penalty(rewards, reduction="none").tolist() == pytest.approx([(1 - 3 + 0.5) ** 2, (2 + 2 - 1) ** 2])
    g = torch.Generator().manual_seed(0)
    chosen, rejected = torch.randn(16, generator=g), torch.randn(16, generator=g)
    trl_term = torch.mean((chosen + rejected) ** 2)  # trl.RewardTrainer.compute_loss, center_rewards_coefficient
    assert reward_centering_penalty(torch.stack([chosen, rejected], 1)).item() == pytest.approx(trl_term.item(), rel=1e-6)
    with pytest.raises(ValueError, match="shape"):
        reward_centering_penalty(torch.zeros(3))


def test_margin_is_the_picked_reward_over_the_others_mean_as_trl_for_k2():
    rewards = torch.tensor([[1.0, -3.0, 0.5], [2.0, 2.0, -1.0]])
    assert kway_margin(rewards, torch.tensor([0, 2])).item() == pytest.approx(((1 - (-3 + 0.5) / 2) + (-1 - 2)) / 2)
    chosen, rejected = torch.tensor([0.3, 1.0]), torch.tensor([0.1, 2.0])
    trl_margin = (chosen - rejected).mean()  # trl.RewardTrainer's "margin" metric
    assert kway_margin(torch.stack([chosen, rejected], 1), torch.zeros(2, dtype=torch.long)).item() == pytest.approx(
        trl_margin.item())


def test_k2_equals_trl_pairwise_loss():
    g = torch.Generator().manual_seed(0)
    chosen, rejected = torch.randn(64, generator=g) * 3, torch.randn(64, generator=g) * 3
    trl_loss = -F.logsigmoid(chosen - rejected).mean()  # trl.RewardTrainer.compute_loss without margin
    # chosen first (best=0) and chosen second (best=1) must both give the same loss
    ours0 = kway_preference_loss(torch.stack([chosen, rejected], 1), torch.zeros(64, dtype=torch.long))
    ours1 = kway_preference_loss(torch.stack([rejected, chosen], 1), torch.ones(64, dtype=torch.long))
    assert ours0.item() == pytest.approx(trl_loss.item(), abs=1e-6)
    assert ours1.item() == pytest.approx(trl_loss.item(), abs=1e-6)


def test_accuracy_counts_argmax_and_ties_fractionally():
    rewards = torch.tensor(
        [
            [0.1, 0.9, 0.3, 0.2],  # argmax 1, best 1 -> 1
            [0.1, 0.9, 0.3, 0.2],  # best 0 -> 0
            [0.5, 0.5, 0.1, 0.0],  # tie of 2 maxima containing best 0 -> 1/2
            [0.5, 0.5, 0.5, 0.0],  # tie of 3 maxima not containing best 3 -> 0
        ]
    )
    best = torch.tensor([1, 0, 0, 3])
    assert kway_accuracy(rewards, best).item() == pytest.approx((1 + 0 + 0.5 + 0) / 4)


@pytest.mark.parametrize("k", [2, 3, 4, 7])
def test_constant_rewards_have_accuracy_one_over_k(k):
    best = torch.arange(10) % k
    assert kway_accuracy(torch.full((10, k), 0.37), best).item() == pytest.approx(1 / k)
    assert kway_preference_loss(torch.full((10, k), 0.37), best).item() == pytest.approx(math.log(k), abs=1e-6)


def test_loss_rejects_bad_shapes_and_indices():
    with pytest.raises(ValueError, match="K >= 2"):
        kway_preference_loss(torch.zeros(3, 1), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="best must have shape"):
        kway_preference_loss(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="best must lie in"):
        kway_preference_loss(torch.zeros(3, 4), torch.tensor([0, 4, 1]))


def test_accuracy_and_margin_check_best_as_the_loss_does():
    """``kway_accuracy`` read row 0 alone for a ``best`` of shape (1,) (accuracy 1.0 of 3 rows), failed on an index
    out of range without naming it, and cut a float pick to an integer (1.9 -> 1) as the loss did."""
    rewards = torch.tensor([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    for fn in (kway_preference_loss, kway_accuracy, kway_margin):
        with pytest.raises(ValueError, match=r"best must have shape \(3,\), got \(1,\)"):
            fn(rewards, torch.tensor([2]))
        with pytest.raises(ValueError, match=r"best must lie in \[0, 2\], got values \[2, 0, 3\]"):
            fn(rewards, torch.tensor([2, 0, 3]))
        with pytest.raises(ValueError, match="best must hold integer indices, got dtype torch.float32"):
            fn(rewards, torch.tensor([1.9, 0.0, 1.0]))
    assert kway_accuracy(rewards, torch.tensor([2, 0, 0])).item() == pytest.approx(2 / 3)


def test_float64_and_numpy_inputs_keep_their_precision():
    """A hand computation in float64 (or numpy) is compared exactly: the loss was float32 (1e-8 off) and numpy failed
    with "'numpy.ndarray' object has no attribute 'dim'"."""
    r = np.array([[0.1, 0.7, -1.3], [2.0, 2.0 + 1e-9, 0.0]])
    best = np.array([1, 0])
    hand = np.mean([np.log(np.exp(row).sum()) - row[b] for row, b in zip(r, best)])
    for rewards, picks in ((r, best), (torch.from_numpy(r), torch.from_numpy(best))):
        loss = kway_preference_loss(rewards, picks)
        assert loss.dtype == torch.float64 and float(loss) == pytest.approx(hand, rel=1e-15)
    assert float(kway_preference_loss(r.tolist(), best.tolist())) == pytest.approx(hand, rel=1e-6)  # lists: float32
    assert float(kway_margin(r, best)) == pytest.approx(((0.7 - (0.1 - 1.3) / 2) + (2.0 - (2.0 + 1e-9) / 2)) / 2, rel=1e-15)
    assert float(kway_accuracy(r, best)) == 0.5
    assert kway_preference_loss(torch.tensor(r, dtype=torch.bfloat16), torch.tensor(best)).dtype == torch.float32
