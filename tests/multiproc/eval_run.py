"""The held-out evaluation (``evaluate_policy``) of 3 queries on the processes it is launched with (2: shares of 2 and
1 queries), one query per batch, on a tiny base. Each rank writes ``eval_<rank>.json``: the merged evaluation and the
number of forward passes its policy ran; and ``PPOTrainer.generate_completions`` on 5 queries as its eval set, 2 per
batch (rank 0 takes batches 0 and 2 — rows 0, 1 and 4 —, rank 1 batch 1 and a repeat), the table's rows as every
rank returns them and the number of rows each call of the reward scored (equal on every rank: a sharded reward model
runs a collective per forward)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from accelerate import PartialState
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_prefs import PPOConfig, PPOTrainer
from hf_prefs.core.rollout import RolloutSpec
from hf_prefs.pipeline import evaluate_policy

QUERIES = ["It was a fine morning and", "She walked to the window", "The letter said"]
COMPLETION_QUERIES = QUERIES + ["Her sister had gone", "At dinner the colonel"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    rank = PartialState(cpu=True).process_index
    tok = AutoTokenizer.from_pretrained(a.base)
    policy = AutoModelForCausalLM.from_pretrained(a.base)
    forwards = [0]
    policy.register_forward_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
    spec = RolloutSpec(response_length=4, pad_token_id=tok.eos_token_id)
    ev = evaluate_policy(policy, tok, QUERIES, spec, known_reward=lambda texts: [float(len(t)) for t in texts],
                         batch_size=1, seed=5)
    args = PPOConfig(output_dir=str(Path(a.out) / "ppo"), per_device_train_batch_size=1, per_device_eval_batch_size=2,
                     total_episodes=2, response_length=4, num_sample_generations=0, report_to=[], save_strategy="no",
                     use_cpu=True, disable_tqdm=True)
    scored: list[int] = []

    def reward(queries: list[str], responses: list[str]) -> list[float]:
        scored.append(len(responses))
        return [float(len(t)) for t in responses]

    queries = Dataset.from_dict({"query": COMPLETION_QUERIES})
    trainer = PPOTrainer(model=AutoModelForCausalLM.from_pretrained(a.base), args=args, processing_class=tok,
                         reward_model=reward, train_dataset=queries, eval_dataset=queries)
    table = trainer.generate_completions()
    (Path(a.out) / f"eval_{rank}.json").write_text(json.dumps({
        "eval": asdict(ev), "forwards": forwards[0], "scored": scored,
        "completions": {"query": list(table["query"]), "response": list(table["model response"]),
                        "score": list(table["score"])}}))


if __name__ == "__main__":
    main()
