"""PPO on tiny GPT-2, run in-process by the tests (1 process) or under `accelerate launch` with
recipes/accelerate_configs/multi_cpu.yaml (2 processes), so that their results can be compared.

    update: one PPO update on given episodes (a saved Rollout of the GLOBAL batch; process r takes its r-th share);
            with --nan_grad the LM head's gradient turns NaN (the non-finite-gradient check)
    train:  `steps` real updates (sampling differs by process by design), checkpoints every update, optionally
            resuming from a checkpoint.
With --cases (JSON {name: {"variant": ..., "per_device": ..., "set": {PPOConfig overrides}}}) one run per case, each
with a trainer of its own built after the last one's run, in out/<name>/ (one launch for many comparisons: a launch's
start-up, ~10 s of imports per process, is most of a tiny run's time).
Writes `out/result_<rank>.json` (world size, beta per update, KL per update, train: the process's queries per
update) and, on the main process,
`out/params.pt` (the policy-with-value-head state dict).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from hf_prefs import PPOConfig, PPOTrainer
from hf_prefs.trainers.ppo_data import Rollout

QUERIES = [f"Chapter {i}. The weather in the village was {w} that day." for i, w in
           zip(range(32), ["fine", "grey", "cold", "warm", "wet"] * 8)]


def length_reward(queries, responses):
    return torch.tensor([len(r) / 10.0 for r in responses])


def make_trainer(base: str, out: str, variant: str, per_device: int, steps: int = 1, save: bool = False,
                 reward_model: bool = False, **overrides) -> PPOTrainer:
    """The same trainer on every process: weights from `base`, LoRA / value model initialised after a fixed seed."""
    tok = AutoTokenizer.from_pretrained(base, padding_side="left")
    tok.pad_token = tok.eos_token
    kwargs = dict(
        output_dir=out, per_device_train_batch_size=per_device, gradient_accumulation_steps=1, num_mini_batches=1,
        num_ppo_epochs=2, response_length=6, learning_rate=1e-3, kl_coef=0.2, adaptive_kl=True, kl_target=0.05,
        kl_horizon=20, whiten_rewards=True, report_to=[], save_strategy="steps" if save else "no", save_steps=1,
        num_sample_generations=0, disable_tqdm=True, seed=0, use_cpu=True, dataloader_num_workers=0,
    )
    kwargs.update(overrides)
    if variant == "policy":  # a separate value model built by the trainer from the policy's trunk
        kwargs["value_model"] = "policy"
    kwargs["total_episodes"] = (steps * kwargs["per_device_train_batch_size"] * kwargs["gradient_accumulation_steps"]
                                * int(os.environ.get("WORLD_SIZE", "1")))
    args = PPOConfig(**kwargs)
    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_pretrained(base)
    value_model = None
    if variant == "separate":
        value_model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    peft = LoraConfig(r=4, target_modules=["c_attn"], lora_dropout=0.0, task_type="CAUSAL_LM") if variant == "lora" else None
    reward = length_reward
    if reward_model:  # a random sequence-classification model on the same trunk (loaded after the config, as a recipe does)
        torch.manual_seed(1)
        reward = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    return PPOTrainer(model=policy, reward_model=reward, args=args, processing_class=tok,
                      train_dataset=Dataset.from_dict({"query": QUERIES}), value_model=value_model, peft_config=peft)


def shard(rollout: Rollout, rank: int, world: int) -> Rollout:
    """Process `rank`'s share (a contiguous block) of a global batch of episodes."""
    n = len(rollout) // world
    sl = slice(rank * n, (rank + 1) * n)
    fields = {k: (v[sl] if isinstance(v, (torch.Tensor, list)) else v) for k, v in vars(rollout).items()}
    return Rollout(**fields)


def run_update(trainer: PPOTrainer, rollout: Rollout) -> dict:
    """One PPO update (epochs + KL controller) on this process's share of `rollout`."""
    trainer._setup_training(None)
    rank, world = trainer.accelerator.process_index, trainer.accelerator.num_processes
    stats = trainer.ppo_epochs(shard(rollout, rank, world))
    kl, beta = trainer.update_kl_controller(shard(rollout, rank, world))
    loss = trainer._mean(stats["loss/policy_avg"]) + trainer.args.vf_coef * trainer._mean(stats["loss/value_avg"])
    return {"world": world, "kl": [kl], "beta": [beta], "loss": loss}


def write(trainer: PPOTrainer, out: Path, result: dict) -> None:
    rank = trainer.accelerator.process_index
    out.mkdir(parents=True, exist_ok=True)
    (out / f"result_{rank}.json").write_text(json.dumps(result))
    # every process takes part: under DeepSpeed ZeRO-3 the state dict is gathered from all of them
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    if trainer.accelerator.is_main_process:
        torch.save({k: v.detach().cpu() for k, v in state.items()}, out / "params.pt")


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["update", "train"])
    p.add_argument("--base", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--variant", default="full", choices=["full", "lora", "separate", "policy"])
    p.add_argument("--per_device", type=int, default=4)
    p.add_argument("--rollout")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--resume")
    p.add_argument("--set", nargs="*", default=[], help="PPOConfig overrides key=json_value")
    p.add_argument("--nan_grad", action="store_true", help="update: the LM head's gradient turns NaN in every backward")
    p.add_argument("--cases", type=json.loads, help="JSON {name: {variant, per_device, set}}: one run each, in out/<name>")
    a = p.parse_args(argv)
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in a.set)}
    cases = a.cases or {"": {"variant": a.variant, "per_device": a.per_device, "set": overrides}}
    rollout = torch.load(a.rollout, weights_only=False) if a.mode == "update" else None
    for name, case in cases.items():  # one after another, a trainer of its own each
        out = Path(a.out) / name
        variant, per_device, settings = case.get("variant", "full"), case["per_device"], case.get("set", {})
        if a.mode == "update":
            trainer = make_trainer(a.base, str(out / "ppo"), variant, per_device, **settings)
            if a.nan_grad:  # a finite loss whose backward turns NaN (as a fused attention kernel's backward can)
                trainer.model.policy.get_output_embeddings().weight.register_hook(lambda grad: grad * float("nan"))
            write(trainer, out, run_update(trainer, rollout))
            del trainer  # before the next case's (one DeepSpeed engine at a time)
            continue
        trainer = make_trainer(a.base, str(out / "ppo"), variant, per_device, a.steps, save=True, **settings)
        trainer.train(resume_from_checkpoint=a.resume)
        logs = [h for h in trainer.state.log_history if "objective/kl" in h]
        write(trainer, out, {"world": trainer.accelerator.num_processes, "kl": [h["objective/kl"] for h in logs],
                             "beta": [h["objective/kl_coef"] for h in logs] + [trainer.kl_ctl.value],
                             "batch_size": trainer.args.batch_size, "steps": trainer.state.global_step,
                             "queries": [trainer.sample_queries(u)[2] for u in range(a.steps)]})  # this process's share
        del trainer


if __name__ == "__main__":
    main(sys.argv[1:])
