"""The paper's per-task settings (PAPER_DIGEST.md, "Tasks" and "Policy optimisation").

A :class:`TaskSpec` holds what the paper fixed per task: query/response lengths, sampling temperature, the
truncation rule, the query's prefix/suffix, the KL schedule and the PPO/RM hyper-parameters. Recipes start from
``TASKS[name]`` and let every field be overridden on the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["TaskSpec", "TASKS", "get_task"]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    query_length: int
    response_length: int
    temperature: float
    truncate_token: str | None
    truncate_after: int
    query_prefix: str = ""
    query_suffix: str = ""
    # KL control: adaptive (target, horizon) or fixed beta.
    kl_coef: float = 0.15
    adaptive_kl: bool = True
    kl_target: float = 6.0
    kl_horizon: int = 10_000
    # PPO
    ppo_batch_size: int = 512
    ppo_learning_rate: float = 1e-5
    whiten_rewards: bool = True
    # Reward model
    rm_batch_size: int = 32
    rm_learning_rate: float = 5e-5
    num_labels: int = 4_992
    label_mode: str = "offline"

    def with_overrides(self, **kw) -> "TaskSpec":
        return replace(self, **kw)


_BOOKS = dict(query_length=64, response_length=24, temperature=0.7, truncate_token=".", truncate_after=16)

TASKS: dict[str, TaskSpec] = {
    "sentiment": TaskSpec(name="sentiment", **_BOOKS),
    "descriptiveness": TaskSpec(name="descriptiveness", **_BOOKS),
    "tldr": TaskSpec(
        name="tldr",
        query_length=500,
        response_length=75,
        temperature=0.7,
        truncate_token="\n",
        truncate_after=55,
        query_suffix="\n\nTL;DR:",
        kl_coef=0.03,
        adaptive_kl=False,
        ppo_batch_size=32,
        ppo_learning_rate=2e-6,
        whiten_rewards=False,
        rm_batch_size=16,
        rm_learning_rate=2.5e-5,
        num_labels=46_000,
        label_mode="online",
    ),
    "cnndm": TaskSpec(
        name="cnndm",
        query_length=500,
        response_length=75,
        temperature=0.5,
        truncate_token="\n",
        truncate_after=55,
        query_prefix="Article:\n\n",
        query_suffix="\n\nTL;DR:",
        kl_coef=0.01,
        adaptive_kl=False,
        ppo_batch_size=32,
        ppo_learning_rate=2e-6,
        whiten_rewards=False,
        rm_batch_size=16,
        rm_learning_rate=2.5e-5,
        num_labels=46_000,
        label_mode="online",
    ),
}


def get_task(name: str) -> TaskSpec:
    """The paper's settings for ``name``; a clear error lists the known tasks."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"task: unknown task {name!r}; known tasks are {sorted(TASKS)}") from None
