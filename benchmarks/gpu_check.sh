#!/usr/bin/env bash
# The GPU proof in one prepared run: bash benchmarks/gpu_check.sh [--dry-run]
#
# On a copy of the working tree without .git, say which commit it is:
#   KVPLAN_COMMIT=<git rev-parse HEAD, run where the tree was copied from> bash benchmarks/gpu_check.sh
#
# For one H100/H200 with Python 3.12, torch 2.11, triton 3.6, transformers 5.17 and numpy 2.5
# preinstalled and no package registry. Runs at the repository root (it cd's there). Steps in this
# order, cheap and central first, each with its own time limit; the limits add up to 400 s and all
# run under TOTAL_S (default 410 s), so the whole run stays under 7 minutes:
#   install       (35 s) pip install -e . (no index, no build isolation, no deps), verified by importing
#                 kvplan.kernels, kvplan.model_specs and kvplan.cli; else with --break-system-packages;
#                 else a copy laid out as the package on PYTHONPATH. If none imports, the run stops.
#   environment   (15 s) GPU, driver, versions
#   profile-oom   (45 s) kvplan profile with a 1 TiB pool: the out-of-memory finding (exit 1)
#   parity        (50 s) engine vs transformers greedy tokens on CUDA, fp32 and bf16: dense, sliding, MoE
#   profile-llama (110 s) kvplan profile, Llama-3.1-8B shape, random weights, a 2 GiB pool that fills,
#                 then the contiguous rerun (the paged report is written before it starts)
#   profile-gemma (70 s) kvplan profile, Gemma-2-9B shape (window + softcap), random weights, a 2 GiB pool
#   pytest-gpu    (40 s) pytest -m gpu on the test files that have GPU tests
#   decode-bench  (35 s) the Triton decode kernel vs measured copy bandwidth and SDPA on a contiguous cache
#   verdict       benchmarks/gpu_check.py verdict: PASS/FAIL per check (docs/profile.md lists them)
# A step may run past its own limit into time earlier steps left unused, never into the time the
# later steps' limits reserve.
# Everything (logs, JSON, reports, commands.txt with the exact commands, summary.txt) goes into
# one archive, $OUT/gpu_check.tar.gz, with summary.txt and steps.json beside it; all three are
# refreshed after every step, so a run killed outright still returns what it measured. TERM or
# INT stops the running step and finishes as usual. A caller's own time limit must leave room:
# at least TOTAL_S + 50 s (460 s with the defaults).
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
TOTAL_S=${TOTAL_S:-410}
TIMEOUT_SCALE=${TIMEOUT_SCALE:-1}  # a slow or shared machine (the CI dry run) stretches every step's timeout
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
mkdir -p "$WORK/logs"
START=$SECONDS
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 COLUMNS=140 PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
echo "{}" > "$WORK/steps.json"

# The commit that runs: the caller's KVPLAN_COMMIT, else the first line of benchmarks/.gpu_check_commit
# (written before the tree is copied: an untracked file travels with a copy, an ignored one does
# not), else git (a copy usually has no .git), else unknown.
if [ -n "${KVPLAN_COMMIT:-}" ]; then
  COMMIT="$(printf '%s' "$KVPLAN_COMMIT" | tr -cd '[:alnum:]._+-' | head -c 80) (KVPLAN_COMMIT)"
elif [ -s benchmarks/.gpu_check_commit ]; then
  COMMIT="$(head -n 1 benchmarks/.gpu_check_commit | tr -cd '[:alnum:]._+-' | head -c 80) (benchmarks/.gpu_check_commit)"
elif hash=$(git rev-parse HEAD 2> /dev/null); then
  COMMIT="$hash (git$(git status --porcelain 2> /dev/null | grep -q . && echo ', with uncommitted changes'))"
else
  COMMIT="unknown (no KVPLAN_COMMIT, no benchmarks/.gpu_check_commit, no .git)"
fi
echo "commit: $COMMIT" > "$WORK/commands.txt"

# Each step's own limit in seconds (times TIMEOUT_SCALE); RESERVED_S holds those of the steps still to run.
declare -A LIMIT_S=([install]=35 [environment]=15 [profile-oom]=45 [parity]=50 [profile-llama]=110
                    [profile-gemma]=70 [pytest-gpu]=40 [decode-bench]=35)
