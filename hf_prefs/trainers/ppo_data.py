"""The data side of PPO: the query dataset, the stream of queries per update, one batch of episodes.

- :func:`prepare_query_dataset`: a ``query`` (text) and/or TRL-style ``input_ids`` dataset made to hold both,
  checked (empty rows, rows too long for the model's positions), errors naming the row.
- :class:`QueryStream`: the dataset read as an endless stream of seeded shuffles; a pure function of (seed,
  position), so a resumed run draws the same queries without data-loader state.
- :func:`deal_by_length`: which of an update's queries each process takes (equal work per process).
- :class:`Rollout`: one batch of episodes computed without gradients.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset
from torch import nn

from ..chat_templates import render_row_chat
from ..models.generation import configured_positions, embedding_rows
from ..models.reward_model import adds_bos, without_added_bos
from ..tokenizer_maps import map_with_tokenizer

logger = logging.getLogger(__name__)

__all__ = ["NonFiniteError", "Rollout", "QueryStream", "deal_by_length", "prepare_query_dataset", "unpadded_input_ids",
           "warn_if_texts_differ", "check_query_positions"]


class NonFiniteError(FloatingPointError):
    """NaN/inf met during PPO; ``step`` is the (1-based) PPO update and ``what`` names the tensor."""

    def __init__(self, step: int, what: str, detail: str = "") -> None:
        self.step, self.what = step, what
        super().__init__(f"PPO update step {step}: non-finite values (NaN/inf) in {what}{detail}; training stopped")


@dataclass
class Rollout:
    """One batch of episodes of this process, computed without gradients. Tensors are on the training device."""

    query_ids: torch.Tensor  # (B, Lq) left-padded
    query_mask: torch.Tensor  # (B, Lq) 0/1
    response_ids: torch.Tensor  # (B, Lr) the raw sampled tokens (KL, values and PPO use these)
    response_lengths: torch.Tensor  # (B,) tokens kept by truncation (what the reward saw)
    valid: torch.Tensor  # (B,) bool: no penalty (RolloutSpec: has the truncate/penalty token)
    query_texts: list[str]
    response_texts: list[str]  # truncated, decoded
    raw_scores: torch.Tensor  # (B,) reward before the truncation penalty
    scores: torch.Tensor  # (B,) after the penalty: r(x, y)
    logprobs: torch.Tensor  # (B, Lr) log pi_old(y_t) at temperature T
    ref_logprobs: torch.Tensor  # (B, Lr) log rho(y_t) at temperature T
    values: torch.Tensor  # (B, Lr) V_old(s_t)
    entropy: torch.Tensor  # (B, Lr) entropy of pi_old(.|s_t) at temperature T
    kl: torch.Tensor  # (B, Lr) per-token KL estimate
    non_score_rewards: torch.Tensor  # (B, Lr) -beta * kl
    rewards: torch.Tensor  # (B, Lr) non-score rewards + score at the last token
    kl_coef: float  # beta used for these rewards
    token_mask: torch.Tensor | None = None  # (B, Lr) bool: tokens in the KL and policy loss (all, unless a stop token)
    value_mask: torch.Tensor | None = None  # (B, Lr) bool: steps in the value loss (all, unless a stop token)

    def __len__(self) -> int:
        return self.response_ids.shape[0]


class QueryStream:
    """The rows of an ``n``-row dataset as an endless stream of shuffles: pass e is ``randperm(n)`` seeded with
    ``seed + e``. Only the last two passes' permutations are kept (memory stays bounded)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self._permutations: dict[int, torch.Tensor] = {}

    def row(self, position: int) -> int:
        """The dataset row at stream ``position``."""
        epoch, offset = divmod(position, self.n)
        if epoch not in self._permutations:
            self._permutations = {e: p for e, p in self._permutations.items() if e >= epoch - 1}
            self._permutations[epoch] = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))
        return int(self._permutations[epoch][offset])

    def rows(self, start: int, count: int) -> list[int]:
        """The rows at stream positions ``[start, start + count)``."""
        return [self.row(p) for p in range(start, start + count)]


