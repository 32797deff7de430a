"""One SGD step of the K-way reward trainer on 8 fixed best-of-4 labels with the paper's normalization after it, run
in-process (1 process, batch 8) or under `accelerate launch` with multi_cpu.yaml (2 processes x batch 4).
``frozen``: the bottom block frozen and 2 epochs (2 steps), optionally with ``cache_frozen_features``.
``evaluate_first``: ``trainer.evaluate()`` on 7 labels before ``train()`` (it left the model without DDP).
Writes `out/result_<rank>.json` (world size, the logged loss, gain, bias, the cache's row counts, the evaluation) and
`out/params.pt` (main process)."""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_prefs import PreferenceRewardConfig, PreferenceRewardTrainer
from hf_prefs.models.frozen_features import freeze_bottom_layers
from hf_prefs.models.reward_model import get_reward_normalization

GOOD, BAD = [" wonderful", " happy", " lovely"], [" terrible", " sad", " awful"]


def labels(n: int = 8) -> Dataset:
    rng = random.Random(0)
    rows = {"query": [], "samples": [], "best": []}
    for i in range(n):
        best = rng.randrange(4)
        rows["query"].append(f"Chapter {i}. After the ball she felt")
        rows["samples"].append([(rng.choice(GOOD) if j == best else rng.choice(BAD)) + " all day." for j in range(4)])
        rows["best"].append(best)
    return Dataset.from_dict(rows)


def rho_samples(n: int = 16) -> Dataset:
    rng = random.Random(1)
    return Dataset.from_dict({"query": [f"Chapter {i}. She said" for i in range(n)],
                              "response": ["".join(rng.choices(GOOD + BAD + [" the", " walk"], k=5)) for _ in range(n)]})


def run(base: str, out: str, per_device: int, frozen: bool = False, cache: bool = False,
        evaluate_first: bool = False) -> dict:
    tok = AutoTokenizer.from_pretrained(base)
    tok.pad_token = tok.eos_token
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    model.config.pad_token_id = tok.eos_token_id
    if frozen:
        freeze_bottom_layers(model, 1)
    args = PreferenceRewardConfig(
        output_dir=str(Path(out) / "rm"), per_device_train_batch_size=per_device, per_device_eval_batch_size=8,
        learning_rate=3e-3, num_train_epochs=2 if frozen else 1, logging_steps=1, cache_frozen_features=cache, report_to=[], save_strategy="no",
        gradient_checkpointing=False, normalize_before=False, normalize_after=True, normalize_samples=16, seed=0,
        use_cpu=True, disable_tqdm=True, dataloader_num_workers=0,
        optim="sgd",  # the update is the gradient itself: Adam's first step, g / (|g| + eps), amplifies the float
    )  # noise of near-zero gradients summed in another order (seen: 1e-4 on a LayerNorm bias with AdamW)
    trainer = PreferenceRewardTrainer(model=model, args=args, train_dataset=labels(), processing_class=tok,
                                      normalization_samples=rho_samples(), eval_dataset=labels(7) if evaluate_first else None)
    evaluation = trainer.evaluate() if evaluate_first else {}
    trainer.train()
    loss = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    gain, bias = get_reward_normalization(trainer.model)
    logs = {k: v for h in trainer.state.log_history for k, v in h.items()}
    result = {"world": trainer.accelerator.num_processes, "loss": loss, "gain": gain, "bias": bias,
              "steps": trainer.state.global_step, "rows_computed": logs.get("frozen_features_rows_computed"),
              "rows_read": logs.get("frozen_features_rows_read"),
              "eval": {k: v for k, v in evaluation.items() if k in ("eval_loss", "eval_accuracy", "eval_margin")}}
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"result_{trainer.accelerator.process_index}.json").write_text(json.dumps(result))
    if trainer.accelerator.is_main_process:
        torch.save({k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}, Path(out) / "params.pt")
    return result


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--per_device", type=int, default=4)
    p.add_argument("--frozen", action="store_true")
    p.add_argument("--cache", action="store_true")
    p.add_argument("--evaluate_first", action="store_true")
    a = p.parse_args(sys.argv[1:])
    run(a.base, a.out, a.per_device, a.frozen, a.cache, a.evaluate_first)
