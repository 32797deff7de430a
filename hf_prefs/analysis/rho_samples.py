"""rho's samples for the study, drawn once and cached: the held-out evaluation every run is paired with
(``rho_eval.json``) and the frontier's thousands of samples per query (``rho_rewards.csv`` and its chunks, or with log rho
``rho_samples.pt``), each keyed by what it depends on (queries by digest, seed, count, model, dtype, response rule, known
reward) so that a resumed study, or a checkout on another machine, reads them back instead of sampling again; and
:func:`run_frontier`, a run's frontier from rho's samples pooled with the run's own policy's (balance heuristic)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..assets import asset_dir
from ..core.frontier import FrontierPoint, mixture_log_ratio, optimal_frontier
from ..core.rollout import RolloutSpec
from ..models.generation import model_device, sample_texts
from ..pipeline import Base, PipelineArguments, evaluate_policy
from ..pipeline.evaluate import sample_with_logprobs, sequence_logprobs
from .study_files import texts_digest

__all__ = [
    "FRONTIER_SAMPLING_ROWS", "RHO_EVAL_CACHE", "RHO_REWARDS_CACHE", "RHO_REWARDS_CHUNK", "RHO_SAMPLES_CACHE", "RhoSamples",
    "cached_rho_eval", "draw_rho_rewards", "draw_rho_samples", "known_reward_name", "read_rho_rewards",
    "read_rho_rewards_file", "rho_cache_key", "rho_reward_files", "rho_reward_matrix",
    "rho_rewards_chunk_name",
    "run_frontier", "same_key", "current_key", "write_rho_rewards",
]


@dataclass
class RhoSamples:
    """``frontier_samples`` rho samples per frontier query: token ids, known rewards, log rho; (Q*M, ...)."""

    queries: list[str]
    per_query: int
    ids: torch.Tensor
    known: torch.Tensor
    logp: torch.Tensor

    def reward_matrix(self) -> np.ndarray:
        """The known rewards as ``(Q, M)``: a row per query, the array the frontier is computed from."""
        return self.known.view(len(self.queries), self.per_query).numpy()


RHO_SAMPLES_CACHE = "rho_samples.pt"
RHO_REWARDS_CACHE = "rho_rewards.csv"
RHO_EVAL_CACHE = "rho_eval.json"
#: rho's frontier samples per query per cache file (rho_rewards.csv, then rho_rewards.part<c>.csv): 20,480 samples for
#: 10 queries, ~35 minutes at 2 threads (~64 at 1) on the AVX2 VM; an interruption loses at most one query's share
RHO_REWARDS_CHUNK = 2048
# rows per batch when drawing a frontier query's thousands of rho samples: SmolLM2 (float32, 2 threads, one query x 512
# samples) drew 14.8 samples/s at 256 rows and 14.9 at 512, 11.7 at 64; peak 1.9 GiB at 256 against 2.8 at 512
FRONTIER_SAMPLING_ROWS = 256


def rho_cache_key(base: Base, spec: RolloutSpec, queries: Sequence[str], known_reward: str, **draw: Any) -> dict[str, Any]:
    """What a cache of rho's samples depends on: the queries (by digest: the caches are committed), how they are drawn
    (``draw``: seed, count...), the model and its weights' dtype (a study resumed on a CPU of another kind may run rho
    in bf16 instead of float32, which changes the samples), the response rule and the known reward that scored them
    (``known_reward`` and, for a classifier, its positive class)."""
    dtype = str(next(base.rho.parameters()).dtype).removeprefix("torch.")
    return {"queries_sha256": texts_digest(queries), **draw, "model": model_id(base.name), "dtype": dtype,
            "spec": repr(spec), "known_reward": known_reward}


def known_reward_name(pa: PipelineArguments) -> str:
    """The known reward in a cache key: ``vader``, or a classifier with its positive class (``id:LABEL``)."""
    if pa.known_reward == "vader":
        return "vader"
    return f"{pa.known_reward}:{pa.known_reward_positive_label}"


def model_id(name: str) -> str:
    """The model in a cache key: the offline SmolLM2 asset by its asset folder's name (the folder lies in each
    machine's own cache: ``~/.cache/hf_prefs`` or ``$HF_PREFS_CACHE``), any other model by the name it was given."""
    asset = asset_dir("smollm2").name
    return f"hf_prefs asset {asset}" if os.path.isabs(name) and os.path.basename(os.path.normpath(name)) == asset else name


