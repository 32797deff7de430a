"""How much of this CPU's matmul rate the PPO phase of the offline default uses, and PPO episodes/s against TRL
1.12's PPOTrainer. The precision is the offline default's on this CPU (``--dtype auto``): bf16 where the CPU has bf16
matmul units, float32 where it does not (the recipe's ``cpu_bf16_fallback``); the peak is measured in that precision.

1. Peak: ``torch.matmul`` of two 2048 x 2048 matrices in that dtype (2 * 2048^3 FLOPs), median of 25 runs, with
   the same number of torch threads as the PPO run, measured in this run before and after the PPO phases; the larger
   of the two is the peak.
2. PPO phase of the offline default (recipes/configs/sentiment_offline.yaml): SmolLM2-135M in bf16 (or float32) with
   LoRA r=16 on all attention/MLP projections, bf16 autocast (bf16 only), 32 episodes per update (micro-batches of 4), 24-token responses at
   T=0.7, 4 PPO epochs, Austen queries of 24-64 tokens, VADER as the reward. Measured: the seconds of ``ppo_epochs``
   (``time/ppo``) of the updates after the first, and the tokens the forward/backward passes processed.
   FLOPs per processed token (LoRA: the frozen weights get no weight gradient): 2*N forward + 2*N for the input
   gradients = 4*N, N = the trunk's matmul parameters (embeddings are a lookup); the LM head (V x d) only on the
   Lr positions that predict the response (``logits_to_keep``): 4 * V * d per kept position; LoRA's own matmuls are left out (<2%).
   Printed: FLOP/s on the tokens processed (padding included) and on the real ones, each as a fraction of the peak.
   The issue's first estimate counted 4 * N_total per real token; that figure is printed too, for comparison.
3. ``benchmarks/ppo_throughput.py``'s comparison with TRL 1.12 (tiny GPT-2, the same work on both sides).

    python benchmarks/ppo_mfu.py                       # ~5 minutes on 2 cores
    python benchmarks/ppo_mfu.py --tiny                # a tiny GPT-2 instead of SmolLM2 (seconds; for the tests)
    python benchmarks/ppo_mfu.py --skip-trl --profile 30   # + where the PPO epochs' CPU time goes, op by op
    python benchmarks/ppo_mfu.py --skip-trl --onednn       # + the seconds oneDNN's matmuls themselves take, by shape
    python benchmarks/ppo_mfu.py --skip-trl --updates 4 --compile eager compiled   # torch_compile=True against eager

``--compile compiled`` runs the same PPO phase with ``torch_compile=True`` (the policy's blocks compiled, see
``hf_prefs/trainers/compilation.py``); the first update pays the compilation (its PPO epochs' seconds are printed)
and is left out of the rate, as for eager.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from hf_prefs._compat import cpu_matmul_dtype  # noqa: E402


def matmul_peak(threads: int, size: int = 2048, repeats: int = 25, dtype: torch.dtype = torch.bfloat16) -> float:
    """Median FLOP/s of a ``size`` x ``size`` matmul in ``dtype`` with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.matmul(a, b)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


class TokenCounter:
    """Counts the tokens of every training forward of the policy (a forward pre-hook on the wrapper)."""

    def __init__(self) -> None:
        self.processed = self.real = 0
        self.active = False

    def __call__(self, module, args, kwargs) -> None:
        if self.active and torch.is_grad_enabled():
            self.processed += kwargs["input_ids"].numel()
            mask = kwargs["attention_mask"]  # (B, L) padding mask, or SDPA's (B, 1, L, L) boolean mask (left padding)
            # the last position is a real token that sees exactly the real tokens of its row (and itself)
            self.real += int((mask[:, 0, -1, :] if mask.dim() == 4 else mask).sum())


