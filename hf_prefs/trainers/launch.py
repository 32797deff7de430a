"""Checks of how a run was launched, shared by the trainers."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["check_process_count"]


def check_process_count(accelerator: Any) -> None:
    """Stop when a launcher started N processes but each runs alone (accelerate's torchrun launcher on a CPU machine
    without ``use_cpu``): N independent copies of the run would all write the same files."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise RuntimeError(
            f"{launched} processes were launched (WORLD_SIZE={launched}) but this one sees "
            f"{accelerator.num_processes}: on a CPU machine set use_cpu: true (TrainingArguments / the recipe's YAML, "
            "or export ACCELERATE_USE_CPU=1) so that they train together over gloo"
        )
