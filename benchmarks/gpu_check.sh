#!/usr/bin/env bash
# The GPU proof in one prepared run: bash benchmarks/gpu_check.sh [--dry-run]
#
# For one H100/H200 with Python 3.12, torch 2.11, triton 3.6, transformers 5.17 and numpy 2.5
# preinstalled and no package registry. Run from the repository root. Steps, each under its own
# timeout and all under TOTAL_S (default 400 s, well inside 7 minutes):
#   install       pip install -e . (no index, no build isolation, no deps), verified by importing
#                 kvplan.kernels, kvplan.model_specs and kvplan.cli; else with --break-system-packages;
#                 else a copy laid out as the package on PYTHONPATH. If none imports, the run stops.
#   environment   GPU, driver, versions
#   pytest-gpu    pytest -m gpu on the test files that have GPU tests
#   decode-bench  the Triton decode kernel vs measured copy bandwidth and SDPA on a contiguous cache
#   parity        engine vs transformers greedy tokens on CUDA, fp32 and bf16: dense, sliding, MoE
#   profile-llama kvplan profile, Llama-3.1-8B shape, random weights, a 2 GiB pool that fills, contiguous rerun
#   profile-gemma kvplan profile, Gemma-2-9B shape (window + softcap), random weights, a 2 GiB pool
#   profile-oom   kvplan profile with a 1 TiB pool: the out-of-memory finding (exit 1)
#   verdict       benchmarks/gpu_check.py verdict: PASS/FAIL per check (docs/profile.md lists them)
# Everything (logs, JSON, reports, commands.txt with the exact commands, summary.txt) goes into
# one archive, $OUT/gpu_check.tar.gz, with summary.txt beside it.
#
# --dry-run (or KVPLAN_GPU_CHECK_DRY_RUN=1) runs every step it can without CUDA, on the CPU with
# tiny stand-in models (install takes the copy fallback; pytest -m gpu and the kernel benchmark are
# skipped and say so); a CI test runs it.
set -uo pipefail

DRY_RUN=${KVPLAN_GPU_CHECK_DRY_RUN:-0}
[ "${1:-}" = "--dry-run" ] && DRY_RUN=1
PYTHON=${PYTHON:-python3}
mkdir -p "${OUT:-out}" && OUT=$(cd "${OUT:-out}" && pwd) || { echo "gpu_check: cannot create OUT=${OUT:-out}" >&2; exit 2; }
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2  # the repository root, wherever it was started from
TOTAL_S=${TOTAL_S:-400}
TIMEOUT_SCALE=${TIMEOUT_SCALE:-1}  # a slow or shared machine (the CI dry run) stretches every step's timeout
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
mkdir -p "$WORK/logs"
START=$SECONDS
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 COLUMNS=140 PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
echo "{}" > "$WORK/steps.json"

# step NAME TIMEOUT_S CMD...: run CMD under min(TIMEOUT_S, what is left of TOTAL_S), log it, record it.
step() {
  local name=$1 limit=$(($2 * TIMEOUT_SCALE)); shift 2
  local left=$((TOTAL_S - (SECONDS - START) - 10))
  (( limit > left )) && limit=$left
  printf '%s\n' "[$name] timeout ${limit}s: $*" >> "$WORK/commands.txt"
  local t0=$SECONDS rc
  if (( limit < 5 )); then
    rc=124; echo "no time left" > "$WORK/logs/$name.log"
  else
    timeout --kill-after=5 "$limit" "$@" > "$WORK/logs/$name.log" 2>&1; rc=$?
  fi
  local status=ok
  case $rc in 0) ;; 124|137) status=timeout ;; *) status=failed ;; esac
  [ "$name" = profile-oom ] && [ $rc -eq 1 ] && status=finding  # the expected outcome
  echo "[$name] $status (exit $rc, $((SECONDS - t0)) s)"
  record "$name" "$status" "$rc" "$((SECONDS - t0))"
  LAST_RC=$rc
}
record() {
  "$PYTHON" - "$WORK/steps.json" "$@" <<'EOF'
import json, sys
path, name, status, rc, seconds = sys.argv[1:]
steps = json.load(open(path))
steps[name] = {"status": status, "rc": int(rc), "seconds": float(seconds)}
json.dump(steps, open(path, "w"), indent=1)
EOF
}
skip() {
  printf '%s\n' "[$1] skipped: $2" >> "$WORK/commands.txt"
  echo "$2" > "$WORK/logs/$1.log"
  echo "[$1] skipped: $2"
  record "$1" skipped 0 0
}