def ppo_phase(tiny: bool, updates: int, threads: int, micro_batch: int = 8, dtype: torch.dtype = torch.bfloat16,
              profile: int = 0, compiled: bool = False, onednn: bool = False) -> dict:
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, TrainerCallback

    from hf_prefs import PPOConfig, PPOTrainer
    from hf_prefs.assets import load_gpt2_tokenizer, smollm2_path
    from hf_prefs.tasks import austen_queries, vader_log_odds

    torch.set_num_threads(threads)
    if tiny:
        tok, dtype = load_gpt2_tokenizer(), torch.float32  # tiny: float32 whatever was asked
        policy = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2))
        targets = ["c_attn", "c_proj"]
    else:
        tok = AutoTokenizer.from_pretrained(smollm2_path(), padding_side="left")
        policy = AutoModelForCausalLM.from_pretrained(smollm2_path(), dtype=dtype)
        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    config = policy.config
    embed = policy.get_input_embeddings().weight.numel()
    head = policy.get_output_embeddings().weight.numel()
    trunk = sum(p.numel() for p in policy.parameters()) - embed - (0 if config.tie_word_embeddings else head)
    total = sum(p.numel() for p in policy.parameters())
    args = PPOConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=micro_batch, gradient_accumulation_steps=32 // micro_batch,
        num_ppo_epochs=4,
        total_episodes=32 * updates, response_length=24, temperature=0.7, learning_rate=3e-4,
        local_rollout_forward_batch_size=8, local_rollout_generation_batch_size=32,  # as the offline default
        report_to=[], save_strategy="no", num_sample_generations=0,
        disable_tqdm=True, use_cpu=True, bf16=dtype == torch.bfloat16, seed=0, torch_compile=compiled,
    )
    queries = austen_queries(tok, n=256, min_tokens=24, max_tokens=64, seed=0)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM")
    counter, per_update = TokenCounter(), []

    class Measure(TrainerCallback):
        def on_step_begin(self, *a, **k):
            counter.processed = counter.real = 0

        def on_step_end(self, *a, **k):
            per_update.append((trainer.timings["ppo"], counter.processed, counter.real))

    trainer = PPOTrainer(model=policy, reward_model=lambda q, r: torch.tensor(vader_log_odds(r)), args=args,
                         train_dataset=queries, processing_class=tok, peft_config=lora, callbacks=[Measure()])
    trainer.model.register_forward_pre_hook(counter, with_kwargs=True)
    counter.active = True
    if profile:
        trainer.ppo_epochs = profiled(trainer.ppo_epochs, lambda: len(per_update) == 1, profile)
    if onednn:
        trainer.ppo_epochs = onednn_timed(trainer.ppo_epochs, lambda: len(per_update) == 1)
    trainer.train()
    steady = per_update[1:] or per_update
    seconds = sum(s for s, _, _ in steady)
    processed, real = sum(p for _, p, _ in steady), sum(r for _, _, r in steady)
    kept = 24 * 32 * 4 * len(steady)  # Lr logits per episode (the positions predicting the response), 32 episodes, 4 epochs
    d, vocab = config.hidden_size, config.vocab_size
    return {
        "seconds": seconds, "updates": len(steady), "processed_tokens": processed, "real_tokens": real,
        "flops_processed": 4 * trunk * processed + 4 * d * vocab * kept, "flops_real": 4 * trunk * real + 4 * d * vocab * kept,
        "flops_issue_count": 4 * total * real, "rollout_seconds": trainer.state.log_history[-1].get("time/rollout"),
        "first_seconds": per_update[0][0],
    }


def profiled(ppo_epochs, now, rows: int):
    """``ppo_epochs`` traced by ``torch.profiler`` when ``now()`` (the update after the warm-up): prints the ``rows``
    ops with the most self CPU time, and per input shape. That update's time includes the profiler's overhead."""
    from torch.profiler import ProfilerActivity, profile

    def run(rollout):
        if not now():
            return ppo_epochs(rollout)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            out = ppo_epochs(rollout)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))
        print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=rows))
        return out

    return run


def onednn_timed(ppo_epochs, now):
    """``ppo_epochs`` with oneDNN's verbose log on when ``now()`` (the update after the warm-up): the log (written by
    oneDNN to file descriptor 1) goes to a temporary file while Python's own output still reaches the terminal, and
    :func:`onednn_matmul_summary` of it is printed beside the update's seconds. What ``--profile``'s per-op times add
    (the profiler's own cost per op, ~50k matmul calls per update) is not in these: they are oneDNN's execution
    times of the matmul primitives alone."""

    def run(rollout):
        if not now():
            return ppo_epochs(rollout)
        sys.stdout.flush()
        saved, python_stdout = os.dup(1), sys.stdout
        with tempfile.TemporaryFile(mode="w+") as log, os.fdopen(os.dup(saved), "w", buffering=1) as terminal:
            os.dup2(log.fileno(), 1)
            sys.stdout = terminal
            start = time.perf_counter()
            try:
                with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                    out = ppo_epochs(rollout)
            finally:
                seconds = time.perf_counter() - start
                sys.stdout = python_stdout
                os.dup2(saved, 1)
                os.close(saved)
            log.seek(0)
            summary = onednn_matmul_summary(log)
        print(f"oneDNN matmuls in this update's PPO epochs ({seconds:.1f} s with the log on): {summary['calls']} calls, "
              f"{summary['seconds']:.2f} s = {summary['seconds'] / seconds:.1%} of the time, {summary['flops'] / 1e9:.0f} "
              f"GFLOP at {summary['flops'] / max(summary['seconds'], 1e-9) / 1e12:.3f} TFLOP/s", flush=True)
        for shape, (calls, sec, flops) in summary["by_shape"][:12]:
            print(f"  {shape:<26} {calls:>6} calls {sec:8.3f} s  {flops / max(sec, 1e-9) / 1e12:.3f} TFLOP/s", flush=True)
        return out

    return run


