"""How PPO calls a reward given as a Python function.

Two forms are taken, told apart by the function's signature (checked when the trainer is built, against the columns
of its datasets):

- ``f(queries, responses)`` — two lists of texts, positionally (hf_prefs' known rewards, the recipes' direct RL);
- TRL's reward-function form (``GRPOTrainer``/``RLOOTrainer``'s ``reward_funcs``): a ``completions`` parameter, called
  with keywords only, as TRL calls it: ``prompts=``, ``completions=``, ``completion_ids=`` (each response's token ids,
  cut where the reward reads it), ``trainer_state=`` and one keyword per dataset column other than ``prompt``,
  ``completion`` and ``completion_ids`` (a list, one value per response: ``f(completions, solution, **kwargs)`` reads
  the rows' ``solution``). Each keyword is passed only where the function takes it by name or through ``**kwargs``.
  Texts: ``prompts`` the query texts and ``completions`` the response texts; for a conversational ``prompt`` column
  (lists of ``{"role", "content"}`` messages) ``prompts`` the rows' messages and each completion
  ``[{"role": "assistant", "content": text}]``, as TRL passes them.

The keyword form is used where the keywords bind; else the positional one, unless it would hand ``completions`` the
queries (``completions`` first: a TRL function asking for a column the dataset lacks), which is refused, as is a
function that fits neither form.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping
from typing import Any

__all__ = ["NOT_REWARD_KEYWORDS", "TRAINER_KEYWORDS", "RewardFunction", "reward_caller", "reward_keywords", "trl_keywords"]

#: a reward given as a function: ``f(queries, responses) -> scores`` (or TRL's ``f(prompts=, completions=, **kwargs)``)
RewardFunction = Callable[..., Any]

#: dataset columns not passed to a reward function as keywords (``prompt`` arrives as ``prompts``; TRL leaves out
#: ``completion`` too); a ``completion_ids`` column is replaced by the responses' ids
NOT_REWARD_KEYWORDS = frozenset({"prompt", "completion", "prompts", "completions"})

#: what the trainer passes besides the texts and the dataset's columns
TRAINER_KEYWORDS = ("completion_ids", "trainer_state")

_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def reward_caller(fn: RewardFunction, keywords: Collection[str] = ()) -> Callable[..., Any]:
    """``call(queries, responses, extra=None)`` calling ``fn`` in the form its signature takes (module docstring).

    Args:
        fn: the reward function.
        keywords: the keywords the caller offers besides ``prompts`` and ``completions`` (dataset columns,
            ``completion_ids``, ``trainer_state``); ``extra`` maps them (and a conversational ``prompt`` column) to one
            value per response. The form is decided with them: ``f(completions, solution, **kwargs)`` binds only where
            ``solution`` is offered.

    Raises:
        TypeError: ``fn`` binds neither form, or only the positional one with ``completions`` first; the message
            names the signature, what binding said and the keywords offered.
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: called as f(queries, responses)
        return lambda queries, responses, extra=None: fn(queries, responses)
    params = sig.parameters
    positional = [p.name for p in params.values() if p.kind in _POSITIONAL]
    positional_ok, positional_err = _binds(sig, [], [])
    if "completions" in params and params["completions"].kind in _KEYWORD:
        any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        offered = ["prompts", "completions", *(k for k in keywords if k not in NOT_REWARD_KEYWORDS)]
        names = [n for n in dict.fromkeys(offered) if n in params or any_keyword]
        keyword_ok, keyword_err = _binds(sig, **{n: [] for n in names})
        if keyword_ok:

            def call_trl(queries: list[str], responses: list[str], extra: Mapping[str, list] | None = None) -> Any:
                given = trl_keywords(queries, responses, extra or {})
                return fn(**{n: given[n] for n in names if n in given})

            return call_trl
        if not positional_ok or positional[:1] == ["completions"]:
            raise TypeError(f"the reward function {_name(fn)}{sig} takes TRL's completions= but cannot be called with "
                            f"the keywords offered ({', '.join(n + '=' for n in offered)}): {keyword_err}; a "
                            f"parameter other than TRL's must be a column of the dataset")
    if not positional_ok:
        raise TypeError(f"the reward function {_name(fn)}{sig} cannot be called as f(queries, responses) (two lists of "
                        f"texts, positionally) nor in TRL's form f(prompts=..., completions=..., **kwargs): "
                        f"{positional_err}")
    return lambda queries, responses, extra=None: fn(queries, responses)


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


def _binds(sig: inspect.Signature, *args: Any, **kwargs: Any) -> tuple[bool, str]:
    """Whether ``sig`` takes these arguments, and binding's complaint if not."""
    try:
        sig.bind(*args, **kwargs)
    except TypeError as err:
        return False, str(err)
    return True, ""


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__
