"""How a run was launched and how its processes end: checks and teardown shared by the trainers."""

from __future__ import annotations

import atexit
import functools
import gc
import os
import sys
import types
from collections.abc import Callable
from typing import Any

import accelerate
import torch.distributed as dist
from accelerate.utils import DistributedType
from torch.nn.parallel import DistributedDataParallel
from transformers.utils import logging

__all__ = ["check_launch", "marks_failure", "check_process_count", "check_sharding_active", "check_ppo_sharding", "check_critic_warmup",
           "destroy_process_group_at_exit", "release_destroyed_groups", "EXIT_ABORT", "failed_only_at_exit"]

logger = logging.get_logger(__name__)


#: what MPI launchers export (accelerate's MULTI_CPU runs several processes under mpirun only)
_MPI_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def check_process_count(accelerator: Any) -> None:
    """Stop when a launcher started N processes but each runs alone (accelerate's torchrun launcher on a CPU machine
    without ``use_cpu``): N independent copies of the run would all write the same files. Warn when accelerate was
    asked for several processes but started one: its simple launcher (a ``MULTI_CPU`` config without mpirun) exports
    ``MASTER_ADDR`` only for ``num_processes > 1``, and starts this one process."""
    asked_several = (all(v in os.environ for v in ("MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_CPU"))
                     and "WORLD_SIZE" not in os.environ and not any(v in os.environ for v in _MPI_SIZE_VARS))
    if asked_several and accelerator.num_processes == 1:
        logger.warning_once("accelerate launch was asked for several processes (a MULTI_CPU config or --num_processes "
                            "> 1 without mpirun) but started one: this run trains on a single process. For N processes "
                            "on one machine's CPU use recipes/accelerate_configs/multi_cpu.yaml (torchrun; use_cpu: true)")
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


def check_ppo_sharding(accelerator: Any) -> None:
    """Stop PPO under FSDP: its rollout runs forward passes of the unwrapped policy (sampling, log-probs, values)
    outside the training step, which under FSDP skip the root module's all-gather of the sharded weights and fail
    on the first rollout. DeepSpeed ZeRO-3 is supported (the rollout gathers the weights:
    :func:`hf_prefs.models.sharding.generation_model`); the reward trainer runs under FSDP as TRL's does."""
    if accelerator.distributed_type == DistributedType.FSDP:
        raise NotImplementedError(
            "PPOTrainer does not run under FSDP (its rollout's forward passes bypass the FSDP root module): use "
            "DeepSpeed ZeRO-2/3 (recipes/accelerate_configs/deepspeed_zero3.yaml) or DDP"
        )


def check_critic_warmup(accelerator: Any, critic_warmup_updates: int) -> None:
    """Stop a critic warm-up under DeepSpeed: the warm-up drops the policy's gradients before the optimizer step, but
    DeepSpeed's engine steps inside the last micro-batch's backward (accelerate's wrapper), so the value loss would
    move a shared trunk and the policy would not be frozen as ``critic_warmup_updates`` says."""
    if critic_warmup_updates > 0 and getattr(accelerator.state, "deepspeed_plugin", None) is not None:
        raise NotImplementedError(
            "critic_warmup_updates: the critic warm-up is not supported under DeepSpeed (its engine steps inside the "
            "backward, before the policy's gradients can be dropped); use DDP or critic_warmup_updates 0"
        )


_EXIT = {"registered": False, "failed": False}


def release_destroyed_groups(default_group: Any) -> int:
    """After ``destroy_process_group()`` (every group): drop the references to the groups that outlive it, so that they
    are freed, and their gloo worker threads joined, while the interpreter is still whole. Returns how many objects
    let go.

    Two kinds of holder are known. Functions whose default argument is ``group.WORLD``, evaluated once when their
    module is imported: imported after ``init_process_group`` they hold the default group for the life of the process
    (torch 2.13's ``torch.distributed.nn.functional``, ten collectives, imported by a DDP constructor through
    torch._dynamo; DeepSpeed 0.19's ``TorchBackend.barrier``/``monitored_barrier``, imported by transformers). Their
    default becomes ``None`` (the default group, whichever it is when called). And ``DistributedDataParallel``
    modules: each holds its group (``process_group``), and in C++ its reducer and logger do; every DDP module loses
    the three (its group is gone: it could not run another step).

    Measured (DDP steps on 2 gloo processes): with any of these left, the three gloo threads (``pt_gloo_runloop`` x2,
    ``gloo_tcp_loop``) were still running after ``destroy_process_group``; with all dropped, none."""
    dropped = 0
    for obj in gc.get_objects():
        kind = type(obj)  # not isinstance: it reads __class__, which some of torch's deprecated objects warn on
        if kind is types.FunctionType and default_group is not None:
            if obj.__defaults__ and any(d is default_group for d in obj.__defaults__):
                obj.__defaults__ = tuple(None if d is default_group else d for d in obj.__defaults__)
                dropped += 1
            if obj.__kwdefaults__ and any(d is default_group for d in obj.__kwdefaults__.values()):
                obj.__kwdefaults__ = {k: None if d is default_group else d for k, d in obj.__kwdefaults__.items()}
                dropped += 1
        elif issubclass(kind, DistributedDataParallel) and "process_group" in obj.__dict__:
            for name in ("reducer", "logger", "process_group"):
                obj.__dict__.pop(name, None)
            dropped += 1
    return dropped


