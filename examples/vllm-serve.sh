#!/usr/bin/env bash
# Serve Llama-3.1-8B-Instruct with vLLM on one GPU; `kvplan estimate --from examples/vllm-serve.sh`
# reads the model and the KV-relevant flags from this command.
set -euo pipefail
exec vllm serve meta-llama/Llama-3.1-8B-Instruct \
    --max-model-len 32768 \
    --gpu-memory-utilization 0.9 \
    --max-num-seqs 128 \
    --enable-prefix-caching \
    --port 8000
