"""Does hf_prefs' PPO reach the optimal KL-reward frontier on a task where that frontier is known exactly?

On the sentiment task PPO reads at about half of the frontier's gain over rho at its KL
(``ppo_frontier_convergence.py``, ``docs/ppo_frontier/``) while best-of-n reaches ~0.9 on the same samples
(``best_of_n_frontier.py``). This benchmark separates the algorithm from the task: is PPO's fixed point biased (the
per-token KL penalty, reward whitening, GAE, the value head), or does it reach the optimum where the task is small?
The task: the 2-token continuation of a few Austen-like queries, sampled at temperature 1, with reward 2 when it is
the query's target pair (a, b), else 0 (the response's text compared with the pair's). ``--response_length n`` > 2
samples n tokens and rewards the first two alone (their re-encoded text), so the optimum and its frontier are the
same while PPO also has n − 2 tokens on which every nat of KL is wasted: how the share of the frontier falls with the
response's length. ``--model smollm2``: rho is SmolLM2-135M-Instruct (the offline default's) and each query's target
is rho's ``--target_rank``-th most likely first token followed by rho's most likely next one; the policy trains LoRA
adapters as the offline default does (r 16, every projection; ``--lora_r 0``: full fine-tuning). ``--model tiny``: rho is a tiny random GPT-2 (2 layers, 64 wide, the
real GPT-2 vocabulary) with `` the``'s logit raised by ``--boost``, every query's target is `` the the``, and the
whole model is fine-tuned (``--freeze_embeddings``: all but the tied embedding; ``--lora_r 8``: LoRA).

For a query x let p(x) = rho(a | x) · rho(b | x, a). The optimum of E_pi[r] − beta·KL(pi, rho) is the tilt
pi*_beta ∝ rho · exp(r / beta), which only reweights the two outcomes, so everything about it is exact:
J*(x) = beta · log(1 + p(e^{2/beta} − 1)), and its reward and KL at every beta are those of the tilted Bernoulli
(``hf_prefs.optimal_frontier`` on the two outcomes weighted by p and 1 − p); the frontier is their mean over the
queries at a common beta, as the study pools it. For any policy J*(x) − J(pi, x) = beta · KL(pi(.|x), pi*_beta(.|x)):
how far PPO is from its own optimum, in nats.

PPO (``hf_prefs.PPOTrainer``, fixed beta, the paper's rules: whitened rewards, 4 epochs, gamma 1, lambda 0.95, a value
head on the trunk; 64 episodes per update) trains on the queries; after every ``--eval_every`` updates the policy is
read exactly where it can be: q(x) = pi(a | x) · pi(b | x, a), the reward 2q, the first token's KL in full, and the
second token's KL in full for each of ``--kl_samples`` first tokens drawn from pi (longer responses: the sum of every
position's KL in full along ``--kl_samples`` responses drawn from pi), so the KL has a small Monte-Carlo error,
printed as its SE. Printed per evaluation: the gain over rho, KL (``kl_free``: its part on the tokens after the first
two, all of it waste), the frontier's gain at that KL and the share of it, the objective's share
(J − J_rho) / (J* − J_rho), and KL(pi, pi*) = (J* − J) / beta. Any PPOConfig field may be passed
(``--learning_rate 1e-4``, ``--whiten_rewards false``, ``--num_ppo_epochs 1``, ``--value_model policy``: the value
function on a copy of the policy's trunk, trained in full, ...). ``--score_on_pair`` puts the score
on the second token, where the reward is decided, instead of the last (credit assignment known exactly: a diagnostic).

    python benchmarks/ppo_toy_frontier.py --model smollm2 --beta 0.5 --updates 60 --eval_every 10 --threads 2 --learning_rate 3e-4
    python benchmarks/ppo_toy_frontier.py --model smollm2 --beta 0.2 --updates 40 --eval_every 10 --threads 2 --learning_rate 3e-4 --response_length 8 --kl_samples 128
    python benchmarks/ppo_toy_frontier.py --model smollm2 --beta 0.5 --updates 20 --eval_every 5 --threads 2 --learning_rate 3e-4 --response_length 8 --kl_samples 128 --score_on_pair
    python benchmarks/ppo_toy_frontier.py --model tiny --beta 2.0 --updates 60 --eval_every 20 --learning_rate 1e-4
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, HfArgumentParser, TrainerCallback

from hf_prefs import PPOConfig, PPOTrainer, optimal_frontier
from hf_prefs.assets import load_gpt2_tokenizer, load_smollm2_tokenizer, smollm2_path
from hf_prefs.core.frontier import frontier_reward_at_kl, frontier_rho_reward
from hf_prefs.core.rollout import RolloutSpec
from hf_prefs.models.generation import sample_texts
from hf_prefs.pipeline.results import write_metrics

THE = 262  # GPT-2 " the"
REWARD = 2.0
QUERIES = [
    "It is a truth universally acknowledged.",
    "She was not a young lady of many words.",
    "The weather was fine, and",
    "Mr. Darcy said",
    "Nothing could be more",
    "Elinor had often wished it were possible",
    "They walked on in silence, and",
    "Her mother was not inclined to",
]
#: the PPO settings of the toy (the paper's rules at toy size); any PPOConfig flag overrides them
TOY_PPO = dict(
    kl_coef=1.0, adaptive_kl=False, whiten_rewards=True, adam_epsilon=1e-5, learning_rate=1e-3,
    lr_scheduler_type="constant", per_device_train_batch_size=16, gradient_accumulation_steps=4, num_mini_batches=1,
    num_ppo_epochs=4, response_length=2, temperature=1.0, truncate_token=None, report_to=[], save_strategy="no",
    num_sample_generations=0, disable_tqdm=True, seed=0, output_dir="", logging_steps=1,
)


def toy_rho(seed: int, boost: float) -> GPT2LMHeadModel:
    """The tiny random GPT-2 with `` the``'s logit raised by about ``boost``: its final layer norm's bias moved along
    the token's (tied) embedding, so the logit of `` the`` gains ``boost`` and any other token t gains
    ``boost · <e_t, e_the> / |e_the|²``."""
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=64, n_embd=64, n_layer=2, n_head=2,
                                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).eval()
    with torch.no_grad():
        e = model.transformer.wte.weight[THE]
        model.transformer.ln_f.bias.copy_(boost * e / e.norm() ** 2)
    return model


@torch.no_grad()
def smollm2_targets(rho: torch.nn.Module, query_ids: list[list[int]], rank: int) -> list[tuple[int, int]]:
    """Each query's target pair under a real LM: rho's ``rank``-th most likely first token (1 = the most likely), then
    rho's most likely token after it."""
    targets = []
    for ids in query_ids:
        a = int(_next_logprobs(rho, torch.tensor([ids]))[0].topk(rank).indices[-1])
        b = int(_next_logprobs(rho, torch.tensor([ids + [a]]))[0].argmax())
        targets.append((a, b))
    return targets


