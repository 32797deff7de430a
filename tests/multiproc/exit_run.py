"""A 3-step DDP run on the processes it is launched with, then exit: records whether the default process group is
still alive after hf_prefs' exit hook ran, and which gloo threads still run then, the DDP module kept alive as a
script's top-level trainer is (``--fail_rank r``: that rank raises after training instead; ``--catch_rank r``: that
rank's training raises, as a trainer's ``train`` would, and the script catches it and calls ``sys.exit(1)`` while the
other rank trains a 4th step, inside the step's all-reduce when its peer exits)."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import Accelerator

from hf_prefs.trainers.launch import destroy_process_group_at_exit, marks_failure


KEPT: list[torch.nn.Module] = []


def gloo_threads() -> list[str]:
    """The names of this process's threads that belong to gloo (``pt_gloo_runloop``, ``gloo_tcp_loop``)."""
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            names.append((Path("/proc/self/task") / task / "comm").read_text().strip())
        except OSError:  # ended while listed
            pass
    return sorted(name for name in names if "gloo" in name)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--fail_rank", type=int, default=-1)
    p.add_argument("--catch_rank", type=int, default=-1)
    a = p.parse_args()
    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    # registered first, so it runs after the hook (atexit runs last-registered first)
    atexit.register(lambda: (Path(a.out) / f"exit_{rank}.json").write_text(
        json.dumps({"world": accelerator.num_processes, "initialized": dist.is_initialized(),
                    "gloo_threads": gloo_threads()})))
    destroy_process_group_at_exit()
    model = torch.nn.Linear(8, 8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    KEPT.append(model)  # alive until the interpreter finalizes, as a script's top-level `trainer` is

    @marks_failure
    def train(steps: int) -> None:
        for step in range(steps):
            if step == 3 and rank == a.catch_rank:
                raise RuntimeError(f"rank {rank} fails in training")
            accelerator.backward(model(torch.randn(4, 8)).pow(2).sum())
            optimizer.step()
            optimizer.zero_grad()

    try:
        train(3 if a.catch_rank < 0 else 4)
    except RuntimeError as err:
        print(f"caught: {err}", flush=True)
        sys.exit(1)
    if rank == a.fail_rank:
        raise RuntimeError(f"rank {rank} fails on purpose")


if __name__ == "__main__":
    main()
