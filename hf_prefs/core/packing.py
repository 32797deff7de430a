"""Packing the K responses of one query into one row: the query is encoded once.

K responses to one query share the query tokens. :func:`pack_shared_prefix` lays out ``query, response_0, ...,
response_{K-1}`` in one row with a block attention mask (each response sees the query and itself, causally) and
position ids restarting after the query, so every response sits where it would in its own ``query + response`` row
and a reward read at its last token equals the reward of that row (tested to 1e-5). The model needs an attention
implementation that takes a 4D mask (``eager`` or ``sdpa``; not flash-attention).

Shapes: N = rows, L = padded length, B = labels, K = samples per label.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["pad_right", "pack_shared_prefix", "shared_prefix_allowed", "shared_prefix_attention_mask"]


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


def shared_prefix_allowed(segment_ids: torch.Tensor) -> torch.Tensor:
    """Boolean ``(B, L, L)``: whether token i may attend to token j in rows with ``segment_ids`` ``(B, L)`` (0 for the
    query, k+1 for response k, -1 for padding).

    Token i attends to token j iff ``j <= i`` and (j is a query token, ``segment 0``, or i and j lie in the same
    response). A padding token (segment -1) attends to itself only, so no row is empty (no NaNs). With segments 0
    and -1 only (``attention_mask - 1``) this is the causal padding mask plus the diagonal."""
    width = segment_ids.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=segment_ids.device).tril()  # (L, L): j <= i
    si, sj = segment_ids[:, :, None], segment_ids[:, None, :]  # (B, L, 1), (B, 1, L)
    allowed = causal & (si >= 0) & (sj >= 0) & ((sj == 0) | (si == sj))
    allowed |= torch.eye(width, dtype=torch.bool, device=segment_ids.device)
    return allowed


def shared_prefix_attention_mask(segment_ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive 4D mask ``(B, 1, L, L)`` for packed rows: 0 where :func:`shared_prefix_allowed` allows attending,
    ``finfo(dtype).min`` elsewhere."""
    allowed = shared_prefix_allowed(segment_ids)
    additive = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    additive.masked_fill_(~allowed, torch.finfo(dtype).min)
    return additive[:, None]  # (B, 1, L, L)
