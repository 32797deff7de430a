"""Layer 5: the tasks' data — queries of books (sentiment, descriptiveness), TL;DR and CNN/DM cut like the paper's,
their known rewards for mock labeling (VADER, a Hub classifier) and ROUGE (:mod:`hf_prefs.tasks.rouge`)."""

from .books import austen_queries, book_queries_from_texts, load_book_queries
from .known_rewards import make_known_reward, vader_log_odds
from .queries import load_task_queries
from .specs import TASKS, TaskSpec, get_task
from .summarization import (
    format_summarization_query,
    load_summarization_queries,
    summarization_queries,
    summarization_texts,
)

__all__ = [
    "austen_queries",
    "book_queries_from_texts",
    "load_book_queries",
    "TASKS",
    "TaskSpec",
    "get_task",
    "format_summarization_query",
    "load_summarization_queries",
    "summarization_queries",
    "summarization_texts",
    "make_known_reward",
    "vader_log_odds",
    "load_task_queries",
]
