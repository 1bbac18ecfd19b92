"""vLLM's KV cache layout: which layers share a block pool, how big a block is, what a request takes.

One page is one block of one layer on one rank (`2 x block_size x kv_heads_per_rank x head_size x
bytes`; MLA: one latent, the backend's block size). With the hybrid KV cache manager (0.9.2+)
layers of one KV spec form groups of G layers, G = the smallest per-kind layer count (from 0.12 the
largest when it is under 1.25x the smallest, from 0.18 under 1.5x), the last group of a kind padded; every group takes
one block per block-table slot from a shared pool, and what a layer reserves per request is its
kind's answer (`LayerGroup.vllm_max_blocks`, vLLM's `max_memory_usage_bytes` per spec in
vllm/v1/kv_cache_interface.py). Without it (before 0.9.2, V0, and chunked-local models in
0.10.1-0.11) every layer is sized as full attention (`LayerGroup.unwindowed`).
Uniform models: `num_blocks = budget // page // layers_on_gpu`; pipeline stages each size their
own pool and vLLM keeps the smallest block count.
"""

from dataclasses import dataclass

from ...dtypes import KVFormat
from ...errors import InputError, UnsupportedModelError
from ...model import LayerGroup, ModelSpec, cdiv, ceil_bytes
from ..deployment import Deployment
from .base import Pool

GPU_ARCHS = {"hopper": ("h100", "h200", "h800", "h20", "gh200"), "blackwell": ("b200", "b100", "gb200", "b300")}
VLLM_KV_DTYPES = ("bf16", "fp16", "fp32", "fp8", "fp8_e4m3", "fp8_e5m2")


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


class VllmLayout:
    """Mixed into VllmPolicy: needs `self.rules` (vllm_versions.VllmRules), `self.model`, `self.kinds_engine`."""

    @property
    def _hybrid_allocator(self) -> bool:
        return self._hybrid_for(self.model)

    def _hybrid_for(self, spec: ModelSpec | None) -> bool:
        return self.rules.hybrid_allocator and not self._chunked_without_hybrid(self.model or spec)

    def _chunked_without_hybrid(self, spec: ModelSpec | None) -> bool:
        """0.10.1-0.11 turn the hybrid KV cache manager off for chunked-local models: every layer keeps every token."""
        return (spec is not None and not self.rules.chunked_local_hybrid and self.rules.hybrid_allocator
                and any(g.vllm_chunked_local for g in spec.kv_groups()))

    def block_size(self, spec: ModelSpec, dep: Deployment) -> int:
        """The requested size, unless a kind's attention backend forces its own (MLA)."""
        requested, arch = dep.block_size, gpu_arch(dep)
        return max((g.vllm_block_size(arch, requested) for g in spec.kv_groups()), default=requested)

    def layer_specs(self, spec: ModelSpec, kv: KVFormat, dep: Deployment) -> dict[int, LayerSpec]:
        """Layer index -> its vLLM KV spec (on one tensor-parallel rank)."""
        if kv.name not in VLLM_KV_DTYPES:
            raise InputError(f"vLLM has no --kv-cache-dtype {kv.name}; use auto, fp8, fp8_e4m3 or fp8_e5m2")
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
        ratio = self.rules.hybrid_group_ratio  # None before PR 29303, 1.25 from 0.12, 1.5 from 0.18 (PR 36684)
        if ratio is not None and max(counts) < min(counts) * ratio:
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
        """Blocks one request of `context_tokens` tokens takes from the pool, by vLLM's worst case: the sum
        of every KV cache group's `max_memory_usage_bytes` in pages (`get_max_concurrency_for_kv_cache_config`,
        vllm/v1/core/kv_cache_utils.py), a single group included, so a model whose every layer slides keeps
        only its window. Without the hybrid manager every layer is one group, sized as full attention."""
        if not self._hybrid_allocator:
            groups = groups[:1]
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

    def kv_cache_tokens(self, groups: list[KVGroup], num_blocks: int, max_model_len: int, dep: Deployment) -> int:
        """What vLLM logs as "GPU KV cache size": blocks x block size (one group), blocks // groups x the
        smallest block size (hybrid), or from 0.20.2 int(max concurrency x max_model_len) (PRs 38364/40694,
        vllm #40691: the per-group split misled on hybrids)."""
        if self.rules.tokens_from_concurrency:
            return int(num_blocks / self.request_blocks(groups, max_model_len, dep) * max_model_len)
        if self._uniform_type(groups):
            return num_blocks * groups[0].spec.block_size
        return num_blocks // len(groups) * min(g.spec.block_size for g in groups)

    def block_counts_for_tokens(self, stage: ModelSpec, tokens: int, kv: KVFormat, dep: Deployment,
                                max_model_len: int) -> list[int]:
        """Every pool size (in blocks) for which vLLM would log `tokens` as its KV cache size."""
        groups = self._groups_for(stage, kv, dep)
        if self.rules.tokens_from_concurrency:
            guess = tokens * self.request_blocks(groups, max_model_len, dep) // max_model_len
            return [n for n in range(max(guess - 2, 0), guess + 3)
                    if self.kv_cache_tokens(groups, n, max_model_len, dep) == tokens]
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
