"""vLLM's scheduler defaults (`max_num_seqs`, `max_num_batched_tokens`) per GPU, entry point and release.

From `EngineArgs.get_batch_defaults` in vllm/engine/arg_utils.py: the device's total memory (NVML,
the nvidia-smi figure) and name pick one of two tables, and the usage context picks the column
(`vllm serve` is OPENAI_API_SERVER, the offline `LLM` class is LLM_CLASS):

| GPU                                   | serve: seqs / tokens | LLM class: seqs / tokens |
|---------------------------------------|----------------------|--------------------------|
| >= 70 GiB and not an A100 (H100, H200, MI300X, B200) | 1024 / 8192 | 1024 / 16384     |
| everything else (A100, L40S, L4, ...) | 256 / 2048           | 256 / 8192               |

Before 0.9 the large-GPU row raised only the token budget (max_num_seqs stayed 256) and did not
exclude the A100 (PR 12369 introduced it for H100/H200; PR 17885 excluded the A100). V0 had no
such table: 256 sequences, and a token budget of max(max_model_len, 2048) when max_model_len is
up to 32K (no chunked prefill), else 2048 with chunked prefill.
"""

from dataclasses import dataclass

from ...hardware import GPU
from ...units import GiB
from .vllm_versions import VllmRules

LARGE_GPU_BYTES = 70 * GiB
V0_CHUNKED_PREFILL_FROM_TOKENS = 32768


@dataclass(frozen=True)
class SchedulerDefaults:
    max_num_seqs: int
    max_num_batched_tokens: int
    rule: str  # which row applied, in words


def scheduler_defaults(rules: VllmRules, gpu: GPU | None, offline: bool, max_model_len: int) -> SchedulerDefaults:
    entry = "the offline LLM class" if offline else "vllm serve"
    if not rules.v1:
        tokens = max(max_model_len, 2048) if max_model_len <= V0_CHUNKED_PREFILL_FROM_TOKENS else 2048
        return SchedulerDefaults(256, tokens, f"vLLM V0 defaults: 256 sequences, {tokens} tokens "
                                              f"({'no chunked prefill' if tokens > 2048 else 'chunked prefill'})")
    if gpu is None:
        large, why = False, "no GPU given: the small-GPU row"
    else:
        big = gpu.memory_bytes >= LARGE_GPU_BYTES
        a100 = "a100" in gpu.name.lower()
        excluded = a100 and rules.large_gpu_defaults == "seqs1024"
        large = big and not excluded
        why = (f"{gpu.name} has {gpu.memory_bytes / GiB:.1f} GiB" + (" (A100s are excluded)" if excluded else "")
               + (" >= 70 GiB" if large else ""))
    seqs_large = 1024 if rules.large_gpu_defaults == "seqs1024" else 256
    seqs = seqs_large if large else 256
    tokens = (16384 if offline else 8192) if large else (8192 if offline else 2048)
    row = "large-GPU" if large else "small-GPU"
    return SchedulerDefaults(seqs, tokens, f"vLLM {rules.family} {entry} {row} defaults ({why}): "
                                           f"max_num_seqs {seqs}, max_num_batched_tokens {tokens}")
