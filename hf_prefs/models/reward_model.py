"""Reading the reward r(x, y) from a sequence-classification model, loading and scoring.

The paper's reward model is an LM trunk plus a scalar head read at the **last token** of query+response,
then ``r = gain · out + bias`` (see :mod:`hf_prefs.core.normalization`). Two details matter:

- **Explicit last-token index.** The score head's per-token output is captured while the model runs its ordinary
  forward (so PEFT, accelerate/DDP wrappers, gradient checkpointing and packed rows behave as usual) and the reward is
  gathered at an explicit index: the last attended token of each row. A response is tokenized without its trailing
  pad tokens (:func:`without_trailing_pad`: with pad == EOS, an EOS it ends with), so that index is where
  ``*ForSequenceClassification``'s own pooling ("the rightmost token that is not the pad") and ``trl.RewardTrainer``
  read it — a saved model scores as it was trained.
- **Query-prefix sharing (optional).** :func:`packed_rewards` scores rows packed by
  :func:`hf_prefs.core.packing.pack_shared_prefix` (each query encoded once for its K responses).
- **Normalization.** ``r = gain · out + bias`` (:mod:`hf_prefs.core.normalization`). GPT-2 / Llama score heads have
  no bias and a bias added at run time is lost on reload, so gain and bias live in the model's config
  (``config.hf_prefs_reward_gain`` / ``config.hf_prefs_reward_bias``) and travel with ``save_pretrained`` /
  ``push_to_hub`` (PEFT adapter folders get a file as well: :mod:`hf_prefs.models.loading`).
  :func:`normalize_reward_model` is the paper's procedure (score rho's samples, set gain/bias), the only one.

Shapes: N = rows, L = padded length, B = labels, K = samples per label.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..core.normalization import reward_normalization
from ..core.packing import pad_right, shared_prefix_attention_mask
from .generation import ensure_pad_token_id, input_pad_id, learned_positions, model_device
from .wrappers import unwrap_distributed

__all__ = [
    "GAIN_KEY",
    "BIAS_KEY",
    "SUFFIX_KEY",
    "get_response_suffix",
    "get_turn_end",
    "reads_as_trained_here",
    "set_response_suffix",
    "set_turn_end",
    "with_response_suffix",
    "unwrap_model",
    "score_head",
    "check_scalar_head",
    "reads_every_position",
    "pooled_rewards",
    "init_score_head",
    "last_token_index",
    "get_reward_normalization",
    "has_reward_normalization",
    "set_reward_normalization",
    "apply_reward_normalization",
    "per_token_scores",
    "last_token_rewards",
    "tokenize_query_response",
    "query_ids_and_suffix",
    "adds_bos",
    "without_added_bos",
    "packed_rewards",
    "without_trailing_pad",
    "score_texts",
    "score_token_ids",
    "normalize_reward_model",
    "normalize_to",
]

#: Config attribute holding the gain.
GAIN_KEY = "hf_prefs_reward_gain"
#: Config attribute holding the bias.
BIAS_KEY = "hf_prefs_reward_bias"
#: Config key of the text a reward model reads after each response (:func:`set_response_suffix`).
SUFFIX_KEY = "hf_prefs_response_suffix"
#: Config key of the chat template's end of an assistant turn a reward model trained on chats read (:func:`set_turn_end`).
TURN_END_KEY = "hf_prefs_turn_end"

#: A source of responses from rho for given queries: ``sampler(queries) -> responses`` (one per query).
ResponseSource = Callable[[list[str]], Sequence[str]]


def unwrap_model(model: Any) -> Any:
    """The underlying ``PreTrainedModel`` of a DDP/accelerate-wrapped and/or PEFT model."""
    model = unwrap_distributed(model)
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def score_head(model: Any) -> nn.Module:
    """The scalar head (``model.score``) of a sequence-classification model; PEFT wraps it in place."""
    base = unwrap_model(model)
    head = getattr(base, "score", None)
    if not isinstance(head, nn.Module):
        raise TypeError(
            f"{type(base).__name__} has no `score` head read at every position: this needs an "
            "`*ForSequenceClassification` causal LM (e.g. GPT2ForSequenceClassification, LlamaForSequenceClassification) "
            "with num_labels=1"
        )
    return head


def reads_every_position(model: Any) -> bool:
    """Whether ``model`` has a scalar head applied at every position (``score``: transformers' causal-LM
    classifiers), so a reward can be read at any token (packed rows, a value function). Otherwise (an encoder
    classifier: BERT's or DeBERTa's pooler and ``classifier``) its reward is its own output, one per row
    (:func:`pooled_rewards`), as ``trl.RewardTrainer`` reads every model."""
    return isinstance(getattr(unwrap_model(model), "score", None), nn.Module)


def pooled_rewards(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``(N,)`` the model's own output ``model(input_ids, attention_mask).logits[:, 0]`` (its pooling: an encoder's
    first token), for a reward model without a per-position head (:func:`reads_every_position`)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    if logits.dim() != 2 or logits.shape[-1] != 1:
        raise ValueError(f"a reward model must output one score per row (num_labels=1), got logits of shape "
                         f"{tuple(logits.shape)}")
    return logits[:, 0]


def check_scalar_head(model: Any, role: str) -> None:
    """Raise naming ``role`` unless ``model`` is a reward model: an ``*ForSequenceClassification`` model (a ``score``
    head read at every position, :func:`score_head`, or an encoder's pooled classifier) of one output
    (``config.num_labels == 1``; a classifier with 2 labels reads no single reward)."""
    if not type(unwrap_model(model)).__name__.endswith("ForSequenceClassification"):
        score_head(model)  # a causal LM classifier by another name still has its `score`
    labels = getattr(getattr(unwrap_model(model), "config", None), "num_labels", 1)
    if labels != 1:
        raise ValueError(f"{role}: its score head has num_labels={labels}; a reward model outputs one score "
                         "(load it with num_labels=1)")


def init_score_head(model: Any, std: float | None = None) -> float:
    """Re-initialise the scalar head as the paper's code does: weights ~ N(0, std^2) with std = 1/sqrt(d + 1)
    (d = the trunk's width; transformers' default is N(0, 0.02^2)), bias 0 where there is one. Returns the std."""
    head = score_head(model)
    weight = head.weight if hasattr(head, "weight") else head.base_layer.weight  # PEFT wraps it in place
    std = 1.0 / math.sqrt(weight.shape[-1] + 1) if std is None else float(std)
    with torch.no_grad():
        weight.normal_(0.0, std)
        bias = getattr(head, "bias", None)
        if bias is not None:
            bias.zero_()
    return std


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """``(N,)`` index of the last attended position of each row of a 2D ``(N, L)`` 0/1 mask (any padding side)."""
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be 2D (N, L), got shape {tuple(attention_mask.shape)}")
    if (attention_mask.sum(-1) == 0).any():
        raise ValueError("a row of the attention mask has no attended token")
    idx = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (idx * (attention_mask != 0)).argmax(dim=-1)


def get_response_suffix(model: Any) -> str:
    """The text ``model`` was trained to read after each response ("" if none): :func:`score_texts` appends it."""
    return getattr(unwrap_model(model).config, SUFFIX_KEY, None) or ""


def set_response_suffix(model: Any, suffix: str | None) -> None:
    """Store on ``model``'s config (saved with it) the text it reads after each response: the EOS that
    :class:`~hf_prefs.trainers.reward_trainer.PreferenceRewardTrainer` appends to TRL's pairwise text completions, as
    ``trl.RewardTrainer`` does, where the model reads it (a pad token that is not EOS); ``None``/"" stores "" (the
    responses as given). Either way the key marks the reading as set by hf_prefs's reward trainers
    (:func:`reads_as_trained_here`)."""
    setattr(unwrap_model(model).config, SUFFIX_KEY, suffix or "")


def get_turn_end(model: Any) -> str:
    """The end of an assistant turn that ``model``'s chat training samples ended with ("" if none: not trained on
    chats here): PPO appends it to a response that ended at TRL's stop token
    (:meth:`~hf_prefs.core.rollout.RolloutSpec.turn_texts`)."""
    return getattr(unwrap_model(model).config, TURN_END_KEY, None) or ""


def set_turn_end(model: Any, turn_end: str | None) -> None:
    """Store on ``model``'s config (saved with it) the chat template's end of an assistant turn
    (:func:`~hf_prefs.chat_templates.assistant_turn_end`) its chat samples ended with; ``None``/"" removes it."""
    config = unwrap_model(model).config
    if turn_end:
        setattr(config, TURN_END_KEY, turn_end)
    elif hasattr(config, TURN_END_KEY):
        delattr(config, TURN_END_KEY)


def reads_as_trained_here(model: Any) -> bool:
    """Whether hf_prefs's reward trainers set ``model``'s reading (:func:`set_response_suffix`; a normalization alone
    does not): it is then read as it was trained, the response text as given plus its suffix; a reward model from
    elsewhere is read where TRL read it (a stop token included: :meth:`~hf_prefs.core.rollout.RolloutSpec.model_texts`)."""
    return hasattr(unwrap_model(model).config, SUFFIX_KEY)


def with_response_suffix(response: str, suffix: str) -> str:
    """``response`` + ``suffix``, unless it already ends with it (a response that kept its EOS)."""
    return response if not suffix or response.endswith(suffix) else response + suffix


def get_reward_normalization(model: Any) -> tuple[float, float]:
    """``(gain, bias)`` stored on ``model``'s config; ``(1.0, 0.0)`` if it was never normalized."""
    cfg = unwrap_model(model).config
    return float(getattr(cfg, GAIN_KEY, 1.0)), float(getattr(cfg, BIAS_KEY, 0.0))


