"""The main process works for longer than the process group's timeout while the others wait for its result.

``--how heartbeat``: through :func:`hf_prefs.trainers.main_process.result_from_main_process`; ``--how plain``: one
``broadcast_object_list`` after the work (the others time out); ``--fail``: the main process's work raises.
Each rank writes ``wait_<rank>.json`` with the result it got (and whether the exit hook is registered), or the error
it raised."""

from __future__ import annotations

import argparse
import json
import time
from datetime import timedelta
from pathlib import Path

from accelerate import Accelerator, InitProcessGroupKwargs
from accelerate.utils import broadcast_object_list

from hf_prefs.trainers import launch
from hf_prefs.trainers.main_process import result_from_main_process


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--how", choices=["heartbeat", "plain"], default="heartbeat")
    p.add_argument("--timeout_s", type=float, default=3.0)
    p.add_argument("--work_s", type=float, default=8.0)
    p.add_argument("--fail", action="store_true")
    a = p.parse_args()
    accelerator = Accelerator(cpu=True, kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=a.timeout_s))])
    rank = accelerator.process_index

    def work() -> dict:
        time.sleep(a.work_s)
        if a.fail:
            raise ValueError("no labels today")
        return {"labels": [1, 2, 3], "by": rank}

    out = Path(a.out) / f"wait_{rank}.json"
    try:
        if a.how == "heartbeat":
            got = result_from_main_process(work, heartbeat_s=a.timeout_s / 3)
        else:
            got = broadcast_object_list([work() if accelerator.is_main_process else None], from_process=0)[0]
        # result_from_main_process registered the exit hook (the trainers' destroy_process_group_at_exit)
        out.write_text(json.dumps({"result": got, "exit_hook": launch._EXIT["registered"]}))
    except Exception as e:  # noqa: BLE001 - recorded for the test
        out.write_text(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        raise


if __name__ == "__main__":
    main()
