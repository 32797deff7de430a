"""Sampling with the KV cache written in place (``hf_prefs.models.kv_cache``) against transformers' growing cache.

The offline default's label sampling: ``--queries`` Austen queries (24-64 tokens, left-padded), 4 samples each from
one prefill, 24 tokens at temperature 0.7, ``--batch`` rows per decode batch, SmolLM2-135M in the offline default's
precision on this CPU (``sample_texts``, as the labels stage calls it). ``copy`` is the same call with the cache left
as transformers grows it (every step concatenates each layer's keys/values, and the heap's free pages are handed back
after each step, as the code did before); ``in-place`` is the library's path. ``--repeats`` pairs alternate which runs
first. Printed: seconds per sampled row of each, the ratio (and each pair's), and whether the tokens are identical
(same generator seed): the cache must not change a draw.

    python benchmarks/decode_cache.py                # 64 queries x 4 samples, 3 pairs: ~1.5 min (AVX512-BF16 2-vCPU VM)
    python benchmarks/decode_cache.py --model tiny   # tiny GPT-2 (seconds; for the tests)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from scaling import _base  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    p.add_argument("--queries", type=int, default=64)
    p.add_argument("--samples", type=int, default=4, help="samples per query (the offline default's num_candidates)")
    p.add_argument("--batch", type=int, default=64, help="rows per decode batch (sampling_batch_size)")
    p.add_argument("--response", type=int, default=24)
    p.add_argument("--repeats", type=int, default=3, help="pairs of runs; odd pairs run copy first, even in-place first")
    a = p.parse_args(argv)
    import hf_prefs.models.generation as generation
    from hf_prefs.core.rollout import RolloutSpec
    from hf_prefs.tasks import austen_queries

    tok, model, dtype = load_model(a.model)
    queries = list(austen_queries(tok, n=a.queries, min_tokens=24, max_tokens=64, seed=0)["query"])
    spec = RolloutSpec(response_length=a.response, temperature=0.7, pad_token_id=tok.eos_token_id)
    in_place = generation.preallocate

    def draw(way: str) -> tuple[float, torch.Tensor]:
        generation.preallocate = in_place if way == "in-place" else (lambda cache, capacity: False)
        try:
            start = time.perf_counter()
            ids = generation.sample_texts(model, tok, queries, spec, a.samples, a.batch, torch.Generator().manual_seed(0))
            return time.perf_counter() - start, ids
        finally:
            generation.preallocate = in_place

    median, each, identical = alternate(draw, ("copy", "in-place"), a.repeats, len(queries) * a.samples)
    print(f"{a.model} ({dtype}), {len(queries)} queries x {a.samples} samples x {a.response} tokens, {a.batch} rows per "
          f"batch, {torch.get_num_threads()} threads: copy / in-place = {median['copy'] / median['in-place']:.2f}x "
          f"(medians {median['copy']:.2f} / {median['in-place']:.2f} s; each pair: {each}); identical tokens: "
          f"{identical}")


def load_model(name: str) -> tuple[Any, torch.nn.Module, str]:
    """The tokenizer, the model in eval mode and its dtype's name: SmolLM2 in the offline default's precision on this
    CPU, or the tiny GPT-2 (``scaling._base``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, dtype = _base(name, Path(tempfile.mkdtemp()))
    model = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype)).eval()
    return AutoTokenizer.from_pretrained(base), model, dtype


def alternate(draw: Callable[[str], tuple[float, torch.Tensor]], ways: tuple[str, str], repeats: int,
              rows: int) -> tuple[dict[str, float], str, bool]:
    """``repeats`` pairs of ``draw(way) -> (seconds, tokens)``, after one warm-up draw of the second way (first-call
    allocations, oneDNN's kernel choice): odd pairs in ``ways``' order, even pairs the other way round, each run printed
    with its seconds per row. Returns each way's median seconds, each pair's ratio first / second, and whether the
    last draws of the two ways gave the same tokens."""
    draw(ways[1])
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    tokens: dict[str, torch.Tensor] = {}
    for repeat in range(repeats):
        for way in ways if repeat % 2 == 0 else ways[::-1]:
            s, tokens[way] = draw(way)
            seconds[way].append(s)
            print(f"repeat {repeat + 1}, {way:8s}: {s:.2f} s, {1000 * s / rows:.2f} ms per row", flush=True)
    each = ", ".join(f"{first / second:.2f}x" for first, second in zip(seconds[ways[0]], seconds[ways[1]]))
    median = {way: statistics.median(s) for way, s in seconds.items()}
    return median, each, torch.equal(tokens[ways[0]], tokens[ways[1]])


if __name__ == "__main__":
    main()
