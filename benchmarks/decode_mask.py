"""Decode steps of a batch without padding: transformers' unmasked step against the library's step mask.

A batch with no padding (one query's many samples, as the study's frontier draws them; or queries all of one length,
as the paper's 64-token book queries) gets no attention mask from transformers, and for a grouped-query model (SmolLM2:
9 query heads over 3 key/value heads) SDPA then runs each decode step with ``enable_gqa``, which on CPU is several
times slower than the packed form transformers uses when a mask is present. ``hf_prefs.models.attention.
decode_step_mask`` passes the step's mask itself on CPU (the mask a padded batch gets), so every step takes the packed
form. ``unmasked`` is the same ``sample_texts`` call with that mask left out (the code before); ``masked`` is the
library's path; ``--repeats`` pairs alternate which runs first. Printed: seconds per sampled row of each, the ratio
(and each pair's), and whether the tokens are identical (same generator seed; they need not be: the two SDPA forms
round differently in bf16, and the packed one is what padded batches always ran).

    python benchmarks/decode_mask.py                      # one query x 128 samples (a frontier batch), 3 pairs
    python benchmarks/decode_mask.py --layout fixed       # 64 queries of exactly 64 tokens x 1 sample
    python benchmarks/decode_mask.py --model tiny         # tiny GPT-2 (seconds; for the tests)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from decode_cache import alternate, load_model  # noqa: E402  (its import sets the offline environment)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    p.add_argument("--layout", choices=["frontier", "fixed"], default="frontier",
                   help="frontier: one query, --rows samples; fixed: --rows queries of exactly 64 tokens, 1 sample each")
    p.add_argument("--rows", type=int, default=128, help="rows per decode batch")
    p.add_argument("--response", type=int, default=24)
    p.add_argument("--repeats", type=int, default=3, help="pairs of runs; odd pairs run unmasked first")
    a = p.parse_args(argv)
    import hf_prefs.models.generation as generation
    from hf_prefs.tasks import austen_queries

    tok, model, dtype = load_model(a.model)
    # token ids, not texts: a text's tokens need not round-trip to the same count, and one pad would bring the mask back
    texts = list(austen_queries(tok, n=max(a.rows, 1), min_tokens=64, max_tokens=64 * 4, seed=0)["query"])
    ids = [tok(t)["input_ids"][:64] for t in texts]
    if a.layout == "fixed":
        query_ids, samples = torch.tensor(ids[: a.rows]), 1
    else:
        query_ids, samples = torch.tensor(ids[:1])[:, :48], a.rows
    mask = torch.ones_like(query_ids)
    step_mask = generation.decode_step_mask

    def draw(way: str) -> tuple[float, torch.Tensor]:
        generation.decode_step_mask = step_mask if way == "masked" else (lambda configs, mask: mask)
        try:
            start = time.perf_counter()
            with torch.no_grad():
                out = generation.sample_responses(model, query_ids, mask, a.response, 0.7,
                                                  torch.Generator().manual_seed(0), samples)
            return time.perf_counter() - start, out
        finally:
            generation.decode_step_mask = step_mask

    median, each, identical = alternate(draw, ("unmasked", "masked"), a.repeats, query_ids.shape[0] * samples)
    print(f"{a.model} ({dtype}), {a.layout}: {query_ids.shape[0]} queries of {query_ids.shape[1]} tokens x {samples} "
          f"samples x {a.response} tokens, {a.rows} rows per batch, {torch.get_num_threads()} threads: unmasked / "
          f"masked = {median['unmasked'] / median['masked']:.2f}x (medians {median['unmasked']:.2f} / "
          f"{median['masked']:.2f} s; each pair: {each}); identical tokens: {identical}")

if __name__ == "__main__":
    main()
