"""Episodes/second and peak memory of hf_prefs PPO vs TRL's last PPOTrainer (trl.experimental.ppo, TRL 1.12).

TRL removed PPOTrainer in 1.13, so the baseline runs from TRL 1.12 installed (``--no-deps``) into a folder of its own
that is put first on that subprocess's ``PYTHONPATH`` (same interpreter and packages, so it works from any venv);
every measurement runs in its own subprocess, one after the other, in the same invocation.

Same work on every side (printed at start):
  - the same tiny GPT-2 policy (real GPT-2 vocabulary), the same tiny GPT-2 reward model (sequence classification),
    a frozen copy of the policy as reference, the same queries (identical token ids, all of the same length, so no
    padding), the same batch (episodes per update), minibatches, PPO epochs, response length and temperature;
  - full-length responses on both sides: TRL gets ``stop_token=None`` (it then also sets the policy's
    ``generation_config.eos_token_id = None``, so ``generate`` never stops early) and hf_prefs samples fixed-length
    responses by design; no truncation, no penalty (hf_prefs ``truncate_token=None``; TRL ``missing_eos_penalty=None``);
  - rewards whitened on both sides, fixed KL coefficient (TRL has no adaptive KL), no sample tables, no checkpoints,
    one log per update, fp32 on CPU (TRL builds its own Accelerator).
Architectural differences that are the point of the comparison: TRL always trains a *separate* value model (a copy of
the reward model); hf_prefs by default puts a value head on the policy trunk (the paper). ``hf_prefs-separate`` runs
hf_prefs with a separate value model initialised from the reward model, i.e. TRL's architecture.

Memory: peak resident set size (``VmHWM``) of each measurement subprocess, and its growth during ``train()`` (peak
minus the resident size just before ``train()``). tracemalloc would miss torch's tensor allocations, so RSS is the
honest number on CPU.

Usage::

    python benchmarks/ppo_throughput.py                      # installs trl==1.12.0 --no-deps once, into the cache
    python benchmarks/ppo_throughput.py --updates 6 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def default_trl_dir() -> Path:
    """``<hf_prefs cache>/bench/trl-1.12`` (the cache folder of :mod:`hf_prefs.assets`): TRL 1.12 alone."""
    from hf_prefs.assets import cache_dir

    return Path(cache_dir()) / "bench" / "trl-1.12"

SIDES = ("trl-1.12", "hf_prefs", "hf_prefs-separate")


# ---------------------------------------------------------------------------------------------------------------------
# the measured side (runs in a subprocess)
# ---------------------------------------------------------------------------------------------------------------------
def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _build(args):
    import torch
    from datasets import Dataset
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    from hf_prefs.assets import load_gpt2_tokenizer

    tokenizer = load_gpt2_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token  # TRL 1.12's collator and masks need a pad token
    config = dict(vocab_size=50257, n_positions=256, n_embd=args.n_embd, n_layer=args.n_layer, n_head=args.n_head,
                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    policy = GPT2LMHeadModel(GPT2Config(**config))
    torch.manual_seed(1)
    reward_model = GPT2ForSequenceClassification(GPT2Config(**config, num_labels=1, pad_token_id=tokenizer.eos_token_id))
    generator = torch.Generator().manual_seed(2)
    # queries: random ids below the EOS id (no pad/EOS inside), all of length query_length
    ids = torch.randint(0, tokenizer.eos_token_id, (args.num_queries, args.query_length), generator=generator)
    dataset = Dataset.from_dict({"input_ids": ids.tolist()})
    return tokenizer, policy, reward_model, dataset


def _run_trl(args, tokenizer, policy, reward_model, dataset):
    import copy

    from trl.experimental.ppo import PPOConfig, PPOTrainer

    config = PPOConfig(
        output_dir=args.output_dir, per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=args.batch // args.micro_batch, num_mini_batches=args.mini_batches,
        num_ppo_epochs=args.epochs, total_episodes=args.batch * args.updates, response_length=args.response_length,
        temperature=args.temperature, kl_coef=args.kl_coef, whiten_rewards=True, stop_token=None,
        missing_eos_penalty=None, local_rollout_forward_batch_size=args.batch, num_sample_generations=0,
        save_strategy="no", report_to=[], logging_steps=1, disable_tqdm=True, bf16=False, learning_rate=1e-5,
        gradient_checkpointing=False, seed=0,
    )
    value_model = copy.deepcopy(reward_model)
    trainer = PPOTrainer(
        args=config, processing_class=tokenizer, model=policy, ref_model=copy.deepcopy(policy),
        reward_model=reward_model, train_dataset=dataset, value_model=value_model, eval_dataset=dataset,
    )
    return trainer, lambda: trainer.train()


def _run_hf_prefs(args, tokenizer, policy, reward_model, dataset, separate: bool):
    from hf_prefs.trainers.ppo_config import PPOConfig
    from hf_prefs.trainers.ppo_trainer import PPOTrainer

    config = PPOConfig(
        output_dir=args.output_dir, per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=args.batch // args.micro_batch, num_mini_batches=args.mini_batches,
        num_ppo_epochs=args.epochs, total_episodes=args.batch * args.updates, response_length=args.response_length,
        temperature=args.temperature, kl_coef=args.kl_coef, adaptive_kl=False, whiten_rewards=True,
        truncate_token=None, local_rollout_forward_batch_size=args.batch, num_sample_generations=0,
        save_strategy="no", report_to=[], logging_steps=1, disable_tqdm=True, learning_rate=1e-5, seed=0,
        value_model="separate" if separate else "shared",
    )
    trainer = PPOTrainer(model=policy, reward_model=reward_model, args=config, train_dataset=dataset,
                         processing_class=tokenizer)
    return trainer, lambda: trainer.train()


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    tokenizer, policy, reward_model, dataset = _build(args)
    if args.side == "trl-1.12":
        trainer, train = _run_trl(args, tokenizer, policy, reward_model, dataset)
    else:
        trainer, train = _run_hf_prefs(args, tokenizer, policy, reward_model, dataset, args.side == "hf_prefs-separate")
    rss_before = _rss_kib("VmRSS")
    start = time.perf_counter()
    train()
    seconds = time.perf_counter() - start
    episodes = args.batch * args.updates
    eos = [h for h in trainer.state.log_history if "objective/kl" in h]
    import trl

    print("RESULT " + json.dumps({
        "side": args.side, "trl_version": trl.__version__, "updates": trainer.state.global_step, "episodes": episodes,
        "seconds": seconds, "episodes_per_second": episodes / seconds,
        "peak_rss_mib": _rss_kib("VmHWM") / 1024, "train_rss_growth_mib": (_rss_kib("VmHWM") - rss_before) / 1024,
        "first_kl": eos[0]["objective/kl"] if eos else None,
    }), flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------------------------------------
def ensure_trl_112(target: Path) -> Path:
    """A folder holding trl==1.12.0 alone (``pip install --target --no-deps``); put first on ``PYTHONPATH`` it shadows
    the installed TRL for that process only, with this interpreter and its packages (a venv of its own would need
    ``--system-site-packages`` from a base interpreter that may have no torch)."""
    check = [sys.executable, "-c", "import trl, sys; sys.exit(trl.__version__ != '1.12.0')"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    if target.is_dir() and subprocess.run(check, env=env, capture_output=True).returncode == 0:
        return target
    print(f"installing trl==1.12.0 --no-deps into {target}", flush=True)
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(target), "--no-deps", "--upgrade",
                    "trl==1.12.0"], check=True)
    subprocess.run(check, env=env, check=True)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # worker mode
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    parser.add_argument("--trl-dir", type=Path, default=None, help="where to install TRL 1.12 (default: in the hf_prefs cache)")
    parser.add_argument("--updates", type=int, default=6)
    parser.add_argument("--batch", type=int, default=32, help="episodes per PPO update")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--mini-batches", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--query-length", type=int, default=32)
    parser.add_argument("--response-length", type=int, default=24)
    parser.add_argument("--num-queries", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--kl-coef", type=float, default=0.05)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-embd", type=int, default=64)
    parser.add_argument("--n-head", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per measurement (1: stable on shared CPUs)")
    parser.add_argument("--output-dir", default="/tmp/hf_prefs_ppo_bench")
    args = parser.parse_args(argv)
    if args.batch % args.micro_batch or (args.batch // args.micro_batch) % args.mini_batches:
        parser.error("--batch must be a multiple of --micro-batch, and batch/micro-batch a multiple of --mini-batches")

    if args.side is not None:
        worker(args)
        return

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    trl_dir = ensure_trl_112(args.trl_dir or default_trl_dir()) if "trl-1.12" in args.sides else None
    print(
        f"PPO throughput: tiny GPT-2 (n_layer={args.n_layer}, n_embd={args.n_embd}, vocab 50257), {args.updates} updates "
        f"x {args.batch} episodes, {args.mini_batches} minibatch(es), {args.epochs} PPO epochs, micro-batch "
        f"{args.micro_batch}, query {args.query_length} + response {args.response_length} tokens (full length, no "
        f"truncation), T={args.temperature}, fixed beta={args.kl_coef}, whitened rewards, fp32 CPU, "
        f"{args.threads} torch thread(s), reward model: tiny GPT-2 classifier, reference: frozen policy copy.",
        flush=True,
    )
    forwarded = []
    for name in ("updates", "batch", "micro_batch", "mini_batches", "epochs", "query_length", "response_length",
                 "num_queries", "temperature", "kl_coef", "n_layer", "n_embd", "n_head", "threads", "output_dir"):
        forwarded += ["--" + name.replace("_", "-"), str(getattr(args, name))]
    results = {}
    for side in args.sides:
        side_env = dict(env)
        if side == "trl-1.12":  # this interpreter, with TRL 1.12 first on the path
            side_env["PYTHONPATH"] = os.pathsep.join([str(trl_dir), env["PYTHONPATH"]])
        cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side, *forwarded]
        proc = subprocess.run(cmd, env=side_env, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(proc.stdout[-3000:], proc.stderr[-5000:], sep="\n")
            raise SystemExit(f"{side} failed (exit {proc.returncode})")
        results[side] = json.loads(lines[-1][len("RESULT "):])
        r = results[side]
        print(
            f"{side:18s} (trl {r['trl_version']}): {r['episodes']} episodes in {r['seconds']:.1f} s = "
            f"{r['episodes_per_second']:.2f} episodes/s; peak RSS {r['peak_rss_mib']:.0f} MiB "
            f"(+{r['train_rss_growth_mib']:.0f} MiB during train); KL at update 1 = {r['first_kl']}",
            flush=True,
        )
    if "trl-1.12" in results:
        base = results["trl-1.12"]
        for side in ("hf_prefs", "hf_prefs-separate"):
            if side in results:
                r = results[side]
                print(
                    f"ratio {side} / trl-1.12: {r['episodes_per_second'] / base['episodes_per_second']:.2f}x episodes/s, "
                    f"{r['peak_rss_mib'] / base['peak_rss_mib']:.2f}x peak RSS",
                    flush=True,
                )


if __name__ == "__main__":
    main()
