"""The plain paged model: vLLM-style budget, every group in whole blocks, windows freed."""

from ...dtypes import KVFormat
from ...model import ModelSpec
from ...model.grouping import page_layout
from ..deployment import Deployment
from ..overhead import Term, overhead_terms
from .base import EnginePolicy, Pool


class GenericPolicy(EnginePolicy):
    name = "generic"
    kinds_engine = "generic"
    description = ("budget = total x gpu_memory_utilization - weights - overhead terms; blocks of block_size "
                   "tokens per layer group; sliding/chunked groups free blocks that left the window")

    def overhead(self, spec: ModelSpec, dep: Deployment, act_elem_bytes: int) -> list[Term]:
        return overhead_terms(spec, dep, act_elem_bytes)

    def kv_budget(self, gpu_memory_bytes: int, weights_per_gpu: int, terms: list[Term], dep: Deployment) -> int:
        if dep.kv_cache_memory_bytes is not None:
            return dep.kv_cache_memory_bytes
        used = weights_per_gpu + sum(t.bytes or 0 for t in terms)
        return int(gpu_memory_bytes * dep.gpu_memory_utilization) - used

    def request_bytes(self, stage: ModelSpec, context_tokens: int, kv: KVFormat, dep: Deployment) -> int:
        """At its peak: a prompt may be computed in chunks of max_num_batched_tokens (chunked prefill)."""
        return stage.bytes_per_request(context_tokens, kv, dep.tp, self.block_size(stage, dep),
                                       dep.max_num_batched_tokens)

    def pool(self, stage: ModelSpec, budget_bytes: int, kv: KVFormat, dep: Deployment) -> Pool:
        block_size = self.block_size(stage, dep)
        page_bytes, usable, num_blocks, tokens = paged_pool(stage, kv, dep.tp, block_size, budget_bytes)
        return Pool(num_blocks, block_size, page_bytes, tokens, usable)


def paged_pool(stage: ModelSpec, kv: KVFormat, tp: int, block_size: int, budget_bytes):
    """(page bytes, usable bytes, blocks, tokens) for a budget: an int, or a numpy array of budgets (sweep).

    Blocks are pages of block_size tokens x G layers (see spec.grouping); tokens are counted as if
    every KV layer kept every token, so hybrids report a conservative token capacity.
    """
    budget_bytes = budget_bytes * (budget_bytes > 0)  # max(budget, 0), elementwise for arrays too
    if not stage.kv_groups():  # pure state model: no per-token KV, the whole budget holds state
        return 0, budget_bytes, budget_bytes * 0, budget_bytes * 0
    layout = page_layout(stage, kv, tp, unify_page_sizes=True)
    page_bytes = layout.page_bytes(kv, tp, block_size)
    num_blocks = budget_bytes // page_bytes
    tokens = layout.tokens_in(num_blocks, block_size)
    return page_bytes, num_blocks * page_bytes, num_blocks, tokens
