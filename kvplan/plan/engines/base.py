"""The interface every engine policy implements (one small class per engine)."""

from dataclasses import dataclass

from ...dtypes import KVFormat
from ...spec import ModelSpec
from ..deployment import Deployment
from ..overhead import Term


@dataclass(frozen=True)
class Pool:
    """A KV pool on one GPU (the most constrained pipeline stage)."""

    num_blocks: int
    block_size: int
    page_bytes: int  # one block across every KV layer on the GPU
    kv_cache_tokens: int  # what the engine reports as its token capacity
    usable_bytes: int  # bytes the blocks occupy (<= budget)


class EnginePolicy:
    name = "abstract"
    version = ""
    description = ""

    def overhead(self, spec: ModelSpec, dep: Deployment, act_elem_bytes: int) -> list[Term]:
        raise NotImplementedError

    def kv_budget(self, gpu_memory_bytes: int, weights_per_gpu: int, terms: list[Term], dep: Deployment) -> int:
        """KV bytes per GPU before rounding to blocks."""
        raise NotImplementedError

    def block_size(self, spec: ModelSpec, dep: Deployment) -> int:
        return dep.block_size

    def request_bytes(self, stage: ModelSpec, context_tokens: int, kv: KVFormat, dep: Deployment) -> int:
        """Bytes one request of `context_tokens` holds on one GPU of this stage, at its peak."""
        raise NotImplementedError

    def pool(self, stage: ModelSpec, budget_bytes: int, kv: KVFormat, dep: Deployment) -> Pool:
        raise NotImplementedError

    def max_concurrency(self, stage: ModelSpec, pool: Pool, max_model_len: int, kv: KVFormat, dep: Deployment) -> float:
        """Requests of max_model_len tokens the pool holds, as the engine computes it."""
        per_request = self.request_bytes(stage, max_model_len, kv, dep)
        return pool.usable_bytes / per_request if per_request else float("inf")

    def max_users(self, stage: ModelSpec, pool: Pool, context_tokens: int, kv: KVFormat, dep: Deployment) -> int:
        per_request = self.request_bytes(stage, context_tokens, kv, dep)
        return pool.usable_bytes // per_request if per_request else 0
