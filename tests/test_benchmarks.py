"""Every benchmark runs from the README's set-up (this interpreter, no other environment) in a tiny setting."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"

pytestmark = pytest.mark.benchmark_smoke


def run(*args: str, timeout: int = 900) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


def run_fails(*args: str, timeout: int = 900) -> str:
    """A benchmark run that must fail; its stderr."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode != 0, proc.stdout[-3000:]
    return proc.stderr


def test_ppo_throughput_against_trl_112(tmp_path):
    """TRL 1.12 is installed into a folder of its own (no venv from a base interpreter without torch)."""
    out = run(str(BENCH / "ppo_throughput.py"), "--updates", "2", "--batch", "8", "--micro-batch", "4",
              "--num-queries", "16", "--trl-dir", str(tmp_path / "trl112"), "--output-dir", str(tmp_path / "o"))
    assert "trl-1.12           (trl 1.12.0)" in out and re.search(r"ratio hf_prefs / trl-1.12: [0-9.]+x", out)


def test_ppo_mfu_tiny(tmp_path):
    out = run(str(BENCH / "ppo_mfu.py"), "--tiny", "--updates", "2", "--skip-trl", "--profile", "10", "--onednn")
    assert "aten::mm" in out and "Input Shapes" in out  # the profile of the second update's PPO epochs
    # oneDNN's log of that update read back (the tiny model runs float32: its matmuls may not go through oneDNN)
    assert re.search(r"oneDNN matmuls in this update's PPO epochs \([0-9.]+ s with the log on\): \d+ calls", out)
    assert re.search(r"(bfloat16|float32) matmul 2048\^2, \d+ threads: [0-9.]+ TFLOP/s", out)
    assert re.search(r"on processed tokens: [0-9.]+ TFLOP/s = [0-9.]+% of the matmul peak", out)
    # tokens counted from the 2-D padding or SDPA's 4-D mask (24-64-token queries + 24-token responses: ~6 % padding;
    # counting the 4-D mask's entries gave ~50 %)
    padding = [float(p) for p in re.findall(r"real, ([0-9.]+)% padding\)", out)]
    assert len(padding) == 1 and all(p < 25 for p in padding), padding
    assert ", eager)" in out  # (--compile compiled: torch_compile=True, whose trainer path tests/test_compilation.py runs)


def test_reward_kway_vs_pairwise_tiny(tmp_path):
    out = run(str(BENCH / "reward_kway_vs_pairwise.py"), "--n-train", "64", "--n-test", "16", "--epochs", "1",
              "--timing-steps", "2", "--rounds", "1", "--pairs", "implied", "--out", str(tmp_path / "rm"))
    assert "kway+prefix" in out and "pairs-implied" in out


def test_query_padding_tiny():
    """Sorted chunks never pad more than stream-order chunks (the sorted split minimises the sum of chunk maxima)."""
    out = run(str(BENCH / "query_padding.py"), "--tokenizer", "gpt2", "--queries", "64", "--updates", "6", "--batch", "8",
              "--chunk", "2")
    one = re.search(r"1 process: pass tokens / real tokens: stream ([0-9.]+), dealt ([0-9.]+)", out)
    assert one and 1.0 <= float(one[2]) <= float(one[1])
    two = re.search(r"mean gap between processes / an even share: stream ([0-9.]+), dealt ([0-9.]+)", out)
    assert two


def test_decode_cache_tiny():
    """Sampling with the cache written in place draws the same tokens as transformers' growing cache."""
    out = run(str(BENCH / "decode_cache.py"), "--model", "tiny", "--queries", "8", "--repeats", "2")
    assert len(re.findall(r"repeat \d, (copy    |in-place): [0-9.]+ s, [0-9.]+ ms per row", out)) == 4
    assert re.search(r"copy / in-place = [0-9.]+x \(medians [0-9.]+ / [0-9.]+ s; each pair: [0-9.]+x, [0-9.]+x\); "
                     r"identical tokens: True", out)


