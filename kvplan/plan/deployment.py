"""Deployment: where and how a model is served. Validated on construction."""

from dataclasses import dataclass

from ..errors import InputError
from ..hardware import GPU
from ..inputs import MAX_TOKENS


@dataclass(frozen=True)
class Deployment:
    gpu: GPU | None = None  # None: no GPU given, so per-GPU budget figures are left out
    tp: int = 1
    pp: int = 1
    weight_dtype: str | None = None  # None: the checkpoint's own format
    kv_dtype: str = "auto"
    max_model_len: int | None = None  # None: the model's max_position_embeddings
    context_tokens: int | None = None  # None: max_model_len
    batch: int = 1
    gpu_memory_utilization: float = 0.9
    block_size: int = 16
    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 256
    weights_bytes: int | None = None  # override of the weight size (whole model)
    overhead_bytes: int | None = None  # replaces the whole overhead model (per GPU)
    activation_bytes: int | None = None  # per-term overrides (per GPU)
    non_torch_bytes: int | None = None
    cuda_graph_bytes: int | None = None
    kv_cache_memory_bytes: int | None = None  # KV budget per GPU given directly
    engine: str = "generic"

    def __post_init__(self):
        for name in ("tp", "pp", "batch", "block_size", "max_num_batched_tokens", "max_num_seqs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOKENS:
                raise InputError(f"--{name.replace('_', '-')} must be a positive integer up to 2**40, got {value!r:.40}")
        for name in ("max_model_len", "context_tokens"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or not 1 <= value <= MAX_TOKENS):
                raise InputError(f"--{name.replace('_tokens', '').replace('_', '-')} must be a positive integer, got {value!r}")
        util = self.gpu_memory_utilization
        if not isinstance(util, (int, float)) or not (0.0 < util <= 1.0):
            raise InputError(f"--gpu-memory-utilization must be in (0, 1], got {util!r}")
        if self.block_size > 1 << 16:
            raise InputError(f"--block-size {self.block_size} is implausibly large")
        for name in ("weights_bytes", "overhead_bytes", "activation_bytes", "non_torch_bytes", "cuda_graph_bytes",
                     "kv_cache_memory_bytes"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InputError(f"{name} must not be negative")

    @property
    def num_gpus(self) -> int:
        return self.tp * self.pp


def pp_partition(num_layers: int, pp: int) -> list[range]:
    """Layers per pipeline stage as vLLM splits them: even, remainder to the stages before the last."""
    if pp > num_layers:
        raise InputError(f"--pp {pp} exceeds the model's {num_layers} layers")
    per_stage = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        per_stage[-i] += 1
    stages, start = [], 0
    for count in per_stage:
        stages.append(range(start, start + count))
        start += count
    return stages