def check_targets(tokenizer, targets: list[tuple[int, int]]) -> None:
    """The reward compares texts, so the frontier is exact only where a target's text is that pair's alone: no single
    token decodes to it (it could be followed by a special token that decodes to nothing) and no other two tokens do."""
    by_text: dict[str, list[int]] = {}
    for i in range(len(tokenizer)):
        by_text.setdefault(tokenizer.decode([i]), []).append(i)
    for a, b in set(targets):
        text = tokenizer.decode([a, b])
        splits = [(x, y) for k in range(1, len(text)) for x in by_text.get(text[:k], []) for y in by_text.get(text[k:], [])]
        if by_text.get(text) or splits != [(a, b)]:
            raise ValueError(f"the target {text!r} is also the text of {by_text.get(text) or splits}: pick another "
                             "--target_rank")


def pair_reward(tokenizer, queries: list[str], targets: list[tuple[int, int]], response_length: int = 2):
    """The reward function PPO gets (texts in, one score per response): 2 when the response is its query's target
    pair, else 0. It reads the text: a 2-token response must be the pair's text; a longer one must re-encode to tokens
    that begin with the pair (so a response whose later text merges into the pair's second token scores as its
    re-encoding does — rare, and the reason ``check_targets`` exists for the 2-token case)."""
    wanted = {q: tokenizer.decode(list(t)) for q, t in zip(queries, targets)}
    pairs = dict(zip(queries, [list(t) for t in targets]))

    def hit(query: str, response: str) -> bool:
        if response_length == 2:
            return response == wanted[query]
        return tokenizer.encode(response)[:2] == pairs[query]

    def reward(queries: list[str], responses: list[str]) -> torch.Tensor:
        missing = [q for q in queries if q not in wanted]
        if missing:
            raise KeyError(f"the toy reward has no target for the query {missing[0]!r}")
        return torch.tensor([REWARD if hit(q, r) else 0.0 for q, r in zip(queries, responses)])
    return reward