def test_decode_mask_tiny():
    """The unpadded batch's decode with and without the step mask, both layouts."""
    for layout in ("frontier", "fixed"):
        out = run(str(BENCH / "decode_mask.py"), "--model", "tiny", "--layout", layout, "--rows", "8", "--repeats", "2")
        assert len(re.findall(r"repeat \d, (unmasked|masked  ): [0-9.]+ s, [0-9.]+ ms per row", out)) == 4
        assert re.search(rf"{layout}: {1 if layout == 'frontier' else 8} queries of (48|64) tokens x "
                         rf"{8 if layout == 'frontier' else 1} samples .* unmasked / masked = [0-9.]+x \(medians "
                         r"[0-9.]+ / [0-9.]+ s; each pair: [0-9.]+x, [0-9.]+x\); identical tokens: (True|False)", out)


def test_rm_frozen_cache_tiny():
    """The cache leaves the trained reward model as it is and skips the frozen block after the first epoch."""
    out = run(str(BENCH / "rm_frozen_cache.py"), "--model", "tiny", "--labels", "48", "--repeats", "1")
    assert re.search(r"plain : .* frozen blocks ran 6 times", out) and re.search(r"cached: .* frozen blocks ran 3 times", out)
    m = re.search(r"cached / plain = [0-9.]+x labels/s \(each repeat: [0-9.]+x\); train loss ([0-9.]+) vs ([0-9.]+); max \|parameter difference\| (\S+)", out)
    assert m and float(m[1]) == pytest.approx(float(m[2]), rel=1e-5) and float(m[3]) < 1e-5  # 0.0 on the AVX2 VM


@pytest.mark.multiprocess
def test_scaling_tiny():
    out = run(str(BENCH / "scaling.py"), "--model", "tiny", "--episodes", "8", "--updates", "2", "--labels", "48", "--repeats", "1",
              "--hardware-seconds", "1")
    assert re.search(r"ppo\s+episodes_per_s\s+[0-9.]+\s+[0-9.]+\s+[0-9.]+x", out)
    assert re.search(r"rm\s+labels_per_s\s+[0-9.]+\s+[0-9.]+\s+[0-9.]+x", out)
    assert re.search(r"rm\s+\+ set-up, /s\s+[0-9.]+\s+[0-9.]+\s+[0-9.]+x", out)
    assert re.search(r"matmul\s+TFLOP/s \((bf16|fp32)\)\s+[0-9.]+\s+[0-9.]+\s+[0-9.]+x", out) and "generate" in out
    assert re.search(r"memory\s+GB/s \(add\)\s+[0-9.]+\s+[0-9.]+\s+[0-9.]+x", out)


def _tiny_recipe_flags(base: str) -> list[str]:
    """The offline recipe shrunk to a tiny GPT-2 (full fine-tuning: its modules are not SmolLM2's LoRA targets)."""
    return ["--model_name_or_path", base, "--use_peft", "false", "--rm_freeze_layers", "0", "--dtype", "float32",
            "--bf16", "false", "--num_ppo_queries", "64", "--sampling_batch_size", "16", "--rm_batch_size", "8",
            "--rm_num_train_epochs", "1", "--num_ppo_epochs", "1", "--per_device_train_batch_size", "8",
            "--gradient_accumulation_steps", "4"]


def test_memory_scaling_tiny(tmp_path, tiny_base):
    out = run(str(BENCH / "memory_scaling.py"), "--scale", "0.5", "--output-dir", str(tmp_path),
              "--extra", *_tiny_recipe_flags(tiny_base))
    peaks = [float(x) for x in re.findall(r"peak RSS ([0-9.]+) GiB", out)]
    assert len(peaks) == 2 and all(p > 0.1 for p in peaks)
    assert re.search(r"peak RSS ratio large / small: [0-9.]+x", out)
    summary = json.loads((tmp_path / "large" / "summary.json").read_text())
    assert summary["ppo_updates"] == 3 and summary["timings_s"]["evaluation_peak_rss_gb"] > 0


