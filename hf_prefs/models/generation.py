"""Sampling from a causal LM the paper's way, and log-probabilities of sampled tokens.

- :func:`sample_responses`: exactly ``response_length`` tokens from softmax(logits / T) per row, with a KV cache;
  no top-k, no top-p, no stop at EOS (an EOS may be sampled and generation goes on).
- :func:`sample_texts`: queries (text) -> sampled token ids in batches, each query encoded once for its n samples.
- :class:`ResponseSampler`: one response per query from rho under a :class:`~hf_prefs.core.rollout.RolloutSpec`;
  the sampler that reward normalization takes.
- :func:`response_logprobs`: log softmax(logits / T) of the sampled tokens.

Shapes: B = batch, Lq = query length (left padded), Lr = response length, V = vocabulary.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch

from .._compat import cache_kwargs, output_cache
from ..core.rollout import RolloutSpec, left_pad, pad_token_id_of, position_ids
from ..memory import release_free_memory
from .attention import decode_step_mask
from .kv_cache import preallocate
from .logprobs import forward_last
from .wrappers import mask_configs, text_config

__all__ = [
    "configured_positions",
    "learned_positions",
    "sample_categorical",
    "sample_responses",
    "sample_texts",
    "response_logprobs",
    "ResponseSampler",
    "model_device",
    "input_pad_id",
    "embeddable_pad_id",
    "embedding_rows",
    "check_vocabulary",
    "same_token_ids",
    "ensure_pad_token_id",
]


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter."""
    return next(model.parameters()).device


def embeddable_pad_id(tokenizer: Any, rows: int | None) -> int:
    """The id to pad with for a model of ``rows`` embedding rows (None: unknown): the tokenizer's pad id, or, when
    that id lies outside the embedding (a pad token added to the tokenizer only, as TRL's PPO scripts do), its EOS id
    or 0."""
    pad = pad_token_id_of(tokenizer)
    if rows is None or pad < rows:
        return pad
    eos = getattr(tokenizer, "eos_token_id", None)
    return int(eos) if eos is not None and eos < rows else 0


def embedding_rows(model: torch.nn.Module) -> int | None:
    """The number of token ids ``model``'s input embedding holds (None where it has none to ask; a LoRA-wrapped
    embedding answers through its base layer)."""
    try:
        embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    except NotImplementedError:  # a model class that does not say (remote code)
        return None
    return getattr(embeddings, "num_embeddings", None) or getattr(getattr(embeddings, "base_layer", None),
                                                                  "num_embeddings", None)


def configured_positions(model: torch.nn.Module) -> int | None:
    """The positions ``model``'s (text) config names (``max_position_embeddings`` or ``n_positions``), or None."""
    config = text_config(model.config)
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def learned_positions(model: torch.nn.Module) -> int | None:
    """The positions of a model that embeds them in a learned table (GPT-2's ``wpe``, OPT's ``embed_positions``, ...):
    :func:`configured_positions`, past which its forward fails (an IndexError on the CPU); None for rotary/ALiBi models
    (longer rows still run)."""
    learned = any(isinstance(m, torch.nn.Embedding) and re.search(r"(^|\.)(wpe|embed_positions|position_embeddings)$", name)
                  for name, m in model.named_modules())
    return configured_positions(model) if learned else None


def check_vocabulary(model: torch.nn.Module, tokenizer: Any, role: str) -> None:
    """Raise a ValueError naming ``role`` when ``tokenizer``'s own vocabulary (``vocab_size``: tokens added to it
    later, such as TRL's [PAD], not counted) has ids that ``model``'s input embedding cannot hold: a model and a
    tokenizer that do not belong together, which would otherwise fail as an index error deep in the embedding."""
    rows, vocab = embedding_rows(model), getattr(tokenizer, "vocab_size", None)
    if rows is not None and isinstance(vocab, int) and vocab > rows:
        raise ValueError(f"{role}: its input embedding holds {rows} token ids, but its tokenizer "
                         f"({getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__}) has {vocab}: "
                         "the model and the tokenizer do not belong together")


def same_token_ids(a: Any, b: Any) -> bool:
    """Whether tokenizers ``a`` and ``b`` map every token to the same id (the same object, or equal vocabularies with
    the tokens added to them): ids one of them wrote can be fed to a model of the other as they are."""
    if a is b:
        return True
    if a is None or b is None or not hasattr(a, "get_vocab") or not hasattr(b, "get_vocab"):
        return False
    return len(a) == len(b) and a.get_vocab() == b.get_vocab()


def input_pad_id(model: torch.nn.Module, tokenizer: Any) -> int:
    """The id to pad ``model``'s inputs with (always under a 0 attention mask): :func:`embeddable_pad_id` for its
    input embedding. The model never attends to it; it must only be embeddable."""
    return embeddable_pad_id(tokenizer, embedding_rows(model))


