"""transformers' continuous-batching cache (`PagedAttentionCache`), following transformers 5.23.

- Memory for the cache: `(total - max(allocated, reserved)) x max_memory_percent` once the model is
  loaded, i.e. free memory x 0.9 on CUDA without logit processors (0.8 with them). kvplan models free
  memory as total - weights - CUDA context and reads `--gpu-memory-utilization` as max_memory_percent.
- Layers are grouped by attention type (one allocator for full layers, one for sliding layers). An
  allocator's block is one page of `page_size` tokens (default 256; kvplan's --block-size) for each
  of its layers; a *sector* is the least common multiple of every
  allocator's block bytes and 128 bytes, and sectors are what the pool hands out.
- max_batch_tokens M (kvplan's --max-num-batched-tokens, default 8192) is fixed first; the IO tensors
  and the larger of the attention and LM-head activation peaks scale with M and are paid first, with
  two trash sectors and (models that slice logits) one fp32 logit row per request of a batch
  (max_requests_per_batch, kvplan's --max-num-seqs, default 1024); the rest becomes sectors, each
  costing its bytes plus the K/V read-back and read indices of its tokens; finally sectors are
  removed to pay for the attention masks (none with flash attention).
- Capacity is reported as full-attention tokens (`num_sectors x full blocks per sector x page_size`);
  concurrency at max_model_len charges each request `cdiv(L, page)` full blocks and
  `cdiv(min(L, W), page)` sliding blocks (a ring buffer over the window).
- The scheduler fills a batch up to M tokens and max_requests_per_batch requests, decoding requests
  first, and splits any prompt longer than what is left of M: there is no switch for chunked prefill.
  transformers caps max_requests_per_batch at M after sizing the logit rows with the uncapped value;
  kvplan refuses that case rather than size one value and schedule another.
Defaults model `generate_batch` with sdpa on CUDA and no workload hints: masks needed, so no CUDA graphs
and no async batching, 32 blocks per request in the decode block table, logits sliced.
"""

from dataclasses import dataclass
from math import ceil, gcd

from ...dtypes import KVFormat
from ...errors import InputError, UnsupportedModelError
from ...model import LayerGroup, ModelSpec, cdiv, ceil_bytes
from ..deployment import Deployment
from ..overhead import Term, overhead_terms
from . import register
from .base import EnginePolicy, EngineReport, Pool

PAGE_SIZE = 256
FULL, SLIDING = "full_attention", "sliding_attention"  # transformers' layer types (`LayerGroup.transformers_layer_type`)
SECTOR_ALIGN_BYTES = 128
INDEX_BYTES = 4  # int32
POSITION_BYTES = 8  # int64 write/read indices
LOGIT_BYTES = 4  # fp32 logits


@dataclass(frozen=True)
class CBSettings:
    """The continuous-batching knobs that size the cache, at transformers' defaults (`ContinuousBatchingConfig`
    resolved: `PagedAttentionMemoryHandler._default_max_batch_tokens`, `FALLBACK_DEFAULTS`). The policy takes
    page_size, max_batch_tokens and max_requests_per_batch from the deployment, which these fill when not given."""

    page_size: int = PAGE_SIZE
    max_batch_tokens: int = 8192
    flash_attention: bool = False
    async_batching: bool = False
    max_blocks_per_request: int = 32
    max_requests_per_batch: int = 1024
    logits_to_keep: bool = True
    return_logprobs: bool = False


@dataclass(frozen=True)
class Allocator:
    """One of transformers' cache allocators: the layers of one `layer_types` entry."""

    layer_type: str  # transformers' name: full_attention | sliding_attention
    num_layers: int
    bytes_per_page: int
    attention: LayerGroup  # the first group of that type: what a request keeps (`tokens_held`)

    @property
    def bytes_per_block(self) -> int:
        return self.bytes_per_page * self.num_layers


@dataclass(frozen=True)
class CachePlan:
    num_sectors: int
    bytes_per_sector: int
    tokens_per_sector: int
    max_batch_tokens: int
    allocators: tuple[Allocator, ...]

    def blocks_per_sector(self, a: Allocator) -> int:
        return self.bytes_per_sector // a.bytes_per_block


def allocators(spec: ModelSpec, kv: KVFormat, tp: int, page_size: int) -> tuple[Allocator, ...]:
    """One allocator per layer type, in the order the types first occur in the model's layers."""
    if kv.fmt.bits not in (16, 32):
        raise InputError(f"transformers' paged cache stores K/V in the model dtype; --kv-dtype {kv.name} is not offered")
    if not spec.kv_groups():
        raise UnsupportedModelError(f"{spec.name}: no attention layer holds KV; transformers' paged cache has "
                                    "nothing to size (use --engine generic)")
    by_type: dict[str, list[LayerGroup]] = {}
    for g in sorted(spec.kv_groups(), key=lambda g: min(g.layers)):
        by_type.setdefault(g.transformers_layer_type(), []).append(g)
    out = []
    for layer_type, groups in by_type.items():
        g = groups[0]
        if g.num_kv_heads % tp:
            raise InputError(f"transformers shards KV heads over tp: {g.num_kv_heads} heads do not divide by --tp {tp}")
        bytes_per_page = ceil_bytes(g.bytes_per_token_per_layer(kv, tp) * page_size)
        out.append(Allocator(layer_type, sum(x.num_layers for x in groups), bytes_per_page, g))
    return tuple(out)