def test_fidelity_options_tiny(tmp_path, tiny_base):
    flags = ["--variants", "baseline", "k2", "--output-dir", str(tmp_path), "--extra", *_tiny_recipe_flags(tiny_base),
             "--num_label_queries", "16", "--num_eval_queries", "8", "--total_episodes", "32", "--rm_normalize_samples", "8"]
    out = run(str(BENCH / "fidelity_options.py"), *flags)
    assert re.search(r"baseline\s+[+-][0-9.]+ ± [0-9.]+", out) and re.search(r"k2\s+[+-][0-9.]+ ± [0-9.]+", out)
    k2 = json.loads((tmp_path / "k2" / "summary.json").read_text())
    assert (tmp_path / "k2" / "policy").is_dir() and k2["ppo_updates"] == 1
    rerun = run(str(BENCH / "fidelity_options.py"), *flags)  # resumable: both read back, nothing re-run
    assert rerun.splitlines()[1:] == out.splitlines()[1:]
    with open(tmp_path / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == ["baseline", "k2"] and rows[1]["flags"] == "--kl_estimator k2"
    assert float(rows[1]["gain"]) == pytest.approx(k2["known_reward_gain"]["mean"])
    ev = {v: json.loads((tmp_path / v / "eval.json").read_text()) for v in ("baseline", "k2")}
    assert ev["k2"]["before"]["known_rewards"] == ev["baseline"]["before"]["known_rewards"]  # the same rho draws
    assert "queries" not in ev["k2"]["before"] and len(ev["k2"]["after"]["query_sha256"]) == 8  # no query text kept
    diffs = [a - b for a, b in zip(ev["k2"]["after"]["known_rewards"], ev["baseline"]["after"]["known_rewards"])]
    assert float(rows[1]["vs_baseline"]) == pytest.approx(sum(diffs) / len(diffs))  # paired by query, by hand
    assert float(rows[1]["vs_baseline_se"]) == pytest.approx(statistics.stdev(diffs) / len(diffs) ** 0.5)
    assert rows[0]["vs_baseline"] == "nan"
    # each run's share of the committed study's rho frontier gain at its KL, by hand: gain / (F(KL) - F(0))
    from hf_prefs.analysis.study_table import read_frontier
    from hf_prefs.core.frontier import frontier_at_kl

    frontier = read_frontier(str(ROOT / "docs" / "study" / "frontier_rho.csv"))
    for row in rows:
        kl, gain = float(row["kl"]), float(row["gain"])
        if kl > 0:
            assert float(row["frac_frontier"]) == pytest.approx(gain / (frontier_at_kl(frontier, kl)[0] - frontier[0].reward))


def test_value_function_tiny():
    out = run(str(BENCH / "value_function.py"), "--tiny", "--updates", "2", "--variants", "baseline", "head_lr_x10")
    assert re.search(r"^baseline\s+-?[0-9.]+\s+-?[0-9.]+\s+-?[0-9.]+", out, re.M)
    assert re.search(r"^head_lr_x10\s+", out, re.M)


def test_random_model_tiny(tmp_path):
    """gpu_check.sh's model where no Hub is reachable: a seeded random GPT-2 with the real GPT-2 tokenizer that
    transformers loads back (same seed, same weights)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    shape = ["--n_layer", "2", "--n_embd", "32", "--n_head", "2"]
    for name in ("a", "b"):
        out = run(str(BENCH / "random_model.py"), str(tmp_path / name), *shape)
        assert re.search(r"random GPT-2 \(\d+\.\dM parameters\) written to", out)
    a, b = (AutoModelForCausalLM.from_pretrained(tmp_path / name) for name in ("a", "b"))
    assert a.config.n_layer == 2 and a.config.vocab_size == 50257
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert AutoTokenizer.from_pretrained(tmp_path / "a").encode("Hello world") == [15496, 995]  # GPT-2's ids


def test_sdpa_empty_rows_probe_on_cpu():
    """gpu_check.sh's first step: per kernel and dtype, finite or not on a fully masked row; on CPU both kernels
    are finite and the project's mask leaves the real rows equal to the math kernel's."""
    out = run(str(BENCH / "sdpa_empty_rows.py"), "--length", "12", "--pad", "5")
    lines = [line for line in out.splitlines() if "empty rows ->" in line]
    assert len(lines) == 4  # float32 and bf16 x math and flash
    for line in lines:
        assert "NaN" not in line and "equal to math" in line, line


def test_ppo_frontier_convergence_tiny(tmp_path, tiny_base):
    flags = ["--variants", "0.45", "adaptive", "--updates", "3", "--eval_every", "2", "--output-dir", str(tmp_path),
             "--model_name_or_path", tiny_base, "--use_peft", "false", "--dtype", "float32", "--bf16", "false",
             "--num_ppo_queries", "64", "--num_label_queries", "16", "--num_eval_queries", "8",
             "--sampling_batch_size", "16", "--num_ppo_epochs", "1", "--per_device_train_batch_size", "4",
             "--gradient_accumulation_steps", "2", "--num_sample_generations", "0"]
    out = run(str(BENCH / "ppo_frontier_convergence.py"), *flags)
    rho = json.loads((tmp_path / "rho_eval.json").read_text())
    assert rho["key"]["model"] == tiny_base and len(rho["known_rewards"]) == 8  # not the study's cache: another model
    frontier = {}
    with open(ROOT / "docs" / "study" / "frontier_rho.csv", newline="") as f:
        frontier = {float(r["kl"]): float(r["reward"]) for r in csv.DictReader(f)}
    for variant, beta in (("0.45", 0.45), ("adaptive", None)):
        with open(tmp_path / f"{variant}_s0" / "trajectory.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [int(r["update"]) for r in rows] == [2, 3]  # every 2 updates and after the last
        assert (tmp_path / f"{variant}_s0" / "metrics.csv").is_file()
        for r in rows:
            assert float(r["known_reward"]) - statistics.fmean(rho["known_rewards"]) == pytest.approx(float(r["gain"]))
            g = float(r["frontier_gain_at_kl"])
            assert 0 <= g <= max(frontier.values()) - frontier[0.0]
            if g > 0:
                assert float(r["frac_frontier"]) == pytest.approx(float(r["gain"]) / g)
        if beta is not None:
            assert {float(r["kl_coef"]) for r in rows} == {beta}  # fixed
        else:
            # the config's controller (target 6, horizon 10000) after 2 updates of 8 episodes at KL < 4.8: clipped at -0.2
            assert float(rows[0]["kl_coef"]) == pytest.approx(0.15 * (1 - 0.2 * 8 / 10000) ** 2, rel=1e-9)
    rerun = run(str(BENCH / "ppo_frontier_convergence.py"), *flags)  # complete trajectories are read back
    assert [line for line in rerun.splitlines() if " update " in line] == [line for line in out.splitlines() if " update " in line]
    # cut after update 3's row, before its checkpoint and the metrics: resumed from checkpoint-2, row 3 dropped and made
    # again; the other variant is complete and only read back
    folder = tmp_path / "0.45_s0"
    assert sorted(p.name for p in folder.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    whole = (folder / "trajectory.csv").read_text()
    shutil.rmtree(folder / "checkpoint-3")
    (folder / "metrics.csv").unlink()
    lines = whole.splitlines(keepends=True)
    (folder / "trajectory.csv").write_text("".join(lines[:-1]) + lines[-1].replace(",0.45", ",9.99"))  # a row to drop
    resumed = run(str(BENCH / "ppo_frontier_convergence.py"), *flags)
    assert "0.45_s0: resuming from update 2" in resumed and "adaptive_s0: resuming" not in resumed
    assert (folder / "trajectory.csv").read_text() == whole  # the same rows as the uninterrupted run, to the digit
    assert [int(r["step"]) for r in csv.DictReader(open(folder / "metrics.csv"))] == [1, 2, 3]
    # cut after the last checkpoint, before the metrics: nothing trained again, the metrics written
    (folder / "metrics.csv").unlink()
    resumed = run(str(BENCH / "ppo_frontier_convergence.py"), *flags)
    assert "0.45_s0: resuming from update 3" in resumed
    assert (folder / "trajectory.csv").read_text() == whole
    assert [int(r["step"]) for r in csv.DictReader(open(folder / "metrics.csv"))] == [1, 2, 3]
    other = run_fails(str(BENCH / "ppo_frontier_convergence.py"), *flags, "--learning_rate", "1e-3")
    assert "holds a run with other settings" in other  # nothing of the finished run is dropped
    assert [int(r["update"]) for r in csv.DictReader(open(tmp_path / "0.45_s0" / "trajectory.csv"))] == [2, 3]
    assert "neither 'adaptive' nor a beta" in run_fails(str(BENCH / "ppo_frontier_convergence.py"), "--variants", "fixed")


def test_best_of_n_frontier_on_the_studys_samples(tmp_path):
    out = run(str(BENCH / "best_of_n_frontier.py"), "--n", "2", "8", "64")
    assert "10 queries x 8192 samples of rho" in out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [int(r[0]) for r in rows] == [2, 8, 64]
    gains = [float(r[2]) for r in rows]
    shares = [float(r[5].split()[0]) for r in rows]
    assert gains == sorted(gains) and all(0 < s < 1 for s in shares)  # the frontier is the best any policy does at a KL
    for r in rows:  # the share is best-of-n's gain over the frontier's at best-of-n's KL, which ties keep under the bound
        assert float(r[5].split()[0]) == pytest.approx(float(r[2]) / float(r[3].split("±")[0]), abs=2e-3)
        kl, bound = (float(x.strip("()")) for x in r[1].split())
        assert kl <= bound
    # a frontier made from other samples is refused, not read
    other = tmp_path / "frontier.csv"
    lines = (ROOT / "docs" / "study" / "frontier_rho.csv").read_text().splitlines()
    cols = lines[0].split(",")
    first = lines[1].split(",")
    first[cols.index("reward")] = "0.9"
    other.write_text("\n".join([lines[0], ",".join(first), *lines[2:]]) + "\n")
    assert "the frontier was not made from these samples" in run_fails(str(BENCH / "best_of_n_frontier.py"),
                                                                         "--frontier", str(other))


def _bench_module(name: str):
    """A benchmark script imported as a module (its functions, not its command line)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _binary_kl(q: float, p: float) -> float:
    return q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))


