"""K-way reward training vs the same labels decomposed into pairs for stock ``trl.RewardTrainer``.

Same labels, same model initialisation, same hardware, one run. Labels: best-of-4 over samples of ρ (a word-bigram
LM of Jane Austen, ``tests/bigram_rho.py``, the cheap ρ of the slow tests) for real Austen queries, picked by
VADER log-odds (``SimulatedLabeler``). Reward model: a small GPT-2 trained from scratch with the real GPT-2
tokenizer. Arms:

- ``kway``        PreferenceRewardTrainer, K=4 loss, the 4 candidates of a label as 4 rows of one forward;
- ``kway+prefix`` the same with ``share_query_prefix=True`` (each query encoded once, responses on top of it);
- ``pairs-implied`` stock ``trl.RewardTrainer`` on the K-1 = 3 pairs a best-of-4 label implies (best > other);
- ``pairs-all``   stock ``trl.RewardTrainer`` on all pairs of the known reward's full order (up to 6 per label,
  ties dropped) — information a human best-of-4 label does not contain.

Every arm uses ``--rows-per-step`` sequences per forward (K-way: rows/4 labels, pairwise: rows/2 pairs) and the
same learning rate. Throughput: ``--rounds`` timed segments of ``--timing-steps`` optimizer steps per arm (after one
untimed step), run interleaved (so load from other processes hits all arms alike), median labels/second (a pair counts as 1/3 or
1/(pairs per label) of a label). Accuracy: one full training run per arm (``--epochs`` over all labels), held-out
best-of-4 accuracy, each model read as it was trained (K-way: last response token; TRL: its own pooling of
query+sample+EOS).

    python benchmarks/reward_kway_vs_pairwise.py                          # tiny GPT-2, timing + accuracy
    python benchmarks/reward_kway_vs_pairwise.py --model smollm2 --skip-accuracy --pairs implied --n-train 128 \
        --n-test 8 --timing-steps 3 --rounds 3 --rows-per-step 16 --threads 2  # token-bound regime, timing only

Why prefix sharing: per label, K-way rows cost 4·(|q|+|r|) tokens and the 3 implied pairs 6·(|q|+|r|+1), a ratio
of only ~1.5; encoding the query once costs |q|+4·|r|, ~3x fewer than the pairs for 32-64-token queries and
24-token responses. The measured labels/s ratios follow these token ratios (the tiny model is partly bound by
per-step overhead, SmolLM2 by tokens).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import GPT2Config, GPT2ForSequenceClassification, TrainerCallback  # noqa: E402
from trl import RewardConfig, RewardTrainer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bigram_rho import austen_bigram  # noqa: E402

from hf_prefs.assets import load_gpt2_tokenizer  # noqa: E402
from hf_prefs.labels.labelers import SimulatedLabeler, sample_label_dataset  # noqa: E402
from hf_prefs.labels.schema import to_pairwise  # noqa: E402
from hf_prefs.core.losses import kway_accuracy  # noqa: E402
from hf_prefs.models.reward_model import score_texts  # noqa: E402
from hf_prefs.trainers import PreferenceRewardConfig, PreferenceRewardTrainer  # noqa: E402
from hf_prefs.tasks.known_rewards import vader_log_odds  # noqa: E402
from hf_prefs.tasks.books import austen_queries  # noqa: E402


class StepTimer(TrainerCallback):
    """Wall seconds of each optimizer step (forward, backward, optimizer), step begin to step end."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._t0 = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._t0)


def build_labels(tokenizer, n_train: int, n_test: int, seed: int) -> tuple[Dataset, Dataset]:
    rho, rho_tok = austen_bigram()
    queries = austen_queries(tokenizer, n=n_train + n_test, min_tokens=32, max_tokens=64, seed=seed)["query"]
    labels = sample_label_dataset(
        rho,
        rho_tok,
        queries,
        SimulatedLabeler(vader_log_odds, seed=seed),
        k=4,
        response_length=24,
        temperature=0.7,
        truncate_token=None,
        batch_size=256,
        seed=seed,
    )
    return labels.select(range(n_train)), labels.select(range(n_train, n_train + n_test))