def plan_cache(spec: ModelSpec, kv: KVFormat, tp: int, available_bytes: int, s: CBSettings) -> CachePlan:
    """transformers' sizing of (max_batch_tokens, num_sectors) for `available_bytes` of cache memory."""
    if not spec.hidden_size or not spec.num_attention_heads or not spec.vocab_size:
        raise UnsupportedModelError(f"{spec.name}: hidden size, heads and vocabulary are needed to size transformers' "
                                    "batch buffers")
    allocs = allocators(spec, kv, tp, s.page_size)
    bytes_per_sector = SECTOR_ALIGN_BYTES
    for a in allocs:
        bytes_per_sector = bytes_per_sector * a.bytes_per_block // gcd(bytes_per_sector, a.bytes_per_block)
    tokens_per_sector = max(bytes_per_sector // a.bytes_per_block * s.page_size for a in allocs)

    act = kv.compute_elem_bytes
    config_kv_heads = spec.kv_groups()[0].num_kv_heads  # the memory handler reads the config, not the tp share
    head_dim = spec.kv_groups()[0].k_head_dim
    heads, hidden, vocab = spec.num_attention_heads, spec.hidden_size, spec.vocab_size
    kv_heads_at_peak = 2 * config_kv_heads if s.flash_attention else 2 * heads + config_kv_heads
    io_mult = 2 if s.async_batching else 1
    num_groups = len(allocs)
    lm_head_row = hidden * act + vocab * LOGIT_BYTES
    lm_head_peak = 0 if s.logits_to_keep else lm_head_row
    attention_peak = act * (hidden + heads * head_dim + 2 * config_kv_heads * head_dim + kv_heads_at_peak * head_dim)
    io_bytes = io_mult * (7 * INDEX_BYTES + (2 if s.return_logprobs else 1) * INDEX_BYTES
                          + num_groups * s.max_blocks_per_request * INDEX_BYTES + 2 * num_groups * POSITION_BYTES)
    per_batch_token = max(lm_head_peak, attention_peak) + io_bytes
    per_cache_token = kv_heads_at_peak * head_dim * act + io_mult * num_groups * POSITION_BYTES
    per_sector = bytes_per_sector + tokens_per_sector * per_cache_token
    fixed = 2 * bytes_per_sector + (s.max_requests_per_batch * lm_head_row if s.logits_to_keep else 0)

    m = s.max_batch_tokens
    num_sectors = (available_bytes - fixed - m * per_batch_token) // per_sector
    num_masks = 0 if s.flash_attention else (2 if any(a.layer_type == SLIDING for a in allocs) else 1)

    def masks(n: int) -> int:
        return io_mult * num_masks * act * m * (n * tokens_per_sector + m)

    mask_bytes = masks(num_sectors)
    num_sectors -= ceil(mask_bytes / (per_sector + masks(num_sectors + 1) - mask_bytes))
    return CachePlan(num_sectors, bytes_per_sector, tokens_per_sector, m, allocs)


@register
class TransformersPolicy(EnginePolicy):
    name = "transformers"
    kinds_engine = "transformers"
    version = "5.23"
    description = ("transformers 5.23 continuous batching: free memory x max_memory_percent, batch buffers for "
                   "max_batch_tokens first, the rest in sectors of lcm(group block bytes, 128)")
    memory_fraction = ("max_memory_percent", "the memory free after the model loads")
    always_chunks_prefill = "its scheduler splits any prompt longer than the batch's tokens left, with no switch"
    no_equivalent = {
        "activation_bytes": "it plans its activation buffers inside the cache memory from max_batch_tokens "
                            "(give --max-num-batched-tokens)",
        "cuda_graph_bytes": "it sizes the cache before any CUDA graph is captured",
    }

    def __init__(self, version: str | None = None, settings: CBSettings | None = None):
        super().__init__(version)
        self.settings = settings or CBSettings()

    def resolve_version(self, version: str) -> str:
        if not version.startswith("5."):
            raise InputError(f"--engine transformers@{version}: kvplan models transformers 5.23's paged cache")
        return version

    def engine_defaults(self, dep: Deployment, max_model_len: int) -> tuple[dict, str | None]:
        s = self.settings
        return {"block_size": s.page_size, "max_num_batched_tokens": s.max_batch_tokens,
                "max_num_seqs": s.max_requests_per_batch}, None

    def resolve_deployment(self, spec: ModelSpec, dep: Deployment, max_model_len: int) -> tuple[Deployment, list[str]]:
        source = "its default" if dep.max_num_seqs is None else "given"
        dep, notes = super().resolve_deployment(spec, dep, max_model_len)
        requests, tokens = dep.max_num_seqs, dep.max_num_batched_tokens
        if requests > tokens:  # transformers would size `requests` logit rows, then schedule at most `tokens`
            raise InputError(f"--engine transformers: max_requests_per_batch {requests} (--max-num-seqs, {source}) "
                             f"exceeds max_batch_tokens {tokens} (--max-num-batched-tokens): give --max-num-seqs "
                             f"{tokens} or less")
        return dep, notes

    def _settings(self, dep: Deployment) -> CBSettings:
        from dataclasses import replace

        return replace(self.settings, page_size=dep.block_size, max_batch_tokens=dep.max_num_batched_tokens,
                       max_requests_per_batch=dep.max_num_seqs)

    def overhead(self, spec: ModelSpec, dep: Deployment, act_elem_bytes: int) -> list[Term]:
        # Activations are planned inside the cache budget (max_batch_tokens); only the context is gone.
        return [t for t in overhead_terms(spec, dep, act_elem_bytes) if t.name.startswith(("non-torch", "overhead"))]

    def weights_limit_bytes(self, gpu_memory_bytes: int, dep: Deployment) -> int:
        return gpu_memory_bytes  # the memory fraction applies to what is free after loading

    def kv_budget(self, gpu_memory_bytes: int, weights_per_gpu: int, terms: list[Term], dep: Deployment) -> int:
        if dep.kv_cache_memory_bytes is not None:
            return dep.kv_cache_memory_bytes
        free = gpu_memory_bytes - weights_per_gpu - sum(t.bytes or 0 for t in terms)
        return int(free * dep.gpu_memory_utilization)

    def plan(self, stage: ModelSpec, budget_bytes: int, kv: KVFormat, dep: Deployment) -> CachePlan:
        return plan_cache(stage, kv, dep.tp, budget_bytes, self._settings(dep))

    def _full(self, plan: CachePlan) -> Allocator:
        return next((a for a in plan.allocators if a.layer_type == FULL), plan.allocators[0])

    def pool(self, stage: ModelSpec, budget_bytes: int, kv: KVFormat, dep: Deployment) -> Pool:
        plan = self.plan(stage, budget_bytes, kv, dep)
        sectors = max(plan.num_sectors, 0)
        full = self._full(plan)
        tokens = sectors * plan.blocks_per_sector(full) * self.block_size(stage, dep)
        return Pool(sectors, plan.tokens_per_sector, plan.bytes_per_sector, tokens, sectors * plan.bytes_per_sector)

    def _sectors_per_request(self, plan: CachePlan, context_tokens: int, page: int) -> float:
        need = 0.0
        for a in plan.allocators:  # a sliding allocator is a ring buffer over its window
            need += cdiv(a.attention.tokens_held(context_tokens), page) / plan.blocks_per_sector(a)
        return need

    def request_bytes(self, stage: ModelSpec, context_tokens: int, kv: KVFormat, dep: Deployment) -> int:
        page = self.block_size(stage, dep)
        total = 0
        for a in allocators(stage, kv, dep.tp, page):
            total += cdiv(a.attention.tokens_held(context_tokens), page) * a.bytes_per_block
        return total

    def max_concurrency(self, stage: ModelSpec, pool: Pool, max_model_len: int, kv: KVFormat, dep: Deployment) -> float:
        plan = self.plan(stage, pool.usable_bytes, kv, dep)
        return pool.num_blocks / self._sectors_per_request(plan, max_model_len, self.block_size(stage, dep))

    def max_users(self, stage: ModelSpec, pool: Pool, context_tokens: int, kv: KVFormat, dep: Deployment) -> int:
        plan = self.plan(stage, pool.usable_bytes, kv, dep)
        return int(pool.num_blocks // self._sectors_per_request(plan, context_tokens, self.block_size(stage, dep)))

    def report(self, stages: list[ModelSpec], budget_bytes: int, kv: KVFormat, dep: Deployment,
               max_model_len: int) -> EngineReport:
        if dep.pp > 1:
            raise InputError("transformers' continuous batching has no pipeline parallelism (--pp 1)")
        stage = stages[0]
        plan = self.plan(stage, budget_bytes, kv, dep)
        if plan.num_sectors <= 0:
            return EngineReport(self.name, self.version, {"refused": True}, (),
                                "no memory is left for cache sectors after the batch buffers")
        page = self.block_size(stage, dep)
        full = self._full(plan)
        tokens = plan.num_sectors * plan.blocks_per_sector(full) * page
        concurrency = plan.num_sectors / self._sectors_per_request(plan, max_model_len, page)
        lines = (f"Paged cache initialized: self.max_batch_tokens = {plan.max_batch_tokens}, "
                 f"self.num_sectors = {plan.num_sectors}, mb_per_sector = {plan.bytes_per_sector // 2**20}",)
        figures = {"num_blocks": plan.num_sectors, "num_sectors": plan.num_sectors, "block_size": page,
                   "bytes_per_sector": plan.bytes_per_sector, "tokens_per_sector": plan.tokens_per_sector,
                   "max_batch_tokens": plan.max_batch_tokens, "kv_cache_tokens": tokens,
                   "max_concurrency": concurrency, "available_kv_bytes": budget_bytes, "refused": False}
        return EngineReport(self.name, self.version, figures, lines, None)