def test_ppo_toy_frontier_reads_the_exact_optimum():
    """The toy's frontier and optimum against the tilted Bernoulli by hand; a policy at the optimum reads 1 of the
    frontier and of the objective, one off it reads beta·KL(pi, pi*) from the optimum; rho read against itself."""
    toy = _bench_module("ppo_toy_frontier")
    p, beta = np.array([0.03, 0.2]), 0.7
    tilt = np.exp(toy.REWARD / beta)
    q_star = p * tilt / (1 + p * (tilt - 1))
    kl_star = np.array([_binary_kl(q, pp) for q, pp in zip(q_star, p)])
    frontier = toy.exact_frontier(p, [math.inf, beta, 2 * beta])
    at_beta = next(pt for pt in frontier if pt.beta == beta)
    assert at_beta.reward == pytest.approx(toy.REWARD * q_star.mean(), rel=1e-12)
    assert at_beta.kl == pytest.approx(kl_star.mean(), rel=1e-12)
    assert toy.optimum_objective(p, beta) == pytest.approx(toy.REWARD * q_star - beta * kl_star, rel=1e-12)

    at_optimum = toy.frontier_row(toy.PolicyRead(q_star, kl_star, np.zeros(2)), p, frontier, beta)
    assert at_optimum["frac_frontier"] == pytest.approx(1.0, abs=1e-9)
    assert at_optimum["frac_objective"] == pytest.approx(1.0, abs=1e-9)
    assert at_optimum["kl_to_optimum"] == pytest.approx(0.0, abs=1e-12)
    q = np.minimum(3 * p, 0.9)  # reweights the two outcomes only: J* - J = beta·KL(Bern(q), Bern(q*))
    kl = np.array([_binary_kl(a, b) for a, b in zip(q, p)])
    off = toy.frontier_row(toy.PolicyRead(q, kl, np.zeros(2)), p, toy.exact_frontier(p, [math.inf, beta]), beta)
    assert off["kl_to_optimum"] == pytest.approx(np.mean([_binary_kl(a, b) for a, b in zip(q, q_star)]), rel=1e-9)



