#!/usr/bin/env bash
# CI's quick job on the oldest versions hf_prefs declares: a fresh virtual environment with PyTorch, then the package
# with trl, transformers, accelerate, peft and datasets pinned to their floors in pyproject.toml (`name>=X` is
# installed as `name==X`; pyproject.toml is the only list), then a quick subset of the suite with that interpreter.
# Run it after `bash scripts/setup.sh --test` (as .ci/run does): the tests use the offline assets that fetched.
#   bash scripts/ci_oldest.sh        # ~4 min on a 2-core CPU, installs included
# PYTHON: the interpreter that makes the venv (python3); HF_PREFS_TORCH_SPEC: the torch to install (torch==2.13.0,
# as in setup.sh); HF_PREFS_OLDEST_VENV: where to make the venv (kept afterwards; by default a temporary one, removed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
FLOORED="trl transformers accelerate peft datasets"
TESTS="tests/test_public_api.py tests/test_architecture.py tests/test_rollout.py tests/test_rollout_consistency.py
       tests/test_reward_trainer.py tests/test_ppo_trainer.py tests/test_online.py tests/test_attention.py"

# name==floor for each of $FLOORED, from pyproject.toml's [project] dependencies (fails if one has no `>=` floor).
pins=$("$PY" - $FLOORED <<'EOF'
import re, sys
try:
    import tomllib
    deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
except ModuleNotFoundError:  # Python 3.10: the quoted strings of the dependencies = [...] list
    text = open("pyproject.toml").read()
    deps = re.findall(r'"([^"]+)"', re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.S | re.M).group(1))
floors = {}
for dep in deps:
    m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*", dep)
    if m:
        floors[m.group(1).lower()] = m.group(2)
missing = [name for name in sys.argv[1:] if name not in floors]
if missing:
    sys.exit(f"ci_oldest: no `name>=X` floor in pyproject.toml for {missing}")
print(" ".join(f"{name}=={floors[name]}" for name in sys.argv[1:]))
EOF
)
echo "ci_oldest: installing the floors: $pins"

if [ -n "${HF_PREFS_OLDEST_VENV:-}" ]; then
  venv=$HF_PREFS_OLDEST_VENV
  rm -rf "$venv"
else
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  venv=$tmp/venv
fi
"$PY" -m venv "$venv"
VPY=$venv/bin/python
# torch first, from the same spec as setup.sh, so the package's `torch>=` is already met by that build.
"$VPY" -m pip install --quiet "${HF_PREFS_TORCH_SPEC:-torch==2.13.0}"
# shellcheck disable=SC2086  # $pins is a list of requirement words
"$VPY" -m pip install --quiet -e . "pytest>=8" "pytest-xdist>=3.6" $pins

# What was tested (and a check that pip installed exactly the floors).
"$VPY" - $pins <<'EOF'
import sys
from importlib.metadata import version
from packaging.version import Version
tested = {"python": sys.version.split()[0], "torch": version("torch")}
wrong = []
for pin in sys.argv[1:]:
    name, floor = pin.split("==")
    tested[name] = version(name)
    if Version(tested[name]) != Version(floor):
        wrong.append(f"{name} {tested[name]} (floor {floor})")
print("ci_oldest: tested versions: " + ", ".join(f"{k} {v}" for k, v in tested.items()))
if wrong:
    sys.exit("ci_oldest: pip installed other versions than the floors: " + ", ".join(wrong))
EOF

# shellcheck disable=SC2086
"$VPY" -m pytest -p no:cacheprovider -q -n 2 -m "not slow" $TESTS
