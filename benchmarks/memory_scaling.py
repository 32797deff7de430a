"""Peak resident memory of the offline default at two sizes: does it grow with the work?

Runs ``recipes/sentiment.py --config recipes/configs/sentiment_offline.yaml`` twice in subprocesses, a small and a
large setting that differ in ``num_label_queries``, ``total_episodes`` and ``num_eval_queries`` (the sizes that
must not move the peak), and prints per run the peak RSS of the whole process (``wait4``'s ``ru_maxrss``) and the
running peak after each stage (``timings_s.*_peak_rss_gb`` of ``summary.json``), then the ratio large / small.

    python benchmarks/memory_scaling.py                      # SmolLM2, ~10 minutes on 2 cores
    python benchmarks/memory_scaling.py --scale 0.25 --extra --model_name_or_path <tiny model dir>   # the test's
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes" / "configs" / "sentiment_offline.yaml"
STAGES = ("labels", "reward_model", "ppo", "evaluation")


def sizes(scale: float) -> dict[str, dict[str, int]]:
    """The two settings: 'large' has 4x the labels, 3x the PPO episodes and 4x the evaluation queries of 'small'."""
    def s(x: int, multiple: int = 1) -> int:
        return max(multiple, int(x * scale) // multiple * multiple)

    return {
        "small": {"num_label_queries": s(64, 4), "total_episodes": s(64, 32), "num_eval_queries": s(32, 2)},
        "large": {"num_label_queries": s(256, 4), "total_episodes": s(192, 32), "num_eval_queries": s(128, 2)},
    }


def run(name: str, setting: dict[str, int], out: Path, extra: list[str]) -> dict[str, float]:
    args = [sys.executable, str(ROOT / "recipes" / "sentiment.py"), "--config", str(CONFIG), "--output_dir", str(out / name),
            "--disable_tqdm", "true", "--rm_normalize_samples", "32"]
    for key, value in setting.items():
        args += [f"--{key}", str(value)]
    log = open(out / f"{name}.log", "w")
    proc = subprocess.Popen(args + extra, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    if proc.returncode != 0:
        sys.exit(f"{name} run failed ({proc.returncode}); see {out / name}.log:\n" + (out / f"{name}.log").read_text()[-3000:])
    summary = json.loads((out / name / "summary.json").read_text())
    peaks = {s: summary["timings_s"].get(f"{s}_peak_rss_gb", float("nan")) for s in STAGES}
    return {"peak_rss_gb": usage.ru_maxrss / 2**20, "wall_s": summary["timings_s"]["total_s"], **peaks}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply both settings' sizes")
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more recipe flags (last)")
    a = parser.parse_args(argv)
    out = Path(a.output_dir or tempfile.mkdtemp(prefix="memory_scaling_"))
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, setting in sizes(a.scale).items():
        results[name] = run(name, setting, out, a.extra)
        r = results[name]
        print(f"{name:6s} {setting}: peak RSS {r['peak_rss_gb']:.2f} GiB, wall {r['wall_s']:.0f} s; running peak after "
              + ", ".join(f"{s} {r[s]:.2f}" for s in STAGES), flush=True)
    ratio = results["large"]["peak_rss_gb"] / results["small"]["peak_rss_gb"]
    print(f"peak RSS ratio large / small: {ratio:.3f}x (flat = 1.00x)")
    return results


if __name__ == "__main__":
    main()
