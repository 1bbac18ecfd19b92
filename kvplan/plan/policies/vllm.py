"""`--engine vllm[@RELEASE]` and `vllm-offline`: vLLM's own KV accounting, so kvplan predicts what vLLM logs.

One mechanism per file:
- vllm_versions.py: which release follows which rules (families; unknown releases refused)
- vllm_defaults.py: max_num_seqs / max_num_batched_tokens defaults per GPU and entry point
- vllm_overhead.py: the terms subtracted from `CUDA-visible total x gpu_memory_utilization`
- vllm_load_extras.py: rotary caches and vision encoders in vLLM's weights memory
- vllm_layout.py: pages, hybrid groups, pools, blocks per request
- vllm_startup.py: the lines vLLM logs and its refusals
Budget: `total x gpu_memory_utilization - (weights + terms)`, total the CUDA-visible one
(`GPU.engine_total`); `--kv-cache-memory` (vLLM's `--kv-cache-memory-bytes`) replaces it.
Checked against published start-up logs: tests/data/vllm_logs, docs/engines.md.
"""


from ...model import ModelSpec
from ..deployment import Deployment
from ..overhead import Term
from . import register
from .generic import GenericPolicy
from .vllm_defaults import scheduler_defaults
from .vllm_layout import VllmLayout
from .vllm_overhead import cuda_graph_bytes, vllm_overhead_terms
from .vllm_startup import VllmStartup
from .vllm_versions import NEWEST_FAMILY, resolve_vllm_version


@register
class VllmPolicy(VllmLayout, VllmStartup, GenericPolicy):  # the generic budget arithmetic over vLLM's own terms
    name = "vllm"
    kinds_engine = "vllm"
    version = NEWEST_FAMILY
    offline = False  # `vllm serve` (OpenAI server); the offline LLM class has other scheduler defaults
    description = ("vLLM V1 (newest rules unless @VERSION): CUDA-visible total x gpu_memory_utilization - weights - "
                   "activation - non-torch (- CUDA graphs from 0.20.2, the 0.21 family); blocks = budget // page // layers per group; "
                   "hybrid groups; refuses when max_model_len does not fit")

    def __init__(self, version: str | None = None):
        super().__init__(None)
        self.rules = resolve_vllm_version(version)
        self.version = self.rules.family

    def resolve_version(self, version: str) -> str:
        return resolve_vllm_version(version).family

    # --- deployment and overhead ---

    def engine_defaults(self, dep: Deployment, max_model_len: int) -> tuple[dict, str | None]:
        """Scheduler settings not given take this release's defaults for the GPU and entry point."""
        defaults = scheduler_defaults(self.rules, dep.gpu, self.offline, max_model_len)
        return {"block_size": self.default_block_size, "max_num_seqs": defaults.max_num_seqs,
                "max_num_batched_tokens": defaults.max_num_batched_tokens}, defaults.rule

    def resolve_deployment(self, spec: ModelSpec, dep: Deployment, max_model_len: int) -> tuple[Deployment, list[str]]:
        notes = [self.rules.note] if self.rules.note else []
        if self._chunked_without_hybrid(spec):
            notes.append(f"vLLM {self.version} turns the hybrid KV cache manager off for chunked-local attention "
                         "(VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE=0): every layer keeps every token")
        dep, rule_notes = super().resolve_deployment(spec, dep, max_model_len)
        return dep, notes + rule_notes

    def engine_memory(self, gpu) -> tuple[int, str]:
        return gpu.engine_total()

    def overhead(self, spec: ModelSpec, dep: Deployment, act_elem_bytes: int) -> list[Term]:
        return vllm_overhead_terms(spec, self.config, dep, act_elem_bytes, self.rules)

    def cuda_graph_estimate(self, spec: ModelSpec, dep: Deployment) -> int:
        """What vLLM estimates its CUDA graphs take (it subtracts the estimate from 0.20.2 on: the 0.21 family)."""
        return cuda_graph_bytes(spec, dep, self.config)


@register
class VllmOfflinePolicy(VllmPolicy):
    """vLLM's offline `LLM` class: the same engine, larger scheduler defaults (LLM_CLASS usage context)."""

    name = "vllm-offline"
    offline = True
    description = "vLLM's offline LLM class: as --engine vllm, with the LLM_CLASS scheduler defaults"
