"""A PPO rollout under `accelerate launch` with a DeepSpeed config (or in one process, for comparison), counting how
often ZeRO-3 gathers weights while the policy samples.

    rollout: update 0's rollout of this process (generation, scores, policy log-probs/values, reference log-probs),
             saved as out/rollout_<rank>.pt, and in out/result_<rank>.json the world size, the ZeRO stage and, per
             `trainer.generate` call, the number of `deepspeed.zero.GatheredParameters` blocks, of DeepSpeed
             all-gather collectives in all, and of those made on entering the blocks. With --gathers true false:
             one rollout per value of ds3_gather_for_generation (a trainer of its own each), in out/gather_<value>/.
Other modes: see ppo_run.py (update / train), which this script forwards to.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path
from unittest import mock

import torch

import ppo_run


@contextmanager
def gather_counter(counts: dict[str, int]):
    """Count GatheredParameters blocks and DeepSpeed all-gathers while inside (no-op without deepspeed)."""
    try:
        import deepspeed
        import deepspeed.comm as ds_comm
    except ImportError:
        yield counts
        return
    with ExitStack() as stack:
        enter = deepspeed.zero.GatheredParameters.__enter__

        def counted_enter(self):
            counts["gathered_blocks"] += 1
            before = counts["all_gathers"]
            try:
                return enter(self)
            finally:
                counts["all_gathers_of_blocks"] += counts["all_gathers"] - before

        stack.enter_context(mock.patch.object(deepspeed.zero.GatheredParameters, "__enter__", counted_enter))
        for name in ("allgather_fn", "all_gather_into_tensor", "all_gather", "all_gather_coalesced"):
            original = getattr(ds_comm, name)

            def counted(*args, _original=original, **kwargs):
                counts["all_gathers"] += 1
                return _original(*args, **kwargs)

            stack.enter_context(mock.patch.object(ds_comm, name, counted))
        yield counts


def run_rollout(trainer, out: Path, share: tuple[int, int] | None = None) -> dict:
    """Update 0's rollout of this process, or (``share`` = (world, rank)) of process ``rank`` of ``world``."""
    trainer._setup_training(None)
    acc = trainer.accelerator
    calls = []
    generate = trainer.generate

    def counted_generate(*args, **kwargs):
        counts = {"gathered_blocks": 0, "all_gathers": 0, "all_gathers_of_blocks": 0}
        with gather_counter(counts):
            result = generate(*args, **kwargs)
        calls.append(counts)
        return result

    trainer.generate = counted_generate
    queries = trainer.sample_queries(0) if share is None else trainer.queries_for(0, *share)
    rollout = trainer.make_rollout(*queries)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(rollout, out / f"rollout_{acc.process_index}.pt")
    plugin = getattr(acc.state, "deepspeed_plugin", None)
    result = {"world": acc.num_processes, "zero_stage": None if plugin is None else plugin.zero_stage,
              "gather": trainer.args.ds3_gather_for_generation, "generate_calls": calls}
    (out / f"result_{acc.process_index}.json").write_text(json.dumps(result))
    return result


def main(argv=None) -> None:
    if argv and argv[0] != "rollout":
        return ppo_run.main(argv)
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["rollout"])
    p.add_argument("--base", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--variant", default="full", choices=["full", "lora", "separate"])
    p.add_argument("--per_device", type=int, default=4)
    p.add_argument("--reward_model", action="store_true", help="score with a (random) reward model, not a callable")
    p.add_argument("--set", nargs="*", default=[], help="PPOConfig overrides key=json_value")
    p.add_argument("--gathers", nargs="*", type=json.loads, help="one rollout per ds3_gather_for_generation value")
    a = p.parse_args(argv)
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in a.set)}
    for gather in a.gathers or [None]:
        out = Path(a.out) if gather is None else Path(a.out) / f"gather_{json.dumps(gather)}"
        case = overrides if gather is None else {**overrides, "ds3_gather_for_generation": gather}
        trainer = ppo_run.make_trainer(a.base, str(out / "ppo"), a.variant, a.per_device, reward_model=a.reward_model,
                                       **case)
        run_rollout(trainer, out)
        del trainer


if __name__ == "__main__":
    main(sys.argv[1:])
