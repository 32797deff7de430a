"""The PPO equations against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from hf_prefs.core.ppo_math import (
    compute_gae,
    explained_variance,
    kl_penalty,
    per_token_rewards,
    ppo_policy_loss,
    ppo_value_loss,
    whiten,
)


def test_gae_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 1.0, -1.0]])
    # gamma = 0.9, lam = 0.8 -> gamma * lam = 0.72
    # t=2: delta = 2 + 0.9*0 - (-1) = 3                A2 = 3
    # t=1: delta = 0 + 0.9*(-1) - 1 = -1.9             A1 = -1.9 + 0.72*3 = 0.26
    # t=0: delta = 1 + 0.9*1 - 0.5 = 1.4               A0 = 1.4 + 0.72*0.26 = 1.5872
    advantages, returns = compute_gae(rewards, values, gamma=0.9, lam=0.8)
    assert advantages.tolist()[0] == pytest.approx([1.5872, 0.26, 3.0])
    assert returns.tolist()[0] == pytest.approx([2.0872, 1.26, 2.0])


def test_gae_paper_settings_gamma_1_lam_1_is_reward_to_go_minus_value():
    rewards = torch.tensor([[0.1, -0.2, 0.3, 1.0], [0.0, 0.0, 0.0, -1.0]])
    values = torch.tensor([[0.4, 0.3, 0.2, 0.1], [1.0, 2.0, 3.0, 4.0]])
    advantages, returns = compute_gae(rewards, values, gamma=1.0, lam=1.0)
    to_go = rewards.flip(1).cumsum(1).flip(1)
    assert torch.allclose(returns, to_go)
    assert torch.allclose(advantages, to_go - values)


def test_whiten_by_hand():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])  # mean 2.5, population variance 1.25
    std = math.sqrt(1.25 + 1e-8)
    expected = [(v - 2.5) / std for v in (1, 2, 3, 4)]
    assert whiten(x).tolist() == pytest.approx(expected)
    assert whiten(x, shift_mean=False).tolist() == pytest.approx([e + 2.5 for e in expected])  # paper's rewards
    w = whiten(torch.randn(8, 5) * 3 + 7)
    assert w.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert w.var(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)


def test_kl_penalty_estimators():
    logp = torch.tensor([[-1.0, -2.0, -3.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0]])
    assert kl_penalty(logp, ref, "k1").tolist()[0] == pytest.approx([0.5, 0.0, -1.0])
    d = [-0.5, 0.0, 1.0]  # ref - logp
    assert kl_penalty(logp, ref, "k3").tolist()[0] == pytest.approx([math.exp(v) - 1 - v for v in d])
    # k2 (issue 12: beside k1/k3): half the squared log-ratio
    assert kl_penalty(logp, ref, "k2").tolist()[0] == pytest.approx([0.5 * 0.25, 0.0, 0.5 * 1.0])
    with pytest.raises(ValueError, match="k1"):
        kl_penalty(logp, ref, "k4")


def test_kl_penalty_on_every_token_and_score_on_the_last():
    kl = torch.tensor([[0.5, 0.0, -1.0, 2.0], [0.1, 0.2, 0.3, 0.4]])
    scores = torch.tensor([2.0, -1.0])
    rewards, non_score = per_token_rewards(scores, kl, kl_coef=0.1)
    assert non_score.tolist()[0] == pytest.approx([-0.05, 0.0, 0.1, -0.2])
    assert rewards.tolist()[0] == pytest.approx([-0.05, 0.0, 0.1, -0.2 + 2.0])
    assert rewards.tolist()[1] == pytest.approx([-0.01, -0.02, -0.03, -0.04 - 1.0])
    # the episode's total is r - beta * sum_t kl_t
    assert rewards.sum(1).tolist() == pytest.approx([2.0 - 0.1 * 1.5, -1.0 - 0.1 * 1.0])
    with pytest.raises(ValueError, match="scores"):
        per_token_rewards(torch.zeros(3), kl, 0.1)


def test_policy_loss_by_hand():
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.9]]))  # ratios 1.5, 0.5, 1.1, 0.9
    adv = torch.tensor([[1.0, 1.0, -2.0, -1.0]])
    # per token max(-A*r, -A*clip(r, 0.8, 1.2)):
    #   A=1,  r=1.5: max(-1.5, -1.2) = -1.2 (clipped term larger)
    #   A=1,  r=0.5: max(-0.5, -0.8) = -0.5
    #   A=-2, r=1.1: max(2.2, 2.2)   = 2.2
    #   A=-1, r=0.9: max(0.9, 0.9)   = 0.9
    loss, clipfrac, approxkl = ppo_policy_loss(new, old, adv, cliprange=0.2)
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 2.2 + 0.9) / 4)
    assert clipfrac.item() == pytest.approx(0.25)
    logs = [math.log(v) for v in (1.5, 0.5, 1.1, 0.9)]
    assert approxkl.item() == pytest.approx(0.5 * sum(v * v for v in logs) / 4)


def test_value_loss_by_hand():
    old = torch.tensor([[0.0, 0.0, 1.0]])
    new = torch.tensor([[0.5, -0.1, 1.0]])
    returns = torch.tensor([[1.0, 1.0, 0.0]])
    # clip(new, old ± 0.2) = [0.2, -0.1, 1.0]
    # (v-R)^2 = [0.25, 1.21, 1.0]; (vclip-R)^2 = [0.64, 1.21, 1.0]; max = [0.64, 1.21, 1.0]
    loss, clipfrac = ppo_value_loss(new, old, returns, cliprange_value=0.2)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 1.21 + 1.0) / 3)
    assert clipfrac.item() == pytest.approx(1 / 3)


def test_policy_loss_gradient_is_zero_where_clipped():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 1.0]])).requires_grad_(True)
    adv = torch.tensor([[1.0, 1.0]])
    loss, _, _ = ppo_policy_loss(new, old, adv, cliprange=0.2)
    loss.backward()
    assert new.grad[0, 0].item() == 0.0  # ratio 1.5 > 1.2 with A > 0: clipped, no gradient
    assert new.grad[0, 1].item() == pytest.approx(-0.5)  # d/dlogp of -A*exp(logp)/2 at ratio 1


def test_explained_variance():
    returns = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(returns, returns) == pytest.approx(1.0)
    assert explained_variance(torch.full((4,), 2.5), returns) == pytest.approx(0.0)
    # residual [1, -1, 1, -1]: var 1; var(returns) 1.25 -> 1 - 1/1.25 = 0.2
    assert explained_variance(returns - torch.tensor([1.0, -1.0, 1.0, -1.0]), returns) == pytest.approx(0.2)
    assert math.isnan(explained_variance(returns, torch.ones(4)))
