#!/usr/bin/env bash
# The GPU paths on one GPU: the sentiment recipe at the paper's settings (recipes/configs/sentiment.yaml: 512
# episodes per update, 24-token responses, 4 PPO epochs, full fine-tuning) for a few updates, with
#   single_gpu.yaml, deepspeed_zero2.yaml and deepspeed_zero3.yaml (1 process each),
# printing PPO episodes/s, peak GPU memory and the hours 1M episodes (the paper's run) would take at that rate.
#
#   bash benchmarks/gpu_check.sh [MODEL] [UPDATES]
#
# MODEL: a local model folder (default: the offline SmolLM2-135M asset, from `hf-prefs assets fetch`; the GPU
# machines reach no Hub, so openai-community/gpt2 works only where the Hub does). UPDATES: PPO updates (default 3;
# the first includes warm-up). Needs a CUDA torch and, for the ZeRO configs, `pip install deepspeed` beforehand.
set -uo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-$(python -c "from hf_prefs.assets import smollm2_path; print(smollm2_path())")}
UPDATES=${2:-3}
OUT=${HF_PREFS_GPU_CHECK_DIR:-/tmp/hf_prefs_gpu_check}
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))" || exit 1
for cfg in single_gpu deepspeed_zero2 deepspeed_zero3; do
  if [[ $cfg == deepspeed* ]] && ! python -c "import deepspeed" 2>/dev/null; then
    echo "$cfg: skipped (deepspeed is not installed)"; continue
  fi
  run="$OUT/$cfg"
  rm -rf "$run"
  start=$(date +%s)
  accelerate launch --config_file "recipes/accelerate_configs/$cfg.yaml" --num_processes 1 recipes/sentiment.py \
    --config recipes/configs/sentiment.yaml --model_name_or_path "$MODEL" --output_dir "$run" \
    --num_label_queries 512 --num_eval_queries 64 --rm_normalize_samples 64 \
    --total_episodes $((512 * UPDATES)) --save_strategy no --report_to none --disable_tqdm true > "$run.log" 2>&1
  status=$?
  python - "$run" "$cfg" "$status" "$(( $(date +%s) - start ))" <<'EOF'
import json, sys
run, cfg, status, wall = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if status != 0:
    print(f"{cfg}: FAILED (exit {status}); see {run}.log"); sys.exit(0)
rows = [json.loads(line) for line in open(f"{run}/metrics.jsonl")]
steady = rows[1:] or rows
seconds = sum(r["time/rollout"] + r["time/ppo"] for r in steady)
eps = 512 * len(steady) / seconds
peak = max(r.get("memory/peak_gpu_gb", float("nan")) for r in rows)
print(f"{cfg}: {eps:.1f} PPO episodes/s, peak GPU memory {peak:.1f} GB, 1M episodes in {1e6 / eps / 3600:.1f} h "
      f"({len(rows)} updates, whole run {wall} s)")
EOF
done
