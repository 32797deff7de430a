"""Why does the value function explain so little of the return variance, and what moves it?

PPO of the offline default's shape (SmolLM2-135M bf16 — float32 on a CPU without bf16 units — + LoRA r=16, value head on the trunk, 32 episodes x 4 PPO
epochs per update, 24-token responses at T=0.7, Austen queries) on the known reward (VADER log-odds, direct RL: no
reward model to train, so the runs are short), one run per variant, the same seed. Per update it records
``val/explained_variance`` = 1 - Var(G - V) / Var(G) over all response positions (as the trainer logs it), and the
same over the first 8 and the last 8 positions. The return G_t = sum_{u>=t} r_u (gamma = 1) of an early position
still depends on ~24 tokens not yet sampled, so even the true value E[G_t | s_t] explains only part of Var(G_t)
there; near the end G_t is nearly determined by the state. A low EV that is high at the end and low at the start
is that ceiling; a low EV everywhere is a value function that does not fit.

Variants: ``baseline`` (the offline default's PPO settings), ``no_whiten`` (``whiten_rewards=False``),
``head_lr_x10`` (``value_learning_rate=3e-3``: the value head's learning rate x10), ``critic_warmup`` (2 value-only
updates first), ``vf_coef_1`` (``vf_coef=1.0``: the value loss's weight on the shared LoRA trunk).

    python benchmarks/value_function.py                    # ~25 minutes on 2 cores
    python benchmarks/value_function.py --tiny --updates 2 # a tiny GPT-2 (the test)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

VARIANTS: dict[str, dict] = {
    "baseline": {},
    "no_whiten": {"whiten_rewards": False},
    "head_lr_x10": {"value_learning_rate": 3e-3},
    "critic_warmup": {"critic_warmup_updates": 2},
    "vf_coef_1": {"vf_coef": 1.0},
}


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float:
    """1 - Var(G - V) / Var(G) over all entries."""
    var = returns.float().var(unbiased=False)
    return float(1 - (returns - values).float().var(unbiased=False) / var) if var > 0 else float("nan")


def run_variant(name: str, tiny: bool, updates: int) -> list[dict[str, float]]:
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from hf_prefs import PPOConfig, PPOTrainer
    from hf_prefs._compat import cpu_matmul_dtype
    from hf_prefs.assets import load_gpt2_tokenizer, smollm2_path
    from hf_prefs.tasks import austen_queries, vader_log_odds

    overrides = dict(VARIANTS[name])
    bf16 = not tiny and cpu_matmul_dtype() == torch.bfloat16  # the offline default's precision on this CPU
    torch.manual_seed(0)
    if tiny:
        tok, targets = load_gpt2_tokenizer(), ["c_attn", "c_proj"]
        policy = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2))
    else:
        tok = AutoTokenizer.from_pretrained(smollm2_path(), padding_side="left")
        policy = AutoModelForCausalLM.from_pretrained(smollm2_path(), dtype=cpu_matmul_dtype())
        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    settings = dict(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=8, gradient_accumulation_steps=4, num_ppo_epochs=4,
        total_episodes=32 * updates, response_length=24, temperature=0.7, learning_rate=3e-4, kl_coef=0.15,
        adaptive_kl=True, kl_target=6.0, kl_horizon=10000, whiten_rewards=True, adam_epsilon=1e-5,
        local_rollout_forward_batch_size=32, report_to=[], save_strategy="no", num_sample_generations=0,
        disable_tqdm=True, use_cpu=True, bf16=bf16, seed=0,
    )
    args = PPOConfig(**{**settings, **overrides})
    queries = austen_queries(tok, n=512, min_tokens=24, max_tokens=64, seed=0)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM")
    rows: list[dict[str, float]] = []

    class Probe(PPOTrainer):
        def ppo_epochs(self, rollout):
            out = super().ppo_epochs(rollout)
            v, g = rollout.values.float(), out["returns"].float()
            rows.append({"all": explained_variance(v, g), "first8": explained_variance(v[:, :8], g[:, :8]),
                         "last8": explained_variance(v[:, -8:], g[:, -8:])})
            return out

    trainer = Probe(model=policy, reward_model=lambda q, r: torch.tensor(vader_log_odds(r)), args=args,
                    train_dataset=queries, processing_class=tok, peft_config=lora)
    trainer.train()
    known = [log["objective/scores"] for log in trainer.state.log_history if "objective/scores" in log]
    for row, score in zip(rows, known):
        row["score"] = score
    return rows


def main(argv: list[str] | None = None) -> dict[str, list[dict[str, float]]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--updates", type=int, default=8)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    a = p.parse_args(argv)
    results = {}
    print(f"{'variant':<15}{'EV all (last half)':>20}{'EV first 8':>12}{'EV last 8':>12}{'VADER (last half)':>19}   EV per update")
    for name in a.variants:
        rows = run_variant(name, a.tiny, a.updates)
        results[name] = rows
        late = rows[len(rows) // 2 :]

        def mean(key: str) -> float:
            return statistics.fmean(r[key] for r in late)

        trace = " ".join(f"{r['all']:.2f}" for r in rows)
        print(f"{name:<15}{mean('all'):>20.3f}{mean('first8'):>12.3f}{mean('last8'):>12.3f}{mean('score'):>19.3f}   {trace}",
              flush=True)
    return results


if __name__ == "__main__":
    main()
