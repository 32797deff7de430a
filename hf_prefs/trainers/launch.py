"""Checks of how a run was launched, shared by the trainers."""

from __future__ import annotations

import os
from typing import Any

import accelerate
from accelerate.utils import DistributedType

__all__ = ["check_process_count", "check_sharding_active"]


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


def check_sharding_active(accelerator: Any) -> None:
    """Stop when the launcher asked for FSDP or DeepSpeed (``distributed_type: FSDP`` / ``DEEPSPEED`` in the accelerate
    config, which exports ``ACCELERATE_USE_FSDP`` / ``ACCELERATE_USE_DEEPSPEED``) but accelerate runs without it: it
    then silently trains plain DDP with the whole model on every process. accelerate (1.15, ``AcceleratorState``)
    turns FSDP on only for GPU-like process groups (MULTI_GPU/NPU/XPU/...), never for MULTI_CPU (gloo), and drops
    DeepSpeed when ``cpu`` is forced (``ACCELERATE_USE_CPU=1``)."""
    for name, kind in (("FSDP", DistributedType.FSDP), ("DEEPSPEED", DistributedType.DEEPSPEED)):
        if os.environ.get(f"ACCELERATE_USE_{name}", "false").lower() == "true" and accelerator.distributed_type != kind:
            raise RuntimeError(
                f"the accelerate config asks for {name} (ACCELERATE_USE_{name}=true) but accelerate "
                f"{accelerate.__version__} runs {accelerator.distributed_type.value}: every process would train the "
                "whole model as plain data parallel. "
                + ("accelerate never enables FSDP on the CPU (gloo), only on GPU-like devices; on the CPU use "
                   "recipes/accelerate_configs/multi_cpu.yaml (DDP) or a DeepSpeed ZeRO config"
                   if name == "FSDP" else
                   "accelerate drops DeepSpeed when the CPU is forced (ACCELERATE_USE_CPU=1 or cpu=True); unset it "
                   "and pass use_cpu=True / ddp_backend='gloo' in the training arguments instead")
            )
