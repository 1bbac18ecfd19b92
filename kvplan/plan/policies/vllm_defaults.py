"""vLLM's scheduler defaults (`max_num_seqs`, `max_num_batched_tokens`) per GPU, entry point and release.

V1 picks them in `EngineArgs._set_default_args_v1` (later `get_batch_defaults`), vllm/engine/arg_utils.py,
from the device and the usage context (`vllm serve` is OPENAI_API_SERVER, the offline `LLM` class is
LLM_CLASS). Large GPUs get 8192 tokens (serve) / 16384 (LLM class), others 2048 / 8192; which GPU is
large, and how many sequences each gets, changed four times, each at a release of its own (these
boundaries are not the layout families of vllm_versions.py):

| first release | PR (merged)            | large GPU                                   | sequences                      |
|---------------|------------------------|---------------------------------------------|--------------------------------|
| 0.8.0 (V1)    | #12369 (2025-01-24)    | "h100" or "h200" in the device name         | 1024 on every GPU              |
| 0.8.4         | #16158 (2025-04-07)    | "h100" or "h200" in the device name         | 1024 on those, 256 elsewhere   |
| 0.8.5         | #17073 (2025-04-23)    | device memory >= 70 GiB (A100-80GB, MI300X, B200 too) | 1024 on those, 256 elsewhere |
| 0.9.0         | #17885 (2025-05-09)    | >= 70 GiB and "a100" not in the device name | 1024 on those, 256 elsewhere   |

Each release is the first one published after the PR's merge (0.8.3: 2025-04-06, 0.8.4: 04-14,
0.8.5: 04-28, 0.9.0: 05-15). Logs that show it: 0.8.2 on an RTX 4090 warms up "sampler with 1024
dummy requests" (vllm #15617); 0.10.1.1 on A100 80GB logs max_num_batched_tokens=2048
(tests/data/vllm_logs/qwen2-7b-tp2-a100-80gb-vllmbench.log); every 0.19 H100 log "Defaulting
max_num_seqs to 1024". The device memory vLLM tests is torch's total (`get_device_total_memory`),
the CUDA-visible total. V0 had no table: 256 sequences, and a token budget of max(max_model_len,
2048) when max_model_len is up to 32K (no chunked prefill), else 2048 with chunked prefill.
"""

from dataclasses import dataclass

from ...hardware import GPU
from ...units import GiB
from .vllm_versions import VllmRules

LARGE_GPU_BYTES = 70 * GiB
V0_CHUNKED_PREFILL_FROM_TOKENS = 32768
# (first release, which GPUs are large, whether every GPU gets 1024 sequences), newest last.
SCHEDULER_ERAS = (
    ((0, 8, 0), "name", True),  # PR #12369; V1's 1024 sequences everywhere (reverted by PR #16158)
    ((0, 8, 4), "name", False),  # PR #16158
    ((0, 8, 5), "memory", False),  # PR #17073
    ((0, 9, 0), "memory-not-a100", False),  # PR #17885: "Setting large max_num_batched_tokens for A100 reduces throughput"
)
_LARGE_BY_NAME = ("h100", "h200")


@dataclass(frozen=True)
class SchedulerDefaults:
    max_num_seqs: int
    max_num_batched_tokens: int
    rule: str  # which row applied, in words


def scheduler_era(rules: VllmRules) -> tuple[tuple[int, int, int], str, bool]:
    """The V1 scheduler-default rule of a release; the newest for a release not given (newest family, source build)."""
    if rules.release is None:
        return SCHEDULER_ERAS[-1]
    return [era for era in SCHEDULER_ERAS if rules.release >= era[0]][-1]


def scheduler_defaults(rules: VllmRules, gpu: GPU | None, offline: bool, max_model_len: int) -> SchedulerDefaults:
    entry = "the offline LLM class" if offline else "vllm serve"
    if not rules.v1:
        tokens = max(max_model_len, 2048) if max_model_len <= V0_CHUNKED_PREFILL_FROM_TOKENS else 2048
        return SchedulerDefaults(256, tokens, f"vLLM V0 defaults: 256 sequences, {tokens} tokens "
                                              f"({'no chunked prefill' if tokens > 2048 else 'chunked prefill'})")
    since, test, seqs_everywhere = scheduler_era(rules)
    large, why = _is_large(gpu, test)
    seqs = 1024 if large or seqs_everywhere else 256
    tokens = (16384 if offline else 8192) if large else (8192 if offline else 2048)
    row = "large-GPU" if large else "small-GPU"
    release = ".".join(map(str, rules.release)) if rules.release else rules.family
    return SchedulerDefaults(seqs, tokens, f"vLLM {release} {entry} {row} defaults (rule of {_label(since)}+: {why}): "
                                           f"max_num_seqs {seqs}, max_num_batched_tokens {tokens}")


def _is_large(gpu: GPU | None, test: str) -> tuple[bool, str]:
    if gpu is None:
        return False, "no GPU given"
    name = gpu.name.lower()
    if test == "name":
        large = any(n in name for n in _LARGE_BY_NAME)
        return large, f"{gpu.name} is {'' if large else 'not '}an H100/H200 by name"
    total = gpu.engine_total()[0]
    big = total >= LARGE_GPU_BYTES
    a100 = test == "memory-not-a100" and "a100" in name
    why = f"{gpu.name} has {total / GiB:.1f} GiB {'>=' if big else '<'} 70 GiB" + (", but A100s are excluded" if a100 and big
                                                                                    else "")
    return big and not a100, why


def _label(release: tuple[int, int, int]) -> str:
    return ".".join(map(str, release))
