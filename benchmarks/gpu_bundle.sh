#!/usr/bin/env bash
# What `benchmarks/gpu_check.sh` needs on a GPU machine that reaches no package index and no Hub (the machines this
# project is lent: a CUDA torch and numpy installed, Python 3.12, at most 64 MiB carried over):
#   .whl/        wheels of this project's dependencies at the versions installed here (~35 MB), for that Python,
#                and a DeepSpeed wheel built here without its ops (it has no wheel on PyPI)
#   .gpu/cache/  the Austen and GPT-2 tokenizer assets (`hf-prefs assets fetch`, ~9 MB; the model is built there)
#
#   bash benchmarks/gpu_bundle.sh        # ~1-2 minutes; then, on the GPU machine, from the repository root:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl &&
#   export PYTHONPATH=$PWD:/tmp/site PYTHON=python3 HF_PREFS_CACHE=$PWD/.gpu/cache HF_HUB_OFFLINE=1 &&
#   bash benchmarks/gpu_check.sh random-gpt2 2
#
# (the device tool: carry [".whl", ".gpu"]; both are git-ignored). Environment: HF_PREFS_BUNDLE_PYTHON (the GPU
# machine's Python, default 3.12), PYTHON (this machine's interpreter, default python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
TARGET=${HF_PREFS_BUNDLE_PYTHON:-3.12}
# the project's runtime dependencies and theirs that a CUDA image with torch lacks (found on an H200 image,
# 2026-12-04), and small ones that image had but another may not (transformers checks tokenizers' and safetensors'
# versions on import; DeepSpeed imports einops and msgpack). Still expected from the image: numpy, pandas, pyarrow,
# matplotlib, requests, pyyaml, packaging, tqdm (pandas and pyarrow alone would not fit in the 64 MiB)
PACKAGES=(transformers trl datasets dill multiprocess evaluate vaderSentiment accelerate peft huggingface_hub httpx2
          httpcore2 truststore hf-xet click fsspec regex kernels tomlkit pydantic pydantic-core annotated-types
          typing-inspection hjson safetensors tokenizers xxhash einops msgpack anyio h11 psutil typing_extensions idna)
pins=$("$PY" - "${PACKAGES[@]}" <<'EOF'
import importlib.metadata as metadata
import sys

missing = []
for name in sys.argv[1:]:
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        missing.append(name)
if missing:
    sys.exit(f"not installed here (run bash scripts/setup.sh first): {', '.join(missing)}")
EOF
)
# a fresh .whl (two wheels of one package make pip refuse the whole install); a DeepSpeed wheel of the installed
# version is kept (building it takes a while)
ds=$("$PY" -c "import importlib.metadata as m; print(m.version('deepspeed'))" 2>/dev/null || echo 0.19.8)
keep=$(mktemp -d)
mv .whl/deepspeed-"$ds"-*.whl "$keep"/ 2>/dev/null || true
rm -rf .whl && mkdir -p .whl .gpu/cache
mv "$keep"/*.whl .whl/ 2>/dev/null || true
rmdir "$keep"
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$TARGET" --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --platform any -d .whl $pins
ls .whl/deepspeed-"$ds"-*.whl >/dev/null 2>&1 ||
  DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl "deepspeed==$ds"
HF_PREFS_CACHE=$PWD/.gpu/cache "$PY" -m hf_prefs.cli assets fetch --only austen gpt2-tokenizer
echo "bundle: $(ls .whl | wc -l) wheels in .whl ($(du -sh .whl | cut -f1)), assets in .gpu/cache ($(du -sh .gpu | cut -f1))"
