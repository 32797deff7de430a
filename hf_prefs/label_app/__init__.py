"""The human labeling app and its durable label queue.

:class:`LabelQueue` (``store.py``, no extra dependencies) is the queue the online loop and the app share;
``app.py`` is the Gradio page (``pip install 'hf-prefs[label]'``); ``cli.py`` adds ``hf-prefs label ...``.
Names are imported lazily so that ``hf-prefs --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["LabelQueue", "LabelRequestError", "Lease", "RoundStatus", "LABEL_FEATURES", "load_rows"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("hf_prefs.label_app.store"), name)
    raise AttributeError(f"module 'hf_prefs.label_app' has no attribute {name!r}")
