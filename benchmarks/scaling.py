"""Data-parallel scaling on the CPU: 1 process x 1 thread against 2 processes x 1 thread on the same global batch.

PPO: the offline default's PPO phase (SmolLM2-135M with LoRA, in bfloat16 on a CPU with bf16 units and float32
otherwise, as the offline default's cpu_bf16_fallback; 32 episodes per update of 24 tokens,
4 PPO epochs, micro-batches of 8): episodes per second of rollout + PPO epochs, measured over the updates after the
first (warm-up). Reward model: the K-way reward trainer (top 2 layers + head of SmolLM2, batches of 16 best-of-4
labels): labels per second of training over the steps after the first (train()'s set-up and the first step, which
include DDP's broadcast of the module and do not scale, are printed apart as "+ set-up"). Both sides run the same global batch; the 2-process side through
`accelerate launch --config_file recipes/accelerate_configs/multi_cpu.yaml` (gloo), each process with one thread.
The ratio is printed (the goal is >= 1.8x on 2 cores), beside the hardware's own, one process alone against two at once:
a matmul in the models' dtype on one thread (compute; 1.8-1.97x on the project's 2-vCPU VMs) and an add over 64 MB
arrays (memory bandwidth, shared by the two: 1.33-1.38x on a 2-vCPU AVX2 AMD EPYC VM), and the PPO
update's seconds by part (generation, scoring, the log-prob passes, the PPO epochs) on each side. A third PPO side,
"apart", runs two independent single processes at once, process r doing what rank r does (its dealt half of each
update's queries, its sampling seed): a DDP rank's work without its gradient all-reduce, its collectives and its
waiting for the slower rank — the most this CPU gives this workload on 2 processes, so that what the 2-process run
loses to the library and what to the hardware are told apart.

    python benchmarks/scaling.py                 # SmolLM2 (the offline assets), ~16 minutes on 2 cores (2 repeats)
    python benchmarks/scaling.py --model tiny --repeats 1   # tiny GPT-2: seconds; overhead-bound, ratios are not meaningful
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
MULTI_CPU = ROOT / "recipes" / "accelerate_configs" / "multi_cpu.yaml"
#: The hardware probes of :func:`_hardware_worker` and the unit of their rate.
HARDWARE_UNITS = {"matmul": "TFLOP/s", "memory": "GB/s"}


def _base(model: str, work: Path) -> tuple[str, str]:
    """``(model folder, torch dtype name)``: the offline SmolLM2 in the offline default's precision on this CPU (bf16
    where it has bf16 units, else float32) or a tiny GPT-2 (float32)."""
    from hf_prefs._compat import cpu_matmul_dtype
    from hf_prefs.assets import load_gpt2_tokenizer, smollm2_path

    if model == "smollm2":
        return str(smollm2_path()), str(cpu_matmul_dtype()).removeprefix("torch.")
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = work / "tiny"
    if not folder.exists():
        GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).save_pretrained(folder)
        load_gpt2_tokenizer().save_pretrained(folder)
    return str(folder), "float32"


def _ppo_worker(base: str, dtype: str, episodes: int, updates: int, share: int | None = None) -> dict:
    """The offline default's PPO phase on this process (of a DDP run when launched so); with ``share`` = r, one
    process alone doing what process r of a 2-process run does: its dealt half of each update's ``episodes`` queries,
    its sampling seed, the same micro-batches."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from hf_prefs import PPOConfig, PPOTrainer
    from hf_prefs.tasks import austen_queries, vader_log_odds

    world = 2 if share is not None else int(os.environ.get("WORLD_SIZE", "1"))
    tok = AutoTokenizer.from_pretrained(base, padding_side="left")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    micro = min(8, episodes // world)
    # alone as rank r: this process's batch is a rank's half; the query stream is the run's (data_seed), the sampling
    # seed rank r's (the trainer adds 100_003 x its process index, 0 here)
    alone = {} if share is None else {"total_episodes": episodes // world * updates, "data_seed": 0, "seed": 100_003 * share}
    args = PPOConfig(**{
        "output_dir": tempfile.mkdtemp(), "per_device_train_batch_size": micro,
        "gradient_accumulation_steps": episodes // world // micro, "total_episodes": episodes * updates,
        "response_length": 24, "temperature": 0.7, "num_ppo_epochs": 4, "learning_rate": 3e-4,
        "local_rollout_forward_batch_size": 8, "local_rollout_generation_batch_size": 32,  # as the offline default
        "report_to": [], "save_strategy": "no", "num_sample_generations": 0,
        "disable_tqdm": True, "use_cpu": True, "bf16": dtype == "bfloat16", "seed": 0, **alone,
    })

    class Trainer(PPOTrainer):
        def sample_queries(self, update: int):  # alone as rank r: rank r's dealt share of the 2-process batch
            return super().sample_queries(update) if share is None else self.queries_for(update, world, share)
    times: list[float] = []
    parts: list[dict[str, float]] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t0)
            parts.append(dict(trainer.timings))

    policy = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype))
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    queries = austen_queries(tok, n=256, min_tokens=24, max_tokens=64, seed=0)
    trainer = Trainer(model=policy, reward_model=lambda q, r: torch.tensor(vader_log_odds(r)), args=args,
                         train_dataset=queries, processing_class=tok, peft_config=lora, callbacks=[Clock()])
    trainer.train()
    timed, parts = (times[1:], parts[1:]) if len(times) > 1 else (times, parts)
    seconds = {key: sum(p.get(key, 0.0) for p in parts) / len(parts) for key in parts[0]}  # of the main process
    return {"world": trainer.accelerator.num_processes, "episodes_per_s": trainer.args.batch_size * len(timed) / sum(timed),
            "seconds_per_update": sum(timed) / len(timed), "threads": torch.get_num_threads(), "parts": seconds}


