"""How PPO calls rewards given as Python functions, and how their outputs become one score per response.

Two forms are taken, told apart by the function's signature (checked when the trainer is built, against the columns
of its datasets):

- ``f(queries, responses)`` — two lists of texts, positionally (hf_prefs' known rewards, the recipes' direct RL);
- TRL's reward-function form (``GRPOTrainer``/``RLOOTrainer``'s ``reward_funcs``), called with keywords only, as TRL
  calls it: ``prompts=``, ``completions=``, ``completion_ids=`` (each response's token ids, cut where the reward reads
  it), ``trainer_state=``, ``log_metric=`` / ``log_extra=`` (:data:`TRAINER_KEYWORDS`) and one keyword per dataset
  column other than ``prompt`` and ``completion`` (a list, one value per response: ``f(completions, solution,
  **kwargs)`` reads the rows' ``solution``). Each keyword is passed only where the function takes it by name or
  through ``**kwargs``. Texts: ``prompts`` the query texts and ``completions`` the response texts; for a
  conversational ``prompt`` column (lists of ``{"role", "content"}`` messages) ``prompts`` the rows' messages and each
  completion ``[{"role": "assistant", "content": text}]``, as TRL passes them. An ``async`` function is awaited.

A function whose first two parameters are ``queries, responses`` (and that names none of TRL's keywords) is called
positionally, even with ``**kwargs``. Otherwise the keyword form is used where the keywords bind and give the function
the responses (``completions`` or
``completion_ids``, by name or through ``**kwargs``), unless the positional call binds too and the function names
none of TRL's keywords (``wrapper(*args, **kwargs)``: refused as ambiguous — ``functools.wraps`` shows the wrapped signature); else
the positional form, unless it would hand ``completions`` the queries (a TRL function asking for a column the dataset
lacks), which is refused, as is a function that fits neither.

Scores (:func:`combined_scores`): each function returns one score per response (a list, a ``(B,)`` or ``(B, 1)``
tensor or array); ``None`` means "no score for this row" (TRL's convention): a row gets the weighted sum
Σ_i w_i·r_i over the functions that scored it (GRPO's ``reward_weights``, default 1 each), and a row no function
scored gets 0 with a warning naming it, as GRPO's ``nansum`` gives. A NaN or infinite score is not a missing one: it
stays, and PPO stops on it (``NonFiniteError``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import torch

__all__ = [
    "NOT_REWARD_KEYWORDS",
    "TRAINER_KEYWORDS",
    "RewardFunction",
    "combined_scores",
    "reward_caller",
    "reward_keywords",
    "reward_name",
    "trl_keywords",
]

#: a reward given as a function: ``f(queries, responses) -> scores`` (or TRL's ``f(prompts=, completions=, **kwargs)``)
RewardFunction = Callable[..., Any]

#: dataset columns not passed to a reward function as keywords (``prompt`` arrives as ``prompts``; TRL leaves out
#: ``completion`` too); a column named as one of :data:`TRAINER_KEYWORDS` is replaced by the trainer's value
NOT_REWARD_KEYWORDS = frozenset({"prompt", "completion", "prompts", "completions"})

#: what the trainer passes besides the texts and the dataset's columns (TRL 1.16's names)
TRAINER_KEYWORDS = ("completion_ids", "trainer_state", "log_extra", "log_metric")

_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_RESPONSES = ("completions", "completion_ids")
_TRL_NAMES = frozenset({"prompts", *_RESPONSES, *TRAINER_KEYWORDS})


def reward_caller(fn: RewardFunction, keywords: Collection[str] = ()) -> Callable[..., Any]:
    """``call(queries, responses, extra=None)`` calling ``fn`` in the form its signature takes (module docstring).

    Args:
        fn: the reward function.
        keywords: the keywords the caller offers besides ``prompts`` and ``completions`` (dataset columns,
            :data:`TRAINER_KEYWORDS`); ``extra`` maps them (and a conversational ``prompt`` column) to their values.
            The form is decided with them: ``f(completions, solution, **kwargs)`` binds only where ``solution`` is
            offered.

    Raises:
        TypeError: ``fn`` binds neither form, both ambiguously, or only the positional one with ``completions``
            first; the message names the signature, what binding said and the keywords offered.
    """
    def call_positional(queries: list[str], responses: list[str], extra: Mapping[str, Any] | None = None) -> Any:
        return _awaited(fn(queries, responses))

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: called as f(queries, responses)
        return call_positional
    params = sig.parameters
    name = f"{reward_name(fn)}{sig}"
    any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    offered = list(dict.fromkeys(["prompts", "completions", *(k for k in keywords if k not in NOT_REWARD_KEYWORDS)]))
    names = [n for n in offered if (n in params and params[n].kind in _KEYWORD) or any_keyword]
    keyword_ok, keyword_err = _binds(sig, **{n: [] for n in names})
    keyword_ok = keyword_ok and any(n in names for n in _RESPONSES)  # it gets the responses
    positional = [p.name for p in params.values() if p.kind in _POSITIONAL]
    positional_ok, positional_err = _binds(sig, [], [])
    named_trl = any(n in params and params[n].kind in _KEYWORD for n in _TRL_NAMES)
    named_positional = positional[:2] == ["queries", "responses"]  # hf_prefs' own names: f(queries, responses, **kw)
    if positional_ok and named_positional and not named_trl:
        return call_positional
    if keyword_ok and not (positional_ok and not named_trl):

        def call_trl(queries: list[str], responses: list[str], extra: Mapping[str, Any] | None = None) -> Any:
            given = trl_keywords(queries, responses, extra or {})
            return _awaited(fn(**{n: given[n] for n in names if n in given}))

        return call_trl
    if keyword_ok:  # both bind and the signature names none of TRL's keywords
        raise TypeError(f"the reward function {name} can be called both as f(queries, responses) and in TRL's keyword "
                        f"form; hf_prefs cannot tell which it expects: give a wrapper functools.wraps (its wrapped "
                        f"signature then shows) or name its parameters")
    if positional_ok and positional[:1] != ["completions"]:
        return call_positional
    if named_trl or any_keyword:
        raise TypeError(f"the reward function {name} takes TRL's keywords but cannot be called with those offered "
                        f"({', '.join(n + '=' for n in offered)}): {keyword_err or 'it gets no completions'}; a "
                        f"parameter other than TRL's must be a column of the dataset")
    raise TypeError(f"the reward function {name} cannot be called as f(queries, responses) (two lists of texts, "
                    f"positionally) nor in TRL's form f(prompts=..., completions=..., **kwargs): {positional_err}")


def reward_keywords(columns: Collection[str]) -> list[str]:
    """The keywords a trainer offers a reward function for a dataset with these ``columns``: the columns but
    :data:`NOT_REWARD_KEYWORDS`, then :data:`TRAINER_KEYWORDS`."""
    return list(dict.fromkeys([*(c for c in columns if c not in NOT_REWARD_KEYWORDS), *TRAINER_KEYWORDS]))


def trl_keywords(queries: list[str], responses: list[str], extra: Mapping[str, Any]) -> dict[str, Any]:
    """TRL's reward keywords for these texts: ``prompts`` and ``completions`` (message lists where ``extra``'s
    ``prompt`` column is conversational, else the texts) and every other entry of ``extra`` but
    :data:`NOT_REWARD_KEYWORDS`."""
    prompt = extra.get("prompt")
    conversational = bool(prompt) and isinstance(prompt[0], list)
    given = {k: v for k, v in extra.items() if k not in NOT_REWARD_KEYWORDS}
    given["prompts"] = list(prompt) if conversational else queries
    given["completions"] = [[{"role": "assistant", "content": r}] for r in responses] if conversational else responses
    return given


def combined_scores(
    functions: Sequence[RewardFunction], weights: Sequence[float] | None, queries: list[str], responses: list[str],
    extra: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """``(B,)`` float32: Σ_i w_i·r_i(x, y) over the functions that scored each row (``None``: no score); 0 with a
    warning for a row none scored (module docstring).

    Raises:
        ValueError: a function's output is not one number (or ``None``) per response; the message names it.
    """
    n = len(responses)
    extra = dict(extra or {})
    total, scored = torch.zeros(n), torch.zeros(n, dtype=torch.bool)
    for i, fn in enumerate(functions):
        values, given = _as_scores(reward_caller(fn, extra)(list(queries), list(responses), extra), n, fn)
        weight = 1.0 if weights is None else float(weights[i])
        total = total + torch.where(given, weight * values, torch.zeros(()))
        scored |= given
    if not bool(scored.all()):
        rows = (~scored).nonzero().flatten().tolist()
        warnings.warn(f"no reward function scored rows {rows[:10]} of {n} (each returned None): their score is 0, as "
                      f"TRL's GRPO gives", stacklevel=2)
    return total


def reward_name(fn: Any) -> str:
    """A reward function's name for messages."""
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def _as_scores(out: Any, n: int, fn: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values (n,), given (n,) bool)`` of one function's output: ``None`` rows not given (value 0)."""
    def bad(why: str) -> ValueError:
        return ValueError(f"the reward function {reward_name(fn)} returned {why}; expected one float score per "
                          f"response (a list of {n} floats, None where it gives none, or a tensor of shape ({n},))")

    if isinstance(out, (list, tuple)):
        if len(out) != n:
            raise bad(f"{len(out)} scores for {n} responses")
        odd = [i for i, s in enumerate(out) if s is not None and (isinstance(s, (str, bytes)) or not _is_number(s))]
        if odd:
            raise bad(f"{type(out[odd[0]]).__name__} {_preview(out[odd[0]])} at row {odd[0]}")
        given = torch.tensor([s is not None for s in out], dtype=torch.bool)
        return torch.tensor([0.0 if s is None else float(s) for s in out], dtype=torch.float32), given
    try:
        values = torch.as_tensor(out).detach().to(torch.float32).cpu()
    except (TypeError, ValueError, RuntimeError) as err:
        raise bad(f"{type(out).__name__} ({_preview(out)}): {err}") from err
    if values.dim() == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.shape != (n,):
        raise bad(f"shape {tuple(values.shape)}")
    return values, torch.ones(n, dtype=torch.bool)


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _awaited(out: Any) -> Any:
    """``out``, or what it resolves to where it is awaitable (an ``async`` reward function's coroutine)."""
    if not inspect.isawaitable(out):
        return out

    async def wait() -> Any:
        return await out

    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop in this thread (a script): run one
        return asyncio.run(wait())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # inside a running loop (a notebook): in another thread
        return pool.submit(asyncio.run, wait()).result()


def _binds(sig: inspect.Signature, *args: Any, **kwargs: Any) -> tuple[bool, str]:
    """Whether ``sig`` takes these arguments, and binding's complaint if not."""
    try:
        sig.bind(*args, **kwargs)
    except TypeError as err:
        return False, str(err)
    return True, ""


def _preview(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
