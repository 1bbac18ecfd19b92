"""vLLM's own KV accounting, so `--engine vllm` predicts the numbers vLLM logs at start-up.

Semantics by version (`--engine vllm@VERSION`; checked against published start-up logs, see
tests/data/vllm_logs and docs/engines.md):

| version  | engine                         | tokens logged                     | concurrency logged                    |
|----------|--------------------------------|-----------------------------------|---------------------------------------|
| v0       | V0 (<= 0.10, VLLM_USE_V1=0)    | "# GPU blocks: N"                 | N x block_size / max_model_len        |
| 0.8      | V1 0.8.0 - 0.9.1               | N x block_size                    | N x block_size / max_model_len        |
| 0.11     | V1 0.9.2 - 0.11 (default)      | N // groups x block_size          | N / blocks one max_model_len request needs |

Budget (all versions): `total x gpu_memory_utilization - (weights + activation peak + non-torch)`,
the generic overhead model; `--kv-cache-memory` (vLLM's `--kv-cache-memory-bytes`) replaces it.
Blocks: `num_blocks = budget // page // layers_per_group`, one page = one block of one layer
(`2 x block_size x kv_heads_per_rank x head_size x bytes`; MLA: one latent, FlashMLA forces
block 64 on Hopper, CUTLASS MLA 128 on Blackwell). Pipeline stages each size their own pool and
vLLM keeps the smallest block count.

Hybrid models (0.11): layers of one KV spec form groups of G layers, G = the smallest per-kind
layer count (or the largest when it is under 1.5x the smallest), the last group of a kind padded;
every group takes one block per block-table slot from a shared pool. What a layer reserves per
request is its kind's answer (`LayerGroup.vllm_max_blocks`, vLLM's `max_memory_usage_bytes` per
spec in vllm/v1/kv_cache_interface.py). Versions before the hybrid allocator (0.8, v0) size every
layer as full attention (`LayerGroup.unwindowed`).

vLLM refuses to start when one max_model_len request does not fit (V1: the per-layer worst case
exceeds the budget, and from 0.8.4 it reports the largest max_model_len that would fit by binary
search; V0: max_model_len exceeds num_blocks x block_size).
"""

from dataclasses import dataclass, replace

from ...dtypes import KVFormat
from ...errors import InputError, UnsupportedModelError
from ...model import LayerGroup, ModelSpec, cdiv, ceil_bytes
from ...units import GiB
from ..deployment import Deployment
from ..overhead import Term
from . import register
from .base import EngineReport, Pool, require_kinds
from .generic import GenericPolicy
from .vllm_defaults import scheduler_defaults
from .vllm_overhead import vllm_overhead_terms
from .vllm_versions import NEWEST_FAMILY, resolve_vllm_version

GPU_ARCHS = {"hopper": ("h100", "h200", "h800", "h20", "gh200"), "blackwell": ("b200", "b100", "gb200", "b300")}
VLLM_KV_DTYPES = ("bf16", "fp16", "fp32", "fp8", "fp8_e4m3", "fp8_e5m2")
HYBRID_PADDING_RATIO = 1.5  # vLLM's group-size heuristic: use the largest count when it is under 1.5x the smallest


@dataclass(frozen=True)
class LayerSpec:
    """One vLLM KV-cache spec: layers with equal specs (kind and shape, page, block) share groups."""

    attention: LayerGroup  # the layer's kind and sizes, without layer indices (`LayerGroup.shape`)
    page_bytes: int  # one block of one layer on one rank
    block_size: int

    @property
    def kind(self) -> str:
        return self.attention.kind

    def blocks_per_request(self, max_model_len: int, max_num_batched_tokens: int) -> int:
        return self.attention.vllm_max_blocks(max_model_len, self.block_size, max_num_batched_tokens)

    def max_memory_bytes(self, max_model_len: int, max_num_batched_tokens: int) -> int:
        return self.blocks_per_request(max_model_len, max_num_batched_tokens) * self.page_bytes


@dataclass(frozen=True)
class KVGroup:
    spec: LayerSpec
    layers: tuple[int, ...]


def gpu_arch(dep: Deployment) -> str | None:
    """The GPU generation vLLM's attention backends choose by ("hopper", "blackwell"), None otherwise."""
    name = dep.gpu.name.lower() if dep.gpu is not None else ""
    return next((arch for arch, prefixes in GPU_ARCHS.items() if name.startswith(prefixes)), None)


