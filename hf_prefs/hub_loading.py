"""Loading what a field names from the Hugging Face Hub: a failure says which field and which id.

transformers and datasets fail without the network (or with ``HF_HUB_OFFLINE=1``) with an ``OSError`` about
huggingface.co and its cache that names neither the id nor the setting it came from (``model_name_or_path`` of a
config taken as shipped, ``known_reward``, ``query_dataset``). :func:`named_hub_errors` re-raises it naming both.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from huggingface_hub import constants

__all__ = ["named_hub_errors"]


@contextlib.contextmanager
def named_hub_errors(field: str, name: str | os.PathLike) -> Iterator[None]:
    """Inside, an ``OSError`` (``ConnectionError`` included) from loading ``name`` — not a local path — is re-raised
    as an ``OSError`` that names ``field`` and ``name``, says whether offline mode is on, and keeps the original as its
    cause. A local path's own errors pass as they are."""
    try:
        yield
    except OSError as err:
        if os.path.exists(os.path.expanduser(os.fspath(name))):
            raise
        why = ("offline mode is on (HF_HUB_OFFLINE)" if constants.HF_HUB_OFFLINE
               else "the Hub could not be reached, or holds no such repository")
        raise OSError(f"{field}: {os.fspath(name)!r} is not a local folder and cannot be loaded from the Hugging Face "
                      f"Hub: {why}. Give {field} a local path (the README's offline settings need none) — "
                      f"{type(err).__name__}: {err}") from err
