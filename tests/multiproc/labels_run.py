"""The offline label stage (``collect_labels``, simulated labeler) on the processes it is launched with, on a tiny base.

``--case one_query``: a single query, so one process's share is empty; ``--case all_dropped``: no sample reaches the
truncate token, so every query is dropped. Each rank writes ``labels_<rank>.json``: the label rows it got and the
counts it logged, or the error it raised."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from types import SimpleNamespace

from accelerate import PartialState
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_prefs.core.rollout import RolloutSpec
from hf_prefs.pipeline import PipelineArguments, collect_labels


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--case", choices=["one_query", "all_dropped"], required=True)
    a = p.parse_args()
    rank = PartialState(cpu=True).process_index
    tok = AutoTokenizer.from_pretrained(a.base)
    rho = AutoModelForCausalLM.from_pretrained(a.base)
    if a.case == "one_query":
        queries, spec = ["It was a fine morning and"], RolloutSpec(response_length=6, pad_token_id=tok.eos_token_id)
    else:  # "." required at index 5 of 6-token responses: a random tiny GPT-2 (50,257 tokens) all but never samples it
        queries = ["It was a fine morning and", "She walked to the window", "The letter said"]
        spec = RolloutSpec(response_length=6, truncate_token_id=13, penalty_token_id=13, truncate_after=5, pad_token_id=tok.eos_token_id)
    pa = PipelineArguments(task="sentiment", sampling_batch_size=8, label_drop_untruncated=True)
    out = Path(a.out) / f"labels_{rank}.json"
    logged: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())
    logger = logging.getLogger("hf_prefs.labels")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        labels, info = collect_labels(pa, SimpleNamespace(seed=0), rho, tok, queries, spec)
        kept = [m for m in logged if "queries kept" in m]
        out.write_text(json.dumps({"rows": labels.to_list(), "queries": info["queries"], "kept_logged": kept}))
    except Exception as e:  # noqa: BLE001 - recorded for the test
        out.write_text(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        raise


if __name__ == "__main__":
    main()
