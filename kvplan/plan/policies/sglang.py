"""SGLang's KV pool (`max_total_num_tokens`), following SGLang v0.5.x (`profile_max_num_token`).

- Budget: SGLang measures free memory before loading weights (`free_before`, the minimum over
  ranks) and after (`free_after`), and keeps `rest = free_after - free_before x (1 -
  mem_fraction_static)`, i.e. `mem_fraction_static x free_before - weights`. Free, not total,
  memory: other processes on the GPU shrink it. kvplan models `free_before = total - non-torch`
  (CUDA context/NCCL, the generic overhead model) and reads `--gpu-memory-utilization` as
  `--mem-fraction-static`.
- `cell_size` per token on one rank = `kv_heads_per_rank x (head_dim + v_head_dim) x layers x bytes`
  (MLA: `(kv_lora_rank + qk_rope_head_dim) x layers x bytes`, every rank holds all of it).
- `max_total_num_tokens = rest // cell_size`, capped by `--max-total-tokens`, rounded down to the page
  size (`--page-size`, default 1; kvplan's --block-size when given).
- Versions: the same arithmetic from v0.2 to 0.5.x and the 2026 builds (`profile_max_num_token` in
  model_runner.py, then model_runner_kv_cache_mixin.py; `_profile_available_bytes` with
  pool_configurator.py's `DefaultPoolConfigurator` from 2026). Not modelled: speculative drafts
  sharing the pool (0.4 raises the target pool by max_num_reqs x (steps x topk + draft tokens)
  + 100; the 2026 builds scale cell_size by 1 + draft_layers / layers), DSA indexer caches, Mamba/GDN state pools, DP attention, and the
  2026 reservations (multimodal caches, post-capture pool resizing).
- Sliding-window hybrids of the architectures SGLang splits (gpt-oss, Llama-4, Gemma-4, MiMo-V2, ...;
  not Gemma-2/3): the full-attention pool keeps `total / (ratio x swa_layers + full_layers)` tokens
  and the SWA pool `ratio` times that (`--swa-full-tokens-ratio`, default 0.8), where `total` is the
  all-layers token count; `max_total_num_tokens` is the full pool. Other sliding models keep every
  layer's tokens in one pool.
- Log: "KV Cache is allocated. #tokens: N, K size: X GB, V size: X GB" with sizes in GiB labelled GB,
  counting one extra page (`(N + page_size) x heads x head_dim x layers x bytes`); MLA logs one
  "KV size".
SGLang logs no concurrency; kvplan reports `max_total_num_tokens / max_model_len`.
"""

from fractions import Fraction

from ...dtypes import KVFormat
from ...model import ModelSpec, ceil_bytes
from ...units import GiB
from ..deployment import Deployment
from ..overhead import Term, overhead_terms
from . import register
from .base import EnginePolicy, EngineReport, Pool, require_kinds

SWA_FULL_TOKENS_RATIO = 0.8
SGLANG_PAGE_SIZE = 1
# configs/model_config.py is_hybrid_swa_model (sgl-project/sglang, stored copy at commit 001adf56): the
# architectures SGLang gives a separate sliding-window pool (or a config that opts in with is_hybrid_swa).
# Other models with sliding layers (Gemma-2, Gemma-3, Mistral) keep every layer's tokens in one pool.
HYBRID_SWA_ARCHITECTURES = frozenset({
    "Llama4ForConditionalGeneration", "DeepseekV4ForCausalLM", "DeepseekV4ForCausalLMNextN", "GptOssForCausalLM",
    "MiMoV2FlashForCausalLM", "MiMoV2MTP", "Step3p5ForCausalLM", "Step3p5MTP", "Step3p7ForConditionalGeneration",
    "Gemma4ForCausalLM", "Gemma4ForConditionalGeneration", "Gemma4UnifiedForConditionalGeneration",
    "LagunaForCausalLM"})


