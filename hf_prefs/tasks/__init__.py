"""Task data and the paper's per-task settings: books (sentiment, descriptiveness), TL;DR, CNN/DM."""

from hf_prefs.tasks.books import austen_queries, book_queries_from_texts, load_book_queries
from hf_prefs.tasks.specs import TASKS, TaskSpec, get_task
from hf_prefs.tasks.summarization import format_summarization_query, load_summarization_queries, summarization_queries

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
]