def rm_setup(base: str, labels: int, dtype: str, batch_size: int = 16, **config: object) -> tuple:
    """``(model, tokenizer, label dataset, PreferenceRewardConfig)``: the offline default's reward model (the trunk in
    float32, its top 2 blocks + head trained (tiny: 1 of 2), packed rows; bf16 autocast where ``dtype`` is bfloat16) and ``labels``
    best-of-4 labels (Austen queries of 24-64 tokens, 4 samples of 18 random words); ``config`` overrides."""
    import random

    import torch
    from datasets import Dataset
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from hf_prefs import PreferenceRewardConfig
    from hf_prefs.models.frozen_features import freeze_bottom_layers, transformer_blocks
    from hf_prefs.tasks import austen_queries

    tok = AutoTokenizer.from_pretrained(base)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    rng = random.Random(0)
    queries = austen_queries(tok, n=labels, min_tokens=24, max_tokens=64, seed=1)["query"]
    words = " the a happy sad letter walk said she he was".split(" ")
    rows = {"query": queries, "samples": [[" ".join(rng.choices(words, k=18)) + "." for _ in range(4)] for _ in queries],
            "best": [rng.randrange(4) for _ in queries]}
    model_config = AutoConfig.from_pretrained(base)
    model_config.num_labels, model_config.pad_token_id = 1, tok.pad_token_id
    torch.manual_seed(0)  # the score head's initialisation: the same model on every call
    model = AutoModelForSequenceClassification.from_pretrained(base, config=model_config, dtype=torch.float32)
    freeze_bottom_layers(model, max(1, len(transformer_blocks(model)[2]) - 2))  # tiny GPT-2: 1 of 2
    kw = dict(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch_size, learning_rate=1e-3, num_train_epochs=1,
        normalize_before=False, normalize_after=False, share_query_prefix=True, report_to=[], save_strategy="no",
        gradient_checkpointing=False, use_cpu=True, bf16=dtype == "bfloat16", disable_tqdm=True, logging_steps=1000, seed=0,
    )
    kw.update(config)
    return model, tok, Dataset.from_dict(rows), PreferenceRewardConfig(**kw)


