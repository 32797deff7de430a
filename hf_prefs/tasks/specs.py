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

    def raw_query(self, query: str) -> str:
        """``query`` without the task's prefix (at its start) and suffix (its text, e.g. ``TL;DR:``, at its end after
        any whitespace), stripped: the text the prefix and suffix wrap."""
        text = query.strip()
        if self.query_prefix.strip() and text.startswith(self.query_prefix.strip()):
            text = text[len(self.query_prefix.strip()):]
        if self.query_suffix.strip() and text.endswith(self.query_suffix.strip()):
            text = text[: -len(self.query_suffix.strip())]
        return text.strip()

    def policy_query(self, query: str) -> str:
        """``query`` as the policy and the reward model see it: ``query_prefix + raw + query_suffix`` with ``raw`` =
        :meth:`raw_query` (a prefix or suffix it already has is not added twice). hf_prefs' own label files hold
        queries in this form; the paper's released files hold the raw query (its reward model read the raw query,
        its policy the wrapped one); CarperAI's and OpenAI's TL;DR files end theirs with "TL;DR:". The cut to
        ``query_length`` tokens is :func:`hf_prefs.tasks.summarization.format_summarization_query`'s."""
        if not (self.query_prefix or self.query_suffix):
            return query
        return self.query_prefix + self.raw_query(query) + self.query_suffix


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
