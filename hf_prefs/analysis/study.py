"""The paper's label-count study (Figures 2 and 3) at machine scale, with seeds, error bars and a frontier read only
where it is trustworthy, for a task with a known reward (mock sentiment).

Runs, each made of the pipeline's stages and evaluated on the same held-out queries with the same sampling seed:

- ``direct``: PPO on the known reward itself;
- ``rm`` for each N in ``label_counts``: PPO on a reward model trained from the first N simulated best-of-K labels;

for every seed in ``seeds`` (a seed changes the labels, the reward model and PPO). Each run's gain over rho (known
reward after minus rho's, paired on the held-out queries) is compared with

    frac_frontier = gain / (R_frontier(KL_run) - R_rho)      the optimal KL-reward frontier at the run's KL
    frac_direct   = gain / gain_direct(same seed)            direct RL with the same seed

The frontier (:mod:`hf_prefs.core.frontier`) is estimated on the first ``frontier_queries`` held-out queries from
``frontier_samples`` samples of rho per query (drawn once; their rewards cached in ``rho_rewards.csv``), and read at
each run's KL with its effective sample size: ``frontier_ess_at_kl`` (mean over queries); ``frontier_qualified`` says
whether it is >= ``min_ess`` and the run's KL lies inside the frontier's grid (past it the read is clamped).
``frac_frontier`` is averaged over qualified runs only. The ESS at a given KL grows about in proportion to the samples per query, and a
frontier from few samples per query reads too low a reward at a given KL (its KL is bounded by log M), so the default
spends the samples on few queries: 10 x 2,048 (measured on the offline default: ESS >= 30 up to KL ~3, where 64 per
query give ESS ~3). With ``policy_samples`` > 0, each run's frontier pools rho's samples with that many samples of the
run's own policy per query, weighted by multiple importance sampling (balance heuristic; log pi of every rho sample is
computed, so it costs a pass over all of rho's samples per run). With ``policy_samples`` 0 and ``frontier_policy``
(``auto``: the direct-RL run of largest KL whose policy is saved; default ``none``), the frontier is estimated a second time from
``frontier_policy_samples`` samples of rho and as many of that policy per query, pooled by the balance heuristic
(:mod:`.pooled_frontier`, ``frontier_pooled.csv``); every run reads the estimate with the larger ESS at its KL
(``frontier_source``): rho's 2,048 samples near rho, the pooled ones where rho's samples run out.

Resumable: ``study.csv`` gets a row as soon as a run is done, and a run whose (run, seed, labels) row is already
there is skipped, so a long study can be finished across several invocations. Outputs in ``output_dir``:
``study.csv`` (one row per run), ``study_summary.csv`` (mean and standard error across seeds per point),
``frontier_rho.csv`` (the rho-only frontier), ``frontier_pooled.csv`` and ``frontier_pooled_samples.csv`` (the pooled
one and its samples' rewards and log-probabilities), ``kl_vs_reward.png`` (Fig. 3 style), ``reward_vs_labels.png``
(Fig. 2 style), ``runs/<run>/`` per run.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock
    fcntl = None  # type: ignore[assignment]

import numpy as np
import torch
from datasets import Dataset, concatenate_datasets
from matplotlib.figure import Figure
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import ModelConfig, TrlParser

from ..core.frontier import (
    FrontierPoint,
    best_frontier,
    frontier_at_kl,
    frontier_ess_at_kl,
    mixture_log_ratio,
    optimal_frontier,
)
from ..assets import asset_dir
from ..core.rollout import RolloutSpec
from ..core.stats import mean_and_se
from ..models.generation import model_device, sample_texts
from ..models.loading import load_reward_model
from ..models.reward_model import score_texts
from ..pipeline import (
    Base,
    PipelineArguments,
    collect_labels,
    evaluate_policy,
    load_base,
    make_ppo_trainer,
    resolve_cpu_precision,
    run_precision,
    split_queries,
    train_policy,
    train_reward_model,
    trained_policy,
    validate_pipeline_config,
    write_metrics,
)
from ..pipeline.evaluate import sample_with_logprobs, sequence_logprobs
from ..tasks.known_rewards import make_known_reward
from ..trainers.ppo_checkpoints import last_complete_checkpoint
from ..trainers.ppo_config import PPOConfig
from .pooled_frontier import (
    POOLED_FRONTIER,
    POOLED_SAMPLES,
    draw_pooled_samples,
    load_saved_policy,
    policy_digest,
    pooled_frontier,
    read_pooled_samples,
    write_pooled_samples,
)
from .study_files import read_label_file, texts_digest, write_label_file

__all__ = ["DEFAULT_BETAS", "STUDY_FIELDS", "StudyArguments", "frontier_read", "gain_fraction", "run_study", "study_main",
           "summarize"]

logger = logging.getLogger(__name__)

#: beta grid of the frontier; inf gives the KL = 0 point (rho itself). Dense where runs land (KL ~1-6): between grid
#: points the frontier is read by interpolation, and a chord under the concave curve reads its reward too low.
DEFAULT_BETAS: tuple[float, ...] = (
    math.inf, 100.0, 30.0, 10.0, 5.0, 3.0, 2.0, 1.5, 1.25, 1.0, 0.85, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.275, 0.25,
    0.225, 0.2, 0.175, 0.15, 0.125, 0.1, 0.07, 0.05,
)

STUDY_FIELDS = ["run", "seed", "labels", "known_reward", "kl", "gain", "gain_se", "frontier_reward_at_kl",
                "frontier_reward_se_at_kl", "frontier_ess_at_kl", "frontier_min_ess_at_kl", "frontier_qualified", "frontier_source", "frac_frontier", "frac_direct", "rho_known_reward",
                "rm_eval_accuracy", "ppo_updates", "precision"]


@dataclass
class StudyArguments:
    """What the study recipe adds to the pipeline's arguments."""

    label_counts: list[int] = field(default_factory=lambda: [64, 128, 256], metadata={"help": "N values (labels per RM)."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds per point (labels, RM, PPO)."})
    frontier_queries: int = field(default=10, metadata={"help": "Held-out queries the frontier is estimated on."})
    frontier_samples: int = field(default=2048, metadata={"help": "rho samples per frontier query (drawn once)."})
    policy_samples: int = field(default=0, metadata={"help": "Samples of each run's policy per frontier query pooled with "
                                                              "rho's (0: every run reads rho's frontier)."})
    frontier_policy: str = field(default="none", metadata={"help": "Run whose saved policy (runs/<run>/policy) is pooled "
        "with rho into a second frontier estimate that reaches higher KL (frontier_pooled.csv); each run reads the "
        "estimate with the larger ESS at its KL. 'auto': the direct-RL run of largest KL with a saved policy (or "
        "cached samples); 'none' (default): rho's alone. Unused with policy_samples > 0."})
    frontier_policy_samples: int = field(default=256, metadata={"help": "Samples of rho and of frontier_policy each, "
                                                                        "per frontier query, for the pooled estimate."})
    min_ess: float = field(default=30.0, metadata={"help": "Read the frontier only where its effective sample size is this."})
    label_chunk: int = field(default=512, metadata={"help": "Label queries per chunk; each chunk's labels are written "
                                                             "when done, so an interrupted study resumes after it."})


def gain_fraction(gain: float, reference_gain: float) -> float:
    """gain / reference_gain; NaN when the reference gain is 0."""
    return float(gain / reference_gain) if reference_gain != 0 else float("nan")


# ---------------------------------------------------------------------------------------------------------------------
# the frontier of one run: rho's samples pooled with the run's own
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class RhoSamples:
    """``frontier_samples`` rho samples per frontier query: token ids, known rewards, log rho; (Q*M, ...)."""

    queries: list[str]
    per_query: int
    ids: torch.Tensor
    known: torch.Tensor
    logp: torch.Tensor


RHO_SAMPLES_CACHE = "rho_samples.pt"
RHO_REWARDS_CACHE = "rho_rewards.csv"
RHO_EVAL_CACHE = "rho_eval.json"
#: rho's frontier samples per query per cache file (rho_rewards.csv, then rho_rewards.part<c>.csv): 20,480 samples, ~35
#: minutes at 2 threads on the AVX2 VM, at most that lost to an interruption
RHO_REWARDS_CHUNK = 2048
# rows per batch when drawing a frontier query's thousands of rho samples: SmolLM2 (float32, 2 threads, one query x 512
# samples) drew 14.8 samples/s at 256 rows and 14.9 at 512, 11.7 at 64; peak 1.9 GiB at 256 against 2.8 at 512
FRONTIER_SAMPLING_ROWS = 256


def _rho_cache_key(base: Base, spec: RolloutSpec, queries: Sequence[str], known_reward: str, **draw: Any) -> dict[str, Any]:
    """What a cache of rho's samples depends on: the queries (by digest: the caches are committed), how they are drawn
    (``draw``: seed, count...), the model and its weights' dtype (a study resumed on a CPU of another kind may run rho
    in bf16 instead of float32, which changes the samples), the response rule and the known reward that scored them
    (``known_reward`` and, for a classifier, its positive class)."""
    dtype = str(next(base.rho.parameters()).dtype).removeprefix("torch.")
    return {"queries_sha256": texts_digest(queries), **draw, "model": _model_id(base.name), "dtype": dtype,
            "spec": repr(spec), "known_reward": known_reward}


def _known_reward_name(pa: PipelineArguments) -> str:
    """The known reward in a cache key: ``vader``, or a classifier with its positive class (``id:LABEL``)."""
    if pa.known_reward == "vader":
        return "vader"
    return f"{pa.known_reward}:{pa.known_reward_positive_label}"


def _model_id(name: str) -> str:
    """The model in a cache key: the offline SmolLM2 asset by its asset folder's name (the folder lies in each
    machine's own cache: ``~/.cache/hf_prefs`` or ``$HF_PREFS_CACHE``), any other model by the name it was given."""
    asset = asset_dir("smollm2").name
    return f"hf_prefs asset {asset}" if os.path.isabs(name) and os.path.basename(os.path.normpath(name)) == asset else name


def _same_key(stored: dict[str, Any], key: dict[str, Any]) -> bool:
    """Whether a cache written under ``stored`` serves ``key``. Keys written before the model was named by
    :func:`_model_id` (a path) and before the known reward was in the key (VADER's: the only known reward the
    studies that wrote them used) are read as they would be written now."""
    stored = {**stored, "model": _model_id(str(stored.get("model", "")))}
    stored.setdefault("known_reward", "vader")
    return stored == key


def _rho_eval(base: Base, spec: RolloutSpec, eval_q: list[str], known: Any, batch_size: int, seed: int,
              cache: str, known_name: str) -> list[float]:
    """rho's known reward on each held-out query (the pairing of every run's gain), sampled as every run's evaluation
    is (same queries, batch size and seed). Cached as JSON in ``cache`` with what it depends on, so a resumed study
    does not sample it again (minutes on a CPU); committed with the study."""
    key = _rho_cache_key(base, spec, eval_q, known_name, batch_size=batch_size, seed=seed)
    if os.path.exists(cache):
        with open(cache) as f:
            stored = json.load(f)
        if _same_key(stored.get("key", {}), key):
            return [float(x) for x in stored["known_rewards"]]
    ev = evaluate_policy(base.rho, base.tokenizer, eval_q, spec, ref_model=base.rho, known_reward=known,
                         batch_size=batch_size, seed=seed)
    rewards = [float(x) for x in ev.known_rewards]
    with open(cache + ".tmp", "w") as f:
        json.dump({"key": key, "known_rewards": rewards}, f)
    os.replace(cache + ".tmp", cache)
    return rewards


def _write_rho_rewards(path: str, key: str, rewards: torch.Tensor) -> None:
    """rho's known rewards as text: a ``# key: <json>`` line, a ``known`` header, one ``%.9g`` value per line (exact
    for float32), so the cache can be committed beside ``study.csv`` and a new checkout skips the redraw."""
    with open(path + ".tmp", "w") as f:
        f.write(f"# key: {key}\nknown\n")
        f.writelines(f"{x:.9g}\n" for x in rewards.tolist())
    os.replace(path + ".tmp", path)


def _read_rho_rewards(path: str, key: str) -> torch.Tensor | None:
    """The rewards of :func:`_write_rho_rewards` when the file's key serves ``key`` (:func:`_same_key`); None
    otherwise."""
    with open(path) as f:
        first = f.readline().rstrip("\n")
        if not first.startswith("# key: ") or not _same_key(json.loads(first.removeprefix("# key: ")), json.loads(key)):
            return None
        if f.readline().strip() != "known":
            raise ValueError(f"{path}: line 2 must be the header 'known'")
        return torch.tensor([float(line) for line in f if line.strip()], dtype=torch.float32)


def _rho_samples(base: Base, spec: RolloutSpec, queries: list[str], m: int, known: Any, seed: int, with_logp: bool,
                 cache_dir: str | None = None, known_name: str = "vader", chunk: int = RHO_REWARDS_CHUNK) -> RhoSamples:
    """``m`` samples of rho per query with their known rewards (and log rho when ``with_logp``: the pooled frontier
    needs it). Cached in ``cache_dir`` (tens of thousands of samples take tens of minutes on a CPU; a resumed study reads
    them back when the queries, the count, the seed, the model, its dtype and the response rule are the same). Without
    ``with_logp`` only the rewards are kept (the token ids serve only the pooled frontier), as text in
    ``rho_rewards.csv`` (~0.25 MB for 20,480 samples; committed with the study); with it, ids and log rho in
    ``rho_samples.pt``. The frontier needs samples of rho, not particular ones: the rows per sampling batch, which
    change the random stream but not the distribution, are not part of the key (unlike ``rho_eval.json``, whose
    samples must be the very ones every run's paired evaluation draws). The rewards are drawn and cached ``chunk``
    samples per query at a time (each chunk its own file and seed, the first ``rho_rewards.csv``, the next
    ``rho_rewards.part<c>.csv``), so a larger ``m`` adds chunks to those already drawn and an interrupted draw loses at
    most one chunk."""
    if not with_logp:
        return _rho_rewards(base, spec, queries, m, known, seed, cache_dir, known_name, chunk)
    key = json.dumps(_rho_cache_key(base, spec, queries, known_name, m=m, seed=seed, with_logp=with_logp))
    cache = None if cache_dir is None else os.path.join(cache_dir, RHO_SAMPLES_CACHE)
    if cache is not None and os.path.exists(cache):
        stored = torch.load(cache, weights_only=True)
        if _same_key(json.loads(stored["key"]), json.loads(key)):
            return RhoSamples(list(queries), m, stored["ids"], stored["known"], stored["logp"])
    s = sample_with_logprobs(base.rho, base.tokenizer, queries, spec, m, seed, known,
                             sampling_batch_size=FRONTIER_SAMPLING_ROWS)
    if cache is not None:
        torch.save({"key": key, "ids": s["ids"], "known": s["known"], "logp": s["logp"]}, cache + ".tmp")
        os.replace(cache + ".tmp", cache)
    return RhoSamples(list(queries), m, s["ids"], s["known"], s["logp"])


def _rho_rewards(base: Base, spec: RolloutSpec, queries: list[str], m: int, known: Any, seed: int,
                 cache_dir: str | None, known_name: str, chunk: int) -> RhoSamples:
    """:func:`_rho_samples` without log rho: the known rewards alone, drawn and cached a chunk at a time (chunk ``c``
    with seed ``seed + 7919 c``; the first chunk's key is what a single draw of ``chunk`` samples had, so a cache
    written before chunks existed is chunk 0)."""
    size = min(m, chunk)
    if m % size:
        raise ValueError(f"frontier_samples {m} must be a multiple of {size}: rho's samples are drawn and cached "
                         f"{size} per query at a time")
    blocks = []
    for c in range(m // size):
        chunk_seed = seed + 7919 * c
        key = json.dumps(_rho_cache_key(base, spec, queries, known_name, m=size, seed=chunk_seed, with_logp=False))
        name = RHO_REWARDS_CACHE if c == 0 else RHO_REWARDS_CACHE.replace(".csv", f".part{c:03d}.csv")
        cache = None if cache_dir is None else os.path.join(cache_dir, name)
        rewards = _read_rho_rewards(cache, key) if cache is not None and os.path.exists(cache) else None
        if rewards is None:
            gen = torch.Generator(device=model_device(base.rho)).manual_seed(chunk_seed)
            ids = sample_texts(base.rho, base.tokenizer, list(queries), spec, size, FRONTIER_SAMPLING_ROWS, gen)
            rewards = torch.tensor([float(r) for r in known(spec.texts(base.tokenizer, ids, spec.cut(ids).lengths))])
            if cache is not None:
                _write_rho_rewards(cache, key, rewards)
        blocks.append(rewards.view(len(queries), size))
    rewards = torch.cat(blocks, 1).reshape(-1)  # query-major: (Q * m,)
    n = len(rewards)  # no token ids or log rho: the rewards suffice
    return RhoSamples(list(queries), m, torch.empty((n, 0), dtype=torch.long), rewards, torch.full((n,), float("nan")))


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


# ---------------------------------------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class StudyContext:
    """What every run of the study shares."""

    pa: PipelineArguments
    cfg: PPOConfig
    model_args: Any
    sa: StudyArguments
    base: Base
    spec: RolloutSpec
    eval_q: list[str]
    ppo_q: Any
    known: Any
    rho_eval: list[float]
    rho_samples: RhoSamples
    rho_frontier: list[FrontierPoint]
    betas: Sequence[float]
    output_dir: str


def _ppo_run(ctx: StudyContext, name: str, reward: Any, seed: int) -> dict[str, Any]:
    """PPO (the pipeline's known-reward-tracking trainer) with ``seed`` on ``reward``, its held-out evaluation (paired
    with rho's) and its frontier; the trained policy is saved in ``runs/<name>/policy``. A checkpoint is kept after every update (only the last), and a run interrupted
    mid-way continues from it exactly (the trainer's resume: weights, optimizer, beta, generators)."""
    run_dir = os.path.join(ctx.output_dir, "runs", name)
    os.makedirs(run_dir, exist_ok=True)
    cfg = replace(ctx.cfg, seed=seed, output_dir=run_dir, save_strategy="steps", save_steps=1, save_total_limit=1)
    torch.manual_seed(seed)
    trainer = make_ppo_trainer(cfg, ctx.model_args, ctx.base, reward, ctx.ppo_q, known_reward=ctx.known, output_dir=run_dir)
    train_policy(trainer, resume_from_checkpoint=last_complete_checkpoint(run_dir))
    write_metrics(trainer.state.log_history, run_dir)
    ref = None if trainer.is_peft_model else ctx.base.rho
    policy = trained_policy(trainer)
    # kept after the run's checkpoints are dropped (a LoRA policy's adapter: megabytes), so that its frontier can be
    # estimated later with samples of the policy itself (policy_samples); an extra, never worth the run's row
    try:
        policy.save_pretrained(os.path.join(run_dir, "policy"))
    except Exception as err:  # noqa: BLE001
        logger.warning("%s: the trained policy could not be saved (%s); the run's row is written all the same", name, err)
    ev = evaluate_policy(policy, ctx.base.tokenizer, ctx.eval_q, ctx.spec, ref_model=ref, known_reward=ctx.known,
                         batch_size=ctx.pa.sampling_batch_size, seed=ctx.cfg.seed + 2)
    gain, gain_se = mean_and_se(torch.tensor(ev.known_rewards, dtype=torch.float64) - torch.tensor(ctx.rho_eval, dtype=torch.float64))
    kl = float(np.mean(ev.kl))
    if ctx.sa.policy_samples > 0:
        frontier, source = run_frontier(policy, ctx.base, ctx.spec, ctx.rho_samples, ctx.sa.policy_samples, ctx.known,
                                        seed + 7, ctx.betas, ref), f"rho+{name}"
    else:  # rho's frontier: the same for every run (read again at the study's end with the pooled one, if any)
        frontier, source = ctx.rho_frontier, "rho"
    with open(os.path.join(run_dir, "eval.json"), "w") as f:
        json.dump({**ev.to_dict(), "frontier": [asdict(p) for p in frontier]}, f, indent=1)
    return {"known_reward": float(np.mean(ev.known_rewards)), "kl": kl, "gain": gain, "gain_se": gain_se,
            **frontier_read({source: frontier}, kl, gain, ctx.sa.min_ess), "ppo_updates": trainer.state.global_step,
            "precision": _precision_label(run_precision(trainer, cfg))}


def _precision_label(precision: dict[str, Any]) -> str:
    """``study.csv``'s precision of a run: the policy's dtype, ``+bf16 autocast`` when on (a long study may be
    finished on machines whose CPUs differ: the bf16 fallback runs float32 where bf16 matmuls are slow)."""
    return precision["policy_dtype"] + ("+bf16 autocast" if precision["bf16"] else "")


def frontier_read(frontiers: dict[str, list[FrontierPoint]], kl: float, gain: float, min_ess: float) -> dict[str, Any]:
    """A run's frontier columns, from the estimate (of those given by name: rho's; rho's pooled with a policy's) with
    the largest mean ESS at the run's KL (:func:`best_frontier`): its reward and ESS there (the mean over the
    frontier's queries, and the least-sampled query's), whether that read qualifies (mean ESS >= ``min_ess`` and the
    KL inside the grid), its name (``frontier_source``) and ``frac_frontier = gain / (R_frontier(KL) - R_frontier(0))``
    (both read on that estimate)."""
    names = list(frontiers)
    source = names[best_frontier([frontiers[n] for n in names], max(kl, 0.0))]
    frontier = frontiers[source]
    f_reward, f_se, f_ess = frontier_at_kl(frontier, max(kl, 0.0))
    return {"frontier_reward_at_kl": f_reward, "frontier_reward_se_at_kl": f_se, "frontier_ess_at_kl": f_ess,
            "frontier_min_ess_at_kl": frontier_ess_at_kl(frontier, max(kl, 0.0))[1],
            "frontier_qualified": bool(f_ess >= min_ess and kl <= max(p.kl for p in frontier)),
            "frontier_source": source, "frac_frontier": gain_fraction(gain, f_reward - frontier_at_kl(frontier, 0.0)[0])}


@contextmanager
def _study_csv_lock(output_dir: str) -> Iterator[None]:
    """Held around every read and write of ``study.csv``: two study processes on other seeds share the folder, and a
    row one appends while the other rewrites the file would be lost (``fcntl`` advisory lock on ``study.lock``;
    where there is no ``fcntl``, no lock)."""
    with open(os.path.join(output_dir, "study.lock"), "a") as f:
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_UN)


def _reread_rows(output_dir: str, min_ess: float, frontier_files: dict[str, str] | None) -> None:
    """Columns of ``study.csv`` that follow from other rows, computed again for every row: ``frac_direct`` against the
    direct-RL row of the same seed now in the file (a direct run re-made after the RM runs of its seed, e.g. for a
    uniform table, changes their share), and with ``frontier_files`` (``policy_samples`` 0: name -> file in
    ``output_dir``, rho's and the pooled one) the frontier columns read at those estimates, which depend only on the
    run's KL and gain, so rows written before a frontier was redrawn or added are brought to what every run reads
    now."""
    path = os.path.join(output_dir, "study.csv")
    with _study_csv_lock(output_dir):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        _recompute_columns(output_dir, rows, min_ess, frontier_files)
        _write_rows(path, rows)


def _read_frontier(path: str) -> list[FrontierPoint]:
    with open(path, newline="") as f:
        return [FrontierPoint(**{k: float(v) for k, v in r.items()}) for r in csv.DictReader(f)]


def _write_frontier(path: str, frontier: list[FrontierPoint]) -> None:
    """Whole or not at all (through this process's temporary file): another study process may read it."""
    with open(f"{path}.{os.getpid()}.tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(frontier[0])))
        writer.writeheader()
        writer.writerows(asdict(p) for p in frontier)
    os.replace(f"{path}.{os.getpid()}.tmp", path)


def _recompute_columns(output_dir: str, rows: list[dict[str, Any]], min_ess: float,
                       frontier_files: dict[str, str] | None) -> None:
    """:func:`_reread_rows`'s columns of ``rows``, in place."""
    frontiers = None
    if frontier_files:
        frontiers = {name: _read_frontier(os.path.join(output_dir, file)) for name, file in frontier_files.items()}
    direct = {int(r["seed"]): float(r["gain"]) for r in rows if r["run"] == "direct"}
    for row in rows:
        if frontiers is not None:
            row.update(frontier_read(frontiers, float(row["kl"]), float(row["gain"]), min_ess))
        if row["run"] == "direct":
            row["frac_direct"] = 1.0
        elif int(row["seed"]) in direct:
            row["frac_direct"] = gain_fraction(float(row["gain"]), direct[int(row["seed"])])


def _write_rows(path: str, rows: list[dict[str, Any]]) -> None:
    """``study.csv`` rewritten whole (through this process's temporary file) with today's columns; values a row lacks
    are blank."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=STUDY_FIELDS)
        writer.writeheader()
        writer.writerows({k: row.get(k) for k in STUDY_FIELDS} for row in rows)
    os.replace(tmp, path)


def _seed_runs(ctx: StudyContext, seed: int, done: dict[tuple[str, int, int], dict[str, Any]], label_q: list[str]) -> None:
    """The direct-RL run and the reward-model runs of one seed that ``study.csv`` does not have yet."""
    rho_mean = float(np.mean(ctx.rho_eval))
    if ("direct", seed, 0) not in done:
        result = _ppo_run(ctx, f"direct_s{seed}", lambda q, r: ctx.known(list(r)), seed)
        _append(ctx, {"run": "direct", "seed": seed, "labels": 0, **result, "frac_direct": 1.0, "rho_known_reward": rho_mean}, done)
        _drop_checkpoints(ctx, f"direct_s{seed}")
    direct_gain = float(done[("direct", seed, 0)]["gain"])
    todo = [n for n in ctx.sa.label_counts if ("rm", seed, n) not in done]
    if not todo:
        return
    cfg = replace(ctx.cfg, seed=seed)
    for n in todo:  # ascending: each run's labels are collected just before it (the first n of the seed's pool)
        labels = _seed_labels(ctx, cfg, label_q, need=n)
        if n > len(labels):
            raise ValueError(f"label_counts: N={n} exceeds the {len(labels)} labels kept")
        rm_dir = os.path.join(ctx.output_dir, "runs", f"rm{n}_s{seed}")
        rm, rm_metrics = _reward_model(ctx, cfg, labels.select(range(n)), rm_dir)
        result = _ppo_run(ctx, f"rm{n}_s{seed}", rm, seed)
        _append(ctx, {"run": "rm", "seed": seed, "labels": n, **result, "frac_direct": gain_fraction(result["gain"], direct_gain),
                      "rho_known_reward": rho_mean, "rm_eval_accuracy": rm_metrics.get("eval_accuracy")}, done)
        _drop_checkpoints(ctx, f"rm{n}_s{seed}")


def _drop_checkpoints(ctx: StudyContext, name: str) -> None:
    """A finished run's PPO checkpoints (its row is in ``study.csv``; they only served a resume)."""
    run_dir = os.path.join(ctx.output_dir, "runs", name)
    for entry in os.listdir(run_dir):
        if entry.startswith(PREFIX_CHECKPOINT_DIR + "-"):
            shutil.rmtree(os.path.join(run_dir, entry))


def _seed_labels(ctx: StudyContext, cfg: PPOConfig, label_q: list[str], need: int | None = None) -> Dataset:
    """The seed's simulated labels, collected in chunks of ``label_chunk`` queries, each written to
    ``labels_s<seed>.part<c>.jsonl.gz`` when done (collecting thousands takes tens of minutes on a CPU, so an
    interrupted study loses at most one chunk; the files are small enough to commit, so a study carried on on another
    machine reads them back; they name each query by ``query_index`` and digest, not text: :mod:`.study_files`);
    chunk ``c`` samples and labels with seed ``seed + 100_003 * c``, so a resumed collection gives the labels an
    uninterrupted one does. ``query_index`` counts over all label queries.

    With ``need``, chunks are collected only until there are ``need`` labels: a run on the first N labels can start
    before the pool for the largest N is complete (its first N labels are the same either way). Once every chunk is
    in, the parts are merged into ``labels_s<seed>.jsonl.gz`` and removed."""
    path = os.path.join(ctx.output_dir, f"labels_s{cfg.seed}.jsonl.gz")
    if os.path.exists(path):
        labels = read_label_file(path, label_q)
        if len(labels) >= max(ctx.sa.label_counts):
            return labels
    size = max(1, ctx.sa.label_chunk)

    def part_path(c: int) -> str:
        return os.path.join(ctx.output_dir, f"labels_s{cfg.seed}.part{c:03d}.jsonl.gz")

    parts: list[Dataset] = []
    starts = range(0, len(label_q), size)
    for c, start in enumerate(starts):
        if need is not None and sum(len(p) for p in parts) >= need:
            return concatenate_datasets(parts)
        part = part_path(c)
        if os.path.exists(part):
            parts.append(_read_part(part, label_q, start, size))
            continue
        chunk, _ = collect_labels(ctx.pa, replace(cfg, seed=cfg.seed + 100_003 * c), ctx.base.rho, ctx.base.tokenizer,
                                  label_q[start : start + size], ctx.spec)
        chunk = chunk.map(lambda row: {"query_index": row["query_index"] + start})
        write_label_file(chunk, part)
        parts.append(chunk)
    labels = concatenate_datasets(parts)
    write_label_file(labels, path)
    for c in range(len(parts)):
        os.remove(part_path(c))
    return labels


def _read_part(path: str, label_q: list[str], start: int, size: int) -> Dataset:
    """A label part file, which must hold only queries of its chunk ``[start, start + size)`` (a study resumed with
    another ``label_chunk`` would otherwise take a part of other chunks for this one: labels twice, or none)."""
    part = read_label_file(path, label_q)
    outside = [i for i in part["query_index"] if not start <= i < start + size]
    if outside:
        raise ValueError(f"{path}: query_index {outside[0]} lies outside its chunk [{start}, {start + size}): it was "
                         f"written with another label_chunk; resume with the label_chunk it was written with")
    return part


def _reward_model(ctx: StudyContext, cfg: PPOConfig, labels: Dataset, rm_dir: str) -> tuple[Any, dict[str, Any]]:
    """The reward model on ``labels``: trained (continued from its newest training checkpoint when an interrupted
    study left one), or read back from ``rm_dir`` when an interrupted study finished it (``rm_metrics.jsonl`` is
    written after the model, so its presence means both are whole)."""
    log = os.path.join(rm_dir, "rm_metrics.jsonl")
    if os.path.exists(log) and os.path.isdir(os.path.join(rm_dir, "reward_model")):
        model, _ = load_reward_model(os.path.join(rm_dir, "reward_model"))
        model.requires_grad_(False)  # scoring only; frozen, its bottom layers share rho's tensors as a trained one's do
        with open(log) as f:
            history = [json.loads(line) for line in f if line.strip()]
        return model, {k: v for entry in history for k, v in entry.items() if isinstance(v, (int, float))}
    return train_reward_model(ctx.pa, cfg, labels, ctx.base.rho, ctx.base.tokenizer, ctx.base.name, rm_dir, spec=ctx.spec,
                              resumable=True)


def _append(ctx: StudyContext, row: dict[str, Any], done: dict) -> None:
    """One row more in ``study.csv`` (written at once: a crash loses no finished run). A file written with other
    columns (an older version's) is first rewritten with today's, its rows' missing values blank, so the new row
    lands under its own header."""
    path = os.path.join(ctx.output_dir, "study.csv")
    with _study_csv_lock(ctx.output_dir):
        new = not os.path.exists(path)
        if not new:
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                old_rows = list(reader) if reader.fieldnames != STUDY_FIELDS else None
            if old_rows is not None:
                _write_rows(path, old_rows)
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=STUDY_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow({k: row.get(k) for k in STUDY_FIELDS})
    done[(row["run"], int(row["seed"]), int(row["labels"]))] = row


def _read_done(output_dir: str) -> dict[tuple[str, int, int], dict[str, Any]]:
    path = os.path.join(output_dir, "study.csv")
    if not os.path.exists(path):
        return {}
    with _study_csv_lock(output_dir), open(path, newline="") as f:
        return {(r["run"], int(r["seed"]), int(r["labels"])): r for r in csv.DictReader(f)}


# ---------------------------------------------------------------------------------------------------------------------
# rho's frontier pooled with a trained policy's samples (one estimate for every run, beside rho's own)
# ---------------------------------------------------------------------------------------------------------------------
def _frontier_policy_run(sa: StudyArguments, output_dir: str) -> str | None:
    """The run whose policy the pooled frontier uses: ``frontier_policy``, or for ``auto`` the direct-RL row of largest
    KL in ``study.csv`` whose policy is saved or whose samples are cached (a checkout has the cache, not the policy);
    None for ``none``, with ``policy_samples`` > 0 (each run's own frontier) or when there is none."""
    if sa.frontier_policy == "none" or sa.policy_samples > 0:
        return None
    if sa.frontier_policy != "auto":
        return sa.frontier_policy
    cache = os.path.join(output_dir, POOLED_SAMPLES)
    cached = read_pooled_samples(cache)[0].get("run") if os.path.exists(cache) else None
    kls = {f"direct_s{r['seed']}": float(r["kl"]) for r in _read_done(output_dir).values()
           if r["run"] == "direct" and r.get("kl") not in (None, "")}
    usable = [n for n in kls if n == cached or os.path.isdir(os.path.join(output_dir, "runs", n, "policy"))]
    return max(usable, key=kls.__getitem__, default=None)


def _pooled_frontier(ctx: StudyContext, run: str) -> list[FrontierPoint] | None:
    """rho's frontier pooled with ``run``'s saved policy (:mod:`.pooled_frontier`), written to ``frontier_pooled.csv``.
    The samples are drawn once and cached (``frontier_pooled_samples.csv``) under what they depend on: rho's key, the
    counts, the seed, the run and its policy's weights (a cache without the policy beside it is used as it is). None,
    with a warning, when there is neither the policy nor a cache of it."""
    n, seed = ctx.sa.frontier_policy_samples, ctx.cfg.seed + 400
    policy_dir = os.path.join(ctx.output_dir, "runs", run, "policy")
    path = os.path.join(ctx.output_dir, POOLED_SAMPLES)
    stored = read_pooled_samples(path) if os.path.exists(path) else None
    have_policy = os.path.isdir(policy_dir)
    digest = policy_digest(policy_dir) if have_policy else (stored[0].get("policy_sha256") if stored else None)
    key = _rho_cache_key(ctx.base, ctx.spec, ctx.rho_samples.queries, _known_reward_name(ctx.pa), m=n, p=n, seed=seed,
                         run=run, policy_sha256=digest)
    if stored is not None and _same_key(stored[0], key):
        samples = stored[1]
    elif have_policy:
        policy, ref = load_saved_policy(ctx.base.rho, policy_dir)
        samples = draw_pooled_samples(policy, ref, ctx.base.rho, ctx.base.tokenizer, ctx.rho_samples.queries, ctx.spec,
                                      n, n, ctx.known, seed, FRONTIER_SAMPLING_ROWS)
        write_pooled_samples(path, key, samples)
    else:
        logger.warning("frontier_policy %s: no saved policy (%s) and no cached samples of it: rho's frontier alone",
                       run, policy_dir)
        return None
    frontier = pooled_frontier(samples, ctx.betas, ctx.cfg.seed)
    _write_frontier(os.path.join(ctx.output_dir, POOLED_FRONTIER), frontier)
    return frontier


# ---------------------------------------------------------------------------------------------------------------------
# the study
# ---------------------------------------------------------------------------------------------------------------------
def _context(pa: PipelineArguments, cfg: PPOConfig, model_args: Any, sa: StudyArguments, output_dir: str,
             betas: Sequence[float]) -> tuple[StudyContext, list[str]]:
    base = load_base(model_args)
    try:
        eval_q, label_q, ppo_q, _ = split_queries(pa, cfg, base.tokenizer)
    except ValueError as err:
        raise ValueError(f"label_counts: max N {max(sa.label_counts)} is too large: {err}") from None
    known = make_known_reward(pa.known_reward, pa.known_reward_positive_label)
    spec = RolloutSpec.from_config(cfg, base.tokenizer)
    known_name = _known_reward_name(pa)
    rho_eval = _rho_eval(base, spec, eval_q, known, pa.sampling_batch_size, cfg.seed + 2,
                         os.path.join(output_dir, RHO_EVAL_CACHE), known_name)
    rho_samples = _rho_samples(base, spec, eval_q[: sa.frontier_queries], sa.frontier_samples, known, cfg.seed + 100,
                               with_logp=sa.policy_samples > 0, cache_dir=output_dir, known_name=known_name)
    q, m = len(rho_samples.queries), rho_samples.per_query
    rho_frontier = optimal_frontier(rho_samples.known.view(q, m).numpy(), list(betas), n_bootstrap=100, seed=cfg.seed,
                                    resample_queries=True)
    _write_frontier(os.path.join(output_dir, "frontier_rho.csv"), rho_frontier)
    ctx = StudyContext(pa, cfg, model_args, sa, base, spec, eval_q, ppo_q, known, rho_eval, rho_samples,
                       rho_frontier, betas, output_dir)
    return ctx, list(label_q)


def run_study(
    pa: PipelineArguments, cfg: PPOConfig, model_args: Any, sa: StudyArguments, output_dir: str,
    betas: Sequence[float] = DEFAULT_BETAS,
) -> list[dict[str, Any]]:
    """Run what ``study.csv`` lacks of direct RL and RL on an RM per N in ``label_counts``, for every seed; write the
    summary and the plots; return the summary rows (mean and SE per point). ``study.csv`` is read again before each
    seed, so a second process given other ``seeds`` may work in the same ``output_dir`` (rows are appended whole); two
    processes must not work on the same seed (nothing locks a run)."""
    counts = sorted(int(n) for n in sa.label_counts)
    if not counts or counts[0] < 2:
        raise ValueError(f"label_counts: need N >= 2 labels per run, got {list(sa.label_counts)}")
    if not sa.seeds:
        raise ValueError("seeds: give at least one seed")
    if pa.known_reward in (None, "", "none"):
        raise ValueError("known_reward: the study needs a known reward (direct RL, simulated labels, frontier)")
    if min(sa.frontier_queries, sa.frontier_samples) < 1 or sa.policy_samples < 0:
        raise ValueError("frontier_queries and frontier_samples must be >= 1, policy_samples >= 0")
    pa = replace(pa, label_source="simulated", label_mode="offline", num_label_queries=counts[-1])
    sa = replace(sa, label_counts=counts)
    validate_pipeline_config(pa, cfg, model_args)
    resolve_cpu_precision(pa, cfg, model_args)  # float32 on a CPU without bf16 matmul units (cpu_bf16_fallback)
    os.makedirs(output_dir, exist_ok=True)
    done = _read_done(output_dir)
    todo = [s for s in sa.seeds if any(k not in done for k in [("direct", s, 0)] + [("rm", s, n) for n in counts])]
    # also for a finished study: rho's frontier is estimated (from its cached samples) with today's frontier settings,
    # e.g. a larger --frontier_samples, and every row is read at it below
    torch.manual_seed(cfg.seed)
    ctx, label_q = _context(pa, cfg, model_args, sa, output_dir, betas)
    for seed in todo:  # rows another study process wrote since (one on other --seeds) are skipped, not re-run
        done.update(_read_done(output_dir))
        _seed_runs(ctx, seed, done, label_q)
    frontier_files = None if sa.policy_samples > 0 else {"rho": "frontier_rho.csv"}
    pool_run = _frontier_policy_run(sa, output_dir)
    if pool_run is not None and _pooled_frontier(ctx, pool_run) is not None:
        frontier_files[f"rho+{pool_run}"] = POOLED_FRONTIER  # type: ignore[index]
    _reread_rows(output_dir, sa.min_ess, frontier_files)
    # every seed in study.csv, not only this process's (a second process may have run other seeds)
    rows = [r for k, r in _read_done(output_dir).items() if k[0] == "direct" or k[2] in counts]
    summary = summarize(rows)
    with open(os.path.join(output_dir, "study_summary.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    _plot(summary, rows, output_dir, pooled=next((name for name in frontier_files or {} if name != "rho"), None))
    return summary


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard error across seeds per point (direct RL; RM with N labels) of the known reward, KL, gain and
    the fractions (``frac_frontier`` over the runs whose frontier read is ESS-qualified and whose share is defined: a
    run at KL <= 0 has no frontier gain to divide by; ``frontier_qualified_runs`` counts the runs in that mean)."""
    points: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        points.setdefault((r["run"], int(r["labels"])), []).append(r)
    out = []
    for (run, labels), rs in sorted(points.items(), key=lambda kv: (kv[0][0] != "direct", kv[0][1])):
        entry: dict[str, Any] = {"run": run, "labels": labels, "seeds": len(rs)}
        for key in ("known_reward", "kl", "gain", "frac_direct", "frontier_ess_at_kl", "frontier_min_ess_at_kl"):
            entry[key], entry[f"{key}_se"] = _mean_se([float(r[key]) for r in rs if r.get(key) not in (None, "")])
        qualified = [float(r["frac_frontier"]) for r in rs if str(r["frontier_qualified"]) in ("True", "true", "1")]
        qualified = [v for v in qualified if math.isfinite(v)]
        entry["frac_frontier"], entry["frac_frontier_se"] = _mean_se(qualified)
        entry["frontier_qualified_runs"] = len(qualified)
        out.append(entry)
    return out


def _mean_se(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return mean_and_se(torch.tensor(values, dtype=torch.float64))


def _plot(summary: list[dict[str, Any]], rows: list[dict[str, Any]], out: str, pooled: str | None = None) -> None:
    """Fig. 3 style (KL vs known reward, each point mean +- SE over seeds, with rho's frontier and, named ``pooled``,
    the pooled one) and Fig. 2 style (known reward vs labels, with direct RL's band)."""
    frontier = [asdict(p) for p in _read_frontier(os.path.join(out, "frontier_rho.csv"))]
    direct = next((s for s in summary if s["run"] == "direct"), None)
    rm = [s for s in summary if s["run"] == "rm"]
    rho = float(rows[0]["rho_known_reward"])
    fig = Figure(figsize=(6.4, 4.4))  # no pyplot: the caller's matplotlib backend is left alone
    ax = fig.subplots()
    ax.plot([p["kl"] for p in frontier], [p["reward"] for p in frontier], "-", color="black", label="optimal frontier (rho samples)")
    if pooled:
        other = _read_frontier(os.path.join(out, POOLED_FRONTIER))
        ax.plot([p.kl for p in other], [p.reward for p in other], "--", color="black", label=f"optimal frontier ({pooled} samples)")
    for s, style, name in ([(direct, "*", "direct RL")] if direct else []) + [(s, "o", f"RM, N={s['labels']}") for s in rm]:
        ax.errorbar([s["kl"]], [s["known_reward"]], xerr=[s["kl_se"]], yerr=[s["known_reward_se"]], fmt=style, ms=8,
                    capsize=3, label=f"{name} ({s['seeds']} seeds)")
    ax.axhline(rho, color="tab:gray", ls=":", lw=1, label="rho")
    ax.set_xlabel("KL(pi, rho) [nats]")
    ax.set_ylabel("known reward (held-out)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("KL vs known reward (mean +- SE over seeds)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "kl_vs_reward.png"), dpi=110)
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    if rm:
        ax.errorbar([s["labels"] for s in rm], [s["known_reward"] for s in rm], yerr=[s["known_reward_se"] for s in rm],
                    fmt="-o", capsize=3, color="tab:blue", label="RL on reward model")
        ax.set_xscale("log")
        ax.set_xticks([s["labels"] for s in rm], [str(s["labels"]) for s in rm])
        ax.minorticks_off()
    if direct:
        ax.axhspan(direct["known_reward"] - direct["known_reward_se"], direct["known_reward"] + direct["known_reward_se"],
                   color="tab:red", alpha=0.2)
        ax.axhline(direct["known_reward"], color="tab:red", ls="--", label="direct RL on the known reward")
    ax.axhline(rho, color="tab:gray", ls=":", label="rho")
    ax.set_xlabel("labels N")
    ax.set_ylabel("known reward (held-out)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Known reward vs number of labels (mean +- SE over seeds)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "reward_vs_labels.png"), dpi=110)


def study_main(argv: Sequence[str] | None = None, task: str = "sentiment") -> list[dict[str, Any]]:
    """Entry point of ``recipes/study_sentiment.py``: TrlParser over pipeline, study, PPO and model arguments."""
    parser = TrlParser((PipelineArguments, StudyArguments, PPOConfig, ModelConfig))
    pa, sa, cfg, model_args = parser.parse_args_and_config(args=argv)
    pa.task = pa.task or task
    return run_study(pa, cfg, model_args, sa, cfg.output_dir)