# The verdict over whatever ran, the summary and the archive in $OUT; the exit code is the verdict's.
finish() {
  local verdict=(benchmarks/gpu_check.py verdict "$WORK") rc
  [ "$DRY_RUN" = 1 ] && verdict+=(--dry-run)
  printf '%s\n' "[verdict] $PYTHON ${verdict[*]}" >> "$WORK/commands.txt"
  "$PYTHON" "${verdict[@]}" > "$WORK/summary.txt" 2>&1
  rc=$?
  [ -e "$WORK/stopped.txt" ] && cat "$WORK/stopped.txt" >> "$WORK/summary.txt"
  echo "total $((SECONDS - START)) s (budget $TOTAL_S s)$([ "$DRY_RUN" = 1 ] && echo ', dry run')" >> "$WORK/summary.txt"
  cat "$WORK/summary.txt"
  cp "$WORK/summary.txt" "$OUT/summary.txt"
  tar -czf "$OUT/gpu_check.tar.gz" -C "$WORK" .
  echo "archive: $OUT/gpu_check.tar.gz"
  rm -rf "$WORK"
  exit $rc
}

# kvplan.kernels and kvplan.model_specs exist only through pyproject's package-dir mapping, so the
# package must be installed (or laid out as installed) before anything imports it. In order: an
# editable install; the same with --break-system-packages (a distribution's managed Python); a
# copy of kvplan/, kernels/ and model_specs/ laid out as the package under $1, used through
# PYTHONPATH with PYTHONSAFEPATH=1 so the repository's own kvplan/ (no kernels in it) cannot
# shadow it. KVPLAN_GPU_CHECK_INSTALL=copy goes straight to the copy (the dry run tests it).
IMPORTS="import kvplan.kernels, kvplan.model_specs, kvplan.cli"
install_package() {
  local pip=("$PYTHON" -m pip install --disable-pip-version-check --no-index --no-build-isolation --no-deps -e .)
  if [ "${KVPLAN_GPU_CHECK_INSTALL:-pip}" != copy ]; then
    "${pip[@]}" && "$PYTHON" -c "$IMPORTS" && { echo "install: editable (pip -e)"; return 0; }
    "${pip[@]}" --break-system-packages && "$PYTHON" -c "$IMPORTS" &&
      { echo "install: editable (pip -e --break-system-packages)"; return 0; }
    echo "install: pip did not give an importable kvplan; laying the package out under $1"
  fi
  rm -rf "$1" && mkdir -p "$1" && cp -r kvplan "$1/kvplan" && cp -r kernels "$1/kvplan/kernels" &&
    cp -r model_specs "$1/kvplan/model_specs" && PYTHONPATH="$1" PYTHONSAFEPATH=1 "$PYTHON" -c "$IMPORTS" &&
    { echo "install: copied package on PYTHONPATH=$1 (PYTHONSAFEPATH=1)"; touch "$1/.ok"; return 0; }
  rm -rf "$1"
  return 1
}
export -f install_package
export PYTHON IMPORTS

if [ "$DRY_RUN" = 1 ]; then
  echo "gpu_check: DRY RUN on $(hostname): CPU, tiny stand-in models"
  DEVICE=cpu
  "$PYTHON" benchmarks/gpu_check.py configs "$WORK/models" > /dev/null
  LLAMA="$WORK/models/llama-3.1-8b-tiny/config.json"; GEMMA="$WORK/models/gemma-2-9b-tiny/config.json"
  PROFILE_DTYPE=(--dtype fp32)
  LLAMA_RUN=(--max-model-len 128 --kv-cache-memory 1MiB --requests 24 --prompt-len 40 --output-len 8)
  GEMMA_RUN=(--max-model-len 128 --kv-cache-memory 1MiB --requests 16 --prompt-len 40 --output-len 8)
  OOM_POOL=32TiB  # fails in torch's CPU allocator at once
  PARITY=(--device cpu --small --max-tokens 4)
  export KVPLAN_GPU_CHECK_INSTALL=${KVPLAN_GPU_CHECK_INSTALL:-copy}  # the fallback, without touching this Python
