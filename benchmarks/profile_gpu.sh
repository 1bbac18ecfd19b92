#!/usr/bin/env bash
# `kvplan profile` on one H100 (80 GB): predicted vs measured for full-size models with random
# weights (no checkpoint download). Run from the repository root after
#   pip install -e '.[profile,report]'
# Each run writes docs/benchmarks/<name>/{profile.json,profile.md,memory.png,timeline.png} plus the
# rich report (<name>.txt). Exit code 1 from a run is a finding (e.g. out of memory), not a crash:
# the script records it and goes on. Budget: about 10 minutes for all three.
set -uo pipefail

OUT=${OUT:-docs/benchmarks}
KVPLAN=${KVPLAN:-kvplan}
DEVICE=${DEVICE:-cuda:0}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT"

{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
  python -c "import torch, transformers, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, 'triton', triton.__version__)"
} > "$OUT/environment.txt" 2>&1

run() {
  local name=$1; shift
  echo "== $name: $KVPLAN profile $*" | tee "$OUT/$name.txt"
  COLUMNS=140 "$KVPLAN" profile "$@" --device "$DEVICE" --report "$OUT/$name" >> "$OUT/$name.txt" 2>&1
  local rc=$?
  echo "== $name: exit code $rc" | tee -a "$OUT/$name.txt"
}

# 1. Llama-3.1-8B, bf16, full shape, full attention (GQA 8 KV heads). 512 requests of 1000 + 256
#    tokens ask for more users than fit; --max-num-seqs 512 lets the pool, not the seq cap, bind.
#    The contiguous rerun reserves max_model_len = 8192 tokens per request.
run llama-3.1-8b-h100 llama-3.1-8b --random-weights --dtype bf16 --max-model-len 8192 \
  --max-num-seqs 512 --requests 512 --prompt-len 1000 --output-len 256 --compare contiguous

# 2. Mistral-7B-v0.1: GQA with a 4096-token sliding window on every layer. Requests of 3000 + 1500
#    tokens cross the window, so blocks are released while they decode.
run mistral-7b-v0.1-h100 mistral-7b-v0.1 --random-weights --dtype bf16 --max-model-len 8192 \
  --requests 96 --prompt-len 3000 --output-len 1500

# 3. Gemma-2-9B: alternating 4096-token window and full layers, logit softcap (prefill through the
#    reference path in query chunks), 256k vocabulary.
run gemma-2-9b-h100 gemma-2-9b --random-weights --dtype bf16 --max-model-len 8192 \
  --requests 128 --prompt-len 1000 --output-len 256

echo "reports under $OUT/"