def onednn_matmul_summary(lines) -> dict:
    """oneDNN verbose ``exec`` lines of matmul primitives summed: calls, seconds and FLOPs (2·batch·M·K·N from the
    problem's ``[batch x]MxK:[batch x]KxN`` dims), in all and by shape (most seconds first)."""
    by_shape: dict[str, list[float]] = {}
    for line in lines:
        fields = line.strip().split(",")
        if "exec" not in fields or "matmul" not in fields:
            continue
        dims, ms = fields[-2], float(fields[-1])
        src, wei = [[int(d) for d in part.split("x")] for part in dims.split(":")[:2]]
        batch = math.prod(src[:-2])
        entry = by_shape.setdefault(dims, [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += ms / 1e3
        entry[2] += 2 * batch * src[-2] * src[-1] * wei[-1]
    shapes = sorted(((k, (int(c), s, f)) for k, (c, s, f) in by_shape.items()), key=lambda kv: -kv[1][1])
    return {"calls": sum(c for _, (c, _, _) in shapes), "seconds": sum(s for _, (_, s, _) in shapes),
            "flops": sum(f for _, (_, _, f) in shapes), "by_shape": shapes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="a tiny GPT-2 (for the tests)")
    p.add_argument("--updates", type=int, default=3, help="PPO updates; the first is a warm-up")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--skip-trl", action="store_true", help="leave out the comparison with TRL 1.12")
    p.add_argument("--micro-batch", type=int, nargs="+", default=[4],
                   help="per_device_train_batch_size (32 episodes per update: accumulation 32 / this); several: a sweep")
    p.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto",
                   help="auto: the offline default's on this CPU (bf16 where it has bf16 units, else float32)")
    p.add_argument("--profile", type=int, default=0, metavar="ROWS",
                   help="trace the PPO epochs of the update after the warm-up with torch.profiler and print the ROWS "
                        "ops with the most CPU time (that update's time then includes the profiler's overhead)")
    p.add_argument("--onednn", action="store_true",
                   help="log oneDNN's matmuls in the PPO epochs of the update after the warm-up: their seconds and "
                        "rate by shape (bf16 matmuls run there on CPU; float32 ones may not)")
    p.add_argument("--compile", nargs="+", choices=["eager", "compiled"], default=["eager"],
                   help="compiled: torch_compile=True (the policy's repeated blocks, compiled once; the first update "
                        "pays the compilation and is left out of the time); eager compiled: both in one run")
    a = p.parse_args()
    dtype = cpu_matmul_dtype() if a.dtype == "auto" else getattr(torch, a.dtype)
    name = str(dtype).removeprefix("torch.")
    # the VM's matmul rate drifts (2048^2 bf16 medians of 1.3-2.3 TFLOP/s within one hour on a 2-vCPU Xeon): measured
    # before and after the PPO phases, the faster of the two is the peak (the fractions below are then the lower ones)
    before = matmul_peak(a.threads, dtype=dtype)
    results = [((micro, c), ppo_phase(a.tiny, a.updates, a.threads, micro, dtype, a.profile, c == "compiled",
                                               a.onednn))
               for micro in a.micro_batch for c in a.compile]
    after = matmul_peak(a.threads, dtype=dtype)
    peak = max(before, after)
    print(f"{name} matmul 2048^2, {a.threads} threads: {before / 1e12:.3f} TFLOP/s before the PPO phases, "
          f"{after / 1e12:.3f} after; peak {peak / 1e12:.3f} (measured in this run)")
    for (micro, c), r in results:
        print(f"PPO phase ({'tiny GPT-2' if a.tiny else f'SmolLM2-135M {name} + LoRA'}, micro-batch {micro}, {r['updates']} "
              f"updates x 32 episodes x 4 epochs, {c}): {r['seconds']:.1f} s, {r['processed_tokens']} tokens processed "
              f"({r['real_tokens']} real, {1 - r['real_tokens'] / r['processed_tokens']:.1%} padding); rollout "
              f"{r['rollout_seconds']:.1f} s per update; the first update's PPO epochs {r['first_seconds']:.1f} s")
        for count, key in (("on processed tokens", "flops_processed"), ("on real tokens", "flops_real"),
                           ("the issue's count (4 N_total per real token)", "flops_issue_count")):
            rate = r[key] / r["seconds"]
            print(f"  {count}: {rate / 1e12:.3f} TFLOP/s = {rate / peak:.1%} of the matmul peak", flush=True)
    if not a.skip_trl:
        import ppo_throughput

        ppo_throughput.main(["--sides", "trl-1.12", "hf_prefs", "--updates", "3" if a.tiny else "6"])


if __name__ == "__main__":
    main()
