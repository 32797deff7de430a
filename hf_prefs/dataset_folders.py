"""A local dataset folder as users have them: one ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk`` wrote, or a
folder of data files (``datasets``' folder builder). One reader for the recipes' ``query_dataset`` and label files, and
the rule both use for a data file that holds nothing."""

from __future__ import annotations

import os

import datasets

__all__ = ["is_blank_file", "load_dataset_folder"]


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
