"""Layer 3: labels. The label schema and its files (:mod:`~hf_prefs.labels.schema`, the one owner of what a label row
is), the labelers that make best-of-K labels from samples of rho (:mod:`~hf_prefs.labels.labelers`), the human label
queue (:mod:`~hf_prefs.labels.queue`: the labeling policy, on the durable :mod:`~hf_prefs.labels.event_log`) and the
label sources of online rounds (:mod:`~hf_prefs.labels.sources`), and a label set as a Hub dataset with its card
(:mod:`~hf_prefs.labels.hub`)."""

from .hub import push_labels_to_hub, render_label_card
from .labelers import LabelSamplingStats, SimulatedLabeler, sample_candidates, sample_label_dataset
from .queue import LABEL_FEATURES, LabelQueue, LabelRequestError, Lease, RoundStatus
from .schema import (
    LABEL_COLUMNS,
    LabelValidationError,
    from_openai_json,
    from_pairwise,
    load_label_file,
    load_rows,
    to_pairwise,
    validate_labels,
)
from .sources import FileLabelSource, LabelSource, QueueLabelSource, SimulatedLabelSource, as_label_source

__all__ = [
    "LabelSamplingStats",
    "SimulatedLabeler",
    "sample_candidates",
    "sample_label_dataset",
    "LABEL_FEATURES",
    "LabelQueue",
    "LabelRequestError",
    "Lease",
    "RoundStatus",
    "LABEL_COLUMNS",
    "LabelValidationError",
    "from_openai_json",
    "from_pairwise",
    "load_label_file",
    "load_rows",
    "to_pairwise",
    "validate_labels",
    "FileLabelSource",
    "LabelSource",
    "QueueLabelSource",
    "SimulatedLabelSource",
    "as_label_source",
    "push_labels_to_hub",
    "render_label_card",
]