def test_ppo_toy_frontier_policy_reads(gpt2_tokenizer):
    """q against the model's own log-probs of the pair; rho read against itself has KL 0; a policy that differs from
    rho gets the same KL from the 2-token read (first token exact) and from sampled responses, within their SEs."""
    toy = _bench_module("ppo_toy_frontier")
    rho, other = toy.toy_rho(0, 10.0), toy.toy_rho(0, 11.0)
    queries = ["The weather was fine, and", "Mr. Darcy said"]
    targets = [(toy.THE, toy.THE)] * 2
    read = toy.read_policy(rho, rho, gpt2_tokenizer, queries, targets, 8, torch.Generator().manual_seed(0))
    with torch.no_grad():
        for q, q_read in zip(queries, read.q):
            x = gpt2_tokenizer.encode(q)
            lp = torch.log_softmax(rho(input_ids=torch.tensor([x + [toy.THE, toy.THE]])).logits[0], -1)
            assert q_read == pytest.approx(float((lp[len(x) - 1, toy.THE] + lp[len(x), toy.THE]).exp()), rel=1e-5)
    assert np.all(np.abs(read.kl) < 1e-6) and np.all(read.kl_se < 1e-6)
    longer = toy.read_policy(rho, rho, gpt2_tokenizer, queries, targets, 4, torch.Generator().manual_seed(0), 4)
    assert np.all(np.abs(longer.kl) < 1e-6) and np.allclose(longer.q, read.q)

    two = toy.read_policy(other, rho, gpt2_tokenizer, queries, targets, 256, torch.Generator().manual_seed(0))
    sampled = toy._kl_sampled(other, rho, gpt2_tokenizer, queries[0], gpt2_tokenizer.encode(queries[0]), 2, 256,
                              torch.Generator().manual_seed(1), 32).sum(1)
    assert two.kl[0] > 0.05 and np.all(two.kl_free == 0)
    se = math.hypot(two.kl_se[0], sampled.std(ddof=1) / 16)
    assert abs(sampled.mean() - two.kl[0]) < 4 * se + 1e-3
    # 4 tokens: the KL past the first two is its own part; the first two's part agrees with the 2-token read
    four = toy.read_policy(other, rho, gpt2_tokenizer, queries[:1], targets[:1], 256, torch.Generator().manual_seed(2), 4)
    assert 0.01 < four.kl_free[0] < four.kl[0]
    assert abs(four.kl[0] - four.kl_free[0] - two.kl[0]) < 4 * math.hypot(four.kl_se[0], two.kl_se[0]) + 1e-3


