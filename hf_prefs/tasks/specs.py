"""The paper's tasks and the shape of their queries.

A :class:`TaskSpec` holds what defines a task's *data*: how long a query is and what wraps it. The training
settings of each task (response length, temperature, truncation, KL schedule, learning rates, batch sizes) are the
recipe's YAML config, ``recipes/configs/<task>.yaml``, where a user can change them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TaskSpec", "TASKS", "get_task"]


@dataclass(frozen=True)
class TaskSpec:
    """``query_length`` in tokens (books: passages of at most 64 tokens; summarization: at most 500 tokens
    including ``query_prefix`` and ``query_suffix``)."""

    name: str
    query_length: int
    query_prefix: str = ""
    query_suffix: str = ""

    def policy_query(self, query: str) -> str:
        """``query`` as the policy and the reward model see it: ``query_prefix + query + query_suffix``, unchanged
        when it already has them. hf_prefs' own label files hold queries in this form; the paper's released files
        hold the raw query (its reward model read the raw query, its policy the wrapped one)."""
        if query.startswith(self.query_prefix) and query.rstrip().endswith(self.query_suffix.rstrip()):
            return query
        return self.query_prefix + query.strip() + self.query_suffix


TASKS: dict[str, TaskSpec] = {
    "sentiment": TaskSpec("sentiment", query_length=64),
    "descriptiveness": TaskSpec("descriptiveness", query_length=64),
    "tldr": TaskSpec("tldr", query_length=500, query_suffix="\n\nTL;DR:"),
    "cnndm": TaskSpec("cnndm", query_length=500, query_prefix="Article:\n\n", query_suffix="\n\nTL;DR:"),
}


def get_task(name: str) -> TaskSpec:
    """The task called ``name``; a clear error lists the known tasks."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"task: unknown task {name!r}; known tasks are {sorted(TASKS)}") from None
