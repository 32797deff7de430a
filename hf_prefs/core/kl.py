"""KL-penalty coefficient controllers (paper Section 2.2).

The policy is trained on R(x, y) = r(x, y) - beta * log(pi(y|x) / rho(y|x)). beta is either fixed or
adapted towards a target KL:

    e_t    = clip(KL_t / KL_target - 1, -0.2, 0.2)
    beta  <- beta * (1 + K_beta * e_t)          with K_beta = n_steps / horizon

where n_steps is the number of episodes in the batch and horizon is 10,000 episodes in the paper.
KL_t is the batch mean of the per-sequence summed log-ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["FixedKLController", "AdaptiveKLController", "adaptive_kl_update", "check_kl_horizon"]


def check_kl_horizon(horizon: int, n_steps: int) -> None:
    """The update multiplies beta by ``1 + e * n/horizon`` with ``e`` down to -0.2: ``horizon`` must exceed ``n/5``
    (episodes per update / 5), else one step can make beta 0 or negative (rewarding divergence from rho)."""
    if not horizon > 0 or not horizon > 0.2 * n_steps:
        raise ValueError(f"kl_horizon must be > 0 and > batch size / 5 = {0.2 * n_steps:g} (episodes per update "
                         f"{n_steps}): with {horizon} one adaptive step can turn beta 0 or negative")


def adaptive_kl_update(value: float, kl: float, target: float, n_steps: int, horizon: int) -> float:
    """One step of the paper's proportional controller: ``beta * (1 + clip(kl/target - 1, ±0.2) * n/horizon)``."""
    if not 0 < target < math.inf:
        raise ValueError(f"KL target must be > 0 and finite, got {target}")
    check_kl_horizon(horizon, n_steps)
    kl = float(kl)  # a tensor KL gave a tensor beta where the clip did not bind
    if not math.isfinite(kl):  # NaN passed the clip (min/max keep it) and made beta NaN for good
        raise ValueError(f"KL must be finite to update beta, got {kl}")
    proportional_error = min(max(kl / target - 1.0, -0.2), 0.2)
    return value * (1.0 + proportional_error * n_steps / horizon)


@dataclass
class FixedKLController:
    """beta stays constant."""

    value: float

    def update(self, kl: float, n_steps: int) -> float:
        """Ignore the measured KL; return the unchanged coefficient."""
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore beta. Raises ValueError on an adaptive controller's state (a run resumed with another
        ``adaptive_kl``)."""
        if "target" in state:
            raise ValueError(f"KL controller: the checkpoint's beta is adaptive (kl_target {state['target']}), this run's "
                             "is fixed: resume with adaptive_kl: true, as the checkpoint's run")
        self.value = float(state["value"])


@dataclass
class AdaptiveKLController:
    """beta moves toward the value that keeps KL at ``target`` (see :func:`adaptive_kl_update`)."""

    value: float
    target: float
    horizon: int = 10_000

    def update(self, kl: float, n_steps: int) -> float:
        """Update beta from the batch mean KL measured over ``n_steps`` episodes; return the new beta."""
        self.value = adaptive_kl_update(self.value, kl, self.target, n_steps, self.horizon)
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore beta, the target and the horizon. Raises ValueError on a fixed controller's state (a run resumed
        with another ``adaptive_kl``)."""
        if "target" not in state:
            raise ValueError("KL controller: the checkpoint's beta is fixed, this run's is adaptive: resume with "
                             "adaptive_kl: false, as the checkpoint's run")
        self.value = float(state["value"])
        self.target = float(state["target"])
        self.horizon = int(state["horizon"])
