"""TensorRT-LLM's paged KV pool (`KVCacheManager::calculateMaxNumBlocks`).

Two semantics (`--engine trtllm@VERSION`):

- `0.13` (default; C++ runtime serving a TRT engine, as in 0.10-0.13): the budget is
  `free_gpu_memory_fraction` (kvplan's `--gpu-memory-utilization`, TRT-LLM's default 0.9 matches) of
  the memory *free* after the engine loads, i.e. total - weights - engine activation workspace -
  CUDA context (the generic overhead terms). `max_tokens = floor(budget / kv_bytes_per_token)`,
  `blocks = cdiv(max_tokens, tokens_per_block)` with 64 tokens per block; the pool holds
  `blocks x tokens_per_block` tokens. Logged as "Memory usage when calculating max tokens in paged kv
  cache: total: X GiB, available: Y GiB", "Number of blocks in KV cache primary pool: N",
  "Number of tokens per block: 64", "[MemUsageChange] Allocated X GiB for max tokens in paged KV
  cache (T)".
- `1.0` (PyTorch backend): the same rounding with 32 tokens per block; the budget is
  `fraction x (total - profiled peak)`, the peak being weights + activations + context.

`kv_bytes_per_token` on one rank = `2 x local_attention_layers x max(1, kv_heads / tp) x head_dim x
bytes` (MLA: one latent). Sliding-window layers are sized as full layers (these versions give every
layer of a pool the same number of blocks).
"""

from ...dtypes import KVFormat
from ...errors import InputError
from ...model import ModelSpec, cdiv, ceil_bytes
from ...units import GiB
from ..deployment import Deployment
from ..overhead import Term, overhead_terms
from . import register
from .base import EnginePolicy, EngineReport, Pool, require_kinds

TOKENS_PER_BLOCK = {"0.13": 64, "1.0": 32}


@register
class TrtllmPolicy(EnginePolicy):
    name = "trtllm"
    version = "0.13"
    description = ("TensorRT-LLM 0.13 C++ runtime: free_gpu_memory_fraction x free memory after engine load; "
                   "blocks = cdiv(tokens, 64)")
    memory_fraction = ("free_gpu_memory_fraction", "the memory free after the engine loads")

    @property
    def default_block_size(self) -> int:
        return TOKENS_PER_BLOCK[self.version]

    def resolve_version(self, version: str) -> str:
        text = version.strip().lower().lstrip("v")
        if text in ("pytorch", "torch") or text.startswith("1."):
            return "1.0"
        if text.startswith("0."):
            return "0.13"
        raise InputError(f"--engine trtllm@{version}: give 0.13 (TRT engine, C++ runtime) or 1.0 / pytorch")

    def overhead(self, spec: ModelSpec, dep: Deployment, act_elem_bytes: int) -> list[Term]:
        return overhead_terms(spec, dep, act_elem_bytes)

    def weights_limit_bytes(self, gpu_memory_bytes: int, dep: Deployment) -> int:
        return gpu_memory_bytes  # the memory fraction applies to what is free after loading

    def kv_budget(self, gpu_memory_bytes: int, weights_per_gpu: int, terms: list[Term], dep: Deployment) -> int:
        if dep.kv_cache_memory_bytes is not None:
            return dep.kv_cache_memory_bytes
        free = gpu_memory_bytes - weights_per_gpu - sum(t.bytes or 0 for t in terms)
        return kv_budget_from_free(free, dep.gpu_memory_utilization)

    def token_bytes(self, stage: ModelSpec, kv: KVFormat, dep: Deployment) -> int:
        """Every KV layer as a full layer (no window), on one rank."""
        require_kinds(stage, self.name)  # Mamba state pools are not modelled
        return ceil_bytes(stage.bytes_per_token(kv, dep.tp))

    def pool(self, stage: ModelSpec, budget_bytes: int, kv: KVFormat, dep: Deployment) -> Pool:
        per_token = self.token_bytes(stage, kv, dep)
        tokens_per_block = self.block_size(stage, dep)
        blocks = primary_pool_blocks(budget_bytes, per_token, tokens_per_block)
        tokens = blocks * tokens_per_block
        return Pool(blocks, tokens_per_block, tokens_per_block * per_token, tokens, tokens * per_token)

    def request_bytes(self, stage: ModelSpec, context_tokens: int, kv: KVFormat, dep: Deployment) -> int:
        tokens_per_block = self.block_size(stage, dep)
        return cdiv(context_tokens, tokens_per_block) * tokens_per_block * self.token_bytes(stage, kv, dep)

    def max_concurrency(self, stage: ModelSpec, pool: Pool, max_model_len: int, kv: KVFormat, dep: Deployment) -> float:
        return pool.num_blocks / cdiv(max_model_len, pool.block_size)

    def max_users(self, stage: ModelSpec, pool: Pool, context_tokens: int, kv: KVFormat, dep: Deployment) -> int:
        return pool.num_blocks // cdiv(context_tokens, pool.block_size)

    def report(self, stages: list[ModelSpec], budget_bytes: int, kv: KVFormat, dep: Deployment,
               max_model_len: int) -> EngineReport:
        pools = [self.pool(s, budget_bytes, kv, dep) for s in stages]
        pool = min(pools, key=lambda p: p.num_blocks)
        if pool.num_blocks <= 0:
            return EngineReport(self.name, self.version, {"refused": True}, (),
                                "no memory is left for the KV cache pool")
        lines = (f"Number of blocks in KV cache primary pool: {pool.num_blocks}",
                 f"Number of tokens per block: {pool.block_size}",
                 f"[MemUsageChange] Allocated {pool.usable_bytes / GiB:.2f} GiB for max tokens in paged KV cache "
                 f"({pool.kv_cache_tokens})")
        figures = {"num_blocks": pool.num_blocks, "block_size": pool.block_size, "kv_cache_tokens": pool.kv_cache_tokens,
                   "max_concurrency": pool.num_blocks / cdiv(max_model_len, pool.block_size),
                   "pool_bytes": pool.usable_bytes, "available_kv_bytes": budget_bytes, "refused": False}
        return EngineReport(self.name, self.version, figures, lines, None)


def kv_budget_from_free(free_bytes: int, free_gpu_memory_fraction: float) -> int:
    return int(free_gpu_memory_fraction * free_bytes)


def primary_pool_blocks(budget_bytes: int, kv_bytes_per_token: int, tokens_per_block: int) -> int:
    """Tokens that fit the budget, rounded *up* to whole blocks, as TensorRT-LLM sizes its primary pool."""
    max_tokens = max(budget_bytes, 0) // kv_bytes_per_token
    return cdiv(max_tokens, tokens_per_block)
