"""How PPO calls a reward given as a Python function.

Two forms are taken, told apart by the function's signature when the trainer is built:

- ``f(queries, responses)`` — two lists of texts, positionally (hf_prefs' known rewards, TRL ≤ 1.12's callables);
- TRL's reward-function form (``GRPOTrainer``/``RLOOTrainer``'s ``reward_funcs``): a ``completions`` parameter, called
  with keywords ``prompts=`` and ``completions=`` (the query and response texts; each only where the function takes
  it by name or through ``**kwargs``). Dataset columns, which TRL passes as further keywords, are not passed.

Either returns one score per response. A function that fits neither is refused with its signature.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["RewardFunction", "reward_caller"]

#: a reward given as a function: ``f(queries, responses) -> scores`` (or TRL's ``f(prompts=, completions=, **kwargs)``)
RewardFunction = Callable[..., Any]

_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def reward_caller(fn: RewardFunction) -> Callable[[list[str], list[str]], Any]:
    """``call(queries, responses)`` calling ``fn`` in the form its signature takes (module docstring).

    Raises:
        TypeError: ``fn`` takes neither two positional lists nor TRL's ``completions=`` keyword.
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: called as f(queries, responses)
        return lambda queries, responses: fn(queries, responses)
    params = sig.parameters
    if "completions" in params and params["completions"].kind in _KEYWORD:
        any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        names = [n for n in ("prompts", "completions") if n in params or any_keyword]
        try:
            sig.bind(**{n: [] for n in names})
        except TypeError as err:
            raise TypeError(f"the reward function {_name(fn)}{sig} takes TRL's completions= but cannot be called with "
                            f"{', '.join(n + '=' for n in names)} alone: {err}") from None

        def call_trl(queries: list[str], responses: list[str]) -> Any:
            given = {"prompts": queries, "completions": responses}
            return fn(**{n: given[n] for n in names})

        return call_trl
    try:
        sig.bind([], [])
    except TypeError as err:
        raise TypeError(f"the reward function {_name(fn)}{sig} cannot be called as f(queries, responses) (two lists of "
                        f"texts, positionally) nor in TRL's form f(prompts=..., completions=..., **kwargs): {err}") from None
    return lambda queries, responses: fn(queries, responses)


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__
