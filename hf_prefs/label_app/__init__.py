"""The human labeling app on top of the durable label queue.

:class:`LabelQueue` (:mod:`hf_prefs.labels.queue`, no extra dependencies) is the queue the online loop
and the app share; its event log is :mod:`hf_prefs.labels.event_log` and its row schema and file
loading :mod:`hf_prefs.labels.schema`. ``app.py`` is the Gradio page (``pip install 'hf-prefs[label]'``);
``cli.py`` adds ``hf-prefs label ...``. The names below are re-exported lazily so that
``hf-prefs --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "LabelQueue": "hf_prefs.labels.queue",
    "LabelRequestError": "hf_prefs.labels.queue",
    "Lease": "hf_prefs.labels.queue",
    "RoundStatus": "hf_prefs.labels.queue",
    "LABEL_FEATURES": "hf_prefs.labels.queue",
    "load_rows": "hf_prefs.labels.schema",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hf_prefs.label_app' has no attribute {name!r}")