def ensure_pad_token_id(model: torch.nn.Module, tokenizer: Any = None) -> None:
    """Give a ``*ForSequenceClassification`` model a ``config.pad_token_id`` when it has none (its pooling refuses
    batches without one; hf_prefs reads rewards and values at explicit indices, so the value only has to exist): the
    tokenizer's pad id where the model can embed it (:func:`input_pad_id`: else its EOS id, or 0), as TRL's
    PPOTrainer assumed; without a tokenizer, the config's EOS id (the first, where it lists several), or 0. An id
    outside the embedding would be saved with the model and stop it loading (``padding_idx`` of Llama-like models)."""
    config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    if getattr(config, "pad_token_id", None) is not None:
        return
    if tokenizer is not None:
        config.pad_token_id = input_pad_id(model, tokenizer)
        return
    eos = getattr(config, "eos_token_id", None)
    eos = eos[0] if isinstance(eos, (list, tuple)) and eos else eos
    config.pad_token_id = int(eos) if isinstance(eos, int) else 0


def sample_categorical(logits: torch.Tensor, temperature: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row from softmax(logits / T), by inverse CDF: ``u ~ U(0, 1)``, the first index whose cumulative
    probability exceeds ``u``. Exact categorical sampling with one random number per row (``torch.multinomial``
    spends most of its time drawing over the whole vocabulary).

    Args:
        logits: ``(B, V)``. Returns: ``(B, 1)`` token ids. Raises ``RuntimeError`` on NaN/inf logits.
    """
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # (B, V); -inf logits give probability 0
    cdf = probs.cumsum(-1)
    # NaN or +inf logits (or a row of -inf only) make the row's probabilities NaN, and a NaN reaches its last cumulative
    # sum: checking B totals, not B·V probabilities (2-4 % of a decode step at V = 49k). torch.multinomial's message.
    if not torch.isfinite(cdf[:, -1]).all():
        raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
    u = torch.rand((logits.shape[0], 1), generator=generator, device=logits.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_(max=logits.shape[-1] - 1)


def run_eager(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with torch.compile's stance "force_eager" while it runs (torch >= 2.6): compiled modules it calls run
    their original code. Sampling decodes with a growing cache, which would recompile compiled blocks at every step
    (``torch_compile``: :mod:`hf_prefs.trainers.compilation`)."""

    @functools.wraps(fn)
    def eager(*args: Any, **kwargs: Any) -> Any:
        stance = getattr(torch.compiler, "set_stance", None)
        with stance("force_eager") if stance is not None else nullcontext():
            return fn(*args, **kwargs)

    return eager


@run_eager
@torch.no_grad()
def sample_responses(
    model: torch.nn.Module,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    response_length: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    num_samples: int = 1,
) -> torch.Tensor:
    """Draw exactly ``response_length`` tokens per row from softmax(logits / T), with a KV cache.

    Args:
        model: a causal LM (``model(input_ids, attention_mask, position_ids, cache, use_cache)`` returning ``.logits``
            and ``.cache``; ``past_key_values`` before transformers 5.24, see :func:`hf_prefs._compat.cache_kwargs`);
            PEFT models work too.
        query_ids, query_mask: ``(B, Lq)`` left-padded queries and their mask.
        num_samples: n responses per query. Each query is encoded once and its KV cache repeated n times, the same
            draws as sampling from n copies of each query (rows ``b·n + j``) at a fraction of the prefill cost.
    Returns:
        ``(B·n, Lr)`` sampled token ids. No early stop: EOS is an ordinary token here.

    The KV cache is allocated once for query + response positions (:func:`hf_prefs.models.kv_cache.preallocate`):
    a step writes its position in place. A cache it cannot convert grows by copies as transformers does; on a heap left
    fragmented by an earlier phase (a PPO epoch) those copies land in its free holes, which then stay resident, so
    the free pages are handed back after each such step (:func:`hf_prefs.memory.release_free_memory`; measured in a
    PPO run, SmolLM2, 32 rows: the heap after sampling +0.09 instead of +0.33-0.72 GiB over what is live).
    A step's attention mask is :func:`hf_prefs.models.attention.decode_step_mask`'s: on CPU a grouped-query model's
    steps take SDPA's packed form whether or not the batch has padding.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    mask = query_mask
    # Only the last position's logits are needed from the prefill (logits_to_keep skips the rest of the LM head).
    out = forward_last(model, query_ids, mask, 1, use_cache=True)
    cache, logits = output_cache(out), out.logits[:, -1, :]  # the KV cache; (B, V)
    if num_samples > 1:
        if cache is not None:  # None: a model without a cache (test doubles)
            cache.batch_repeat_interleave(num_samples)
        logits = logits.repeat_interleave(num_samples, dim=0)
        mask = mask.repeat_interleave(num_samples, dim=0)
    in_place = preallocate(cache, query_ids.shape[1] + response_length - 1)  # the last token is never fed back
    configs = mask_configs(model)
    tokens = []
    for step in range(response_length):
        nxt = sample_categorical(logits, temperature, generator)  # (B, 1)
        tokens.append(nxt)
        if step == response_length - 1:
            break
        mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
        out = model(
            input_ids=nxt, attention_mask=decode_step_mask(configs, mask), position_ids=position_ids(mask)[:, -1:],
            use_cache=True, **cache_kwargs(model, cache),
        )
        cache, logits = output_cache(out), out.logits[:, -1, :]
        if not in_place:
            release_free_memory(collect_garbage=False)  # each step re-allocated the growing cache (docstring)
    return torch.cat(tokens, dim=1)


def sample_texts(
    model: torch.nn.Module,
    tokenizer: Any,
    queries: Sequence[str],
    spec: RolloutSpec,
    num_samples: int = 1,
    batch_size: int = 32,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``(len(queries)·n, Lr)`` response ids (CPU), rows ``q·n + j``, in batches of at most ``batch_size`` rows
    (``batch_size // n`` queries, each encoded once for its n samples). When n exceeds ``batch_size`` (a frontier's
    thousands of samples of one query) a query's samples are drawn ``batch_size`` rows at a time, each batch encoding
    the query again: the KV cache, not the prefill, is what grows with the rows (a study drawing 2,048 rows of SmolLM2 at
    once was 7.4 GB resident). The model runs in eval mode."""
    if batch_size < 1 or num_samples < 1:
        raise ValueError(f"batch_size and num_samples must be >= 1, got {batch_size} and {num_samples}")
    if isinstance(queries, str):  # a bare string was sampled as one query per character
        raise TypeError("queries: a list of query texts is needed, got one string (wrap it: [query])")
    pad_id, device = input_pad_id(model, tokenizer), model_device(model)
    query_ids = [list(tokenizer(q)["input_ids"]) for q in queries]
    empty = next((i for i, ids in enumerate(query_ids) if not ids), None)
    if empty is not None:  # a batch of empty queries has no position to sample from
        raise ValueError(f"queries: query {empty} is empty (no tokens): a response continues at least one token")
    per_batch = max(1, batch_size // num_samples)  # queries per batch
    per_call = min(num_samples, batch_size)  # samples of each query per batch
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(query_ids), per_batch):
            ids, mask = left_pad(query_ids[start : start + per_batch], pad_id)
            ids, mask = ids.to(device), mask.to(device)
            for first in range(0, num_samples, per_call):  # one pass unless n > batch_size (then one query's rows)
                n = min(per_call, num_samples - first)
                drawn = sample_responses(model, ids, mask, spec.response_length, spec.temperature, generator, n)
                out.append(drawn.cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros((0, spec.response_length), dtype=torch.long)


def response_logprobs(logits: torch.Tensor, response_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / T) of the sampled response tokens.

    Args:
        logits: ``(B, Lq + Lr, V)`` logits of the model on query+response.
        response_ids: ``(B, Lr)``.
    Returns:
        ``(B, Lr)`` log-probabilities; position t scores response token t, predicted at index Lq - 1 + t.
    """
    lr = response_ids.shape[1]
    logits = logits[:, -lr - 1 : -1, :].float() / temperature
    return torch.gather(logits.log_softmax(-1), 2, response_ids.unsqueeze(-1)).squeeze(-1)


def seeded_generator(model: torch.nn.Module, seed: int | None) -> torch.Generator | None:
    """A generator on the model's device seeded with ``seed`` (None: the global RNG)."""
    return None if seed is None else torch.Generator(device=model_device(model)).manual_seed(seed)


class ResponseSampler:
    """``sampler(queries) -> responses``: one response per query from rho under ``spec`` (length, temperature).

    The paper's reward normalization scores *raw* samples (``cut=False``, the default: all ``response_length``
    tokens); ``cut=True`` returns the text cut by the spec's rule, as PPO's reward sees it. Pass an instance as
    ``normalization_samples`` to :class:`hf_prefs.PreferenceRewardTrainer`.

    The older keyword form ``ResponseSampler(rho, tokenizer, response_length=24, temperature=0.7)`` builds a spec
    without a cut.
    """

    def __init__(
        self,
        policy: torch.nn.Module,
        tokenizer: Any,
        response_length: int = 24,
        temperature: float = 0.7,
        batch_size: int = 32,
        seed: int | None = None,
        *,
        spec: RolloutSpec | None = None,
        cut: bool = False,
    ):
        if spec is None:
            spec = RolloutSpec(response_length=response_length, temperature=temperature, pad_token_id=pad_token_id_of(tokenizer))
        self.policy, self.tokenizer, self.spec, self.cut, self.batch_size = policy, tokenizer, spec, cut, batch_size
        self.generator = seeded_generator(policy, seed)

    def state_dict(self) -> dict[str, Any]:
        """The state of its generator (none with ``seed=None``: the global RNG's, which a Trainer checkpoints)."""
        return {"generator": None if self.generator is None else self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (:meth:`state_dict`): the next call draws what it would have drawn then."""
        if self.generator is not None and state.get("generator") is not None:
            self.generator.set_state(state["generator"])

    def __call__(self, queries: Sequence[str]) -> list[str]:
        ids = sample_texts(self.policy, self.tokenizer, list(queries), self.spec, 1, self.batch_size, self.generator)
        lengths = self.spec.cut(ids).lengths if self.cut else torch.full((len(ids),), ids.shape[1], dtype=torch.long)
        return self.spec.texts(self.tokenizer, ids, lengths)