def current_key(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored cache key as it would be written now: keys written before the model was named by :func:`model_id`
    (a path) and before the known reward was in the key (VADER's: the only known reward the studies that wrote them
    used) get both."""
    return {"known_reward": "vader", **stored, "model": model_id(str(stored.get("model", "")))}


def same_key(stored: dict[str, Any], key: dict[str, Any]) -> bool:
    """Whether a cache written under ``stored`` serves ``key`` (both read as now: :func:`current_key`)."""
    return current_key(stored) == key


def cached_rho_eval(base: Base, spec: RolloutSpec, eval_q: list[str], known: Any, batch_size: int, seed: int,
                    cache: str, known_name: str) -> list[float]:
    """rho's known reward on each held-out query (the pairing of every run's gain), sampled as every run's evaluation
    is (same queries, batch size and seed). Cached as JSON in ``cache`` with what it depends on, so a resumed study
    does not sample it again (minutes on a CPU); committed with the study."""
    key = rho_cache_key(base, spec, eval_q, known_name, batch_size=batch_size, seed=seed)
    if os.path.exists(cache):
        with open(cache) as f:
            stored = json.load(f)
        if same_key(stored.get("key", {}), key):
            return [float(x) for x in stored["known_rewards"]]
    ev = evaluate_policy(base.rho, base.tokenizer, eval_q, spec, ref_model=base.rho, known_reward=known,
                         batch_size=batch_size, seed=seed)
    rewards = [float(x) for x in ev.known_rewards]
    with open(cache + ".tmp", "w") as f:
        json.dump({"key": key, "known_rewards": rewards}, f)
    os.replace(cache + ".tmp", cache)
    return rewards


def write_rho_rewards(path: str, key: str, rewards: torch.Tensor) -> None:
    """rho's known rewards as text: a ``# key: <json>`` line, a ``known`` header, one ``%.9g`` value per line (exact
    for float32), so the cache can be committed beside ``study.csv`` and a new checkout skips the redraw."""
    with open(path + ".tmp", "w") as f:
        f.write(f"# key: {key}\nknown\n")
        f.writelines(f"{x:.9g}\n" for x in rewards.tolist())
    os.replace(path + ".tmp", path)


def read_rho_rewards(path: str, key: str) -> torch.Tensor | None:
    """The rewards of :func:`write_rho_rewards` when the file's key serves ``key`` (:func:`same_key`); None
    otherwise (the rest of such a file is not read)."""
    with open(path) as f:
        stored = _key_line(f)
        return _rewards_after_key(f, path) if stored is not None and same_key(stored, json.loads(key)) else None


def read_rho_rewards_file(path: str) -> tuple[dict[str, Any] | None, torch.Tensor | None]:
    """A :func:`write_rho_rewards` file as it is: its key (as written) and rewards; ``(None, None)`` for a file
    without a key line."""
    with open(path) as f:
        stored = _key_line(f)
        return (None, None) if stored is None else (stored, _rewards_after_key(f, path))


def _key_line(f: Any) -> dict[str, Any] | None:
    first = f.readline().rstrip("\n")
    return json.loads(first.removeprefix("# key: ")) if first.startswith("# key: ") else None


def _rewards_after_key(f: Any, path: str) -> torch.Tensor:
    if f.readline().strip() != "known":
        raise ValueError(f"{path}: line 2 must be the header 'known'")
    return torch.tensor([float(line) for line in f if line.strip()], dtype=torch.float32)


def rho_reward_files(folder: str) -> list[str]:
    """The chunk files of rho's cached rewards in ``folder`` (:func:`draw_rho_rewards`: ``rho_rewards.csv``, then
    ``rho_rewards.part001.csv``, ...), in chunk order, as far as they run without a gap; empty if there are none."""
    paths: list[str] = []
    while os.path.isfile(path := os.path.join(folder, rho_rewards_chunk_name(len(paths)))):
        paths.append(path)
    return paths


def rho_rewards_chunk_name(c: int) -> str:
    """The file name of chunk ``c`` of rho's cached rewards: ``rho_rewards.csv`` (chunk 0, what a single draw wrote
    before chunks existed), then ``rho_rewards.part001.csv``, ..."""
    return RHO_REWARDS_CACHE if c == 0 else RHO_REWARDS_CACHE.replace(".csv", f".part{c:03d}.csv")


def rho_reward_matrix(paths: Sequence[str]) -> np.ndarray:
    """``(Q, M)`` rewards from chunk files of one draw (:func:`rho_reward_files`): each file's ``Q x m`` (query-major)
    block side by side. Files of other draws — other queries, model, spec, dtype or known reward; only the seed may
    differ — are an error naming the file."""
    blocks, common = [], None
    for path in paths:
        key, rewards = read_rho_rewards_file(path)
        if key is None:
            raise ValueError(f"{path}: not a file of rho's rewards (no '# key:' line)")
        rest = {k: v for k, v in current_key(key).items() if k != "seed"}
        if common is not None and rest != common:
            raise ValueError(f"{path}: another draw than {paths[0]} ({rest} against {common})")
        common = rest
        m = int(key["m"])
        if len(rewards) % m or (blocks and len(rewards) != blocks[0].size):
            raise ValueError(f"{path}: {len(rewards)} rewards, not whole queries of {m} samples"
                             + (f" for the {blocks[0].shape[0]} queries of {paths[0]}" if blocks else ""))
        blocks.append(rewards.numpy().astype(np.float64).reshape(-1, m))
    if not blocks:
        raise ValueError("rho_reward_matrix: no file given")
    return np.concatenate(blocks, axis=1)


def draw_rho_samples(base: Base, spec: RolloutSpec, queries: list[str], m: int, known: Any, seed: int, with_logp: bool,
                     cache_dir: str | None = None, known_name: str = "vader", chunk: int = RHO_REWARDS_CHUNK
                     ) -> RhoSamples:
    """``m`` samples of rho per query with their known rewards (and log rho when ``with_logp``: the pooled frontier
    needs it). Cached in ``cache_dir`` (tens of thousands of samples take tens of minutes on a CPU; a resumed study reads
    them back when the queries, the count, the seed, the model, its dtype and the response rule are the same). Without
    ``with_logp`` only the rewards are kept (the token ids serve only the pooled frontier), as text in
    ``rho_rewards.csv`` (~0.25 MB for 20,480 samples; committed with the study); with it, ids and log rho in
    ``rho_samples.pt``. The frontier needs samples of rho, not particular ones: the rows per sampling batch, which
    change the random stream but not the distribution, are not part of the key (unlike ``rho_eval.json``, whose
    samples must be the very ones every run's paired evaluation draws). The rewards are drawn and cached ``chunk``
    samples per query at a time (each chunk its own file and seed, the first ``rho_rewards.csv``, the next
    ``rho_rewards.part<c>.csv``), so a larger ``m`` adds chunks to those already drawn; within a chunk each query's
    samples are kept when drawn, so an interrupted draw loses at most one query's."""
    if not with_logp:
        return draw_rho_rewards(base, spec, queries, m, known, seed, cache_dir, known_name, chunk)
    key = json.dumps(rho_cache_key(base, spec, queries, known_name, m=m, seed=seed, with_logp=with_logp))
    cache = None if cache_dir is None else os.path.join(cache_dir, RHO_SAMPLES_CACHE)
    if cache is not None and os.path.exists(cache):
        stored = torch.load(cache, weights_only=True)
        if same_key(json.loads(stored["key"]), json.loads(key)):
            return RhoSamples(list(queries), m, stored["ids"], stored["known"], stored["logp"])
    s = sample_with_logprobs(base.rho, base.tokenizer, queries, spec, m, seed, known,
                             sampling_batch_size=FRONTIER_SAMPLING_ROWS)
    if cache is not None:
        torch.save({"key": key, "ids": s["ids"], "known": s["known"], "logp": s["logp"]}, cache + ".tmp")
        os.replace(cache + ".tmp", cache)
    return RhoSamples(list(queries), m, s["ids"], s["known"], s["logp"])


def draw_rho_rewards(base: Base, spec: RolloutSpec, queries: list[str], m: int, known: Any, seed: int,
                     cache_dir: str | None, known_name: str, chunk: int) -> RhoSamples:
    """:func:`draw_rho_samples` without log rho: the known rewards alone, drawn and cached a chunk at a time (chunk ``c``
    with seed ``seed + 7919 c``; the first chunk's key is what a single draw of ``chunk`` samples had, so a cache
    written before chunks existed is chunk 0). Within a chunk each query is drawn on its own (:func:`_draw_rho_chunk`),
    so an interrupted draw keeps the queries it finished."""
    size = min(m, chunk)
    if m % size:
        raise ValueError(f"frontier_samples {m} must be a multiple of {size}: rho's samples are drawn and cached "
                         f"{size} per query at a time")
    blocks = []
    for c in range(m // size):
        chunk_seed = seed + 7919 * c
        key = json.dumps(rho_cache_key(base, spec, queries, known_name, m=size, seed=chunk_seed, with_logp=False))
        cache = None if cache_dir is None else os.path.join(cache_dir, rho_rewards_chunk_name(c))
        rewards = read_rho_rewards(cache, key) if cache is not None and os.path.exists(cache) else None
        if rewards is None:
            rewards = _draw_rho_chunk(base, spec, queries, size, known, chunk_seed, cache, key)
        if cache is not None and os.path.exists(cache + ".partial"):  # drawn, or left by a draw stopped as it ended
            os.remove(cache + ".partial")
        blocks.append(rewards.view(len(queries), size))
    rewards = torch.cat(blocks, 1).reshape(-1)  # query-major: (Q * m,)
    n = len(rewards)  # no token ids or log rho: the rewards suffice
    return RhoSamples(list(queries), m, torch.empty((n, 0), dtype=torch.long), rewards, torch.full((n,), float("nan")))


def _draw_rho_chunk(base: Base, spec: RolloutSpec, queries: list[str], size: int, known: Any, chunk_seed: int,
                    cache: str | None, key: str) -> torch.Tensor:
    """One chunk of :func:`draw_rho_rewards`: ``size`` samples of rho per query and their known rewards, query by
    query, query ``q`` from its own generator (seed ``chunk_seed + 104729 (q + 1)``), so a draw resumed after query
    ``q`` gives what an uninterrupted one does. With ``cache``, the queries done so far are kept in
    ``<cache>.partial`` (the cache's format and key, whole queries only; ~6 minutes of sampling each at 1 thread on the
    AVX2 VM) and read back by a draw under the same key; :func:`draw_rho_rewards` removes it once the chunk's file
    is there."""
    partial = None if cache is None else cache + ".partial"
    try:
        done = read_rho_rewards(partial, key) if partial is not None and os.path.exists(partial) else None
    except ValueError:  # a partial cut short (the write is atomic, so only by hand): drawn again
        done = None
    blocks = [] if done is None else list(done[: len(done) // size * size].view(-1, size))[: len(queries)]
    for q in range(len(blocks), len(queries)):
        gen = torch.Generator(device=model_device(base.rho)).manual_seed(chunk_seed + 104729 * (q + 1))
        ids = sample_texts(base.rho, base.tokenizer, [queries[q]], spec, size, FRONTIER_SAMPLING_ROWS, gen)
        blocks.append(torch.tensor([float(r) for r in known(spec.texts(base.tokenizer, ids, spec.cut(ids).lengths))]))
        if partial is not None and q + 1 < len(queries):
            write_rho_rewards(partial, key, torch.cat(blocks))
    rewards = torch.cat(blocks)
    if cache is not None:
        write_rho_rewards(cache, key, rewards)
    return rewards


def run_frontier(
    policy: torch.nn.Module, base: Base, spec: RolloutSpec, rho: RhoSamples, p: int, known: Any, seed: int,
    betas: Sequence[float], ref_model: torch.nn.Module | None,
) -> list[FrontierPoint]:
    """The frontier from rho's samples and ``p`` samples of ``policy`` per query, weighted by the balance heuristic
    of multiple importance sampling over the two proposals (log-probabilities of every sample under both)."""
    q, m = len(rho.queries), rho.per_query
    mine = sample_with_logprobs(policy, base.tokenizer, rho.queries, spec, p, seed, known, ref_model=ref_model,
                                sampling_batch_size=FRONTIER_SAMPLING_ROWS)
    rows = [x for x in rho.queries for _ in range(m)]
    logp_pi_on_rho = sequence_logprobs(policy, base.tokenizer, rows, rho.ids, spec)  # the policy on rho's samples
    rewards = torch.cat([rho.known.view(q, m), mine["known"].view(q, p)], 1).numpy()  # (Q, M + P)
    log_rho = torch.cat([rho.logp.view(q, m), mine["logp_ref"].view(q, p)], 1).numpy()
    log_pi = torch.cat([logp_pi_on_rho.view(q, m), mine["logp"].view(q, p)], 1).numpy()
    log_ratio = mixture_log_ratio(log_rho, [log_rho, log_pi], [m, p])
    return optimal_frontier(rewards, list(betas), n_bootstrap=100, seed=seed, log_ratio=log_ratio, resample_queries=True)
