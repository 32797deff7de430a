"""Padding of the rollout's passes when an update's queries are dealt by length, against stream order (the split before).

Counts tokens, no timing: for `--updates` PPO updates of `--batch` queries drawn as the PPO trainer draws them
(`QueryStream`), the tokens the no-grad log-prob passes process (chunks of `--chunk` rows, each padded to its longest
query rounded up to the trainer's WIDTH_MULTIPLE, plus `--response` tokens) over the real tokens; and on `--processes`
processes the slower process's tokens over an even share, and the mean gap between the processes (what the faster one
waits at the gradient all-reduce). "stream" takes each process's queries as a contiguous slice of the update's stream
order; "dealt" is `deal_by_length` (what `PPOTrainer.sample_queries` does).

    python benchmarks/query_padding.py          # the offline default's queries (SmolLM2 tokenizer, 24-64 tokens)
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from hf_prefs.trainers.ppo_trainer import WIDTH_MULTIPLE, query_width  # noqa: E402 (after the offline environment)


def pass_tokens(lengths: list[int], chunk: int, response: int) -> int:
    """Tokens of a chunked pass over one process's queries of ``lengths`` (in this order): each chunk's query width as
    ``PPOTrainer._forward`` cuts it (``query_width``: its longest query rounded up, at most the process's longest, the
    width of its padded batch), plus the response."""
    total, widest = 0, max(lengths)
    for i in range(0, len(lengths), chunk):
        part = lengths[i : i + chunk]
        total += len(part) * (query_width(max(part), widest) + response)
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", choices=["smollm2", "gpt2"], default="smollm2")
    p.add_argument("--queries", type=int, default=1024, help="Austen queries in the dataset")
    p.add_argument("--min-tokens", type=int, default=24)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--updates", type=int, default=100)
    p.add_argument("--batch", type=int, default=32, help="episodes per update (global)")
    p.add_argument("--chunk", type=int, default=8, help="local_rollout_forward_batch_size")
    p.add_argument("--response", type=int, default=24)
    p.add_argument("--processes", type=int, default=2)
    a = p.parse_args()

    from transformers import AutoTokenizer

    from hf_prefs.assets import load_gpt2_tokenizer, smollm2_path
    from hf_prefs.tasks import austen_queries
    from hf_prefs.trainers.ppo_data import QueryStream, deal_by_length

    tok = AutoTokenizer.from_pretrained(str(smollm2_path())) if a.tokenizer == "smollm2" else load_gpt2_tokenizer()
    queries = austen_queries(tok, n=a.queries, min_tokens=a.min_tokens, max_tokens=a.max_tokens, seed=0)["query"]
    length = [len(ids) for ids in tok(list(queries))["input_ids"]]
    stream, n, share = QueryStream(len(length), 0), a.processes, a.batch // a.processes
    count = lambda ls: pass_tokens(ls, a.chunk, a.response)
    real, one, slower, gap = 0, {"stream": 0, "dealt": 0}, {"stream": 0, "dealt": 0}, {"stream": 0, "dealt": 0}
    for update in range(a.updates):
        rows = stream.rows(update * a.batch, a.batch)
        ls = [length[r] for r in rows]
        real += sum(ls) + a.response * len(ls)
        one["stream"] += count(ls)
        one["dealt"] += count([length[r] for r in deal_by_length(rows, ls, 1, 0)])
        split = {"stream": [ls[k * share : (k + 1) * share] for k in range(n)],
                 "dealt": [[length[r] for r in deal_by_length(rows, ls, n, k)] for k in range(n)]}
        for way, parts in split.items():
            tokens = [count(part) for part in parts]
            slower[way] += max(tokens)
            gap[way] += max(tokens) - min(tokens)
    print(f"{a.updates} updates of {a.batch} queries ({a.tokenizer} tokens, {min(length)}-{max(length)} per query, "
          f"+{a.response} response), chunks of {a.chunk} rows padded to a multiple of {WIDTH_MULTIPLE}")
    print(f"1 process: pass tokens / real tokens: stream {one['stream'] / real:.3f}, dealt {one['dealt'] / real:.3f}")
    even = real / n
    print(f"{n} processes: slower process's pass tokens / an even share of the real: stream {slower['stream'] / even:.3f}, "
          f"dealt {slower['dealt'] / even:.3f}; mean gap between processes / an even share: "
          f"stream {gap['stream'] / even:.3f}, dealt {gap['dealt'] / even:.3f}")


if __name__ == "__main__":
    main()