FINISH_S=10  # the verdict and the archive
RESERVED_S=0
for name in "${!LIMIT_S[@]}"; do RESERVED_S=$((RESERVED_S + LIMIT_S[$name] * TIMEOUT_SCALE)); done

# step NAME CMD...: run CMD under its own limit plus what earlier steps left unused (never into the
# limits of the steps after it, never past TOTAL_S), log it, record it.
step() {
  local name=$1; shift
  local own=$((LIMIT_S[$name] * TIMEOUT_SCALE))
  RESERVED_S=$((RESERVED_S - own))
  local left=$((TOTAL_S - (SECONDS - START) - FINISH_S))
  local limit=$((left - RESERVED_S))
  (( limit < own )) && limit=$own
  (( limit > left )) && limit=$left
  printf '%s\n' "[$name] timeout ${limit}s: $*" >> "$WORK/commands.txt"
  local rc
  STEP=$name STEP_T0=$SECONDS
  if (( limit < 5 )); then
    rc=124; echo "no time left" > "$WORK/logs/$name.log"
  else  # in the background, so that a TERM to this script is handled at once (see on_signal)
    timeout --kill-after=5 "$limit" "$@" > "$WORK/logs/$name.log" 2>&1 &
    STEP_PID=$!
    wait "$STEP_PID"; rc=$?
    STEP_PID=
  fi
  local status=ok
  case $rc in 0) ;; 124|137) status=timeout ;; *) status=failed ;; esac
  # the expected outcome, when it is one: exit 1 from a traceback is a failure like any other
  [ "$name" = profile-oom ] && [ $rc -eq 1 ] && grep -q '"finding": "out of memory during' \
    "$WORK/profile-oom/profile.json" 2> /dev/null && status=finding
  echo "[$name] $status (exit $rc, $((SECONDS - STEP_T0)) s)"
  record "$name" "$status" "$rc" "$((SECONDS - STEP_T0))"
  STEP=
  LAST_RC=$rc
  snapshot
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
  RESERVED_S=$((RESERVED_S - LIMIT_S[$1] * TIMEOUT_SCALE))
  printf '%s\n' "[$1] skipped: $2" >> "$WORK/commands.txt"
  echo "$2" > "$WORK/logs/$1.log"
  echo "[$1] skipped: $2"
  record "$1" skipped 0 0
}

# After every step $OUT holds steps.json, a provisional summary and the archive so far: a run killed
# outright (SIGKILL, the machine taken back) still returns what it measured.
snapshot() {
  verdict > "$WORK/summary.txt" 2>&1
  echo "commit: $COMMIT" >> "$WORK/summary.txt"
  printf '%s\n' "PARTIAL: written after the last step above, $((SECONDS - START)) s in; the run had not finished" \
    >> "$WORK/summary.txt"
  publish
}
verdict() {
  local args=(benchmarks/gpu_check.py verdict "$WORK")
  [ "$DRY_RUN" = 1 ] && args+=(--dry-run)
  "$PYTHON" "${args[@]}"
}
publish() {
  cp "$WORK/summary.txt" "$WORK/steps.json" "$OUT/"
  tar -czf "$OUT/gpu_check.tar.gz.part" -C "$WORK" . && mv -f "$OUT/gpu_check.tar.gz.part" "$OUT/gpu_check.tar.gz"
}

# TERM or INT (a caller's timeout): stop the running step, then the verdict and the archive as usual.
on_signal() {
  trap - TERM INT
  echo "STOPPED by a signal during ${STEP:-no step}, $((SECONDS - START)) s in" | tee -a "$WORK/stopped.txt"
  if [ -n "${STEP_PID:-}" ]; then
    kill -TERM "$STEP_PID" 2> /dev/null
    wait "$STEP_PID" 2> /dev/null
    record "$STEP" killed 143 "$((SECONDS - STEP_T0))"
  fi
  finish 143
}