@register
class SglangPolicy(EnginePolicy):
    name = "sglang"
    kinds_engine = "sglang"
    version = "0.5"
    description = ("SGLang v0.5: mem_fraction_static x free memory before load - weights; "
                   "max_total_num_tokens = rest // cell_size, page-aligned")
    memory_fraction = ("mem_fraction_static", "the memory free before the weights load")
    no_equivalent = dict.fromkeys(
        ("activation_bytes", "cuda_graph_bytes"),
        "SGLang leaves activations and CUDA graphs whatever --mem-fraction-static (kvplan's "
        "--gpu-memory-utilization) does not give the weights and the pool; it takes no size for them")
    default_block_size = SGLANG_PAGE_SIZE

    def resolve_version(self, version: str) -> str:
        from ...errors import InputError

        if not version.lstrip("v").startswith("0.5"):
            raise InputError(f"--engine sglang@{version}: kvplan models SGLang 0.5.x (profile_max_num_token)")
        return "0.5"

    def engine_memory(self, gpu) -> tuple[int, str]:
        return gpu.engine_total()  # its free-memory figures are cudaMemGetInfo's: within the CUDA-visible total

    def overhead(self, spec: ModelSpec, dep: Deployment, act_elem_bytes: int) -> list[Term]:
        # SGLang reserves activations and graphs through the fraction; only the context is gone before load.
        return [t for t in overhead_terms(spec, dep, act_elem_bytes) if t.name.startswith(("non-torch", "overhead"))]

    def kv_budget(self, gpu_memory_bytes: int, weights_per_gpu: int, terms: list[Term], dep: Deployment) -> int:
        if dep.kv_cache_memory_bytes is not None:
            return dep.kv_cache_memory_bytes
        free_before = gpu_memory_bytes - sum(t.bytes or 0 for t in terms)
        return rest_bytes(free_before, free_before - weights_per_gpu, dep.gpu_memory_utilization)

    def cell_bytes(self, stage: ModelSpec, kv: KVFormat, dep: Deployment) -> int:
        """Bytes one token takes across the stage's KV layers on one rank."""
        require_kinds(stage, self.name)  # Mamba/linear-attention pools are not modelled
        return ceil_bytes(stage.bytes_per_token(kv, dep.tp))

    def token_pools(self, stage: ModelSpec, budget_bytes: int, kv: KVFormat, dep: Deployment) -> tuple[int, int | None]:
        """(full-attention tokens, sliding-window tokens or None) SGLang allocates on this stage."""
        page = self.block_size(stage, dep)
        tokens = max(budget_bytes, 0) // self.cell_bytes(stage, kv, dep) // page * page
        return split_swa_pool(stage, tokens, page) if self.hybrid_swa_pool() else (tokens, None)

    def hybrid_swa_pool(self) -> bool:
        """SGLang splits sliding-window layers into their own pool for some architectures only; a model known only
        by its layers (no config) is split by its layer kinds."""
        config = getattr(self, "config", None)
        if not config:
            return True
        text = config.get("text_config") or {}
        return (any(a in HYBRID_SWA_ARCHITECTURES for a in config.get("architectures") or ())
                or bool(config.get("is_hybrid_swa") or text.get("is_hybrid_swa")))

    def pool(self, stage: ModelSpec, budget_bytes: int, kv: KVFormat, dep: Deployment) -> Pool:
        page = self.block_size(stage, dep)
        full_tokens, swa_tokens = self.token_pools(stage, budget_bytes, kv, dep)
        per_token = self.cell_bytes(stage, kv, dep)
        used = full_tokens * per_token if swa_tokens is None else budget_bytes
        return Pool(full_tokens // page, page, page * per_token, full_tokens, min(used, max(budget_bytes, 0)))

    def request_bytes(self, stage: ModelSpec, context_tokens: int, kv: KVFormat, dep: Deployment) -> int:
        page = self.block_size(stage, dep)
        tokens = -(-context_tokens // page) * page
        return tokens * self.cell_bytes(stage, kv, dep)

    def max_concurrency(self, stage: ModelSpec, pool: Pool, max_model_len: int, kv: KVFormat, dep: Deployment) -> float:
        return pool.kv_cache_tokens / max_model_len

    def max_users(self, stage: ModelSpec, pool: Pool, context_tokens: int, kv: KVFormat, dep: Deployment) -> int:
        page = self.block_size(stage, dep)
        return pool.kv_cache_tokens // (-(-context_tokens // page) * page)

    def report(self, stages: list[ModelSpec], budget_bytes: int, kv: KVFormat, dep: Deployment,
               max_model_len: int) -> EngineReport:
        pools = [self.token_pools(s, budget_bytes, kv, dep) for s in stages]
        tokens = min(p[0] for p in pools)
        page = self.block_size(stages[0], dep)
        lines = []
        if tokens <= 0:
            return EngineReport(self.name, self.version, {"refused": True}, (),
                                "no memory is left for the KV pool; SGLang asks for a larger --mem-fraction-static")
        stage = max(stages, key=lambda s: self.cell_bytes(s, kv, dep))
        sizes = kv_pool_sizes_gib(stage, tokens, page, kv, dep.tp)
        if "kv_size_gib" in sizes:
            lines.append(f"KV Cache is allocated. #tokens: {tokens}, KV size: {sizes['kv_size_gib']:.2f} GB")
        else:
            lines.append(f"KV Cache is allocated. #tokens: {tokens}, K size: {sizes['k_size_gib']:.2f} GB, "
                         f"V size: {sizes['v_size_gib']:.2f} GB")
        lines.append(f"max_total_num_tokens={tokens}")
        figures = {"kv_cache_tokens": tokens, "num_blocks": tokens // page, "block_size": page,
                   "max_concurrency": tokens / max_model_len, "cell_bytes": self.cell_bytes(stage, kv, dep),
                   "available_kv_bytes": budget_bytes, "refused": False, **sizes}
        if pools[0][1] is not None:
            figures["swa_tokens"] = min(p[1] for p in pools)
        return EngineReport(self.name, self.version, figures, tuple(lines), None)


def rest_bytes(free_before_bytes: int, free_after_bytes: int, mem_fraction_static: float) -> int:
    """SGLang's KV budget from the two free-memory readings around weight loading."""
    return int(free_after_bytes - free_before_bytes * (1 - mem_fraction_static))


def max_total_num_tokens(rest: int, cell_bytes: int, page_size: int = SGLANG_PAGE_SIZE,
                         max_total_tokens: int | None = None) -> int:
    """The pool: rest // cell_size, capped by --max-total-tokens, rounded down to the page size."""
    tokens = max(rest, 0) // cell_bytes
    if max_total_tokens is not None:
        tokens = min(tokens, max_total_tokens)
    return tokens // page_size * page_size


def split_swa_pool(stage: ModelSpec, tokens: int, page_size: int,
                   ratio: float = SWA_FULL_TOKENS_RATIO) -> tuple[int, int | None]:
    """(full-attention tokens, sliding-window tokens or None) from the all-layer token count, page-aligned
    (set_num_tokens_hybrid_swa)."""
    swa = sum(g.num_layers for g in stage.kv_groups() if g.sglang_swa_pool())
    if not swa:
        return tokens, None
    full = sum(g.num_layers for g in stage.kv_groups()) - swa
    full_tokens = int(tokens * (swa + full) / (ratio * swa + full)) // page_size * page_size
    return full_tokens, int(full_tokens * ratio) // page_size * page_size


def kv_pool_sizes_gib(stage: ModelSpec, tokens: int, page_size: int, kv: KVFormat, tp: int) -> dict:
    """The sizes SGLang logs for its pool: K and V (or the MLA latent) with one extra page, in GiB."""
    slots = tokens + page_size
    per_slot: dict[str, Fraction] = {}
    for g in stage.kv_groups():
        for name, per_token in g.sglang_logged_bytes(kv, tp).items():
            per_slot[name] = per_slot.get(name, Fraction(0)) + per_token * g.num_layers
    return {f"{name}_size_gib": float(total * slots / GiB) for name, total in per_slot.items()}
