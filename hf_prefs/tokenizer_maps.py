"""``Dataset.map`` with a function that reads a tokenizer, fingerprinted from the tokenizer's contents.

datasets names each map's result by hashing its function with dill (the fingerprint that keys the cache files of a
dataset read from disk), which pickles every object the function closes over. For a tokenizer that is its whole
vocabulary and merge list as Python objects: 0.5 s per map for GPT-2's in a fresh process, 2–3 s in a process with
a large heap (a test session, where the pickling's allocations trigger full garbage collections), while the map
itself takes milliseconds on a few hundred rows. :func:`map_with_tokenizer` passes ``new_fingerprint`` instead: a
hash of the dataset's fingerprint, the function's code, the values it reads, the map's arguments and
:func:`tokenizer_digest` (~30 ms). A tokenizer without a Rust backend is hashed by datasets as before.
"""

from __future__ import annotations

from typing import Any, Callable

from datasets import Dataset, IterableDataset
from datasets.fingerprint import Hasher

from ._compat import dataset_fingerprint

__all__ = ["tokenizer_digest", "map_with_tokenizer"]

# attributes left out of the digest: the backend (hashed as its JSON), its vocabulary and merges as Python objects
# (the same contents), and bookkeeping that changes as warnings are shown
_NOT_HASHED = frozenset({"_tokenizer", "backend", "_vocab", "_merges", "deprecation_warnings", "verbose"})


def tokenizer_digest(tokenizer: Any) -> str | None:
    """A hash of what decides ``tokenizer``'s output: its class, its Rust backend serialized (vocabulary, merges,
    normalizer, pre-tokenizer, post-processor, added tokens) and its Python-side settings (special tokens, chat
    template, BOS/EOS flags, padding and truncation sides). None for a tokenizer without a Rust backend."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "to_str"):
        return None
    settings = {k: v for k, v in vars(tokenizer).items() if k not in _NOT_HASHED}
    return Hasher.hash((type(tokenizer).__qualname__, backend.to_str(), settings))


def map_with_tokenizer(
    dataset: Dataset | IterableDataset, function: Callable[..., Any], tokenizer: Any, reads: tuple[Any, ...] = (),
    **map_kwargs: Any,
) -> Dataset | IterableDataset:
    """``dataset.map(function, **map_kwargs)``, where ``function`` reads ``tokenizer`` and the values ``reads`` (all
    else it closes over). A ``Dataset`` gets ``new_fingerprint``: a hash of its fingerprint, ``function``'s code,
    ``reads``, ``map_kwargs`` (``desc`` and ``num_proc`` left out: they do not change the rows) and
    :func:`tokenizer_digest`, so the tokenizer is not pickled. An ``IterableDataset`` (no fingerprint) is mapped as
    it is."""
    digest = tokenizer_digest(tokenizer) if isinstance(dataset, Dataset) else None
    if digest is not None and "new_fingerprint" not in map_kwargs:
        code = function.__code__
        arguments = {k: v for k, v in map_kwargs.items() if k not in ("desc", "num_proc")}
        map_kwargs["new_fingerprint"] = Hasher.hash(
            (dataset_fingerprint(dataset), code.co_code, code.co_consts, code.co_names, reads, arguments, digest)
        )
    return dataset.map(function, **map_kwargs)