def _rm_worker(base: str, labels: int, dtype: str) -> dict:
    from transformers import TrainerCallback

    from hf_prefs import PreferenceRewardTrainer

    world = int(os.environ.get("WORLD_SIZE", "1"))
    model, tok, dataset, args = rm_setup(base, labels, dtype, batch_size=16 // world)
    ends: list[float] = []

    class Clock(TrainerCallback):  # the end of every optimizer step (data loading included)
        def on_step_end(self, *a, **k):
            ends.append(time.perf_counter())

    trainer = PreferenceRewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                                      callbacks=[Clock()])
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start
    if len(ends) < 3:
        raise ValueError(f"--labels {labels}: need >= 3 steps of 16 labels (one warm-up, two timed)")
    # steady state: the steps after the first, as for PPO (the first carries train()'s set-up: DDP's broadcast of the
    # whole module, dataloader workers, first-call allocations, which do not scale with the processes)
    return {"world": trainer.accelerator.num_processes, "labels_per_s": 16 * (len(ends) - 1) / (ends[-1] - ends[0]),
            "labels_per_s_with_setup": labels / total}


def _hardware_worker(kind: str, dtype: str, seconds: float = 8.0) -> dict:
    """What the hardware gives one thread (``{"rate": ...}``): ``matmul``, TFLOP/s of a 1024^2 matmul in ``dtype`` (compute-bound, the
    ceiling of the ratios for the matmul-heavy parts); ``memory``, GB/s of an elementwise add over float32 arrays of
    64 MB (read a and b, write a: beyond any cache, bound by memory bandwidth, as decoding a token reads every
    weight)."""
    import torch

    if kind == "matmul":
        a, b = torch.randn(1024, 1024, dtype=getattr(torch, dtype)), torch.randn(1024, 1024, dtype=getattr(torch, dtype))
        step, per_step = (lambda: a @ b), 2 * 1024**3 / 1e12
    else:
        a, b = torch.randn(16 * 2**20), torch.randn(16 * 2**20)
        step, per_step = (lambda: torch.add(a, b, out=a)), 3 * a.numel() * a.element_size() / 1e9
    for _ in range(3):
        step()
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    return {"rate": per_step * n / (time.perf_counter() - start)}


def _worker_env() -> dict[str, str]:
    """The environment of every measured process: one thread, this checkout importable."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _hardware(work: Path, dtype: str, seconds: float) -> dict[str, tuple[float, float]]:
    """Per kind of :func:`_hardware_worker` (``matmul``: TFLOP/s, ``memory``: GB/s), ``(one, two)``: 1 process alone,
    and the sum of 2 processes running at once, each measuring for ``seconds``."""
    env, out = _worker_env(), {}
    for kind in HARDWARE_UNITS:
        cmd = lambda i: [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--dtype", dtype, "--result",
                          str(work / f"{kind}{i}.json"), "--hardware-seconds", str(seconds)]
        subprocess.run(cmd(0), env=env, check=True)
        one = json.loads((work / f"{kind}0.json").read_text())["rate"]
        procs = [subprocess.Popen(cmd(i), env=env) for i in (1, 2)]
        assert all(p.wait() == 0 for p in procs)
        out[kind] = (one, sum(json.loads((work / f"{kind}{i}.json").read_text())["rate"] for i in (1, 2)))
    return out


def _run(n: int, worker: list[str], out: Path) -> dict:
    """The worker on ``n`` processes of one thread each; its main process's JSON result."""
    env = _worker_env()
    script = [str(Path(__file__).resolve()), *worker, "--result", str(out)]
    if n == 1:
        cmd = [sys.executable, *script]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(MULTI_CPU), "--num_processes",
               str(n), *script]
    from hf_prefs.trainers.launch import EXIT_ABORT, failed_only_at_exit

    out.unlink(missing_ok=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0 and out.exists() and failed_only_at_exit(proc.stderr):
        print(f"note: a rank aborted at exit, its result written ({EXIT_ABORT!r}, pytorch/pytorch#190489)",
              file=sys.stderr)
    elif proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text())