# The verdict over whatever ran, the summary and the archive in $OUT, once; the exit code is the
# verdict's (or $1).
finish() {
  [ -n "${FINISHED:-}" ] && return
  FINISHED=1
  local rc
  printf '%s\n' "[verdict] $PYTHON benchmarks/gpu_check.py verdict WORKDIR$([ "$DRY_RUN" = 1 ] && echo ' --dry-run')" \
    >> "$WORK/commands.txt"
  verdict > "$WORK/summary.txt" 2>&1
  rc=${1:-$?}
  [ -e "$WORK/stopped.txt" ] && cat "$WORK/stopped.txt" >> "$WORK/summary.txt"
  echo "commit: $COMMIT" >> "$WORK/summary.txt"
  echo "total $((SECONDS - START)) s (budget $TOTAL_S s)$([ "$DRY_RUN" = 1 ] && echo ', dry run')" >> "$WORK/summary.txt"
  cat "$WORK/summary.txt"
  publish
  echo "archive: $OUT/gpu_check.tar.gz"
  rm -rf "$WORK"
  exit "$rc"
}
trap on_signal TERM INT
trap finish EXIT

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
  export OMP_NUM_THREADS=1  # tiny models: extra intra-op threads only contend (3x slower on a busy 2-core CI)
  export KVPLAN_GPU_CHECK_INSTALL=${KVPLAN_GPU_CHECK_INSTALL:-copy}  # the fallback, without touching this Python
else
  DEVICE=cuda:0
  LLAMA=llama-3.1-8b; GEMMA=gemma-2-9b
  PROFILE_DTYPE=(--dtype bf16)
  # 2 GiB holds 16,384 Llama tokens (1,024 blocks): 96 requests of 512 + 128 tokens fill it (32 are
  # admitted, then grow past the pool and preempt); the contiguous rerun reserves max_model_len =
  # 1,024 tokens (64 blocks) per request: 16 at a time.
  LLAMA_RUN=(--max-model-len 1024 --kv-cache-memory 2GiB --requests 96 --prompt-len 512 --output-len 128)
  # Gemma 2: 344,064 B per token (42 layers, window and full groups): about 6,200 tokens in 2 GiB,
  # some 10 requests of 512 + 64 at a time.
  GEMMA_RUN=(--max-model-len 1024 --kv-cache-memory 2GiB --requests 48 --prompt-len 512 --output-len 64)
  OOM_POOL=1024GiB
  PARITY=(--device cuda --max-tokens 24)
fi
step install bash -c 'install_package "$0"' "$WORK/py"
if [ "$LAST_RC" != 0 ]; then
  echo "STOP: kvplan cannot be imported ($IMPORTS failed after pip -e, pip -e --break-system-packages and a copied layout; see logs/install.log): nothing else can run" | tee "$WORK/stopped.txt"
  finish
fi
[ -e "$WORK/py/.ok" ] && export PYTHONPATH="$WORK/py" PYTHONSAFEPATH=1

step environment bash -c "date -u +%FT%TZ; uname -a; echo cores \$(nproc); \
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv || echo 'no nvidia-smi'; \
  '$PYTHON' benchmarks/gpu_check.py environment"

PROFILE=("$PYTHON" -m kvplan profile --random-weights "${PROFILE_DTYPE[@]}" --device "$DEVICE")
step profile-oom "${PROFILE[@]}" "$LLAMA" --max-model-len 128 --kv-cache-memory "$OOM_POOL" --requests 2 \
  --prompt-len 16 --output-len 4 --report "$WORK/profile-oom"
step parity "$PYTHON" benchmarks/gpu_check.py parity "${PARITY[@]}" --json "$WORK/parity.json"
step profile-llama "${PROFILE[@]}" "$LLAMA" "${LLAMA_RUN[@]}" --compare contiguous --report "$WORK/profile-llama"
step profile-gemma "${PROFILE[@]}" "$GEMMA" "${GEMMA_RUN[@]}" --report "$WORK/profile-gemma"

GPU_TESTS=$(grep -l "mark.gpu" tests/test_*.py | tr '\n' ' ')
if [ "$DRY_RUN" = 1 ]; then
  skip pytest-gpu "needs CUDA: every GPU test skips on a CPU (the CPU suite collects them): $GPU_TESTS"
  skip decode-bench "needs CUDA (benchmarks/decode_attention.py)"
else
  if "$PYTHON" -c "import pytest, hypothesis" 2> /dev/null; then
    step pytest-gpu "$PYTHON" -m pytest -p no:cacheprovider -q -m gpu -rs $GPU_TESTS
  else
    skip pytest-gpu "pytest or hypothesis is not installed here (and there is no registry)"
  fi
  step decode-bench "$PYTHON" benchmarks/decode_attention.py --batch 1 16 64 --context 4096 16384 --kv-heads 8 \
    --iters 20 --warmup 5 --json "$WORK/decode_bench.json"
fi
finish