else
  DEVICE=cuda:0
  LLAMA=llama-3.1-8b; GEMMA=gemma-2-9b
  PROFILE_DTYPE=(--dtype bf16)
  # 2 GiB holds 16,384 Llama tokens (1,024 blocks): 192 requests of 512 + 128 tokens fill it and
  # preempt; the contiguous rerun reserves max_model_len = 1,024 tokens per request.
  LLAMA_RUN=(--max-model-len 1024 --kv-cache-memory 2GiB --requests 192 --prompt-len 512 --output-len 128)
  # Gemma 2: 344,064 B per token (42 layers, window and full groups): about 6,200 tokens in 2 GiB.
  GEMMA_RUN=(--max-model-len 1024 --kv-cache-memory 2GiB --requests 96 --prompt-len 512 --output-len 64)
  OOM_POOL=1024GiB
  PARITY=(--device cuda --max-tokens 24)
fi
step install 60 bash -c 'install_package "$0"' "$WORK/py"
if [ "$LAST_RC" != 0 ]; then
  echo "STOP: kvplan cannot be imported ($IMPORTS failed after pip -e, pip -e --break-system-packages and a copied layout; see logs/install.log): nothing else can run" | tee "$WORK/stopped.txt"
  finish
fi
[ -e "$WORK/py/.ok" ] && export PYTHONPATH="$WORK/py" PYTHONSAFEPATH=1

step environment 30 bash -c "date -u +%FT%TZ; uname -a; nproc; (nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv || echo 'no nvidia-smi'); \
  '$PYTHON' -c 'import sys, torch, transformers, triton, numpy; print(sys.version); print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", torch.cuda.is_available()); print(\"transformers\", transformers.__version__, \"triton\", triton.__version__, \"numpy\", numpy.__version__); print(\"device\", torch.cuda.get_device_name() if torch.cuda.is_available() else \"cpu\")'; \
  git rev-parse HEAD 2>/dev/null; git status --short 2>/dev/null | head -20"

GPU_TESTS=$(grep -l "mark.gpu" tests/test_*.py | tr '\n' ' ')
if [ "$DRY_RUN" = 1 ]; then
  skip pytest-gpu "needs CUDA: every GPU test skips on a CPU (the CPU suite collects them): $GPU_TESTS"
  skip decode-bench "needs CUDA (benchmarks/decode_attention.py)"
elif ! "$PYTHON" -c "import pytest, hypothesis" 2> /dev/null; then
  skip pytest-gpu "pytest or hypothesis is not installed here (and there is no registry)"
else
  step pytest-gpu 90 "$PYTHON" -m pytest -p no:cacheprovider -q -m gpu -rs $GPU_TESTS
fi
if [ "$DRY_RUN" != 1 ]; then
  step decode-bench 75 "$PYTHON" benchmarks/decode_attention.py --batch 1 16 64 --context 4096 16384 --kv-heads 8 \
    --iters 20 --warmup 5 --json "$WORK/decode_bench.json"
fi

step parity 90 "$PYTHON" benchmarks/gpu_check.py parity "${PARITY[@]}" --json "$WORK/parity.json"
step profile-llama 150 "$PYTHON" -m kvplan profile "$LLAMA" --random-weights "${PROFILE_DTYPE[@]}" --device "$DEVICE" \
  "${LLAMA_RUN[@]}" --compare contiguous --report "$WORK/profile-llama"
step profile-gemma 100 "$PYTHON" -m kvplan profile "$GEMMA" --random-weights "${PROFILE_DTYPE[@]}" --device "$DEVICE" \
  "${GEMMA_RUN[@]}" --report "$WORK/profile-gemma"
step profile-oom 60 "$PYTHON" -m kvplan profile "$LLAMA" --random-weights "${PROFILE_DTYPE[@]}" --device "$DEVICE" \
  --max-model-len 128 --kv-cache-memory "$OOM_POOL" --requests 2 --prompt-len 16 --output-len 4 \
  --report "$WORK/profile-oom"

finish
