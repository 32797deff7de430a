"""Reading the reward r(x, y) from a sequence-classification model, loading and scoring.

The paper's reward model is an LM trunk plus a scalar head read at the **last token** of query+response,
then ``r = gain · out + bias`` (see :mod:`hf_prefs.normalization`). Two details matter:

- **Explicit last-token index.** ``*ForSequenceClassification`` models pool at "the rightmost token that is not
  the pad token". With pad == eos (GPT-2, many Llama tokenizers) and sampled responses that may contain EOS, that
  silently reads the wrong token. Here the score head's per-token output is captured while the model runs its
  ordinary forward (so PEFT, accelerate/DDP wrappers and gradient checkpointing behave as usual) and the reward is
  gathered at an explicit index: the last attended token of each row.
- **Query-prefix sharing (optional).** K responses to one query share the query tokens. :func:`pack_shared_prefix`
  lays out ``query, response_0, ..., response_{K-1}`` in one row with a block attention mask (each response sees
  the query and itself, causally) and position ids restarting after the query, so the query is encoded once. The
  rewards equal those of K separate ``query + response_k`` rows (tested to 1e-5); it needs an attention
  implementation that takes a 4D mask (``eager`` or ``sdpa``; not flash-attention).

Shapes: N = rows, L = padded length, B = labels, K = samples per label.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .normalization import (
    NORMALIZATION_FILE,
    get_reward_normalization,
    load_reward_normalization,
    set_reward_normalization,
)

__all__ = [
    "score_head",
    "last_token_index",
    "apply_reward_normalization",
    "per_token_scores",
    "last_token_rewards",
    "tokenize_query_response",
    "pad_right",
    "pack_shared_prefix",
    "shared_prefix_attention_mask",
    "packed_rewards",
    "score_texts",
    "load_reward_model",
]


def _unwrap(model: Any) -> Any:
    """The underlying ``PreTrainedModel`` of a DDP/accelerate-wrapped and/or PEFT model."""
    while hasattr(model, "module") and not hasattr(model, "config"):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def score_head(model: Any) -> nn.Module:
    """The scalar head (``model.score``) of a sequence-classification model; PEFT wraps it in place."""
    base = _unwrap(model)
    head = getattr(base, "score", None)
    if not isinstance(head, nn.Module):
        raise TypeError(
            f"{type(base).__name__} has no `score` head; a reward model must be an `*ForSequenceClassification` "
            "causal LM (e.g. GPT2ForSequenceClassification, LlamaForSequenceClassification) with num_labels=1"
        )
    return head


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """``(N,)`` index of the last attended position of each row of a 2D ``(N, L)`` 0/1 mask (any padding side)."""
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be 2D (N, L), got shape {tuple(attention_mask.shape)}")
    if (attention_mask.sum(-1) == 0).any():
        raise ValueError("a row of the attention mask has no attended token")
    idx = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (idx * (attention_mask != 0)).argmax(dim=-1)


def apply_reward_normalization(raw: torch.Tensor, model: Any) -> torch.Tensor:
    """``gain · raw + bias`` with the gain/bias stored on ``model``'s config."""
    gain, bias = get_reward_normalization(model)
    return raw * gain + bias


def per_token_scores(model: Any, **inputs: Any) -> torch.Tensor:
    """Run ``model(**inputs)`` and return the score head's output at every position, ``(N, L)``.

    The head's output is captured with a forward hook, so the call goes through the model (and any DDP/PEFT
    wrapper) exactly as in ordinary training; the model's own pad-based pooling is ignored.
    """
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _args: Any, output: torch.Tensor) -> None:
        captured.append(output)

    handle = score_head(model).register_forward_hook(hook)
    try:
        model(**inputs, use_cache=False)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(f"expected the score head to run once per forward, it ran {len(captured)} times")
    out = captured[0]
    if out.dim() != 3 or out.shape[-1] != 1:
        raise ValueError(f"the score head must output (N, L, 1) (num_labels=1), got shape {tuple(out.shape)}")
    return out.squeeze(-1)


