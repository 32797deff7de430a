"""Data the recipes read as users have it: a local folder (one ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``
wrote, or of data files: ``datasets``' folder builder), a local data file, or a Hub dataset id. One reader for the
recipes' ``query_dataset`` and label files, the rule both use for a data file that holds nothing, and the rule that
tells a local path from a Hub id."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import datasets

__all__ = ["is_blank_file", "load_dataset_folder", "names_a_local_path", "load_text_source", "LOCAL_TEXT_BUILDERS"]

#: local data files :func:`load_text_source` reads, by suffix, and the ``datasets`` builder of each (.txt: a row per line)
LOCAL_TEXT_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


def load_dataset_folder(path: str | os.PathLike, split: str = "train") -> datasets.Dataset:
    """The dataset in folder ``path``: a saved ``Dataset``; the ``split`` of a saved ``DatasetDict`` (its only split
    when it has one; a ``ValueError`` naming them otherwise); else its data files read as ``load_dataset(path)`` reads
    a folder."""
    folder = os.fspath(path)
    if os.path.isfile(os.path.join(folder, "dataset_info.json")) and os.path.isfile(os.path.join(folder, "state.json")):
        return datasets.load_from_disk(folder)
    if os.path.isfile(os.path.join(folder, "dataset_dict.json")):
        splits = datasets.load_from_disk(folder)
        if split in splits:
            return splits[split]
        if len(splits) == 1:
            return next(iter(splits.values()))
        raise ValueError(f"{folder}: a DatasetDict without a {split!r} split; its splits are {sorted(splits)}")
    return datasets.load_dataset(folder, split=split)


def is_blank_file(path: str | os.PathLike) -> bool:
    """Whether the file holds only whitespace (an empty export), judged from its first 64 KiB: a longer file is
    never blank by this rule, so a large file is not read twice."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    return not head.strip() and len(head) < 1 << 16


def names_a_local_path(spec: str | os.PathLike, suffixes: Iterable[str]) -> bool:
    """Whether ``spec`` can only be a local path, not a Hub dataset id (``name`` or ``namespace/name``): an absolute,
    ``./``, ``../`` or ``~`` path, more than one folder separator, or a file suffix of ``suffixes``."""
    text = str(spec)
    return (os.path.isabs(text) or text.startswith((".", "~")) or text.count("/") > 1
            or (os.sep != "/" and os.sep in text) or Path(text).suffix.lower() in tuple(suffixes))


def load_text_source(name: str, split: str = "train", role: str = "query_dataset") -> datasets.Dataset:
    """The ``split`` of ``name``: a local file (by suffix: :data:`LOCAL_TEXT_BUILDERS`), a folder saved with
    ``save_to_disk`` or of data files, or a Hub dataset id. Errors name ``role`` (the argument it came from) and the
    file: a path that cannot be a Hub id and is missing, an unsupported suffix, an empty file or one of no rows, a line
    the builder cannot parse."""
    path = Path(name).expanduser()
    if names_a_local_path(name, (*LOCAL_TEXT_BUILDERS, ".tsv")) and not path.exists():  # not "Couldn't reach it on
        # the Hub": a path that cannot be a Hub id
        raise FileNotFoundError(f"{role} {name}: no such file or folder")
    if path.is_file():
        if split != "train":  # datasets names a file's one split "train"
            raise ValueError(f"{role}_split {split!r}: {role} {name} is a single file (its one split is 'train')")
        builder = LOCAL_TEXT_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"{role} {name}: unsupported file type {path.suffix!r} (use "
                             f"{', '.join(LOCAL_TEXT_BUILDERS)}, a dataset folder or a Hub dataset id)")
        if is_blank_file(path):  # (an empty .jsonl was a bare StopIteration)
            raise ValueError(f"{role} {name}: the file is empty")
        try:
            return datasets.load_dataset(builder, data_files=str(path), split="train")
        except Exception as err:  # datasets' DatasetGenerationError names no line; the error it wraps does
            cause = err.__cause__ or err
            if "corresponds to no data" in str(cause):  # datasets' word for a file of no rows (a CSV header, "[]")
                raise ValueError(f"{role} {name}: the file has no rows") from err
            raise ValueError(f"{role} {name}: not readable as {builder} ({type(cause).__name__}: {cause})") from err
    if path.is_dir():  # saved with save_to_disk, or of data files
        try:
            return load_dataset_folder(path, split)
        except ValueError as err:  # (datasets' "Unknown split" named neither the argument nor the folder)
            raise ValueError(f"{role} {name}: {err}") from err
    return datasets.load_dataset(name, split=split)