def test_ppo_toy_frontier_reward_is_the_target_pair(gpt2_tokenizer):
    """The reward PPO gets scores the target pair's decoded response 2 and any other 0, per query; a target whose
    text other tokens also spell is refused."""
    from hf_prefs.core.rollout import RolloutSpec

    toy = _bench_module("ppo_toy_frontier")
    comma = gpt2_tokenizer.encode(",")[0]
    reward = toy.pair_reward(gpt2_tokenizer, ["a", "b"], [(toy.THE, toy.THE), (toy.THE, comma)])
    spec = RolloutSpec(response_length=2)
    ids = torch.tensor([[toy.THE, toy.THE], [toy.THE, comma], [toy.THE, comma], [comma, toy.THE]])
    texts = spec.texts(gpt2_tokenizer, ids, torch.tensor([2, 2, 2, 2]))
    assert reward(["a", "a", "b", "b"], texts).tolist() == [2.0, 0.0, 2.0, 0.0]
    with pytest.raises(KeyError, match="no target for the query 'c'"):
        reward(["c"], texts[:1])
    toy.check_targets(gpt2_tokenizer, [(toy.THE, toy.THE)])
    thee = gpt2_tokenizer.encode(" thee")  # " thee" is one token, so " th" + "ee" is not its text alone
    th, ee = gpt2_tokenizer.encode(" th")[0], gpt2_tokenizer.encode("ee")[0]
    assert len(thee) == 1
    with pytest.raises(ValueError, match="is also the text of"):
        toy.check_targets(gpt2_tokenizer, [(th, ee)])