def last_token_rewards(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    last_index: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    normalized: bool = True,
) -> torch.Tensor:
    """Rewards ``(M,)`` read at explicit token indices, then ``gain · out + bias``.

    Args:
        input_ids: ``(N, L)`` token ids.
        attention_mask: ``(N, L)`` 0/1 mask, or a 4D ``(N, 1, L, L)`` additive mask (see :func:`pack_shared_prefix`).
        last_index: ``(N,)`` index of the token to read per row, or ``(N, K)`` for K rewards per row (packed
            rows). Defaults to :func:`last_token_index` of a 2D mask.
        position_ids: ``(N, L)``, needed for packed rows.
        normalized: apply the stored gain/bias (``False`` gives the raw head output).
    Returns:
        ``(N,)`` or ``(N·K,)`` rewards (row-major: row 0's K rewards first), float32.
    """
    if last_index is None:
        last_index = last_token_index(attention_mask)
    inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if position_ids is not None:
        inputs["position_ids"] = position_ids
    scores = per_token_scores(model, **inputs)  # (N, L)
    index = last_index.to(scores.device).reshape(scores.shape[0], -1)  # (N, K)
    raw = scores.gather(1, index).reshape(-1).float()  # (N·K,)
    return apply_reward_normalization(raw, model) if normalized else raw


def tokenize_query_response(tokenizer: Any, query: str, response: str) -> tuple[list[int], list[int]]:
    """Token ids of the query (with the tokenizer's special tokens, e.g. BOS) and of the response (without).

    The two are tokenized separately, as the paper works on query tokens followed by response tokens; the K
    responses of one label then share identical query ids.
    """
    q = list(tokenizer(query)["input_ids"])
    r = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    if not q and not r:
        raise ValueError("query and response are both empty")
    return q, r


def pad_right(
    sequences: Sequence[Sequence[int]], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token-id lists to ``(N, L)`` ids and a 0/1 attention mask."""
    width = max(len(s) for s in sequences)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def pack_shared_prefix(
    queries: Sequence[Sequence[int]],
    responses: Sequence[Sequence[Sequence[int]]],
    pad_token_id: int,
    pad_to_multiple_of: int | None = None,
) -> dict[str, torch.Tensor]:
    """Pack each query once with its K responses: one row per label (see :func:`shared_prefix_attention_mask`).

    Row b is ``q_b, r_b0, ..., r_b(K-1)``, right-padded. Position ids run ``0..|q|-1`` over the query and restart
    at ``|q|`` for every response, so every response sits where it would in its own ``query + response`` row.

    Returns:
        ``input_ids`` (B, L); ``attention_mask`` (B, L) 0/1 padding mask (for token counting; the model needs
        the 4D mask built from ``segment_ids``); ``position_ids`` (B, L); ``segment_ids`` (B, L): 0 for the query,
        k+1 for response k, -1 for padding; ``last_index`` (B, K): the last token of each response.
    """
    if len(queries) != len(responses):
        raise ValueError(f"got {len(queries)} queries and {len(responses)} response groups")
    k = len(responses[0])
    rows, segs, poss, lasts = [], [], [], []
    for b, (q, group) in enumerate(zip(queries, responses)):
        if len(group) != k:
            raise ValueError(f"label {b} has {len(group)} responses, expected K={k} like label 0")
        ids, seg, pos, last = list(q), [0] * len(q), list(range(len(q))), []
        for j, r in enumerate(group):
            if not q and not r:
                raise ValueError(f"label {b}: response {j} and the query are both empty")
            ids += list(r)
            seg += [j + 1] * len(r)
            pos += range(len(q), len(q) + len(r))
            last.append(len(ids) - 1 if r else len(q) - 1)
        rows.append(ids)
        segs.append(seg)
        poss.append(pos)
        lasts.append(last)
    input_ids, mask = pad_right(rows, pad_token_id, pad_to_multiple_of)
    n, width = input_ids.shape
    segment_ids = torch.full((n, width), -1, dtype=torch.long)
    position_ids = torch.zeros((n, width), dtype=torch.long)
    for i, (s, p) in enumerate(zip(segs, poss)):
        segment_ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        position_ids[i, : len(p)] = torch.as_tensor(p, dtype=torch.long)
    return {
        "input_ids": input_ids,
        "attention_mask": mask,
        "position_ids": position_ids,
        "segment_ids": segment_ids,
        "last_index": torch.as_tensor(lasts, dtype=torch.long),
    }


def shared_prefix_attention_mask(segment_ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive 4D mask ``(B, 1, L, L)`` for packed rows: 0 where attending is allowed, ``finfo(dtype).min`` elsewhere.

    Token i attends to token j iff ``j <= i`` and (j is a query token, ``segment 0``, or i and j lie in the same
    response). A padding token (segment -1) attends to itself only, so no row is fully masked (no NaNs).
    """
    width = segment_ids.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=segment_ids.device).tril()  # (L, L): j <= i
    si, sj = segment_ids[:, :, None], segment_ids[:, None, :]  # (B, L, 1), (B, 1, L)
    allowed = causal & (si >= 0) & (sj >= 0) & ((sj == 0) | (si == sj))
    allowed |= torch.eye(width, dtype=torch.bool, device=segment_ids.device)
    additive = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    additive.masked_fill_(~allowed, torch.finfo(dtype).min)
    return additive[:, None]  # (B, 1, L, L)