def _end_process_group() -> None:
    """At a normal exit: wait for every rank (all their collectives are done), destroy the default group, then drop
    what still holds it (:func:`release_destroyed_groups`): held, its gloo threads ran on while Python finalized."""
    if _EXIT["failed"] or not (dist.is_available() and dist.is_initialized()):
        return  # after an uncaught exception the other ranks may never reach a barrier: exit as torch would
    try:
        group = dist.group.WORLD
        dist.barrier()
        dist.destroy_process_group()
    except Exception:  # a rank that failed closes its sockets: nothing left to tear down cleanly
        return
    release_destroyed_groups(group)


def destroy_process_group_at_exit() -> None:
    """At interpreter exit, after a run that raised nothing: ``barrier()``, ``destroy_process_group()``, then
    :func:`release_destroyed_groups` (registered once).

    A gloo process that exits with its process group alive aborts now and then (SIGABRT, ``terminate called without
    an active exception``; pytorch/pytorch#190489): measured with a 3-step DDP run on 2 processes, 3 of 25 exits
    aborted; destroying the group right after the last step aborted 7 of 25 (a rank still finishing its last
    all-reduce loses its peer); a barrier then destroy, 0 of 50. Neither ``transformers.Trainer`` nor accelerate
    destroys the group unless ``Accelerator.end_training()`` is called, which would end it for later trainers of
    the same process too, so this runs from ``atexit`` (the interpreter still alive, every trainer done). After an
    uncaught exception (seen by ``sys.excepthook``) it does nothing: the other ranks may be inside a collective."""
    if _EXIT["registered"]:
        return
    previous = sys.excepthook

    def note_failure(*exc_info: Any) -> None:
        _EXIT["failed"] = True
        previous(*exc_info)

    sys.excepthook = note_failure
    atexit.register(_end_process_group)
    _EXIT["registered"] = True


#: what a process of a gloo group prints when it aborts while Python finalizes, its work done (SIGABRT;
#: pytorch/pytorch#190489): rare with :func:`destroy_process_group_at_exit`, not impossible (CI saw one with it
#: registered, when the destroyed group was still held and its gloo threads ran on: :func:`release_destroyed_groups`)
EXIT_ABORT = "terminate called without an active exception"


def failed_only_at_exit(stderr: str) -> bool:
    """Whether a failed launch's ``stderr`` holds a rank's abort at exit (:data:`EXIT_ABORT`) and no Python traceback
    but the launcher's own (torch's ``ChildFailedError``): its processes' work raised nothing. Whether that work was
    done, only its outputs say."""
    return (EXIT_ABORT in stderr and "ChildFailedError" in stderr
            and stderr.count("Traceback (most recent call last)") == 1)


def marks_failure(train: Callable[..., Any]) -> Callable[..., Any]:
    """A function that runs collectives (a trainer's ``train``, ``evaluate``, ``predict``, the reward normalization,
    ``generate_completions``, :func:`~hf_prefs.pipeline.evaluate.evaluate_policy`) that notes an exception leaving it,
    so that the exit hook skips its barrier on this rank even where the caller catches the exception and exits by
    ``sys.exit(1)`` or normally (neither reaches ``sys.excepthook``): the other ranks may be inside a collective, which
    ends when this process exits and its sockets close, but never reaches the barrier — both processes hung there."""

    @functools.wraps(train)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            result = train(*args, **kwargs)
        except SystemExit as stop:  # a callback's sys.exit(0) ends the run cleanly: every rank reaches the barrier
            _EXIT["failed"] = stop.code not in (0, None)
            raise
        except BaseException:
            _EXIT["failed"] = True
            raise
        _EXIT["failed"] = False  # a caught failure, then a finished run: the ranks end together again
        return result

    return wrapped


def check_launch(accelerator: Any) -> None:
    """What every trainer runs once its accelerator exists: the process count and the sharding the launcher asked for
    are the ones accelerate runs (else a clear error), and the process group is ended cleanly at a normal exit."""
    check_process_count(accelerator)
    check_sharding_active(accelerator)
    destroy_process_group_at_exit()  # gloo aborts now and then at exit without it