def test_ppo_toy_frontier_score_on_pair_moves_only_the_score():
    """The diagnostic trainer puts each score on the second token and leaves the per-token KL penalty as it was."""
    from types import SimpleNamespace

    toy = _bench_module("ppo_toy_frontier")
    trainer = object.__new__(toy.ScoreOnPair)
    trainer.args = SimpleNamespace(kl_estimator="k1")
    logprobs, ref = torch.tensor([[-1.0, -2.0, -0.5, -1.5]] * 2), torch.tensor([[-1.5, -1.0, -0.5, -1.0]] * 2)
    kl, non_score, rewards = trainer.compute_rewards(torch.tensor([2.0, 0.0]), logprobs, ref, 0.5)
    assert torch.allclose(non_score, -0.5 * (logprobs - ref))
    assert torch.allclose(rewards - non_score, torch.tensor([[0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="cuts responses"):
        trainer.compute_rewards(torch.tensor([2.0, 0.0]), logprobs, ref, 0.5, None, torch.tensor([3, 2]))
    assert toy.parse(["--score_on_pair"])[0].score_on_pair and not toy.parse([])[0].score_on_pair


@pytest.mark.parametrize("extra", [[], ["--lora_r", "8", "--learning_rate", "1e-3"],
                                   ["--response_length", "3", "--score_on_pair"]], ids=["full", "lora", "3_tokens"])
def test_ppo_toy_frontier_tiny(extra, tmp_path):
    out = run(str(BENCH / "ppo_toy_frontier.py"), "--updates", "3", "--eval_every", "2", "--kl_samples", "16",
              "--queries", "3", "--beta", "0.5", "--output", str(tmp_path / "rows.csv"), *extra)
    assert "rho: p(target)" in out and "beta 0.5: optimum J*" in out
    rows = [dict(zip(line.split()[::2], line.split()[1::2])) for line in out.splitlines() if line.startswith("update ")]
    assert [int(r["update"]) for r in rows] == [2, 3]
    for r in rows:
        assert float(r["kl"]) > 0 and float(r["kl_to_optimum"]) >= 0 and float(r["frontier_gain_at_kl"]) > 0
    metrics = list(csv.DictReader(open(tmp_path / "rows_metrics" / "metrics.csv")))
    assert [int(float(m["episode"])) for m in metrics] == [64, 128, 192]  # one row per update
    written = list(csv.DictReader(open(tmp_path / "rows.csv")))
    assert [(int(w["update"]), float(w["kl"])) for w in written] == [(int(r["update"]), pytest.approx(float(r["kl"]), rel=1e-3))
                                                                      for r in rows]
    if not extra:
        assert "--beta" in run_fails(str(BENCH / "ppo_toy_frontier.py"), "--updates", "1", "--adaptive_kl", "true")
        assert "--temperature 0.7" in run_fails(str(BENCH / "ppo_toy_frontier.py"), "--temperature", "0.7")


def test_onednn_matmul_summary_sums_exec_lines_by_shape():
    """--onednn's reading of oneDNN's verbose log: exec lines of matmuls only (not their creation, not other
    primitives), FLOPs 2·batch·M·K·N from the problem's dims, shapes by seconds."""
    onednn_matmul_summary = _bench_module("ppo_mfu").onednn_matmul_summary
    head = "onednn_verbose,v1,primitive"
    mds = "brg_matmul:avx512_core_bf16,undef,src:bf16::blocked:ab::f0 wei:bf16::blocked:ba::f0,attr-scratchpad:user,"
    lines = [f"{head},exec,cpu,matmul,{mds},352x576:576x1536,2.0\n",
             f"{head},create:cache_hit,cpu,matmul,{mds},352x576:576x1536,0.01\n",
             f"{head},exec,cpu,matmul,{mds},352x576:576x1536,1.0\n",
             f"{head},exec,cpu,matmul,{mds},4x25x576:4x576x49152,5.0\n",
             f"{head},exec,cpu,reorder,simple:any,undef,src:f32 dst:bf16,,,352x576,0.5\n", "some other output\n"]
    got = onednn_matmul_summary(lines)
    assert got["calls"] == 3 and got["seconds"] == pytest.approx(0.008)
    big, lm = 2 * 352 * 576 * 1536, 2 * 4 * 25 * 576 * 49152
    assert got["flops"] == 2 * big + lm
    assert got["by_shape"] == [("4x25x576:4x576x49152", (1, pytest.approx(0.005), lm)),
                               ("352x576:576x1536", (2, pytest.approx(0.003), 2 * big))]


def test_onednn_timed_reads_the_log_of_the_call_it_wraps(capfd):
    """--onednn's wrapper: oneDNN's log of the wrapped call is read back from fd 1 while Python's output still
    reaches it; a bf16 matmul runs through oneDNN where the CPU has bf16 units (elsewhere it may not)."""
    mfu = _bench_module("ppo_mfu")
    x = torch.randn(64, 64, dtype=torch.bfloat16)

    def step(a):
        print("python output inside")
        return a @ a

    out = mfu.onednn_timed(step, lambda: True)(x)
    assert torch.equal(out, x @ x)
    printed = capfd.readouterr().out
    assert "python output inside" in printed and "onednn_verbose" not in printed  # the log went to its file
    said = re.search(r"oneDNN matmuls in this update's PPO epochs \([0-9.]+ s with the log on\): (\d+) calls", printed)
    assert said
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert said.group(1) == "1" and "64x64:64x64" in printed