def packed_rewards(model: Any, packed: dict[str, torch.Tensor], normalized: bool = True) -> torch.Tensor:
    """Rewards ``(B·K,)`` of rows made by :func:`pack_shared_prefix` (one forward), row-major by label."""
    dtype = next(model.parameters()).dtype
    if not dtype.is_floating_point:
        dtype = torch.float32
    mask = shared_prefix_attention_mask(packed["segment_ids"], dtype=dtype)
    return last_token_rewards(
        model,
        packed["input_ids"],
        mask,
        last_index=packed["last_index"],
        position_ids=packed["position_ids"],
        normalized=normalized,
    )


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")
    return int(pad)


@torch.no_grad()
def score_texts(
    model: Any,
    tokenizer: Any,
    queries: Sequence[str],
    responses: Sequence[str],
    batch_size: int = 32,
    normalized: bool = True,
) -> torch.Tensor:
    """Rewards ``(N,)`` (float32, CPU) of N (query, response) texts, in batches, read at the last real token.

    ``normalized=True`` (default) applies the gain/bias stored with the model, so a model saved after
    normalization scores the same after :func:`load_reward_model`. The model is put in eval mode for the call.
    """
    queries, responses = list(queries), list(responses)
    if len(queries) != len(responses):
        raise ValueError(f"got {len(queries)} queries but {len(responses)} responses")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pad_id, device = _pad_id(tokenizer), _device(model)
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(queries), batch_size):
            seqs = []
            for q, r in zip(queries[start : start + batch_size], responses[start : start + batch_size]):
                q_ids, r_ids = tokenize_query_response(tokenizer, q, r)
                seqs.append(q_ids + r_ids)
            ids, mask = pad_right(seqs, pad_id)
            out.append(last_token_rewards(model, ids.to(device), mask.to(device), normalized=normalized).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def _adapter_normalization(path_or_hub_id: str, revision: str | None) -> tuple[float, float] | None:
    if os.path.isdir(path_or_hub_id):
        return load_reward_normalization(path_or_hub_id)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        local = hf_hub_download(path_or_hub_id, NORMALIZATION_FILE, revision=revision)
    except EntryNotFoundError:
        return None
    return load_reward_normalization(os.path.dirname(local))


def load_reward_model(path_or_hub_id: str | os.PathLike, **kwargs: Any) -> tuple[Any, Any]:
    """Load a saved reward model (a folder or a Hub id; full model or PEFT adapter) and its tokenizer.

    The gain/bias saved with it (``config.json`` for full models, ``reward_normalization.json`` for adapters) are
    restored, so :func:`score_texts` gives the same normalized rewards as before saving. ``kwargs`` go to
    ``AutoModelForSequenceClassification.from_pretrained`` (``dtype`` defaults to float32, ``num_labels`` to 1).
    The model is returned in eval mode; a missing pad token is set to EOS.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = os.fspath(path_or_hub_id)
    kwargs.setdefault("dtype", torch.float32)
    revision = kwargs.get("revision")
    from peft import PeftConfig

    if os.path.isdir(path):  # a local folder is an adapter iff it has adapter_config.json (no network lookup)
        is_adapter = os.path.isfile(os.path.join(path, "adapter_config.json"))
        peft_config = PeftConfig.from_pretrained(path) if is_adapter else None
    else:
        try:
            peft_config = PeftConfig.from_pretrained(path, revision=revision)
        except Exception:  # not an adapter repo (peft raises ValueError or a hub error)
            peft_config = None

    if peft_config is not None:
        from peft import PeftModel

        base_id = peft_config.base_model_name_or_path
        if base_id is None:
            raise ValueError(f"the adapter at {path} does not name its base model (base_model_name_or_path)")
        base = AutoModelForSequenceClassification.from_pretrained(
            base_id, num_labels=kwargs.pop("num_labels", 1), **kwargs
        )
        model = PeftModel.from_pretrained(base, path, revision=revision)
        stored = _adapter_normalization(path, revision)
        if stored is not None:
            set_reward_normalization(model, *stored)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=kwargs.pop("num_labels", 1), **kwargs
        )

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    except Exception:
        if peft_config is None:
            raise
        tokenizer = AutoTokenizer.from_pretrained(peft_config.base_model_name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    cfg = _unwrap(model).config
    if getattr(cfg, "pad_token_id", None) is None:
        cfg.pad_token_id = tokenizer.pad_token_id  # the model's own pooling (unused here) refuses batches without it
    model.eval()
    return model, tokenizer