@torch.no_grad()
def _logprobs_at(model: torch.nn.Module, rows: torch.Tensor, start: int, n: int) -> torch.Tensor:
    """``(B, n, V)`` log-softmax of the tokens at positions ``start..start+n-1`` of each row given the ones before
    (the rows have one length, no padding), in float32 on the CPU whatever the model's device."""
    logits = model(input_ids=rows.to(next(model.parameters()).device)).logits[:, start - 1 : start - 1 + n]
    return torch.log_softmax(logits.float(), dim=-1).cpu()


def _next_logprobs(model: torch.nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """``(B, V)`` log-softmax of the token after each row."""
    return _logprobs_at(model, rows, rows.shape[1], 1)[:, 0]


def _kl(lp_pi: torch.Tensor, lp_rho: torch.Tensor) -> torch.Tensor:
    """KL(pi, rho) = sum_v pi(v)·(log pi(v) − log rho(v)) over the last dimension of two log-probability tensors."""
    return (lp_pi.exp() * (lp_pi - lp_rho)).sum(-1)


def _kl_positions(policy: torch.nn.Module, rho: torch.nn.Module, rows: torch.Tensor, start: int, n: int) -> np.ndarray:
    """``(B, n)``: per row, KL(pi, rho) of the token at each position ``start..start+n-1`` given the prefix."""
    return _kl(_logprobs_at(policy, rows, start, n), _logprobs_at(rho, rows, start, n)).double().numpy()


def target_probability(model: torch.nn.Module, ids: list[int], a: int, b: int) -> float:
    """model(a | x)·model(b | x, a) for the query's tokens ``ids`` = x, exactly (one forward of x, a)."""
    lp = _logprobs_at(model, torch.tensor([ids + [a]]), len(ids), 2)[0]
    return float((lp[0, a] + lp[1, b]).exp())


@dataclass
class PolicyRead:
    """The exact (or, for the KL past the first token, Monte-Carlo) quantities of a policy on each query."""

    q: np.ndarray  # (Q,) pi(a, b | x): the query's target pair
    kl: np.ndarray  # (Q,) KL(pi(.|x), rho(.|x)) over the response
    kl_se: np.ndarray  # (Q,) its Monte-Carlo standard error
    kl_free: np.ndarray | None = None  # (Q,) the part of kl on the tokens after the first two (the optimum's is 0)


def read_policy(policy: torch.nn.Module, rho: torch.nn.Module, tokenizer: Any, queries: list[str],
                targets: list[tuple[int, int]], kl_samples: int, generator: torch.Generator, response_length: int = 2,
                chunk_rows: int = 32) -> PolicyRead:
    """q(x) = pi(a | x)·pi(b | x, a) for the query's target pair (a, b) exactly, and KL(pi, rho) over the response.
    2 tokens: the first token's KL (exact) + E_{y1~pi}[the second token's KL | y1] (exact for each of ``kl_samples``
    first tokens drawn from pi; each distinct token computed once). Longer: E_{y~pi}[sum over positions t of
    KL(pi(.|x, y<t), rho(.|x, y<t))] over ``kl_samples`` responses drawn from pi with the library's sampler (each
    position's KL exact given the sampled prefix)."""
    was_training = policy.training
    policy.eval()
    qs, kls, ses, free = [], [], [], []
    for query, (a, b) in zip(queries, targets):
        ids = tokenizer.encode(query)
        qs.append(target_probability(policy, ids, a, b))
        if response_length == 2:
            per_position = _kl_two_tokens(policy, rho, ids, kl_samples, generator, chunk_rows)
        else:
            per_position = _kl_sampled(policy, rho, tokenizer, query, ids, response_length, kl_samples, generator,
                                       chunk_rows)
        per_sample = per_position.sum(1)
        kls.append(float(per_sample.mean()))
        ses.append(float(per_sample.std(ddof=1) / math.sqrt(kl_samples)))
        free.append(float(per_position[:, 2:].sum(1).mean()))
    policy.train(was_training)
    return PolicyRead(np.array(qs), np.array(kls), np.array(ses), np.array(free))


def _kl_two_tokens(policy: torch.nn.Module, rho: torch.nn.Module, ids: list[int], n: int, generator: torch.Generator,
                   chunk_rows: int) -> np.ndarray:
    """``(n, 2)`` per drawn first token y1 (``n`` from pi): the first token's KL (exact, the same for all) and the
    second token's KL given y1 (exact; each distinct y1 computed once)."""
    x = torch.tensor([ids])
    lp_pi = _next_logprobs(policy, x)[0]
    kl1 = float(_kl(lp_pi, _next_logprobs(rho, x)[0]))
    y1 = torch.multinomial(lp_pi.exp(), n, replacement=True, generator=generator)
    tokens, inverse = y1.unique(return_inverse=True)
    xs = torch.cat([x.expand(len(tokens), -1), tokens[:, None]], dim=1)
    kl2 = np.concatenate([_kl_positions(policy, rho, c, c.shape[1], 1)[:, 0] for c in xs.split(chunk_rows)])
    return np.stack([np.full(n, kl1), kl2[inverse.numpy()]], axis=1)


def _kl_sampled(policy: torch.nn.Module, rho: torch.nn.Module, tokenizer: Any, query: str, ids: list[int], length: int,
                n: int, generator: torch.Generator, chunk_rows: int) -> np.ndarray:
    """``(n, length)`` per response drawn from pi (``n`` of ``length`` tokens after ``query``, whose tokens are ``ids``,
    the library's sampler at temperature 1): KL(pi, rho) of the token at each position given the sampled prefix."""
    ys = sample_texts(policy, tokenizer, [query], RolloutSpec(response_length=length, temperature=1.0), n,
                      min(n, 64), generator)
    rows = torch.cat([torch.tensor([ids]).expand(len(ys), -1), ys], dim=1)
    return np.concatenate([_kl_positions(policy, rho, c, len(ids), length) for c in rows.split(chunk_rows)])


def exact_frontier(p: np.ndarray, betas: list[float]) -> list:
    """The pooled frontier of the queries whose rho puts mass ``p`` on their target pair: the library's
    ``optimal_frontier`` on the two outcomes (reward 2 and 0) as samples of a uniform proposal weighted by
    rho's probabilities (``log_ratio = log(2p), log(2(1 − p))``), which makes its estimate exact."""
    rewards = np.tile([REWARD, 0.0], (len(p), 1))
    log_ratio = np.log(2 * np.stack([p, 1 - p], axis=1))
    return optimal_frontier(rewards, betas, n_bootstrap=0, log_ratio=log_ratio)


def optimum_objective(p: np.ndarray, beta: float) -> np.ndarray:
    """J*(x) = max_pi E_pi[r] − beta·KL(pi, rho) = beta · log E_rho[exp(r / beta)] per query."""
    return beta * np.log1p(p * np.expm1(REWARD / beta))


def frontier_row(read: PolicyRead, p: np.ndarray, frontier: list, beta: float) -> dict[str, float]:
    """One evaluation: gain and KL of the policy, the frontier's gain at its KL and the share, the objective's share
    and KL(pi, pi*_beta) = (J* − J) / beta (means over queries); ``kl_free``: the KL on the tokens after the
    first two, all of it waste (the optimum's is 0)."""
    gain = float((REWARD * (read.q - p)).mean())
    kl = float(read.kl.mean())
    frontier_gain = frontier_reward_at_kl(frontier, kl) - frontier_rho_reward(frontier)
    j, j_star, j_rho = REWARD * read.q - beta * read.kl, optimum_objective(p, beta), REWARD * p
    return {
        "gain": gain, "kl": kl, "kl_se": float(np.sqrt((read.kl_se**2).sum()) / len(p)),
        "kl_free": float(read.kl_free.mean()) if read.kl_free is not None else math.nan,
        "frontier_gain_at_kl": frontier_gain, "frac_frontier": gain / frontier_gain if frontier_gain > 0 else math.nan,
        "objective": float(j.mean()), "optimum": float(j_star.mean()),
        "frac_objective": float((j - j_rho).mean() / (j_star - j_rho).mean()),
        "kl_to_optimum": float(((j_star - j) / beta).mean()),
    }


class ScoreOnPair(PPOTrainer):
    """PPO with the score on the response's second token (the last one the reward depends on) instead of its last:
    perfect credit assignment, known here and nowhere else (a diagnostic: how much of PPO's gap comes from the score
    sitting in the returns of the tokens after the pair, which the value function would have to take out)."""

    def compute_rewards(self, scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                        kl_coef: float, token_mask: torch.Tensor | None = None,
                        score_index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if score_index is not None and not bool((score_index == logprobs.shape[1] - 1).all()):
            raise ValueError("--score_on_pair moves the score from the last token; this run cuts responses")
        on_pair = torch.ones_like(scores, dtype=torch.long)
        return super().compute_rewards(scores, logprobs, ref_logprobs, kl_coef, token_mask, on_pair)


class _Reader(TrainerCallback):
    """Reads the policy after every ``every``-th update (and the last) into ``rows``, once that update is logged."""

    def __init__(self, read, every: int) -> None:
        self.read, self.every, self.rows = read, every, []

    def on_log(self, args, state, control, logs=None, **kwargs):
        step = state.global_step
        if logs and "objective/kl" in logs and (step % self.every == 0 or step == state.max_steps):
            self.rows.append(self.read(step, logs))


def parse(argv: list[str] | None = None) -> tuple[argparse.Namespace, PPOConfig]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--beta", type=float, default=1.0, help="the fixed KL coefficient (PPOConfig.kl_coef)")
    ap.add_argument("--updates", type=int, default=60)
    ap.add_argument("--eval_every", type=int, default=10)
    ap.add_argument("--boost", type=float, default=10.0, help="added to `` the``'s logit in rho")
    ap.add_argument("--queries", type=int, default=len(QUERIES), help=f"how many of the {len(QUERIES)} toy queries")
    ap.add_argument("--kl_samples", type=int, default=512,
                    help="first tokens (2-token responses) or responses drawn from pi per query for its KL")
    ap.add_argument("--model", choices=["tiny", "smollm2"], default="tiny",
                    help="tiny: the random GPT-2 toy; smollm2: SmolLM2-135M-Instruct (the offline default's rho)")
    ap.add_argument("--target_rank", type=int, default=2,
                    help="smollm2: each query's target is rho's n-th most likely first token, then its most likely next")
    ap.add_argument("--lora_r", type=int, default=None,
                    help="LoRA rank on every block's projections (0: full fine-tuning; default 0 tiny, 16 smollm2)")
    ap.add_argument("--freeze_embeddings", action="store_true",
                    help="full fine-tuning with the token embedding (tied to the output layer) frozen")
    ap.add_argument("--model_seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the tiny model's ops are small)")
    ap.add_argument("--output", default=None, help="also write the rows to this CSV (each as it is read), and every "
                    "update's training metrics to metrics.csv / metrics.jsonl in the folder <output without .csv>_metrics")
    ap.add_argument("--score_on_pair", action="store_true",
                    help="diagnostic: the score on the second token, where the reward is decided (ScoreOnPair)")
    args, rest = ap.parse_known_args(argv)
    parser = HfArgumentParser(PPOConfig)
    parser.set_defaults(**{**TOY_PPO, "kl_coef": args.beta})
    (config,) = parser.parse_args_into_dataclasses(args=rest)
    if config.kl_coef != args.beta or config.adaptive_kl:
        raise SystemExit("set the KL coefficient with --beta (fixed): this benchmark reads PPO against the optimum at it")
    if config.response_length < 2:
        raise SystemExit(f"--response_length {config.response_length}: the reward is on the first 2 tokens")
    fixed = {"temperature": 1.0, "truncate_token": None, "stop_token": None,
             "stop_token_id": None, "missing_eos_penalty": None, "logging_steps": 1}
    changed = [f"--{k} {getattr(config, k)}" for k, v in fixed.items() if getattr(config, k) != v]
    if changed:
        raise SystemExit(f"{', '.join(changed)}: the exact reads assume responses sampled at temperature 1, uncut and "
                         "unpenalized, read after every update")
    if args.kl_samples < 2 or args.eval_every < 1:
        raise SystemExit("--kl_samples must be >= 2 and --eval_every >= 1")
    return args, config


def build(args: argparse.Namespace) -> tuple[torch.nn.Module, Any, LoraConfig | None, list[tuple[int, int]]]:
    """``(rho, tokenizer, peft_config, target pair per query)`` for ``--model``."""
    lora_r = args.lora_r if args.lora_r is not None else (16 if args.model == "smollm2" else 0)
    if args.model == "tiny":
        tok, rho = load_gpt2_tokenizer(), toy_rho(args.model_seed, args.boost)
        targets = [(THE, THE)] * args.queries
        modules = ["c_attn", "c_proj", "c_fc"]
    else:
        tok = load_smollm2_tokenizer()
        rho = AutoModelForCausalLM.from_pretrained(smollm2_path(), dtype=torch.float32).eval()
        targets = smollm2_targets(rho, [tok.encode(q) for q in QUERIES[: args.queries]], args.target_rank)
        modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    check_targets(tok, targets)
    peft_config = None
    if lora_r:
        peft_config = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.0, target_modules=modules,
                                 fan_in_fan_out=args.model == "tiny")
    return rho, tok, peft_config, targets


def run(args: argparse.Namespace, config: PPOConfig) -> list[dict[str, float]]:
    torch.set_num_threads(args.threads)
    rho, tok, peft_config, targets = build(args)
    queries = QUERIES[: args.queries]
    policy = copy.deepcopy(rho)
    if args.freeze_embeddings:
        if peft_config is not None:
            raise SystemExit("--freeze_embeddings is for full fine-tuning (--lora_r 0)")
        for param in policy.get_input_embeddings().parameters():
            param.requires_grad_(False)
    p = np.array([target_probability(rho, tok.encode(q), a, b) for q, (a, b) in zip(queries, targets)])
    betas = [math.inf, *np.geomspace(0.02, 100.0, 600).tolist()]
    frontier = exact_frontier(p, betas)
    batch = config.per_device_train_batch_size * config.gradient_accumulation_steps
    with tempfile.TemporaryDirectory() as tmp:
        if not config.output_dir:
            config.output_dir = tmp
        config.total_episodes = batch * args.updates
        generator = torch.Generator().manual_seed(config.seed + 1)
        holder: dict[str, PPOTrainer] = {}

        def read(update: int, logs: dict[str, float]) -> dict[str, float]:
            trainer = holder["trainer"]
            row = frontier_row(read_policy(trainer.policy_model, rho, tok, queries, targets, args.kl_samples, generator,
                                           config.response_length), p, frontier, args.beta)
            row = {"update": update, "episodes": update * batch, **row, "rollout_kl": logs["objective/kl"],
                   "explained_variance": logs["val/explained_variance"]}
            print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
            if args.output:  # written as it goes: a run stopped early keeps its rows
                with open(args.output, "a" if reader.rows else "w", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=list(row))
                    if not reader.rows:
                        w.writeheader()
                    w.writerow(row)
            return row

        reader = _Reader(read, args.eval_every)
        n_rep = -(-config.total_episodes // len(queries))
        trainer_class = ScoreOnPair if args.score_on_pair else PPOTrainer
        trainer = trainer_class(model=policy, reward_model=pair_reward(tok, queries, targets, config.response_length),
                             args=config,
                             ref_model=None if peft_config else rho, peft_config=peft_config,
                             train_dataset=Dataset.from_dict({"query": queries * n_rep}), processing_class=tok,
                             callbacks=[reader])
        holder["trainer"] = trainer
        j_star = optimum_objective(p, args.beta).mean()
        (opt,) = exact_frontier(p, [args.beta])
        print(f"rho: p(target) {p.mean():.4f} (queries {p.min():.4f}-{p.max():.4f}), reward {REWARD * p.mean():.4f}; "
              f"beta {args.beta}: optimum J* {j_star:.4f} at KL {opt.kl:.4f}, gain {opt.reward - REWARD * p.mean():.4f}; "
              f"{batch} episodes per update, {args.updates} updates", flush=True)
        trainer.train()
        if args.output:
            folder = os.path.splitext(args.output)[0] + "_metrics"
            os.makedirs(folder, exist_ok=True)
            write_metrics(trainer.state.log_history, folder)
    return reader.rows


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    args, config = parse(argv)
    rows = run(args, config)
    if not rows:
        raise SystemExit("no update was read (--updates 0?)")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