def deal_by_length(rows: list[int], lengths: list[int], world: int, rank: int) -> list[int]:
    """The rows process ``rank`` of ``world`` takes from an update's global batch ``rows`` (query ``lengths`` in
    tokens, one per row): the rows sorted by length (ties in stream order), dealt in groups of ``world`` in snake
    order (group 0 to ranks 0..w-1, group 1 to ranks w-1..0, ...).

    Every process gets ``len(rows) / world`` rows; the total query tokens of any two processes differ by at most
    ``max(lengths) - min(lengths)`` (each group adds at most its own spread to the gap, and the sorted groups' spreads
    sum to at most the whole spread), and their longest queries by at most the spread of the last group. So a process
    that drew the long queries does not hold the others up at the collectives after the rollout (nor, with one
    minibatch per PPO epoch, at each epoch's gradient all-reduce), as contiguous slices of the shuffled batch can make
    it. Each process's rows come in ascending length: the rollout's chunks hold similar lengths (less padding). With
    ``world == 1``: the batch sorted by length.
    """
    if len(rows) != len(lengths):
        raise ValueError(f"{len(rows)} rows but {len(lengths)} lengths")
    if world < 1 or not 0 <= rank < world or len(rows) % world:
        raise ValueError(f"cannot deal {len(rows)} rows to process {rank} of {world}: need 0 <= rank < world and "
                         f"the batch a multiple of the process count")
    order = sorted(range(len(rows)), key=lambda i: lengths[i])  # stable: ties keep the stream's order
    mine = []
    for group in range(len(rows) // world):
        seat = rank if group % 2 == 0 else world - 1 - rank
        mine.append(rows[order[group * world + seat]])
    return mine


def warn_if_texts_differ(dataset: Dataset, tokenizer: Any, name: str, rows: int = 1000) -> list[int]:
    """With both ``query`` and ``input_ids`` the policy samples from ``input_ids`` and the reward reads ``query``
    (TRL's column and hf_prefs' own, each kept as given). Warns, naming up to 10 rows among the first ``rows``, where
    the text of ``input_ids`` (decoded without special tokens, whitespace collapsed) is not ``query``'s — a chat
    template applied to one of them only, or two columns out of step. Returns those rows."""
    head = dataset[: min(rows, len(dataset))]
    decoded = tokenizer.batch_decode(head["input_ids"], skip_special_tokens=True)
    differ = [i for i, (q, d) in enumerate(zip(head["query"], decoded)) if q.split() != d.split()]
    if differ:
        logger.warning(f"{name}: rows {differ[:10]} ({len(differ)} of the first {len(decoded)}) have `input_ids` whose "
                       "text is not their `query`: the policy samples from input_ids, the reward reads query")
    return differ


def _prompt_as_query(dataset: Dataset, tokenizer: Any, name: str, args: Any) -> Dataset:
    """A ``prompt`` column, as TRL's GRPO/RLOO datasets have it, as ``query`` and ``input_ids``: a text prompt is the
    query; a conversational one (a list of ``{"role", "content"}`` messages) is rendered with the tokenizer's chat
    template and the generation prompt, with the row's ``tools`` and ``chat_template_kwargs`` as TRL passes them
    (:func:`~hf_prefs.chat_templates.render_row_chat`), and tokenized without adding special tokens again (the
    template has them); its ``query`` (what a reward reads, tokenized with special tokens) leaves out a BOS the
    template wrote where the tokenizer adds one itself. Rows that are neither are named."""
    prompts = dataset["prompt"]

    def is_message(m: Any) -> bool:
        return isinstance(m, dict) and isinstance(m.get("role"), str) and m.get("content") is not None

    bad = [i for i, p in enumerate(prompts)
           if not (isinstance(p, str) and p) and not (isinstance(p, list) and p and all(is_message(m) for m in p))]
    if bad:
        raise ValueError(f"{name}: column `prompt` must hold non-empty strings or lists of chat messages "
                         f"({{'role': ..., 'content': ...}} dicts); bad rows {bad[:10]}")
    stops = [getattr(args, n, None) for n in ("stop_token", "stop_token_id", "truncate_token", "truncate_token_id")]
    if any(isinstance(p, list) for p in prompts) and all(v is None for v in stops):
        logger.warning(f"{name}: conversational prompts with no stop_token: each response runs response_length "
                       f"tokens, past the end of the assistant's turn (as in TRL 1.12's PPO without a stop token; "
                       f"GRPO stops at EOS): set stop_token='eos' to cut responses there")

    def render(row: dict[str, Any], i: int) -> dict[str, Any]:
        if isinstance(row["prompt"], str):
            return {"query": row["prompt"], "input_ids": tokenizer(row["prompt"])["input_ids"]}
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(f"{name}: conversational `prompt` rows need a tokenizer with a chat template")
        try:
            text = render_row_chat({"prompt": row["prompt"]}, tokenizer, row)["prompt"]  # tools, template kwargs
        except Exception as err:  # a message without a role, a template that refuses the turns, ...
            raise ValueError(f"{name} row {i}: the chat template cannot render its `prompt` "
                             f"({type(err).__name__}: {err})") from err
        # the reward model tokenizes the query text with special tokens: a BOS the template wrote is left out of it
        return {"query": without_added_bos(tokenizer, text),
                "input_ids": tokenizer(text, add_special_tokens=False)["input_ids"]}

    return map_with_tokenizer(dataset, render, tokenizer, with_indices=True,
                              num_proc=args.dataset_num_proc, desc="Rendering prompts")


def decoded_query(tokenizer: Any, ids: list[int]) -> str:
    """The text of a query given as token ids, as a reward model should read it: special tokens kept (a chat
    template's ``<|im_start|>``/``<|im_end|>`` are part of what it was trained on; TRL 1.12 scored the ids as they
    are), and a leading BOS the tokenizer adds itself left out (the reward model's tokenizer adds it again)."""
    if list(ids[:1]) == [tokenizer.bos_token_id] and adds_bos(tokenizer):
        ids = ids[1:]  # the id, not its text: a SentencePiece decode of "<s>" + "▁Hi" would leave " Hi"
    return tokenizer.decode(ids, skip_special_tokens=False)


def unpadded_input_ids(dataset: Dataset, tokenizer: Any, name: str = "train_dataset") -> Dataset:
    """``input_ids`` rows as the query tokens alone, as TRL 1.12's PPO read them (it masked the pad tokens): with an
    ``attention_mask`` column (a tokenizer's padding) the attended tokens, and the column dropped; without one, runs of
    a pad token of its own at either end of a row (never a text token; a pad that is EOS or BOS may be a query's own
    token, so it is kept). A row that is not a list of ids, or whose mask does not match it, is named."""
    rows = dataset["input_ids"]
    for i, ids in enumerate(rows):
        if not isinstance(ids, list) or not all(isinstance(t, int) for t in ids):
            bad = next((t for t in ids if not isinstance(t, int)), None) if isinstance(ids, list) else None
            shown = f"a list holding {type(bad).__name__} {bad!r}" if isinstance(ids, list) else (
                None if ids is None else type(ids).__name__)
            raise ValueError(f"{name} row {i}: `input_ids` must be a list of token ids (ints), got {shown}")
    masks = dataset["attention_mask"] if "attention_mask" in dataset.column_names else None
    pad = getattr(tokenizer, "pad_token_id", None)
    if masks is not None:
        for i, (ids, mask) in enumerate(zip(rows, masks)):
            if not isinstance(mask, list) or len(mask) != len(ids):
                count = len(mask) if isinstance(mask, list) else None
                raise ValueError(f"{name} row {i}: `attention_mask` has {count} entries for {len(ids)} `input_ids`")
        kept = [[t for t, m in zip(ids, mask) if m] for ids, mask in zip(rows, masks)]
        why = "the `attention_mask` column's padding"
    elif pad is not None and pad not in (getattr(tokenizer, "eos_token_id", None), getattr(tokenizer, "bos_token_id", None)):
        kept = [_strip(ids, pad) for ids in rows]
        why = f"the pad token {tokenizer.pad_token!r} at the rows' ends"
    else:
        _warn_if_padded_with_a_text_token(rows, tokenizer, name)
        return dataset
    changed = sum(len(a) != len(b) for a, b in zip(kept, rows))
    drop = ["attention_mask"] if masks is not None else []
    if not changed:
        return dataset.remove_columns(drop)
    logger.info(f"{name}: {changed} of {len(rows)} rows lose {why}: the queries are their other tokens")
    return dataset.map(lambda _, i: {"input_ids": kept[i]}, with_indices=True, remove_columns=drop,
                       desc="Unpadding input_ids")


def _warn_if_padded_with_a_text_token(rows: list[list[int]], tokenizer: Any, name: str) -> None:
    """Rows that start or end with two or more of a pad token that is also EOS/BOS (kept: it may be a query's own)
    look padded (``padding="max_length"`` with ``pad_token = eos_token``): say so, and how to mark the padding."""
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        return
    padded = [i for i, ids in enumerate(rows) if len(ids) >= 2 and (ids[0] == ids[1] == pad or ids[-1] == ids[-2] == pad)]
    if padded:
        logger.warning(f"{name}: rows {padded[:10]}{', ...' if len(padded) > 10 else ''} ({len(padded)} of {len(rows)}) "
                       f"start or end with a run of the pad token {tokenizer.pad_token!r}, which is also the tokenizer's "
                       "EOS/BOS: kept as query tokens (TRL 1.12 masked every pad token). If they are padding, keep the "
                       "tokenizer's `attention_mask` column (its zeros are dropped) or tokenize without padding")


def _strip(ids: list[int], pad: int) -> list[int]:
    start, end = 0, len(ids)
    while start < end and ids[start] == pad:
        start += 1
    while end > start and ids[end - 1] == pad:
        end -= 1
    return ids[start:end]


def prepare_query_dataset(dataset: Dataset, tokenizer: Any, policy: nn.Module, args: Any, name: str = "train_dataset") -> Dataset:
    """Add ``input_ids`` (tokenized ``query``) or ``query`` (decoded ``input_ids``); with both, keep both and warn
    where their texts differ (:func:`warn_if_texts_differ`); with neither, make both from TRL's ``prompt`` column
    (:func:`_prompt_as_query`; beside either, ``prompt`` is not sampled from, with a warning). Check rows and lengths."""
    if not isinstance(dataset, Dataset):
        raise TypeError(f"{name} must be a datasets.Dataset, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError(f"{name} is empty")
    dataset = dataset.with_format(None)  # torch/numpy rows (TRL 1.12's users often set_format("torch")) as lists
    if "input_ids" in dataset.column_names:
        dataset = unpadded_input_ids(dataset, tokenizer, name)
    columns = dataset.column_names
    from_prompt = "query" not in columns and "input_ids" not in columns and "prompt" in columns
    if from_prompt:
        dataset, columns = _prompt_as_query(dataset, tokenizer, name, args), ["query", "input_ids"]
    elif "prompt" in columns:  # e.g. a metadata column named query beside TRL's prompt: say which one is sampled from
        used = "input_ids" if "input_ids" in columns else "query"
        logger.warning("%s: the policy samples from its `%s` column, not from its `prompt` column (reward functions in "
                       "TRL's form get those queries as `prompts`, and no `prompt`; drop or rename a column to choose)",
                       name, used)
    if "query" in columns:
        bad = [i for i, q in enumerate(dataset["query"]) if not isinstance(q, str) or not q]
        if bad:
            raise ValueError(f"{name}: column `query` must hold non-empty strings; bad rows {bad[:10]}")
        if "input_ids" not in columns:
            dataset = map_with_tokenizer(
                dataset,
                lambda batch: {"input_ids": tokenizer(batch["query"])["input_ids"]},
                tokenizer,
                batched=True,
                num_proc=args.dataset_num_proc,
                desc="Tokenizing queries",
            )
        elif not from_prompt:  # both made here from a prompt agree (a template's special tokens decode otherwise)
            warn_if_texts_differ(dataset, tokenizer, name)
    elif "input_ids" in columns:  # decoded with the special tokens (a chat template's), a BOS the tokenizer adds left out
        dataset = map_with_tokenizer(
            dataset,
            lambda batch: {"query": [decoded_query(tokenizer, ids) for ids in batch["input_ids"]]},
            tokenizer,
            batched=True,
            num_proc=args.dataset_num_proc,
            desc="Decoding queries",
        )
    else:
        raise ValueError(f"{name} needs a `query` (text), `prompt` (text or conversational, as TRL's online trainers "
                         f"take) or `input_ids` column; it has {columns}")
    all_ids = dataset["input_ids"]
    lengths = [len(ids) for ids in all_ids]
    empty = [i for i, n in enumerate(lengths) if n == 0]
    if empty:
        raise ValueError(f"{name}: rows {empty[:10]} tokenize to no tokens")
    vocab = embedding_rows(policy)
    if vocab is not None:  # an id the policy cannot embed fails deep in its forward otherwise (a tokenizer's added pad)
        for i, ids in enumerate(all_ids):
            if ids and (max(ids) >= vocab or min(ids) < 0):
                raise ValueError(f"{name} row {i}: input_ids holds token id {max(ids) if max(ids) >= vocab else min(ids)}, "
                                 f"outside the policy's embedding of {vocab} tokens (a token added to the tokenizer "
                                 f"only, such as TRL's [PAD], must not be in the queries)")
    check_query_positions(lengths, args.response_length, configured_positions(policy), name)
    return dataset


def check_query_positions(lengths: list[int], response_length: int, max_positions: int | None, name: str,
                          role: str = "model") -> None:
    """A ``ValueError`` naming ``name``'s longest row when a query of ``lengths[i]`` tokens + ``response_length`` exceed
    the ``role`` model's ``max_positions`` (None: no limit), with how many rows do and the query length that fits."""
    if max_positions is None or not lengths:
        return
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    if lengths[longest] + response_length > max_positions:
        over = [i for i, n in enumerate(lengths) if n + response_length > max_positions]
        raise ValueError(
            f"{name} row {longest}: query of {lengths[longest]} tokens + response_length "
            f"{response_length} exceeds the {role}'s {max_positions} positions; {len(over)} of {len(lengths)} "
            f"rows do (rows {over[:10]}{', ...' if len(over) > 10 else ''}): filter the dataset to queries of at "
            f"most {max_positions - response_length} tokens"
        )
