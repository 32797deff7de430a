"""Work that only the main process does (sampling a label round, waiting for people to label it), its result sent to
every process without timing the others out.

A collective waits at most the process group's timeout (``TrainingArguments.ddp_timeout``, 1,800 s by default, set
when the group is created). A plain ``broadcast_object_list`` after a wait for human labels therefore kills the other
processes once people take longer than that. :func:`result_from_main_process` runs the work in a thread of the main
process and broadcasts "still working" every ``heartbeat_s`` seconds, so no collective waits longer than that.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from .launch import destroy_process_group_at_exit

__all__ = ["result_from_main_process", "HEARTBEAT_S"]

T = TypeVar("T")

#: seconds between the main process's "still working" broadcasts (well under any sensible ``ddp_timeout``)
HEARTBEAT_S = 30.0


def result_from_main_process(fn: Callable[[], T], heartbeat_s: float = HEARTBEAT_S) -> T:
    """``fn()`` run by the main process only; its (picklable) result returned on every process.

    On one process this is ``fn()``. On N: the main process runs ``fn`` in a thread (with the caller's grad mode) and
    broadcasts ``(done, result, error)`` every ``heartbeat_s`` seconds until it is done; the others wait for
    ``done``. An exception in ``fn`` is raised again on the main process, and the others raise ``RuntimeError``
    naming it, so no process is left waiting in a collective. On N processes it registers the trainers' exit hook
    (:func:`~hf_prefs.trainers.launch.destroy_process_group_at_exit`): a script that labels without a trainer
    (``collect_labels``) ends its process group as a training script does.
    """
    state = PartialState()
    if state.num_processes == 1:
        return fn()
    destroy_process_group_at_exit()  # gloo aborts now and then at exit without it (5 of 17 runs of wait_run.py)
    if not state.is_main_process:
        while True:
            done, result, error = broadcast_object_list([None, None, None], from_process=0)
            if done:
                if error is not None:
                    raise RuntimeError(f"the main process failed while this process waited for it: {error}")
                return result
    box: dict[str, Any] = {}
    grad = torch.is_grad_enabled()

    def work() -> None:
        try:
            with torch.set_grad_enabled(grad):
                box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - sent to the other processes, then raised again here
            box["error"] = e

    thread = threading.Thread(target=work, name="hf_prefs-main-process-work", daemon=True)
    thread.start()
    while True:
        thread.join(heartbeat_s)
        done = not thread.is_alive()
        error = box.get("error")
        message = [done, box.get("result") if done and error is None else None, repr(error) if error is not None else None]
        broadcast_object_list(message, from_process=0)
        if done:
            if error is not None:
                raise error
            return box["result"]
