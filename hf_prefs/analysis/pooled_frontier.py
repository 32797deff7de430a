"""rho's frontier carried further by a trained policy: a second estimate of the same optimal frontier, from ``m``
samples of rho and ``p`` samples of a saved policy per frontier query, pooled by the balance heuristic of multiple
importance sampling (:func:`hf_prefs.core.frontier.mixture_log_ratio`): with q_mix = (m rho + p pi) / (m + p),

    w_i = rho(y_i) exp(r_i / beta) / q_mix(y_i),

so log rho and log pi of every sample (both proposals' samples) enter. A policy trained far from rho (direct RL at
high KL) sits near pi* there, where rho's own samples are too few (small ESS); rho's share of the mixture bounds every
weight by ((m + p) / m) exp(r / beta), so where the policy misses mass that pi* has (near rho) the estimate stays that
of rho's samples, never the policy's overconfident one. The samples' rewards and log-probabilities are cached as text
(``frontier_pooled_samples.csv``, committed with a study) under a key that names the policy's weights, so a checkout
recomputes the frontier without the policy.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from ..core.frontier import FrontierPoint, mixture_log_ratio, optimal_frontier
from ..core.rollout import RolloutSpec
from ..models.loading import is_adapter_folder
from ..pipeline.evaluate import sample_with_logprobs, sequence_logprobs

__all__ = ["POOLED_FRONTIER", "POOLED_SAMPLES", "PooledSamples", "draw_pooled_samples", "load_saved_policy",
           "policy_digest", "pooled_frontier", "read_pooled_samples", "write_pooled_samples"]

POOLED_SAMPLES = "frontier_pooled_samples.csv"
POOLED_FRONTIER = "frontier_pooled.csv"
_COLUMNS = ["query", "proposal", "known", "log_rho", "log_pi"]


@dataclass
class PooledSamples:
    """Per frontier query, ``m`` samples of rho then ``p`` of the policy: known rewards, log rho and log pi, each
    ``(Q, m + p)``."""

    m: int
    p: int
    known: np.ndarray
    log_rho: np.ndarray
    log_pi: np.ndarray


def policy_digest(policy_dir: str) -> str:
    """sha256 over a saved policy's weight files (``*.safetensors``, ``*.bin``; by name): which policy drew a cache."""
    h = hashlib.sha256()
    files = sorted(p for p in Path(policy_dir).iterdir() if p.suffix in (".safetensors", ".bin"))
    if not files:
        raise ValueError(f"{policy_dir}: no weight files (*.safetensors, *.bin): not a saved policy")
    for path in files:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def load_saved_policy(rho: torch.nn.Module, policy_dir: str) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """``(policy, ref_model)`` from ``save_pretrained``'s folder: a LoRA adapter on a copy of ``rho`` (rho itself is
    left as it is; the reference is the policy with its adapters disabled, ``ref_model`` None) or a full model
    (``ref_model`` rho)."""
    if is_adapter_folder(policy_dir):
        return PeftModel.from_pretrained(copy.deepcopy(rho), policy_dir).eval(), None
    dtype = next(rho.parameters()).dtype
    model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=dtype).to(next(rho.parameters()).device)
    return model.eval(), rho


def draw_pooled_samples(
    policy: torch.nn.Module, ref_model: torch.nn.Module | None, rho: torch.nn.Module, tokenizer: Any,
    queries: Sequence[str], spec: RolloutSpec, m: int, p: int, known: Callable[[list[str]], Sequence[float]], seed: int,
    sampling_batch_size: int = 256,
) -> PooledSamples:
    """``m`` samples of rho and ``p`` of ``policy`` per query, each scored by the known reward and by both models."""
    q = len(queries)
    mine = sample_with_logprobs(rho, tokenizer, queries, spec, m, seed, known, sampling_batch_size=sampling_batch_size)
    theirs = sample_with_logprobs(policy, tokenizer, queries, spec, p, seed + 1, known, ref_model=ref_model,
                                  sampling_batch_size=sampling_batch_size)
    rows = [x for x in queries for _ in range(m)]
    log_pi_on_rho = sequence_logprobs(policy, tokenizer, rows, mine["ids"], spec)

    def both(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
        return torch.cat([a.view(q, m), b.view(q, p)], 1).float().double().numpy()

    return PooledSamples(m, p, both(mine["known"], theirs["known"]), both(mine["logp"], theirs["logp_ref"]),
                         both(log_pi_on_rho, theirs["logp"]))


def write_pooled_samples(path: str, key: dict[str, Any], s: PooledSamples) -> None:
    """The samples as text: a ``# key: <json>`` line, a header, a row per sample (``%.9g``: exact for float32)."""
    tmp = f"{path}.{os.getpid()}.tmp"  # another study process may write the same cache
    with open(tmp, "w", newline="") as f:
        f.write(f"# key: {json.dumps(key)}\n")
        writer = csv.writer(f)
        writer.writerow(_COLUMNS)
        for qi in range(s.known.shape[0]):
            for j in range(s.m + s.p):
                writer.writerow([qi, "rho" if j < s.m else "policy",
                                 *(f"{a[qi, j]:.9g}" for a in (s.known, s.log_rho, s.log_pi))])
    os.replace(tmp, path)


def read_pooled_samples(path: str) -> tuple[dict[str, Any], PooledSamples]:
    """``(key, samples)`` of :func:`write_pooled_samples`' file; a malformed file is an error naming its line."""
    with open(path, newline="") as f:
        first = f.readline()
        if not first.startswith("# key: "):
            raise ValueError(f"{path}: line 1 must be '# key: <json>'")
        key = json.loads(first[len("# key: "):])
        reader = csv.DictReader(f)
        if reader.fieldnames != _COLUMNS:
            raise ValueError(f"{path}: line 2 must be the header {','.join(_COLUMNS)}")
        rows = list(reader)
    m, p = int(key["m"]), int(key["p"])
    if not rows or len(rows) % (m + p):
        raise ValueError(f"{path}: {len(rows)} rows are not whole queries of m + p = {m + p} samples")
    q = len(rows) // (m + p)
    for i, row in enumerate(rows):
        qi, j = divmod(i, m + p)
        if int(row["query"]) != qi or row["proposal"] != ("rho" if j < m else "policy"):
            raise ValueError(f"{path}: line {i + 3} should be query {qi}, {'rho' if j < m else 'policy'}")
    # float32 as drawn (%.9g is exact for float32), then float64 as draw_pooled_samples holds them: a checkout reads
    # back the very values the drawing process used
    arrays = (np.array([float(r[c]) for r in rows], dtype=np.float32).astype(np.float64).reshape(q, m + p)
              for c in ("known", "log_rho", "log_pi"))
    return key, PooledSamples(m, p, *arrays)


def pooled_frontier(s: PooledSamples, betas: Sequence[float], seed: int, n_bootstrap: int = 100) -> list[FrontierPoint]:
    """The frontier from the pooled samples (balance heuristic; the bootstrap resamples queries and, within each,
    rho's and the policy's samples apart)."""
    log_ratio = mixture_log_ratio(s.log_rho, [s.log_rho, s.log_pi], [s.m, s.p])
    return optimal_frontier(s.known, list(betas), n_bootstrap=n_bootstrap, seed=seed, log_ratio=log_ratio,
                            resample_queries=True, strata=[s.m, s.p])
