"""A 3-step DDP run on the processes it is launched with, then exit: records whether the default process group is
still alive after hf_prefs' exit hook ran (``--fail_rank r``: that rank raises after training instead)."""

from __future__ import annotations

import argparse
import atexit
import json
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import Accelerator

from hf_prefs.trainers.launch import destroy_process_group_at_exit


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--fail_rank", type=int, default=-1)
    a = p.parse_args()
    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    # registered first, so it runs after the hook (atexit runs last-registered first)
    atexit.register(lambda: (Path(a.out) / f"exit_{rank}.json").write_text(
        json.dumps({"world": accelerator.num_processes, "initialized": dist.is_initialized()})))
    destroy_process_group_at_exit()
    model = torch.nn.Linear(8, 8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    for _ in range(3):
        accelerator.backward(model(torch.randn(4, 8)).pow(2).sum())
        optimizer.step()
        optimizer.zero_grad()
    if rank == a.fail_rank:
        raise RuntimeError(f"rank {rank} fails on purpose")


if __name__ == "__main__":
    main()
