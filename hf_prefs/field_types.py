"""Config values of the type their field declares.

TrlParser hands a YAML file's values to the dataclasses as argparse defaults, which argparse converts only where they
are strings: ``rm_batch_size: 8.5`` or ``rm_num_train_epochs: [1, 2]`` reach the run unconverted and fail deep in a
stage (after the labels were made). :func:`check_field_types` names such a field before anything runs.

On the command line a value is text: ``--truncate_token null`` reached the run as the token ``"null"`` (a YAML file's
``null`` is None). :func:`unset_null_strings` reads YAML's spellings of null as None where a field may be None.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Collection
from typing import Any, Literal, Union

__all__ = ["check_field_types", "unset_null_strings", "NULL_SPELLINGS"]

#: YAML's spellings of null (and Python's None), read as None for a field that may be None.
NULL_SPELLINGS = frozenset({"null", "Null", "NULL", "~", "None"})


def unset_null_strings(args: Any, names: Collection[str] | None = None) -> list[str]:
    """Set to None each dataclass field of ``args`` (or only ``names``) that may be None and holds one of
    :data:`NULL_SPELLINGS` as text (as the command line gives it); returns the names of the fields set."""
    hints = typing.get_type_hints(type(args))
    unset = []
    for f in dataclasses.fields(args):
        if f.name not in hints or (names is not None and f.name not in names):
            continue
        optional = _is_union(hints[f.name]) and type(None) in typing.get_args(hints[f.name])
        if optional and isinstance(getattr(args, f.name), str) and getattr(args, f.name) in NULL_SPELLINGS:
            setattr(args, f.name, None)
            unset.append(f.name)
    return unset


def check_field_types(args: Any, names: Collection[str] | None = None, *, numbers_elsewhere: bool = False) -> None:
    """Check that each dataclass field of ``args`` (or only ``names``) holds its annotated type: ``int`` (a float
    with an integral value is set to that int, a bool or another float is refused), ``float`` (an int is taken),
    ``bool``, ``str``, ``None`` where the field is optional, ``Literal`` values, ``list[...]`` items. Other
    annotations are not checked. With ``numbers_elsewhere``, the fields outside ``names`` are checked too where
    their annotation is only numbers and bools (``int``, ``float``, ``bool``, optional or not): a library's own
    config (TrainingArguments, ModelConfig) whose other fields its ``__post_init__`` has already converted to types
    their annotations do not name.

    Raises:
        ValueError: naming the field, the type it takes and the value it got.
    """
    hints = typing.get_type_hints(type(args))
    for f in dataclasses.fields(args):
        if f.name not in hints or (names is not None and f.name not in names
                                   and not (numbers_elsewhere and _only_numbers(hints[f.name]))):
            continue
        value, expected = getattr(args, f.name), hints[f.name]
        if _is_int(expected) and isinstance(value, float) and value.is_integer():
            setattr(args, f.name, int(value))  # 8.0 in a YAML file means 8
        elif not _holds(value, expected):
            raise ValueError(f"{f.name}: takes {_describe(expected)}, got {type(value).__name__} {value!r}")


def _is_int(tp: Any) -> bool:
    return tp is int or (_is_union(tp) and int in typing.get_args(tp))


def _only_numbers(tp: Any) -> bool:
    kinds = set(typing.get_args(tp)) if _is_union(tp) else {tp}
    return bool(kinds - {type(None)}) and kinds <= {int, float, bool, type(None)}


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _holds(value: Any, tp: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if _is_union(tp):
        return any(_holds(value, a) for a in args)
    if origin is Literal:
        return value in args
    if origin is list:
        return isinstance(value, list) and (not args or all(_holds(v, args[0]) for v in value))
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return True  # dicts, enums, classes: left to the code that reads them


def _describe(tp: Any) -> str:
    if _is_union(tp):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        args = typing.get_args(tp)
        return f"a list of {_describe(args[0])}" if args else "a list"
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))