def all_pairs(labels: Dataset) -> Dataset:
    """Every (higher, lower) pair of the known rewards' order; equal rewards give no pair."""
    rows = {"prompt": [], "chosen": [], "rejected": []}
    for q, samples, known in zip(labels["query"], labels["samples"], labels["known_rewards"]):
        for i in range(len(samples)):
            for j in range(len(samples)):
                if known[i] > known[j]:
                    rows["prompt"].append(q)
                    rows["chosen"].append(samples[i])
                    rows["rejected"].append(samples[j])
    return Dataset.from_dict(rows)


def common_args(out: str, args, **kw) -> dict:
    return dict(
        output_dir=out,
        learning_rate=args.lr,
        num_train_epochs=args.epochs,
        logging_steps=10_000,
        report_to=[],
        save_strategy="no",
        gradient_checkpointing=False,
        bf16=False,
        disable_tqdm=True,
        seed=args.seed,
        per_device_eval_batch_size=32,
        **kw,
    )


def kway_trainer(init, tok, train: Dataset, args, prefix: bool, **kw) -> PreferenceRewardTrainer:
    cfg = PreferenceRewardConfig(
        **common_args(f"{args.out}/kway", args, per_device_train_batch_size=args.rows_per_step // 4, **kw),
        share_query_prefix=prefix,
        normalize_before=False,
        normalize_after=False,
    )
    return PreferenceRewardTrainer(copy.deepcopy(init), cfg, train_dataset=train, processing_class=tok)


def pairwise_trainer(init, tok, pairs: Dataset, args, **kw) -> RewardTrainer:
    cfg = RewardConfig(
        **common_args(f"{args.out}/pairs", args, per_device_train_batch_size=args.rows_per_step // 2, **kw)
    )
    return RewardTrainer(copy.deepcopy(init), cfg, train_dataset=pairs, processing_class=tok)


@torch.no_grad()
def trl_rewards(model, tok, queries: list[str], samples: list[str], batch_size: int = 32) -> torch.Tensor:
    """Rewards the way stock TRL trains them: prompt+completion+EOS tokenized together, the model's own pooling."""
    model.eval()
    out = []
    for s in range(0, len(queries), batch_size):
        texts = [q + c + tok.eos_token for q, c in zip(queries[s : s + batch_size], samples[s : s + batch_size])]
        enc = tok(texts, padding=True, return_tensors="pt")
        out.append(model(**enc).logits.squeeze(-1).float())
    return torch.cat(out)


def held_out_accuracy(trainer, tok, test: Dataset, kway: bool) -> float:
    queries = [q for q in test["query"] for _ in range(4)]
    samples = [s for ss in test["samples"] for s in ss]
    if kway:
        rewards = score_texts(trainer.model, tok, queries, samples, batch_size=32)
    else:
        rewards = trl_rewards(trainer.model, tok, queries, samples)
    return kway_accuracy(rewards.view(-1, 4), torch.tensor(test["best"])).item()


def load_model_and_tokenizer(args):
    if args.model == "smollm2":  # the paper-like trunk (pretrained, 135M); slow on CPU: use for timing
        from transformers import AutoModelForSequenceClassification

        from hf_prefs.assets import load_smollm2_tokenizer, smollm2_path

        tok = load_smollm2_tokenizer(padding_side="right")
        torch.manual_seed(args.seed)
        init = AutoModelForSequenceClassification.from_pretrained(smollm2_path(), num_labels=1, dtype=torch.float32)
        init.config.pad_token_id = tok.pad_token_id
        return init, tok, "SmolLM2-135M"
    tok = load_gpt2_tokenizer()
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_positions=256,
        n_embd=args.n_embd,
        n_layer=args.n_layer,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        num_labels=1,
        pad_token_id=tok.eos_token_id,
    )
    torch.manual_seed(args.seed)
    return GPT2ForSequenceClassification(cfg), tok, f"GPT-2 {args.n_layer}x{args.n_embd} from scratch"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", choices=["implied", "all", "both"], default="both")
    p.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=400)
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--rows-per-step", type=int, default=32, help="sequences per forward (multiple of 4)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--n-embd", type=int, default=64)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--timing-steps", type=int, default=30, help="optimizer steps per timed segment")
    p.add_argument("--rounds", type=int, default=5, help="timed segments per arm, interleaved")
    p.add_argument("--skip-accuracy", action="store_true", help="timing only (no full training runs)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="/tmp/hf_prefs_bench_rm")
    args = p.parse_args()
    if args.rows_per_step % 4:
        p.error("--rows-per-step must be a multiple of 4")
    torch.set_num_threads(args.threads)

    init, tok, model_name = load_model_and_tokenizer(args)
    t = time.perf_counter()
    train, test = build_labels(tok, args.n_train, args.n_test, args.seed)
    print(f"labels: {len(train)} train / {len(test)} held-out best-of-4, built in {time.perf_counter() - t:.1f}s")
    print(
        f"reward model: {model_name} ({sum(p.numel() for p in init.parameters()) / 1e6:.1f}M params), "
        f"{args.rows_per_step} sequences per forward, lr {args.lr}, {args.threads} thread(s), "
        f"device {'cuda' if torch.cuda.is_available() else 'cpu'}"
    )

    pair_sets = {}
    if args.pairs in ("implied", "both"):
        pair_sets["pairs-implied"] = to_pairwise(train)
    if args.pairs in ("all", "both"):
        pair_sets["pairs-all"] = all_pairs(train)
    # arm name -> make_trainer(**config overrides)
    arms = {
        "kway": partial(kway_trainer, init, tok, train, args, False),
        "kway+prefix": partial(kway_trainer, init, tok, train, args, True),
        **{name: partial(pairwise_trainer, init, tok, pairs, args) for name, pairs in pair_sets.items()},
    }
    labels_per_step = {"kway": args.rows_per_step / 4, "kway+prefix": args.rows_per_step / 4}
    tokens_per_label = {}
    for name, pairs in pair_sets.items():
        labels_per_step[name] = (args.rows_per_step / 2) * len(train) / len(pairs)  # labels' worth of pairs per step

    # 1) throughput: interleaved timed segments (robust to other load on the machine), median per arm. Each
    # segment's rate is over its optimizer steps after the first (a callback times step begin -> end), so the
    # trainer's per-call set-up (optimizer, data loader) does not count against the arm with the shorter steps.
    arms["kway"](max_steps=3).train()  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.rounds):
        for name, make in arms.items():
            timer = StepTimer()
            trainer = make(max_steps=args.timing_steps + 1)
            trainer.add_callback(timer)
            trainer.train()
            rates[name].append(labels_per_step[name] / statistics.median(timer.seconds[1:]))
            tokens_per_label[name] = trainer._total_train_tokens / ((args.timing_steps + 1) * labels_per_step[name])
    lps = {name: statistics.median(r) for name, r in rates.items()}

    # 2) accuracy: one full training run per arm on all labels, held-out best-of-4 accuracy
    acc, wall = {}, {}
    if not args.skip_accuracy:
        for name, make in arms.items():
            trainer = make()
            wall[name] = trainer.train().metrics["train_runtime"]
            acc[name] = held_out_accuracy(trainer, tok, test, kway=name.startswith("kway"))

    print(
        f"\n{'arm':<15}{'pairs':>7}{'labels/s (median, min-max)':>30}{'tokens/label':>14}{'held-out acc':>14}{'full run s':>12}"
    )
    for name in arms:
        n_pairs = len(pair_sets[name]) if name in pair_sets else "-"
        spread = f"{lps[name]:.3g} ({min(rates[name]):.3g}-{max(rates[name]):.3g})"
        a = f"{acc[name]:.3f}" if name in acc else "-"
        w = f"{wall[name]:.0f}" if name in wall else "-"
        print(f"{name:<15}{n_pairs:>7}{spread:>30}{tokens_per_label[name]:>14.1f}{a:>14}{w:>12}")
    print("\nper-label speed-up (median labels/s ratio), token ratio, accuracy difference (K-way minus pairs):")
    for k in ("kway", "kway+prefix"):
        for b in pair_sets:
            d = f"{acc[k] - acc[b]:+.3f}" if acc else "n/a"
            print(
                f"  {k:<12} vs {b:<14} {lps[k] / lps[b]:5.2f}x faster   "
                f"tokens/label {tokens_per_label[b] / tokens_per_label[k]:4.2f}x fewer   accuracy {d}"
            )
    if acc:
        print(
            f"chance accuracy 0.25; std of a held-out accuracy near 0.5 on {len(test)} labels ~{(0.25 / len(test)) ** 0.5:.3f}"
        )


if __name__ == "__main__":
    main()
