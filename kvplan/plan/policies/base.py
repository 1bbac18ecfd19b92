"""The interface every engine policy implements (one small class per engine)."""

from dataclasses import dataclass, field, replace

from ...dtypes import KVFormat
from ...errors import InputError, UnsupportedModelError
from ...hardware import GPU
from ...model import ModelSpec
from ..deployment import SETTINGS, Deployment
from ..overhead import Term


@dataclass(frozen=True)
class Pool:
    """A KV pool on one GPU (the most constrained pipeline stage)."""

    num_blocks: int
    block_size: int
    page_bytes: int  # one block across every KV layer on the GPU
    kv_cache_tokens: int  # what the engine reports as its token capacity
    usable_bytes: int  # bytes the blocks occupy (<= budget)


@dataclass(frozen=True)
class EngineReport:
    """What the engine itself would print at start-up for this deployment, predicted.

    `figures` holds the engine's own numbers under stable keys (kv_cache_tokens, max_concurrency,
    num_blocks, ...); `lines` the log lines it would print; `refusal` the reason it would refuse to
    start (None when it starts).
    """

    engine: str
    version: str
    figures: dict = field(default_factory=dict)
    lines: tuple[str, ...] = ()
    refusal: str | None = None


class EnginePolicy:
    name = "abstract"
    kinds_engine = "abstract"  # the name the kinds know this engine's layout rules by (`LayerGroup.engines`)
    version = ""
    description = ""
    # What the engine calls kvplan's --gpu-memory-utilization (vLLM's word), and what it is a fraction of.
    memory_fraction = ("gpu_memory_utilization", "total GPU memory")
    # Why the engine cannot run with chunked prefill off (None: it can, as vLLM's --no-enable-chunked-prefill).
    always_chunks_prefill: str | None = None
    # Deployment settings (Deployment field names) the engine has no knob for, and why: refused in one line
    # rather than echoed in the report and ignored.
    no_equivalent: dict[str, str] = {}
    # The values of the settings a deployment leaves to the engine, for engines without a table of their own
    # (those override `engine_defaults`); written here only.
    default_block_size = 16  # tokens per block when --block-size is not given
    default_max_num_batched_tokens = 8192
    default_max_num_seqs = 256

    def __init__(self, version: str | None = None):
        self.model: ModelSpec | None = None  # the whole model, for layouts that depend on all stages (bind)
        self.config: dict | None = None  # its raw config, for what an engine allocates beyond the spec (bind)
        if version:
            self.version = self.resolve_version(version)

    def bind(self, spec: ModelSpec, config: dict | None = None) -> "EnginePolicy":
        """Check the policy models every kind of the model, and remember the whole model (a pipeline
        stage alone cannot tell how the engine groups layers) and its raw config (what an engine
        allocates beyond the spec)."""
        require_kinds(spec, self.kinds_engine)
        self.model, self.config = spec, config
        return self

    def resolve_version(self, version: str) -> str:
        """Map a user-given version ("0.8.5", "v0") onto the semantics this policy models."""
        from ...errors import InputError

        raise InputError(f"--engine {self.name} has one set of semantics; drop '@{version}'")

    def engine_defaults(self, dep: Deployment, max_model_len: int) -> tuple[dict, str | None]:
        """This engine's values for the settings a deployment leaves to it (None: `Setting.engine_default`),
        and the rule that gave them, in words (None: nothing worth a note)."""
        return {"block_size": self.default_block_size, "max_num_batched_tokens": self.default_max_num_batched_tokens,
                "max_num_seqs": self.default_max_num_seqs}, None

    def resolve_deployment(self, spec: ModelSpec, dep: Deployment, max_model_len: int) -> tuple[Deployment, list[str]]:
        """The deployment with every setting it left to the engine filled in (the one place engine defaults
        are applied: `estimate` calls it, and its Estimate carries the values used); notes say which rule applied."""
        for name, why in self.no_equivalent.items():
            if getattr(dep, name) is not None:
                raise InputError(f"{SETTINGS[name].flag} has no equivalent in {self.name}: {why}")
        values, rule = self.engine_defaults(dep, max_model_len)
        missing = {name: value for name, value in values.items() if getattr(dep, name) is None}
        if not missing:
            return dep, []
        # The rules engines publish are about scheduler limits; a block size default needs no note.
        return replace(dep, **missing), [rule] if rule and missing.keys() - {"block_size"} else []

    def engine_memory(self, gpu: GPU) -> tuple[int, str]:
        """(bytes, basis) of the GPU total this engine sizes from."""
        return gpu.memory_bytes, f"{gpu.name} total"

    def overhead(self, spec: ModelSpec, dep: Deployment, act_elem_bytes: int) -> list[Term]:
        raise NotImplementedError

    def weights_limit_bytes(self, gpu_memory_bytes: int, dep: Deployment) -> int:
        """The most weight bytes per GPU the engine can load: its memory share (vLLM: total x utilization)."""
        return int(gpu_memory_bytes * dep.gpu_memory_utilization)

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

    def max_model_len_refusal(self, spec: ModelSpec, max_model_len: int) -> str | None:
        """Why the engine refuses this max_model_len for this model whatever the memory (None: it accepts it)."""
        return None

    def report(self, stages: list[ModelSpec], budget_bytes: int, kv: KVFormat, dep: Deployment,
               max_model_len: int) -> EngineReport | None:
        """The engine's own start-up figures and lines (None: the policy models no engine log)."""
        return None


def require_kinds(spec: ModelSpec, engine: str) -> None:
    """Fail closed, naming the kind, when `engine` (a policy name, or the runtime) does not model a layer kind."""
    for g in spec.groups:
        if engine not in g.engines:
            modelled = f"; modelled by: {', '.join(sorted(g.engines))}" if g.engines else ""
            raise UnsupportedModelError(f"{spec.name}: --engine {engine} does not model {g.label} layers "
                                        f"(kind {g.kind!r}){modelled}")
