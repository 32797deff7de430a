"""Evaluation metrics in one place: ROUGE (:mod:`hf_prefs.tasks.rouge`), paired win rate and before/after difference
with standard errors (:mod:`hf_prefs.core.stats`), and the win rate of one policy over another
(:func:`hf_prefs.pipeline.evaluate.compare_policies`)."""

from __future__ import annotations

from ..core.stats import paired_difference, win_rate
from ..pipeline.evaluate import compare_policies
from ..tasks.rouge import ROUGE_TYPES, rouge

__all__ = ["ROUGE_TYPES", "rouge", "win_rate", "paired_difference", "compare_policies"]
