"""How a dataset row's chat reaches the tokenizer's chat template: TRL's ``tools`` and ``chat_template_kwargs`` columns.

TRL's trainers pass a row's ``tools`` (a list of function schemas, or their JSON text) and its ``chat_template_kwargs``
(e.g. Qwen3's ``enable_thinking``) to the template with the messages; the preference rows
(:func:`hf_prefs.labels.schema.pairwise_label`) and PPO's conversational prompts
(:func:`hf_prefs.trainers.ppo_data.prepare_query_dataset`) render through :func:`render_row_chat`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from trl.data_utils import maybe_apply_chat_template

__all__ = ["assistant_turn_end", "render_row_chat", "row_template_inputs"]


def row_template_inputs(row: Mapping[str, Any]) -> tuple[list[Any] | None, dict[str, Any]]:
    """``(tools, chat_template_kwargs)`` of ``row``: ``tools`` parsed from JSON text when given as text (TRL's datasets
    store it so), None when absent; the kwargs ``{}`` when absent or None (Arrow fills a missing one with None)."""
    tools = row.get("tools")
    return (json.loads(tools) if isinstance(tools, str) else tools), dict(row.get("chat_template_kwargs") or {})


def render_row_chat(example: dict[str, Any], tokenizer: Any, row: Mapping[str, Any]) -> dict[str, Any]:
    """``trl.maybe_apply_chat_template`` of ``example`` (its ``prompt``/``chosen``/``rejected``) with ``row``'s tools
    and chat_template_kwargs (:func:`row_template_inputs`), as TRL renders the row."""
    tools, kwargs = row_template_inputs(row)
    return maybe_apply_chat_template({**example, "chat_template_kwargs": kwargs}, tokenizer, tools=tools)


def assistant_turn_end(tokenizer: Any) -> str:
    """The text ``tokenizer``'s chat template writes after an assistant message's content (ChatML's
    ``"<|im_end|>\\n"``): how every rendered completion of a chat preference row ends. ``""`` where the template
    cannot render a user and an assistant turn, or writes the content otherwise than as given."""
    marker = "hf-prefs-turn-end-marker"
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # no template, or one that refuses these turns: no end known
        return ""
    return text[text.index(marker) + len(marker):] if isinstance(text, str) and text.count(marker) == 1 else ""
