"""Every benchmark runs from the README's set-up (this interpreter, no other environment) in a tiny setting."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"

pytestmark = pytest.mark.benchmark_smoke


def run(*args: str, timeout: int = 900) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


def test_ppo_throughput_against_trl_112(tmp_path):
    """TRL 1.12 is installed into a folder of its own (no venv from a base interpreter without torch)."""
    out = run(str(BENCH / "ppo_throughput.py"), "--updates", "2", "--batch", "8", "--micro-batch", "4",
              "--num-queries", "16", "--trl-dir", str(tmp_path / "trl112"), "--output-dir", str(tmp_path / "o"))
    assert "trl-1.12           (trl 1.12.0)" in out and re.search(r"ratio hf_prefs / trl-1.12: [0-9.]+x", out)


def test_ppo_mfu_tiny(tmp_path):
    out = run(str(BENCH / "ppo_mfu.py"), "--tiny", "--updates", "2", "--skip-trl")
    assert re.search(r"bf16 matmul 2048\^2, \d+ threads: [0-9.]+ TFLOP/s", out)
    assert re.search(r"on processed tokens: [0-9.]+ TFLOP/s = [0-9.]+% of the matmul peak", out)


def test_reward_kway_vs_pairwise_tiny(tmp_path):
    out = run(str(BENCH / "reward_kway_vs_pairwise.py"), "--n-train", "64", "--n-test", "16", "--epochs", "1",
              "--timing-steps", "2", "--rounds", "1", "--pairs", "implied", "--out", str(tmp_path / "rm"))
    assert "kway+prefix" in out and "pairs-implied" in out


@pytest.mark.multiprocess
def test_scaling_tiny():
    out = run(str(BENCH / "scaling.py"), "--model", "tiny", "--episodes", "8", "--updates", "2", "--labels", "32")
    assert re.search(r"ppo\s+episodes_per_s\s+[0-9.]+\s+[0-9.]+\s+[0-9.]+x", out)
    assert re.search(r"rm\s+labels_per_s\s+[0-9.]+\s+[0-9.]+\s+[0-9.]+x", out)
