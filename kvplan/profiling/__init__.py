"""`kvplan profile`: run the real paged-KV engine and compare what it measures with what was predicted.

Phases (a CUDA OOM in any of them becomes a finding with everything measured before it):

  1. estimate   the plan for this device: `--device cuda:N` uses the attached GPU's memory unless
                --gpu/--gpu-memory say otherwise; on CPU the budget must come from --gpu,
                --gpu-memory or --kv-cache-memory (a CPU run checks the accounting, not GPU memory)
  2. predict    static (the estimate) and simulated (the paging simulator over the same workload
                on the estimate's pool: same allocator and scheduler, no tensors)      prediction.py
  3. load       weights (checkpoint offline, or random from the config)               measurement.py
  4. warm-up    a dummy prefill of --max-num-batched-tokens tokens over --max-num-seqs sequences
                plus sampling: activation peak; NVML used - torch reserved = non-torch memory
  5. pool       KV budget from the measured terms through the engine policy's own formula,
                blocks from the budget, the pool allocated and measured; kernels compiled
  6. run        the workload with continuous batching; every step sampled (runtime.replay)
  7. compare    predicted vs measured, term by term (result.py); `--compare contiguous` reruns
                the workload with max_model_len reserved per request

torch and transformers are imported only when a profile runs.
"""

from .device import resolve_device
from .result import METRICS, ProfileResult, raise_for_finding
from .run import run_profile

__all__ = ["METRICS", "ProfileResult", "raise_for_finding", "resolve_device", "run_profile"]
