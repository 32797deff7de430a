"""``Dataset.map`` with a function that reads a tokenizer, fingerprinted from the tokenizer's contents.

datasets names each map's result by hashing its function with dill (the fingerprint that keys the cache files of a
dataset read from disk), which pickles every object the function closes over. For a tokenizer that is its whole
vocabulary and merge list as Python objects: 0.5 s per map for GPT-2's in a fresh process, 2–3 s in a process with
a large heap (a test session, where the pickling's allocations trigger full garbage collections), while the map
itself takes milliseconds on a few hundred rows. :func:`map_with_tokenizer` passes ``new_fingerprint`` instead:
datasets' own hash of the function (code, defaults, closure, globals; keyword-only defaults added) with the tokenizer in its closure replaced by
:func:`tokenizer_digest` (~50 ms), the dataset's fingerprint and the map's arguments. Where that cannot be done (a
tokenizer without a Rust backend, a callable that is not a plain function) datasets hashes as before.
"""

from __future__ import annotations

import hashlib
import json
import re
import types
from typing import Any, Callable

from datasets import Dataset, IterableDataset
from datasets.fingerprint import Hasher

from ._compat import dataset_fingerprint

__all__ = ["tokenizer_digest", "map_with_tokenizer"]

# attributes left out of the digest: the backend (hashed as its JSON), its vocabulary and merges as Python objects
# (the same contents), and bookkeeping that changes as warnings are shown
_NOT_HASHED = frozenset({"_tokenizer", "backend", "_vocab", "_merges", "deprecation_warnings", "verbose"})
# the map arguments that do not change its rows
_NOT_ROWS = ("desc", "num_proc")


def tokenizer_digest(tokenizer: Any) -> str | None:
    """A hash of what decides ``tokenizer``'s output: its class, its Rust backend serialized (vocabulary, merges,
    normalizer, pre-tokenizer, post-processor, added tokens; not the padding/truncation state a call leaves set,
    which the next call sets again) and its Python-side settings (special tokens, chat template, BOS/EOS flags,
    padding and truncation sides). None for a tokenizer without a Rust backend, or settings that cannot be hashed."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "to_str"):
        return None
    serialized = _without_call_state(backend.to_str())
    settings = {k: v for k, v in vars(tokenizer).items() if k not in _NOT_HASHED}
    try:
        python_side = Hasher.hash((type(tokenizer).__qualname__, settings))
    except Exception:  # an attribute dill cannot pickle: datasets hashes (or warns) as it would
        return None
    return hashlib.sha256(serialized.encode() + python_side.encode()).hexdigest()


# the head of ``Tokenizer.to_str()``: the padding and truncation a call sets come first (objects nested one level)
_OBJECT = r'(?:null|\{(?:[^{}]|\{[^{}]*\})*\})'
_CALL_STATE = re.compile(rf'^\{{"version":"[^"]*","truncation":{_OBJECT},"padding":{_OBJECT},')


def _without_call_state(serialized: str) -> str:
    """A Rust tokenizer's JSON without its ``truncation`` and ``padding`` (what the last call left set), cut from the
    head where the serializer writes them; parsed and written again only where the head has another form."""
    head = _CALL_STATE.match(serialized)
    if head is not None:
        return serialized[head.end():]
    data = json.loads(serialized)
    data.pop("padding", None)
    data.pop("truncation", None)
    return json.dumps(data)


def _without_tokenizer(function: Callable[..., Any], tokenizer: Any, digest: str) -> Callable[..., Any] | None:
    """``function`` rebuilt with every closure cell holding ``tokenizer`` holding ``digest`` instead (for hashing
    only), or None when it is not a plain function."""
    if not isinstance(function, types.FunctionType):
        return None
    cells = tuple(types.CellType(digest if cell.cell_contents is tokenizer else cell.cell_contents)
                  for cell in function.__closure__ or ())  # (an empty cell raises ValueError: the caller's fallback)
    return types.FunctionType(function.__code__, function.__globals__, function.__name__, function.__defaults__, cells or None)


def map_with_tokenizer(
    dataset: Dataset | IterableDataset, function: Callable[..., Any], tokenizer: Any, **map_kwargs: Any,
) -> Dataset | IterableDataset:
    """``dataset.map(function, **map_kwargs)``, where ``function`` reads ``tokenizer`` from its closure. A ``Dataset``
    gets ``new_fingerprint``: a hash of its fingerprint, ``function`` as datasets hashes it but with the tokenizer
    replaced by :func:`tokenizer_digest`, and ``map_kwargs`` (``desc`` and ``num_proc`` left out: they do not change
    the rows). An ``IterableDataset`` (no fingerprint; its ``map`` takes neither) is mapped without those two."""
    if not isinstance(dataset, Dataset):
        return dataset.map(function, **{k: v for k, v in map_kwargs.items() if k not in _NOT_ROWS})
    digest = tokenizer_digest(tokenizer) if "new_fingerprint" not in map_kwargs else None
    if digest is not None:
        arguments = {k: v for k, v in map_kwargs.items() if k not in _NOT_ROWS}
        try:
            hashed = _without_tokenizer(function, tokenizer, digest)
            if hashed is not None:
                map_kwargs["new_fingerprint"] = Hasher.hash(  # (datasets' hash leaves keyword-only defaults out)
                    (dataset_fingerprint(dataset), hashed, function.__kwdefaults__, arguments))
        except Exception:  # something else it closes over cannot be pickled: datasets decides, as without this
            pass
    return dataset.map(function, **map_kwargs)