def has_reward_normalization(model: Any) -> bool:
    """Whether a gain and bias were ever stored on ``model``'s config (:func:`set_reward_normalization`)."""
    return hasattr(unwrap_model(model).config, GAIN_KEY)


def set_reward_normalization(model: Any, gain: float, bias: float) -> None:
    """Store ``gain`` and ``bias`` on ``model``'s config (saved by ``save_pretrained`` / ``push_to_hub``)."""
    gain, bias = float(gain), float(bias)
    if not (math.isfinite(gain) and math.isfinite(bias)):
        raise ValueError(f"gain and bias must be finite, got gain={gain}, bias={bias}")
    cfg = unwrap_model(model).config
    setattr(cfg, GAIN_KEY, gain)
    setattr(cfg, BIAS_KEY, bias)


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
    if not reads_every_position(model):  # an encoder classifier: its own pooled output, one per row
        if attention_mask.dim() != 2 or position_ids is not None:
            raise ValueError(f"{type(unwrap_model(model)).__name__} reads one pooled reward per row (no `score` head "
                             "at every position): rows that pack several samples need a causal-LM reward model")
        raw = pooled_rewards(model, input_ids, attention_mask).float()
        return apply_reward_normalization(raw, model) if normalized else raw
    if last_index is None:
        last_index = last_token_index(attention_mask)
    inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if position_ids is not None:
        inputs["position_ids"] = position_ids
    scores = per_token_scores(model, **inputs)  # (N, L)
    index = last_index.to(scores.device).reshape(scores.shape[0], -1)  # (N, K)
    raw = scores.gather(1, index).reshape(-1).float()  # (N·K,)
    return apply_reward_normalization(raw, model) if normalized else raw


def adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts its BOS token in front of a text it tokenizes with special tokens."""
    bos_id = getattr(tokenizer, "bos_token_id", None)
    return bos_id is not None and tokenizer("x")["input_ids"][:1] == [bos_id]


def without_added_bos(tokenizer: Any, text: str) -> str:
    """``text`` without a leading BOS token text where the tokenizer adds BOS itself (:func:`adds_bos`; a chat
    template that writes ``{{ bos_token }}``): the query is tokenized with special tokens
    (:func:`tokenize_query_response`), which would give it two."""
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos) and adds_bos(tokenizer):
        return text[len(bos):]
    return text


def query_ids_and_suffix(tokenizer: Any, query: str) -> tuple[list[int], list[int]]:
    """``query`` tokenized with the tokenizer's special tokens, split where its text ends: ``(ids up to the text's
    end, the special tokens after it)``. The suffix (BERT's ``[SEP]``, an EOS a tokenizer adds itself) closes the
    whole text, so it goes after each response (:func:`tokenize_query_response`): query + response then hold the
    tokens of their joined text, which ``trl.RewardTrainer`` reads. GPT-2's and Llama's tokenizers add none after."""
    ids = list(tokenizer(query)["input_ids"])
    if not ids or ids[-1] not in set(getattr(tokenizer, "all_special_ids", ()) or ()):
        return ids, []
    plain = list(tokenizer(query, add_special_tokens=False)["input_ids"])
    if not plain:  # nothing to find the text's end by
        return ids, []
    for start in range(len(ids) - len(plain) + 1):
        if ids[start : start + len(plain)] == plain:
            return ids[: start + len(plain)], ids[start + len(plain) :]
    return ids, []


def tokenize_query_response(tokenizer: Any, query: str, response: str) -> tuple[list[int], list[int]]:
    """Token ids of the query (with the tokenizer's special tokens before it, e.g. BOS or ``[CLS]``) and of the
    response (without, but for the ones that close a text, e.g. ``[SEP]``: :func:`query_ids_and_suffix`).

    The two are tokenized separately, as the paper works on query tokens followed by response tokens; the K
    responses of one label then share identical query ids.
    """
    q, suffix = query_ids_and_suffix(tokenizer, query)
    r = list(tokenizer(response, add_special_tokens=False)["input_ids"]) + suffix
    if not q and not r:
        raise ValueError("query and response are both empty")
    return q, r


def without_trailing_pad(ids: Sequence[int], pad_id: int | None) -> list[int]:
    """``ids`` without the pad tokens at their end. A sequence classifier reads a row at its last token that is not the
    pad (transformers' own forward, ``trl.RewardTrainer``), so a response ending in a token that is the pad (the EOS,
    where the tokenizer pads with it) is read at the token before it; without those tokens every mask reads it there
    too, with the same score (a causal model's later tokens do not change an earlier position)."""
    ids = list(ids)
    while pad_id is not None and ids and ids[-1] == pad_id:
        ids.pop()
    return ids


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
    Each response is read with the model's response suffix (:func:`get_response_suffix`): nothing for the paper's
    K-way labels; the EOS for a model trained on TRL's pairwise text rows, to which the trainer appended it as
    ``trl.RewardTrainer`` does — so it is read where it was trained (PPO and the normalization score through here).
    """
    for name, texts in (("queries", queries), ("responses", responses)):
        if isinstance(texts, str):  # list() of a string is its characters: one score per character
            raise TypeError(f"score_texts: {name} must be a list of texts, got one string (score one pair as "
                            f"score_texts(model, tokenizer, [query], [response]))")
    queries, responses = list(queries), list(responses)
    if len(queries) != len(responses):
        raise ValueError(f"got {len(queries)} queries but {len(responses)} responses")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pad_id, device = input_pad_id(model, tokenizer), model_device(model)
    ensure_pad_token_id(model, tokenizer)
    suffix, positions = get_response_suffix(model), learned_positions(unwrap_distributed(model))
    responses = [with_response_suffix(r, suffix) for r in responses]
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(queries), batch_size):
            seqs = []
            for i, (q, r) in enumerate(zip(queries[start : start + batch_size], responses[start : start + batch_size])):
                try:
                    q_ids, r_ids = tokenize_query_response(tokenizer, q, r)
                except ValueError as err:
                    raise ValueError(f"score_texts: row {start + i}: {err}") from None
                seqs.append(q_ids + without_trailing_pad(r_ids, pad_id))  # read where the model's own forward reads
            _check_positions(seqs, start, positions)
            ids, mask = pad_right(seqs, pad_id)
            out.append(last_token_rewards(model, ids.to(device), mask.to(device), normalized=normalized).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def score_token_ids(
    model: Any,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    response_ids: torch.Tensor,
    lengths: torch.Tensor,
    pad_token_id: int,
    batch_size: int = 32,
    normalized: bool = True,
) -> torch.Tensor:
    """Rewards ``(B,)`` (float32, on the model's device) of query + cut response *token ids*, read as TRL 1.12's
    ``PPOTrainer`` read a reward model (its ``get_reward``; no decoding and re-tokenizing in between):

        kept_i  = response_i[:lengths_i]                  (TRL filled the rest with the pad)
        n_i     = index of the first ``pad_token_id`` in kept_i, else lengths_i
        r_i     = model(query_i + kept_i[:n_i]) at its last token (the query's last where n_i = 0)

    with the tokens whose id is ``pad_token_id`` left out of the attention (TRL's mask ``ids != pad``; the query's
    padding by ``query_mask``) and positions counting the attended tokens. ``pad_token_id`` is the tokenizer's own
    (TRL's ``processing_class.pad_token_id``: a ``[PAD]`` outside the embedding is never sampled, so a response
    ending at its EOS is read at the EOS; a tokenizer padding with EOS reads the token before it). The ids the
    model does not attend are fed as 0, as TRL fed them.

    Args:
        query_ids, query_mask: ``(B, Lq)`` left-padded queries and their 0/1 mask.
        response_ids: ``(B, Lr)`` sampled responses; lengths: ``(B,)`` where each is cut (its kept tokens).
    """
    device = model_device(model)
    width = response_ids.shape[1]
    kept = torch.arange(width, device=lengths.device)[None] < lengths[:, None]  # (B, Lr)
    pads = (response_ids.to(lengths.device) == pad_token_id) & kept
    read = torch.where(pads.any(1), pads.int().argmax(1), lengths)  # (B,) response tokens read
    response_mask = torch.arange(width, device=lengths.device)[None] < read[:, None]
    mask = torch.cat([query_mask.bool().to(lengths.device) & (query_ids.to(lengths.device) != pad_token_id),
                      response_mask], 1)  # (B, Lq + Lr)
    ids = torch.cat([query_ids.to(lengths.device), response_ids.to(lengths.device)], 1).masked_fill(~mask, 0)
    positions = mask.long().cumsum(1) - mask.long()  # TRL's: the attended tokens before each position
    last = query_ids.shape[1] + read - 1  # (B,)
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, ids.shape[0], batch_size):
            rows = slice(start, start + batch_size)
            out.append(last_token_rewards(model, ids[rows].to(device), mask[rows].long().to(device),
                                          last_index=last[rows].to(device), position_ids=positions[rows].to(device),
                                          normalized=normalized))
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, device=device)


def _check_positions(seqs: list[list[int]], start: int, positions: int | None) -> None:
    """A ``ValueError`` naming the first (query, response) row of a batch beginning at row ``start`` that holds more
    tokens than a learned position table's ``positions`` (the forward failed with a bare IndexError on the CPU, a
    device-side assert on a GPU)."""
    if positions is None:
        return
    for i, seq in enumerate(seqs):
        if len(seq) > positions:
            raise ValueError(f"score_texts: row {start + i} is {len(seq)} tokens (query + response), more than the "
                             f"reward model's {positions} positions; shorten the query or the response")


def normalize_reward_model(
    model: Any,
    tokenizer: Any,
    queries: Sequence[str],
    responses: Sequence[str] | ResponseSource,
    target_mean: float = 0.0,
    target_std: float = 1.0,
    batch_size: int = 32,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    warn_peft: bool = True,
) -> tuple[float, float]:
    """The paper's normalization: reset gain/bias to 1/0, score rho's samples, store the gain/bias that map them to
    mean ``target_mean`` and population std ``target_std`` (:func:`hf_prefs.core.normalization.reward_normalization`).

    Args:
        model: a sequence-classification reward model (plain or PEFT).
        tokenizer: its tokenizer.
        queries: the queries x (the paper uses ``normalize_samples`` = 256 of them).
        responses: responses y ~ rho(.|x), one per query (e.g. the ``response`` column of a dataset of rho samples),
            or a sampler ``responses(queries) -> list[str]`` that draws them (raw samples at the task temperature,
            as the paper: :class:`hf_prefs.models.generation.ResponseSampler`).
        target_mean, target_std: the targets (paper: 0 and 1).
        batch_size: scoring batch size.
        gather: on several processes, each scores its share of the samples and ``gather`` maps its raw scores to all
            processes' (e.g. ``accelerator.gather``), so every process computes the same gain/bias.
        warn_peft: warn that a PEFT model's ``save_pretrained`` does not write them (False: the caller saves them).

    Returns:
        The new ``(gain, bias)``, also stored on the model's config — the base model's for a PEFT model, which its
        ``save_pretrained`` does not write (the adapter folder only): save them with
        :func:`hf_prefs.save_reward_normalization` (``PreferenceRewardTrainer.save_model`` does), or
        ``load_reward_model`` reads 1 and 0 (a warning says so here).
    """
    if warn_peft and hasattr(unwrap_distributed(model), "peft_config"):
        warnings.warn("normalize_reward_model: a PEFT model's save_pretrained writes the adapter, not the gain and bias "
                      "(they are on the base model's config): save them next to it with "
                      "hf_prefs.save_reward_normalization(model, folder), as PreferenceRewardTrainer.save_model does",
                      stacklevel=2)
    queries = list(queries)
    responses = list(responses(queries)) if callable(responses) else list(responses)
    if len(responses) != len(queries):
        raise ValueError(f"got {len(queries)} queries but {len(responses)} responses; need one response per query")
    raw = score_texts(model, tokenizer, queries, responses, batch_size=batch_size, normalized=False)
    return normalize_to(model, gather(raw) if gather is not None else raw, target_mean, target_std)


def normalize_to(model: Any, raw: torch.Tensor, target_mean: float = 0.0,
                 target_std: float = 1.0) -> tuple[float, float]:
    """Store on ``model`` the gain/bias that map its raw scores ``raw`` (of rho's samples, read without gain/bias)
    to mean ``target_mean`` and population std ``target_std``; returns them."""
    gain, bias = reward_normalization(raw.cpu(), target_mean=target_mean, target_std=target_std)
    set_reward_normalization(model, gain, bias)
    return gain, bias
