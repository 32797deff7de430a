"""Write a randomly initialized GPT-2 of the paper's shape (124M: 12 layers, width 768) with the real GPT-2
tokenizer into a folder, for throughput and memory checks where no Hub and no weights are reachable.

    python benchmarks/random_model.py OUT_DIR [--n_layer 12 --n_embd 768 --n_head 12] [--seed 0]

The GPU machines this project is lent reach no package index and no Hub, and what travels there is limited to
64 MiB, so `benchmarks/gpu_check.sh random-gpt2` builds its model there with this script: same parameter count,
vocabulary (50,257) and sequence shapes as `openai-community/gpt2`, so episodes/s and memory are those of the
paper's reproduction; rewards and KL of such a run mean nothing. The tokenizer is the offline asset
(`hf-prefs assets fetch --only gpt2-tokenizer`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hf_prefs.assets import load_gpt2_tokenizer


def write_random_gpt2(out_dir: str | Path, n_layer: int = 12, n_embd: int = 768, n_head: int = 12, seed: int = 0) -> Path:
    """Save ``GPT2LMHeadModel(GPT2Config(n_layer, n_embd, n_head))`` (seeded init) and the GPT-2 tokenizer."""
    out = Path(out_dir)
    tokenizer = load_gpt2_tokenizer()
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--n_layer", type=int, default=12)
    parser.add_argument("--n_embd", type=int, default=768)
    parser.add_argument("--n_head", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = write_random_gpt2(args.out_dir, args.n_layer, args.n_embd, args.n_head, args.seed)
    n = sum(p.numel() for p in GPT2LMHeadModel.from_pretrained(out).parameters())
    print(f"random GPT-2 ({n / 1e6:.1f}M parameters) written to {out}")


if __name__ == "__main__":
    main()
