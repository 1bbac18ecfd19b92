"""What vLLM prints at start-up, and when it refuses to start.

| family   | tokens logged                          | concurrency logged                          |
|----------|----------------------------------------|---------------------------------------------|
| v0       | "# GPU blocks: N"                      | N x block_size / max_model_len              |
| 0.8.x    | N x block_size                         | N x block_size / max_model_len              |
| 0.9.2+   | N // groups x block_size               | N / blocks one max_model_len request needs  |
| 0.21     | int(concurrency x max_model_len)       | N / blocks one max_model_len request needs  |

vLLM refuses to start when max_model_len exceeds what the model's config derives (max_position_
embeddings, times the rope scaling factor for linear/dynamic/YaRN scaling, except Gemma 3) unless
VLLM_ALLOW_LONG_MAX_MODEL_LEN=1, and when one max_model_len request does not fit: V1 sums each
layer's worst case, and from 0.8.4 reports the largest max_model_len that would fit (binary
search); V0 refuses when max_model_len exceeds num_blocks x block_size.
"""

from ...dtypes import KVFormat
from ...model import ModelSpec
from ...units import GiB
from ..deployment import Deployment
from .base import EngineReport
from .vllm_load_extras import derived_max_model_len


class VllmStartup:
    """Mixed into VllmPolicy (with VllmLayout): the start-up report and refusals."""

    @property
    def _v0(self) -> bool:
        return not self.rules.v1

    def needed_bytes(self, stage: ModelSpec, max_model_len: int, kv: KVFormat, dep: Deployment) -> int:
        """V1's start-up check: the sum over the stage's layers of each layer's worst case per request; from
        0.18 over the stage's groups, padding included (`_max_memory_usage_bytes_from_groups`: group size x
        page x the groups' blocks per request; Gemma-3-27B at 128K: 10 x (8,192 + 6 x 577) = 116,540 pages,
        not the 111,924 of its 62 real layers)."""
        if self.rules.refusal_counts_group_padding:
            return self.request_bytes(stage, max_model_len, kv, dep)
        specs = [s for i, s in self.layer_specs(self._whole(stage), kv, dep).items()
                 if i in {j for g in stage.kv_groups() for j in g.layers}]
        return sum(s.max_memory_bytes(max_model_len, dep.max_num_batched_tokens) for s in specs)

    def largest_max_model_len(self, stage: ModelSpec, budget_bytes: int, kv: KVFormat, dep: Deployment,
                              max_model_len: int) -> int:
        """Binary search, as vLLM does, for the largest max_model_len whose worst case fits the budget."""
        if self.needed_bytes(stage, 1, kv, dep) > budget_bytes:
            return 0
        lo, hi = 1, max_model_len
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.needed_bytes(stage, mid, kv, dep) <= budget_bytes:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def report(self, stages: list[ModelSpec], budget_bytes: int, kv: KVFormat, dep: Deployment,
               max_model_len: int) -> EngineReport:
        return self.report_for_budgets(stages, [budget_bytes] * len(stages), kv, dep, max_model_len)

    def report_for_budgets(self, stages: list[ModelSpec], budgets: list[int], kv: KVFormat, dep: Deployment,
                           max_model_len: int) -> EngineReport:
        """The start-up report when each pipeline stage has its own budget (as each worker measures its own)."""
        lines = [f"Available KV cache memory: {min(budgets) / GiB:.2f} GiB"]
        refusal = self._refusal(stages, budgets, kv, dep, max_model_len)
        if refusal:
            return EngineReport(self.name, self.version, {"refused": True}, tuple(lines), refusal)
        pools = [self.pool(s, b, kv, dep) for s, b in zip(stages, budgets)]
        num_blocks = min(p.num_blocks for p in pools)
        groups = self._groups_for(stages[0], kv, dep)
        block_size = pools[0].block_size
        tokens = self.kv_cache_tokens(groups, num_blocks, max_model_len, dep)
        per_request = self.request_blocks(groups, max_model_len, dep)
        if self.rules.concurrency_by_blocks:
            concurrency = num_blocks / per_request
        else:
            concurrency = num_blocks * block_size / max_model_len
        if self._v0:
            lines.append(f"# GPU blocks: {num_blocks}")
            lines.append(f"Maximum concurrency for {max_model_len} tokens per request: {concurrency:.2f}x")
        else:
            lines.append(f"GPU KV cache size: {tokens:,} tokens")
            lines.append(f"Maximum concurrency for {max_model_len:,} tokens per request: {concurrency:.2f}x")
        figures = {
            "num_blocks": num_blocks, "block_size": block_size, "kv_cache_tokens": tokens,
            "max_concurrency": concurrency, "num_groups": len(groups),
            "layers_per_group": max(len(g.layers) for g in groups), "blocks_per_request": per_request,
            "available_kv_bytes": min(budgets), "refused": False,
        }
        refusal_v0 = self._v0_refusal(num_blocks, block_size, max_model_len)
        return EngineReport(self.name, self.version, figures, tuple(lines), refusal_v0)

    def max_model_len_refusal(self, spec: ModelSpec, max_model_len: int) -> str | None:
        derived = derived_max_model_len(spec, self.config)
        if derived and max_model_len > derived:
            return (f"max_model_len {max_model_len:,} is greater than the model's derived maximum {derived:,} "
                    "(vLLM accepts it only with VLLM_ALLOW_LONG_MAX_MODEL_LEN=1)")
        return None

    def _refusal(self, stages, budgets, kv, dep, max_model_len) -> str | None:
        for stage, budget in zip(stages, budgets):
            if budget <= 0:
                # the reason only: what helps (utilization, more GPUs, quantization) is the estimate's suggestion
                return f"no memory is left for KV cache blocks ({budget / GiB:.2f} GiB available)"
            if self._v0:
                continue
            needed = self.needed_bytes(stage, max_model_len, kv, dep)
            if needed > budget:
                text = (f"one request at max_model_len {max_model_len} needs {needed / GiB:.2f} GiB of KV cache, more "
                        f"than the {budget / GiB:.2f} GiB available")
                if self.rules.refusal_estimates_max_len:
                    best = self.largest_max_model_len(stage, budget, kv, dep, max_model_len)
                    if best > 0:
                        text += f"; the largest max_model_len that fits is {best}"
                return text
        return None

    def _v0_refusal(self, num_blocks: int, block_size: int, max_model_len: int) -> str | None:
        if not self._v0:
            return None
        if num_blocks <= 0:
            return "no memory is left for KV cache blocks"
        if max_model_len > num_blocks * block_size:
            return (f"max_model_len {max_model_len} exceeds the {num_blocks * block_size} tokens the KV cache holds "
                    f"({num_blocks} blocks of {block_size})")
        return None
