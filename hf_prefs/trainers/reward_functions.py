"""How PPO calls a reward given as a Python function.

Two forms are taken, told apart by the function's signature when the trainer is built:

- ``f(queries, responses)`` — two lists of texts, positionally (hf_prefs' known rewards, the recipes' direct RL);
- TRL's reward-function form (``GRPOTrainer``/``RLOOTrainer``'s ``reward_funcs``): a ``completions`` parameter, called
  with keywords ``prompts=`` and ``completions=`` (the query and response texts; each only where the function takes
  it by name or through ``**kwargs``) where a positional call would not give ``completions`` the responses.
  Dataset columns, which TRL passes as further keywords, are not passed.

Either gets the decoded query texts and the response texts cut by the run's rule (what the reward sees) and returns
one score per response. A function that fits neither is refused with its signature.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["RewardFunction", "reward_caller"]

#: a reward given as a function: ``f(queries, responses) -> scores`` (or TRL's ``f(prompts=, completions=, **kwargs)``)
RewardFunction = Callable[..., Any]

_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def reward_caller(fn: RewardFunction) -> Callable[[list[str], list[str]], Any]:
    """``call(queries, responses)`` calling ``fn`` in the form its signature takes (module docstring): TRL's keywords
    where ``fn`` binds them and a positional call would not give ``completions`` the responses (``f(completions,
    **kwargs)``, ``f(completions, prompts)``), else positionally (``f(queries, responses)``, ``f(queries,
    completions)``, ``f(prompts, completions, **kwargs)``: the same texts either way).

    Raises:
        TypeError: ``fn`` takes neither two positional lists nor TRL's ``completions=`` keyword.
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: called as f(queries, responses)
        return lambda queries, responses: fn(queries, responses)
    params = sig.parameters
    positional = [p.name for p in params.values() if p.kind in _POSITIONAL]
    positional_ok, positional_err = _binds(sig, [], [])
    if "completions" in params and params["completions"].kind in _KEYWORD:
        any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        names = [n for n in ("prompts", "completions") if n in params or any_keyword]
        keyword_ok, keyword_err = _binds(sig, **{n: [] for n in names})
        if keyword_ok and not (positional_ok and positional[1:2] == ["completions"]):

            def call_trl(queries: list[str], responses: list[str]) -> Any:
                given = {"prompts": queries, "completions": responses}
                return fn(**{n: given[n] for n in names})

            return call_trl
        if not positional_ok:
            raise TypeError(f"the reward function {_name(fn)}{sig} takes TRL's completions= but cannot be called with "
                            f"{', '.join(n + '=' for n in names)} alone: {keyword_err}")
    if not positional_ok:
        raise TypeError(f"the reward function {_name(fn)}{sig} cannot be called as f(queries, responses) (two lists of "
                        f"texts, positionally) nor in TRL's form f(prompts=..., completions=..., **kwargs): "
                        f"{positional_err}")
    return lambda queries, responses: fn(queries, responses)


def _binds(sig: inspect.Signature, *args: Any, **kwargs: Any) -> tuple[bool, str]:
    """Whether ``sig`` takes these arguments, and binding's complaint if not."""
    try:
        sig.bind(*args, **kwargs)
    except TypeError as err:
        return False, str(err)
    return True, ""


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__
