"""The reward model's frozen layers served from stored outputs (``cache_frozen_features``) against the plain forward.

The offline default's reward model (SmolLM2-135M, the trunk in float32, its top 2 of 30 blocks + head trained, packed
rows of best-of-4 labels, batches of 16, 2 epochs; bf16 autocast on a CPU with bf16 units, as the offline default):
``--labels`` labels trained twice in this run, without and with the cache (alternating which goes first). Printed:
labels/s over the whole ``train()`` call of each, the ratio, the frozen blocks' forwards each did, and how far apart
the two trained models are (train loss, max |parameter difference|): the cache must not change the result.

    python benchmarks/rm_frozen_cache.py               # 128 labels: ~6 minutes on an AVX2-only 2-core VM (float32)
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
    a = p.parse_args(argv)
    import tempfile

    base, dtype = _base(a.model, Path(tempfile.mkdtemp()))
    runs = {}
    for cache in (True, False) if a.labels % 2 else (False, True):  # which goes first alternates with --labels
        runs[cache] = train_once(base, dtype, a.labels, a.epochs, cache)
        r = runs[cache]
        print(f"{'cached' if cache else 'plain '}: {r['seconds']:.1f} s, {r['labels_per_s']:.2f} labels/s, frozen "
              f"blocks ran {r['bottom_forwards']} times, train loss {r['loss']:.6f}", flush=True)
    diff = max((runs[True]["params"][k] - v).abs().max().item() for k, v in runs[False]["params"].items())
    print(f"{a.model} ({dtype}), {a.labels} labels x {a.epochs} epochs, batch 16, {torch.get_num_threads()} threads: "
          f"cached / plain = {runs[True]['labels_per_s'] / runs[False]['labels_per_s']:.2f}x labels/s; train loss "
          f"{runs[False]['loss']:.6f} vs {runs[True]['loss']:.6f}; max |parameter difference| {diff:.2e}")


if __name__ == "__main__":
    main()
