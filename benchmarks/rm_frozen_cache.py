"""The reward model's frozen layers served from stored outputs (``cache_frozen_features``) against the plain forward.

The offline default's reward model (SmolLM2-135M, the trunk in float32, its top 2 of 30 blocks + head trained, packed
rows of best-of-4 labels, batches of 16, 2 epochs; bf16 autocast on a CPU with bf16 units, as the offline default):
``--labels`` labels trained without and with the cache, ``--repeats`` pairs of runs alternating which goes first.
Printed: labels/s over the whole ``train()`` call of each, the mean ratio (and each pair's), the frozen blocks'
forwards each did, and how far apart the two trained models are (train loss, max |parameter difference|): the cache
must not change the result.

    python benchmarks/rm_frozen_cache.py               # 128 labels, 2 repeats: ~7 minutes on an AVX2-only 2-core VM
    python benchmarks/rm_frozen_cache.py --model tiny  # tiny GPT-2 (seconds; for the tests)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from scaling import _base, rm_setup  # noqa: E402


def train_once(base: str, dtype: str, labels: int, epochs: int, cache: bool) -> dict:
    from hf_prefs import PreferenceRewardTrainer
    from hf_prefs.models.frozen_features import transformer_blocks

    model, tok, dataset, args = rm_setup(base, labels, dtype, num_train_epochs=epochs, cache_frozen_features=cache)
    bottom = [0]
    transformer_blocks(model)[2][0].register_forward_hook(lambda *a: bottom.__setitem__(0, bottom[0] + 1))
    trainer = PreferenceRewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    loss = next(log["train_loss"] for log in trainer.state.log_history if "train_loss" in log)
    params = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    return {"seconds": seconds, "labels_per_s": labels * epochs / seconds, "bottom_forwards": bottom[0],
            "loss": loss, "params": params}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    p.add_argument("--labels", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2, help="the offline default's rm_num_train_epochs")
    p.add_argument("--repeats", type=int, default=2, help="pairs of runs; the first pair runs plain first, the next "
                   "cached first, and so on")
    a = p.parse_args(argv)
    import tempfile

    base, dtype = _base(a.model, Path(tempfile.mkdtemp()))
    runs: dict[bool, list[dict]] = {False: [], True: []}
    for repeat in range(a.repeats):
        for cache in (False, True) if repeat % 2 == 0 else (True, False):
            r = train_once(base, dtype, a.labels, a.epochs, cache)
            runs[cache].append(r)
            print(f"repeat {repeat + 1}, {'cached' if cache else 'plain '}: {r['seconds']:.1f} s, "
                  f"{r['labels_per_s']:.2f} labels/s, frozen blocks ran {r['bottom_forwards']} times, train loss "
                  f"{r['loss']:.6f}", flush=True)
    rate = {c: sum(r["labels_per_s"] for r in runs[c]) / len(runs[c]) for c in runs}
    each = ", ".join(f"{c['labels_per_s'] / p['labels_per_s']:.2f}x" for p, c in zip(runs[False], runs[True]))
    plain, cached = runs[False][0], runs[True][0]
    diff = max((cached["params"][k] - v).abs().max().item() for k, v in plain["params"].items())
    print(f"{a.model} ({dtype}), {a.labels} labels x {a.epochs} epochs, batch 16, {torch.get_num_threads()} threads: "
          f"cached / plain = {rate[True] / rate[False]:.2f}x labels/s (each repeat: {each}); train loss "
          f"{plain['loss']:.6f} vs {cached['loss']:.6f}; max |parameter difference| {diff:.2e}")


if __name__ == "__main__":
    main()
