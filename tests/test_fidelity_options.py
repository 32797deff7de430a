"""The paper-fidelity switches: TF1's Adam, the reward head's initialisation, critic warm-up, the k2 estimator."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel, TrainerCallback

from conftest import tiny_gpt2_config
from hf_prefs import PPOConfig, PPOTrainer
from hf_prefs.core.optim import TF1Adam, set_group_learning_rate
from hf_prefs.models.reward_model import init_score_head


def test_tf1_adam_puts_epsilon_before_the_bias_correction():
    g = torch.tensor([1e-6, 0.5, -2.0])
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-5
    p = torch.zeros(3, requires_grad=True)
    opt = TF1Adam([p], lr=lr, betas=(b1, b2), eps=eps)
    expected = torch.zeros(3)
    m = v = torch.zeros(3)
    for t in (1, 2, 3):
        p.grad = g.clone()
        opt.step()
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
        expected = expected - lr * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (v.sqrt() + eps)
        assert torch.allclose(p.detach(), expected, rtol=1e-5, atol=1e-9)
    # the first step on a tiny gradient: TF1's effective epsilon is eps/sqrt(1-b2) ~ 3e-4, PyTorch's is eps
    q = torch.zeros(1, requires_grad=True)
    torch_opt = torch.optim.Adam([q], lr=lr, betas=(b1, b2), eps=eps)
    q.grad = torch.tensor([1e-6])
    torch_opt.step()
    r = torch.zeros(1, requires_grad=True)
    r.grad = torch.tensor([1e-6])
    TF1Adam([r], lr=lr, betas=(b1, b2), eps=eps).step()
    assert abs(q.item()) > 10 * abs(r.item())  # PyTorch: 0.1 * 1e-6/(1e-6 + 1e-5) = 9.1e-3; TF1: 3.2e-4


def test_paper_reward_head_init_has_std_one_over_sqrt_d_plus_one():
    cfg = tiny_gpt2_config(n_embd=256, n_head=4)
    cfg.num_labels = 1
    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(cfg)
    assert model.score.weight.std().item() == pytest.approx(0.02, rel=0.2)  # transformers' default
    std = init_score_head(model)
    assert std == pytest.approx(1 / math.sqrt(257))
    assert model.score.weight.std().item() == pytest.approx(std, rel=0.15)


def _trainer(tmp_path, gpt2_tokenizer, **kw):
    torch.manual_seed(0)
    args = PPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, gradient_accumulation_steps=1,
                     total_episodes=8, response_length=5, learning_rate=1e-2, report_to=[], save_strategy="no",
                     num_sample_generations=0, disable_tqdm=True, use_cpu=True, seed=0, **kw)
    return PPOTrainer(model=GPT2LMHeadModel(tiny_gpt2_config()), args=args, processing_class=gpt2_tokenizer,
                      reward_model=lambda q, r: torch.tensor([len(x) / 10 for x in r]),
                      train_dataset=Dataset.from_dict({"query": ["She said", "It was a fine day and"] * 4}))


def test_critic_warmup_trains_only_the_value_head_first(tmp_path, gpt2_tokenizer):
    """critic_warmup_updates=1 of 2 updates: after the first the policy is unchanged and the value head moved; after
    the second the policy moved too (TF1's Adam on the way)."""
    trainer = _trainer(tmp_path, gpt2_tokenizer, critic_warmup_updates=1, tf1_adam=True)
    snapshots = []

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            snapshots.append(({n: p.detach().clone() for n, p in trainer.model.policy.named_parameters()},
                              trainer.model.v_head.summary.weight.detach().clone()))

    trainer.add_callback(Snapshot())
    policy0 = {n: p.detach().clone() for n, p in trainer.model.policy.named_parameters()}
    head0 = trainer.model.v_head.summary.weight.detach().clone()
    trainer.train()
    assert isinstance(trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer, TF1Adam)
    (after1, head1), (after2, _) = snapshots
    assert all(torch.equal(after1[n], policy0[n]) for n in policy0) and not torch.equal(head1, head0)
    assert any(not torch.equal(after2[n], policy0[n]) for n in policy0)


def test_k2_estimator_reaches_the_rewards(tmp_path, gpt2_tokenizer):
    trainer = _trainer(tmp_path, gpt2_tokenizer, kl_estimator="k2")
    logp, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]])
    kl, non_score, _ = trainer.compute_rewards(torch.zeros(1), logp, ref, 0.5)
    assert kl[0].tolist() == pytest.approx([0.125, 0.5]) and non_score[0].tolist() == pytest.approx([-0.0625, -0.25])


def test_set_group_learning_rate_gives_params_their_own_rate_and_keeps_group_settings():
    a, b, c = (torch.zeros(2, requires_grad=True) for _ in range(3))
    opt = torch.optim.SGD([{"params": [a, b], "weight_decay": 0.0}, {"params": [c], "weight_decay": 0.5}], lr=0.1)
    set_group_learning_rate(opt, [b, c], 0.7)
    set_group_learning_rate(opt, [b, c], 0.7)  # a second call changes nothing
    groups = [([id(p) for p in g["params"]], g["lr"], g["weight_decay"]) for g in opt.param_groups]
    assert groups == [([id(a)], 0.1, 0.0), ([id(b)], 0.7, 0.0), ([id(c)], 0.7, 0.5)]
    for p in (a, b, c):
        p.grad = torch.ones(2)
    opt.step()
    assert a.tolist() == pytest.approx([-0.1] * 2) and b.tolist() == pytest.approx([-0.7] * 2) and c.tolist() == pytest.approx([-0.7] * 2)


def test_value_learning_rate_is_the_value_heads_own(tmp_path, gpt2_tokenizer):
    """value_learning_rate: the value head's parameters (and only they) in groups of their own at that rate, which
    the linear scheduler starts from."""
    trainer = _trainer(tmp_path, gpt2_tokenizer, value_learning_rate=0.1)
    trainer.train()
    opt = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
    head = {id(p) for p in trainer.model.v_head.parameters()}
    own = [g for g in opt.param_groups if g.get("own_lr")]
    assert {id(p) for g in own for p in g["params"]} == head
    assert not any(id(p) in head for g in opt.param_groups if not g.get("own_lr") for p in g["params"])
    assert {g["initial_lr"] for g in own} == {0.1} and {g["initial_lr"] for g in opt.param_groups if not g.get("own_lr")} == {1e-2}
    with pytest.raises(ValueError, match="value_learning_rate"):
        PPOConfig(output_dir="x", value_learning_rate=0.0)