@register
class VllmPolicy(GenericPolicy):  # the same budget arithmetic; its own terms, blocks, groups and logs
    name = "vllm"
    kinds_engine = "vllm"
    version = NEWEST_FAMILY
    offline = False  # `vllm serve` (OpenAI server); the offline LLM class has other scheduler defaults
    description = ("vLLM V1 (newest rules unless @VERSION): CUDA-visible total x gpu_memory_utilization - weights - "
                   "activation - non-torch (- CUDA graphs from 0.21); blocks = budget // page // layers per group; "
                   "hybrid groups; refuses when max_model_len does not fit")

    def __init__(self, version: str | None = None):
        super().__init__(None)
        self.rules = resolve_vllm_version(version)
        self.version = self.rules.family

    def resolve_version(self, version: str) -> str:
        return resolve_vllm_version(version).family

    # --- semantics switches ---

    @property
    def _v0(self) -> bool:
        return not self.rules.v1

    @property
    def _hybrid_allocator(self) -> bool:
        return self._hybrid_for(self.model)

    def _hybrid_for(self, spec: ModelSpec | None) -> bool:
        return self.rules.hybrid_allocator and not self._chunked_without_hybrid(self.model or spec)

    def _chunked_without_hybrid(self, spec: ModelSpec | None) -> bool:
        """0.10.1-0.11 turn the hybrid KV cache manager off for chunked-local models: every layer keeps every token."""
        return (spec is not None and not self.rules.chunked_local_hybrid and self.rules.hybrid_allocator
                and any(g.vllm_chunked_local for g in spec.kv_groups()))

    # --- deployment and overhead ---

    def resolve_deployment(self, spec: ModelSpec, dep: Deployment, max_model_len: int) -> tuple[Deployment, list[str]]:
        """Scheduler settings not given take this release's defaults for the GPU and entry point."""
        notes = [self.rules.note] if self.rules.note else []
        if self._chunked_without_hybrid(spec):
            notes.append(f"vLLM {self.version} turns the hybrid KV cache manager off for chunked-local attention "
                         "(VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE=0): every layer keeps every token")
        if dep.max_num_seqs is not None and dep.max_num_batched_tokens is not None:
            return dep, notes
        defaults = scheduler_defaults(self.rules, dep.gpu, self.offline, max_model_len)
        seqs = dep.max_num_seqs if dep.max_num_seqs is not None else defaults.max_num_seqs
        tokens = dep.max_num_batched_tokens if dep.max_num_batched_tokens is not None else defaults.max_num_batched_tokens
        notes.append(defaults.rule)
        return replace(dep, max_num_seqs=seqs, max_num_batched_tokens=tokens), notes

    def engine_memory(self, gpu) -> tuple[int, str]:
        return gpu.engine_total()

    def overhead(self, spec: ModelSpec, dep: Deployment, act_elem_bytes: int) -> list[Term]:
        return vllm_overhead_terms(spec, self.config, dep, act_elem_bytes, self.rules)

    # --- budget ---

    def block_size(self, spec: ModelSpec, dep: Deployment) -> int:
        """The requested size, unless a kind's attention backend forces its own (MLA)."""
        requested, arch = super().block_size(spec, dep), gpu_arch(dep)
        return max((g.vllm_block_size(arch, requested) for g in spec.kv_groups()), default=requested)

    # --- layout ---

    def layer_specs(self, spec: ModelSpec, kv: KVFormat, dep: Deployment) -> dict[int, LayerSpec]:
        """Layer index -> its vLLM KV spec (on one tensor-parallel rank)."""
        if kv.name not in VLLM_KV_DTYPES:
            raise InputError(f"vLLM has no --kv-cache-dtype {kv.name}; use auto, fp8, fp8_e4m3 or fp8_e5m2")
        require_kinds(spec, self.kinds_engine)  # state layers: vLLM aligns their pages with attention blocks (not modelled)
        block_size = self.block_size(spec, dep)
        out: dict[int, LayerSpec] = {}
        for g in spec.kv_groups():
            page = ceil_bytes(g.bytes_per_token_per_layer(kv, dep.tp) * block_size)
            layer_spec = LayerSpec((g if self._hybrid_for(spec) else g.unwindowed()).shape(), page, block_size)
            for layer in g.layers:
                out[layer] = layer_spec
        return dict(sorted(out.items()))

    def kv_groups(self, spec: ModelSpec, kv: KVFormat, dep: Deployment) -> list[KVGroup]:
        """vLLM's KV cache groups over the whole model (projected onto a stage with `_project`)."""
        by_type: dict[LayerSpec, list[int]] = {}
        for layer, s in self.layer_specs(spec, kv, dep).items():
            by_type.setdefault(s, []).append(layer)
        if len(by_type) == 1:
            (s, layers), = by_type.items()
            return [KVGroup(s, tuple(layers))]
        if not self._hybrid_allocator:
            return [KVGroup(s, tuple(ls)) for s, ls in by_type.items()]
        if len({s.page_bytes for s in by_type}) > 1:
            raise UnsupportedModelError(f"{spec.name}: layers with different KV page sizes; vLLM grows block sizes "
                                        "to unify them, which is not modelled (use --engine generic)")
        counts = [len(ls) for ls in by_type.values()]
        group_size = min(counts)
        if max(counts) < min(counts) * HYBRID_PADDING_RATIO:
            group_size = max(counts)
        groups = []
        for s, layers in by_type.items():
            num_groups = cdiv(len(layers), group_size)
            # Strided assignment keeps pipeline stages balanced across groups.
            groups += [KVGroup(s, tuple(layers[i::num_groups])) for i in range(num_groups)]
        return groups

    def _stage_groups(self, stage: ModelSpec, whole: list[KVGroup]) -> list[KVGroup]:
        layers = {i for g in stage.kv_groups() for i in g.layers}
        return [KVGroup(g.spec, tuple(i for i in g.layers if i in layers)) for g in whole]

    def _groups_for(self, stage: ModelSpec, kv: KVFormat, dep: Deployment) -> list[KVGroup]:
        # Groups follow the whole model (bind); a stage keeps its share of each group.
        return self._stage_groups(stage, self.kv_groups(self._whole(stage), kv, dep))

    def _whole(self, stage: ModelSpec) -> ModelSpec:
        return self.model or stage

    def _uniform_type(self, groups: list[KVGroup]) -> bool:
        return len(groups) == 1 or not self._hybrid_allocator

    # --- pool ---

    def request_blocks(self, groups: list[KVGroup], context_tokens: int, dep: Deployment) -> int:
        """Blocks one request of `context_tokens` tokens takes from the pool, by vLLM's worst case."""
        if self._uniform_type(groups):
            return cdiv(context_tokens, groups[0].spec.block_size)
        return sum(g.spec.blocks_per_request(context_tokens, dep.max_num_batched_tokens) for g in groups)

    def _block_bytes(self, groups: list[KVGroup]) -> int:
        """Bytes of one pool block on this stage: a block-table slot across every layer it serves."""
        if self._uniform_type(groups):
            return sum(g.spec.page_bytes * len(g.layers) for g in groups)
        return groups[0].spec.page_bytes * max(len(g.layers) for g in groups)

    def pool(self, stage: ModelSpec, budget_bytes: int, kv: KVFormat, dep: Deployment) -> Pool:
        groups = self._groups_for(stage, kv, dep)
        block_size = groups[0].spec.block_size
        block_bytes = self._block_bytes(groups)
        num_blocks = max(budget_bytes, 0) // block_bytes if block_bytes else 0
        if self._uniform_type(groups):
            tokens = num_blocks * block_size
        else:
            tokens = num_blocks // len(groups) * min(g.spec.block_size for g in groups)
        return Pool(num_blocks, block_size, block_bytes, tokens, num_blocks * block_bytes)

    def block_bytes(self, stage: ModelSpec, kv: KVFormat, dep: Deployment) -> int:
        return self._block_bytes(self._groups_for(stage, kv, dep))

    def block_counts_for_tokens(self, stage: ModelSpec, tokens: int, kv: KVFormat, dep: Deployment) -> list[int]:
        """Every pool size (in blocks) for which vLLM would log `tokens` as its KV cache size."""
        groups = self._groups_for(stage, kv, dep)
        block_size = groups[0].spec.block_size
        if self._uniform_type(groups):
            return [tokens // block_size]
        first = tokens // block_size * len(groups)
        return list(range(first, first + len(groups)))

    def request_bytes(self, stage: ModelSpec, context_tokens: int, kv: KVFormat, dep: Deployment) -> int:
        groups = self._groups_for(stage, kv, dep)
        return self.request_blocks(groups, context_tokens, dep) * self._block_bytes(groups)

    def max_concurrency(self, stage: ModelSpec, pool: Pool, max_model_len: int, kv: KVFormat, dep: Deployment) -> float:
        if not self.rules.concurrency_by_blocks:
            return pool.num_blocks * pool.block_size / max_model_len
        groups = self._groups_for(stage, kv, dep)
        return pool.num_blocks / self.request_blocks(groups, max_model_len, dep)

    def max_users(self, stage: ModelSpec, pool: Pool, context_tokens: int, kv: KVFormat, dep: Deployment) -> int:
        groups = self._groups_for(stage, kv, dep)
        return pool.num_blocks // self.request_blocks(groups, context_tokens, dep)

    # --- what vLLM logs ---

    def needed_bytes(self, stage: ModelSpec, max_model_len: int, kv: KVFormat, dep: Deployment) -> int:
        """V1's start-up check: the sum over the stage's layers of each layer's worst case per request."""
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
        if self._uniform_type(groups):
            tokens = num_blocks * block_size
        else:
            tokens = num_blocks // len(groups) * block_size
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

    def _refusal(self, stages, budgets, kv, dep, max_model_len) -> str | None:
        for stage, budget in zip(stages, budgets):
            if budget <= 0:
                return (f"no memory is left for KV cache blocks ({budget / GiB:.2f} GiB available); raise "
                        "--gpu-memory-utilization")
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
            return "no memory is left for KV cache blocks; raise --gpu-memory-utilization"
        if max_model_len > num_blocks * block_size:
            return (f"max_model_len {max_model_len} exceeds the {num_blocks * block_size} tokens the KV cache holds "
                    f"({num_blocks} blocks of {block_size})")
        return None


@register
class VllmOfflinePolicy(VllmPolicy):
    """vLLM's offline `LLM` class: the same engine, larger scheduler defaults (LLM_CLASS usage context)."""

    name = "vllm-offline"
    offline = True
    description = "vLLM's offline LLM class: as --engine vllm, with the LLM_CLASS scheduler defaults"
