"""TF1's Adam, the optimizer the paper's code used (``tf.train.AdamOptimizer``), beside PyTorch's.

Both keep m_t = b1 m + (1 - b1) g and v_t = b2 v + (1 - b2) g^2. They differ in where epsilon goes:

    PyTorch:  p -= lr * m_hat / (sqrt(v_hat) + eps),           m_hat = m/(1 - b1^t), v_hat = v/(1 - b2^t)
    TF1:      p -= lr_t * m / (sqrt(v) + eps),                 lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t)

i.e. TF1 adds eps to sqrt(v) *before* the bias correction (Kingma & Ba's "epsilon hat"), which is the same as adding
eps / sqrt(1 - b2^t) after it: early in training, when 1 - b2^t is small, TF1's effective epsilon is much larger
(~32x at step 1 with b2 = 0.999) and its steps on small gradients smaller. The reproduction
lm-human-preference-details found the difference matters early in PPO (PyTorch's Adam gave ~6x larger early
approxkl at the same eps).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

__all__ = ["TF1Adam", "set_group_learning_rate"]


class TF1Adam(torch.optim.Optimizer):
    """Adam with TF1's epsilon placement (see the module docstring); no weight decay, no amsgrad."""

    def __init__(
        self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        if lr < 0 or eps < 0 or not 0 <= betas[0] < 1 or not 0 <= betas[1] < 1:
            raise ValueError(f"TF1Adam: invalid lr={lr}, betas={betas} or eps={eps}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 (torch.optim.Optimizer API)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["v"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t, m, v = state["step"], state["m"], state["v"]
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                lr_t = group["lr"] * math.sqrt(1 - b2**t) / (1 - b1**t)
                p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-lr_t)
        return loss


def set_group_learning_rate(optimizer: torch.optim.Optimizer, params: Iterable[torch.nn.Parameter], lr: float) -> None:
    """Give ``params`` their own learning rate ``lr``: they leave the groups they are in (before any step, so no state
    moves) for groups of their own that keep every other setting of the group they came from (weight decay, betas),
    marked ``own_lr``. A second call changes nothing. A scheduler made afterwards scales each group from its own lr."""
    wanted = {id(p) for p in params}
    for group in list(optimizer.param_groups):
        if group.get("own_lr"):
            continue
        moved = [p for p in group["params"] if id(p) in wanted]
        if not moved:
            continue
        group["params"] = [p for p in group["params"] if id(p) not in wanted]
        optimizer.add_param_group({**{k: v for k, v in group.items() if k != "params"}, "params": moved, "lr": lr,
                                   "own_lr": True})
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
