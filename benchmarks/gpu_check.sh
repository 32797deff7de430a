#!/usr/bin/env bash
# The GPU paths on one GPU: the sentiment recipe at the paper's settings (recipes/configs/sentiment.yaml: 512
# episodes per update, 24-token responses, 4 PPO epochs, full fine-tuning) for a few updates, with
#   single_gpu.yaml, deepspeed_zero2.yaml and deepspeed_zero3.yaml (1 process each),
# printing PPO episodes/s, peak GPU memory and the hours 1M episodes (the paper's run) would take at that rate.
#
#   bash benchmarks/gpu_check.sh [MODEL] [UPDATES]
#
# MODEL: a local model folder (default: the offline SmolLM2-135M asset, from `hf-prefs assets fetch`), a Hub id
# where the Hub is reachable (openai-community/gpt2: the paper's reproduction), or `random-gpt2`: a randomly
# initialized GPT-2 of that shape (124M) with the real GPT-2 tokenizer, built on the spot by
# benchmarks/random_model.py (for machines that reach no Hub; its truncate token is off, since random weights never
# write "."; speed and memory are those of GPT-2, its rewards mean nothing). UPDATES: PPO updates (default 3; the
# first includes warm-up and is left out of the rate). Needs a CUDA torch and, for the ZeRO configs, deepspeed.
# Environment: PYTHON (default python), HF_PREFS_GPU_CHECK_DIR (runs and logs; default /tmp/hf_prefs_gpu_check),
# HF_PREFS_GPU_CHECK_TIMEOUT (seconds per config; default none).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
MODEL=${1:-$("$PY" -c "from hf_prefs.assets import smollm2_path; print(smollm2_path())")}
UPDATES=${2:-3}
OUT=${HF_PREFS_GPU_CHECK_DIR:-/tmp/hf_prefs_gpu_check}
LIMIT=${HF_PREFS_GPU_CHECK_TIMEOUT:-0}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_HUB_DISABLE_TELEMETRY=1
# transformers >= 5.2x loads Hub kernels for CUDA layers by default (`kernels` installed); offline they cannot be
# fetched and from_pretrained raises, so they are off unless the Hub is reachable
[[ ${HF_HUB_OFFLINE,,} =~ ^(1|true|yes|on)$ ]] && export USE_HUB_KERNELS=${USE_HUB_KERNELS:-0}
mkdir -p "$OUT"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0), 'torch', torch.__version__)" || exit 1
# first, in seconds: which SDPA kernels give NaN on a fully masked query row (the lead on the NaN of the first run)
"$PY" benchmarks/sdpa_empty_rows.py || echo "sdpa_empty_rows.py failed (exit $?)"
CONFIG=recipes/configs/sentiment.yaml
if [[ $MODEL == random-gpt2 ]]; then
  "$PY" benchmarks/random_model.py "$OUT/random-gpt2" || exit 1
  MODEL="$OUT/random-gpt2"
  CONFIG="$OUT/sentiment_random.yaml"
  sed 's/^truncate_token: .*/truncate_token: null   # random weights never write "."/' recipes/configs/sentiment.yaml > "$CONFIG"
fi
for cfg in single_gpu deepspeed_zero2 deepspeed_zero3; do
  if [[ $cfg == deepspeed* ]] && ! err=$("$PY" -c "import deepspeed" 2>&1); then
    echo "$cfg: skipped (import deepspeed failed: $(tail -n 1 <<< "$err"))"; continue
  fi
  run="$OUT/$cfg"
  rm -rf "$run"
  start=$(date +%s)
  timeout "$LIMIT" "$PY" -m accelerate.commands.launch --config_file "recipes/accelerate_configs/$cfg.yaml" \
    --num_processes 1 recipes/sentiment.py \
    --config "$CONFIG" --model_name_or_path "$MODEL" --output_dir "$run" \
    --num_label_queries 512 --num_eval_queries 64 --rm_normalize_samples 64 \
    --total_episodes $((512 * UPDATES)) --save_strategy no --report_to none --disable_tqdm true > "$run.log" 2>&1
  status=$?
  "$PY" - "$run" "$cfg" "$status" "$(( $(date +%s) - start ))" <<'EOF'
import json, sys
run, cfg, status, wall = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if status != 0:
    print(f"{cfg}: FAILED (exit {status}{', timed out' if status == 124 else ''}, {wall} s); last lines of {run}.log:")
    print("".join(open(f"{run}.log", errors="replace").readlines()[-25:]))
    sys.exit(0)
rows = [json.loads(line) for line in open(f"{run}/metrics.jsonl")]
steady = rows[1:] or rows
rollout = sum(r["time/rollout"] for r in steady) / len(steady)
ppo = sum(r["time/ppo"] for r in steady) / len(steady)
eps = 512 / (rollout + ppo)
peak = max(r.get("memory/peak_gpu_gb", float("nan")) for r in rows)
print(f"{cfg}: {eps:.1f} PPO episodes/s (per update of 512: rollout {rollout:.1f} s, PPO epochs {ppo:.1f} s), "
      f"peak GPU memory {peak:.1f} GB, 1M episodes in {1e6 / eps / 3600:.1f} h "
      f"({len(rows)} updates, whole run {wall} s)")
EOF
done