def _run_apart(worker: list[str], outs: tuple[Path, Path]) -> dict:
    """The PPO worker as two independent single processes at once, process r doing what rank r of the 2-process run
    does (its dealt half of each update's queries, its sampling seed) without communication or synchronisation: what
    this CPU allows the 2-process run at best. The global episodes/s set by the slower of the two (as the DDP run's
    ranks are), and its per-part seconds."""
    env = _worker_env()
    cmds = [[sys.executable, str(Path(__file__).resolve()), *worker, "--share", str(r), "--result", str(out)]
            for r, out in enumerate(outs)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for cmd in cmds]
    for cmd, proc in zip(cmds, procs):
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{stdout[-2000:]}\n{stderr[-4000:]}")
    slower = max((json.loads(out.read_text()) for out in outs), key=lambda r: r["seconds_per_update"])
    return {"episodes_per_s": 2 * slower["episodes_per_s"], "parts": slower["parts"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    p.add_argument("--episodes", type=int, default=32, help="PPO episodes per update (the global batch)")
    p.add_argument("--updates", type=int, default=3, help="PPO updates; the first is a warm-up")
    p.add_argument("--labels", type=int, default=160, help="labels for the reward-model timing (16 per step; the first "
                   "step is a warm-up)")
    p.add_argument("--repeats", type=int, default=2, help="measurements per side (alternating order); mean reported")
    p.add_argument("--hardware-seconds", type=float, default=8.0, help="seconds each matmul / memory measurement runs")
    p.add_argument("--worker", choices=["ppo", "rm", *HARDWARE_UNITS], help=argparse.SUPPRESS)
    p.add_argument("--base", help=argparse.SUPPRESS)
    p.add_argument("--dtype", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--share", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:  # inside one process of a measured run
        import torch

        torch.set_num_threads(1)
        if a.worker in HARDWARE_UNITS:
            result = _hardware_worker(a.worker, a.dtype, a.hardware_seconds)
        else:
            result = _ppo_worker(a.base, a.dtype, a.episodes, a.updates, a.share) if a.worker == "ppo" else _rm_worker(a.base, a.labels, a.dtype)
        if int(os.environ.get("RANK", "0")) == 0:
            Path(a.result).write_text(json.dumps(result))
        return
    work = Path(tempfile.mkdtemp())
    base, dtype = _base(a.model, work)
    common = ["--base", base, "--dtype", dtype, "--episodes", str(a.episodes), "--updates", str(a.updates),
              "--labels", str(a.labels)]
    phases = (("ppo", "episodes_per_s"), ("rm", "labels_per_s"))
    results: dict[str, dict[int, list[dict]]] = {name: {1: [], 2: []} for name, _ in phases}
    hardware: dict[str, dict[int, list[float]]] = {kind: {1: [], 2: []} for kind in HARDWARE_UNITS}
    apart: list[dict] = []  # PPO as two independent processes on half the batch each: the ceiling of the 2-process run
    for r in range(a.repeats):  # the VM's speed drifts: alternate which side runs first, report the mean and each
        for kind, (one, two) in _hardware(work, dtype, a.hardware_seconds).items():
            hardware[kind][1].append(one)
            hardware[kind][2].append(two)
            print(f"repeat {r + 1}: {kind} {HARDWARE_UNITS[kind]} 1 process {one:.3f}, 2 at once {two:.3f}", flush=True)
        for name, key in phases:
            sides = [1, 2, "apart"] if name == "ppo" else [1, 2]
            for n in sides if r % 2 == 0 else sides[::-1]:
                if n == "apart":
                    apart.append(_run_apart(["--worker", "ppo", *common], (work / f"apart0_{r}.json", work / f"apart1_{r}.json")))
                    print(f"repeat {r + 1}: ppo as 2 independent processes, each a rank's half: episodes_per_s "
                          f"{apart[-1]['episodes_per_s']:.3f}", flush=True)
                    continue
                res = _run(n, ["--worker", name, *common], work / f"{name}{n}_{r}.json")
                assert res["world"] == n, res
                results[name][n].append(res)
                print(f"repeat {r + 1}: {name} on {n} process(es): {key} {res[key]:.3f}", flush=True)  # as it goes
    mean = lambda xs: sum(xs) / len(xs)
    print(f"model {a.model}: global batch {a.episodes} episodes per PPO update, 16 labels per reward-model step; "
          f"{a.repeats} repeat(s), sides alternating which runs first")
    print(f"{'phase':6} {'unit':16} {'1 proc x 1 thread':>18} {'2 procs x 1 thread':>19} {'ratio':>7}   each repeat")
    rows = [(name, key, [x[key] for x in results[name][1]], [x[key] for x in results[name][2]]) for name, key in phases]
    rows.append(("rm", "+ set-up, /s", [x["labels_per_s_with_setup"] for x in results["rm"][1]],
                 [x["labels_per_s_with_setup"] for x in results["rm"][2]]))
    rows.append(("ppo", "apart, ep/s", [x["episodes_per_s"] for x in results["ppo"][1]], [x["episodes_per_s"] for x in apart]))
    rows.append(("matmul", f"TFLOP/s ({'bf16' if dtype == 'bfloat16' else 'fp32'})", hardware["matmul"][1], hardware["matmul"][2]))
    rows.append(("memory", "GB/s (add)", hardware["memory"][1], hardware["memory"][2]))
    for name, key, ones, twos in rows:
        each = " ".join(f"{t / o:.2f}x" for o, t in zip(ones, twos))
        print(f"{name:6} {key:16} {mean(ones):18.3f} {mean(twos):19.3f} {mean(twos) / mean(ones):6.2f}x   {each}")
    print("(rm + set-up: labels over the whole train() call, the first step and the set-up included; "
          "the rm row times the steps after the first)")
    share = mean([x["episodes_per_s"] for x in results["ppo"][2]]) / mean([x["episodes_per_s"] for x in apart])
    print(f"(ppo apart: two independent single processes at once, process r doing rank r's half of each update (its "
          f"queries, its sampling seed) without communication or waiting, episodes/s set by the slower: what this CPU "
          f"allows 2 processes at best; the 2-process run reaches {share:.0%} of it)")
    print(f"(models in {dtype}; matmul and memory: the hardware's own ratios, two independent processes at once against "
          f"one alone, of a {dtype} matmul (compute) and of an add over 64 MB float32 arrays (memory bandwidth, what "
          f"decoding a token — every weight read for a few rows — leans on))")
    parts = {n: [x["parts"] for x in results["ppo"][n]] for n in (1, 2)}
    parts["apart"] = [x["parts"] for x in apart]
    print("PPO seconds per update by part (main process, mean; ratio = 1 proc / 2 procs, 2.00 would be perfect; "
          "apart: the slower of the 2 independent processes):")
    print(f"  {'part':16} {'1 proc':>8} {'2 procs':>8} {'ratio':>7} {'apart':>8} {'ratio':>7}")
    for part in parts[1][0]:
        one, two, alone = (mean([p.get(part, float("nan")) for p in parts[k]]) for k in (1, 2, "apart"))
        print(f"  {part:16} {one:8.2f} {two:8.2f} {one / two:6.2f}x {alone:8.2f} {one / alone:6.2f}x")

if __name__ == "__main__":
    main()
