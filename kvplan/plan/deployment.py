"""Deployment: where and how a model is served. Validated on construction.

Each field's `Setting` (its metadata) is the one declaration of that setting: the key it has in
deployment files and as a flag (`--key-with-dashes`), its help, what kind of value it is and its
plausible bound. The CLI (kvplan/cli/options.py) and deployment files (kvplan/deploy/fields.py)
are built from `SETTINGS`; a default is the dataclass default, written here only. A setting whose
default depends on the serving engine is None until construction, when the engine policy fills it
in (`EnginePolicy.defaults`): "not given" means "the engine's default".
"""

from dataclasses import dataclass, field, fields, replace

from ..errors import InputError
from ..hardware import GPU

DEPLOY_PANEL = "Deployment"
BUDGET_PANEL = "Budget overrides"
TOKENS_MAX = 1 << 30  # the most tokens any length setting may name (models reach ~10M)


@dataclass(frozen=True)
class Setting:
    """How one Deployment field is written down (by a user, on the command line or in a file)."""

    key: str  # deployment-file key; the flag is --key-with-dashes
    help: str
    kind: str  # count, tokens (accepts 32k), fraction, size (accepts 80GiB), text or gpu
    panel: str = DEPLOY_PANEL
    maximum: int | None = None  # plausible upper bound of a count or token length
    in_file: bool = True  # False: a deployment file states it as a requirement instead (context, batch)
    engine_default: bool = False  # None means the engine's default, filled in by its policy
    name: str = ""  # the Deployment field (set from the dataclass below)
    default: object = None  # the dataclass default (set from the dataclass below)

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


def _setting(default, key: str, help: str, kind: str, **kw):
    return field(default=default, metadata={"setting": Setting(key, help, kind, **kw)})


@dataclass(frozen=True)
class Deployment:
    # None: no GPU given, so per-GPU budget figures are left out
    gpu: GPU | None = _setting(None, "gpu", "GPU from the catalog: H100, A100-80GB, L40S, ... (`kvplan gpus`)", "gpu")
    tp: int = _setting(1, "tp", "Tensor-parallel size", "count", maximum=1024)
    pp: int = _setting(1, "pp", "Pipeline-parallel size", "count", maximum=1024)
    weight_dtype: str | None = _setting(None, "dtype", "Weights: bf16 fp16 fp32 fp8 int8 int4 awq gptq mxfp4 nvfp4 "
                                        "(default: the checkpoint's)", "text")
    kv_dtype: str = _setting("auto", "kv_dtype", "KV cache: auto (the weights' compute dtype) fp32 bf16 fp16 fp8 "
                             "fp8_e4m3 fp8_e5m2 int8 int4 nvfp4 mxfp4", "text")
    max_model_len: int | None = _setting(None, "max_model_len", "Longest request the engine accepts (default: the "
                                         "model's max)", "tokens", maximum=TOKENS_MAX)
    context_tokens: int | None = _setting(None, "context", "Tokens per request (default: max_model_len); "
                                          "32k = 32768", "tokens", maximum=TOKENS_MAX, in_file=False)
    batch: int = _setting(1, "batch", "Concurrent requests to plan for", "count", maximum=1 << 20, in_file=False)
    gpu_memory_utilization: float = _setting(0.9, "gpu_memory_utilization", "Fraction of GPU memory the engine may "
                                             "use: vLLM's gpu_memory_utilization, each engine's own fraction "
                                             "(estimate notes which)",
                                             "fraction")
    block_size: int | None = _setting(None, "block_size", "Tokens per KV block", "count", maximum=1 << 16,
                                      engine_default=True)
    max_num_batched_tokens: int | None = _setting(None, "max_num_batched_tokens", "Tokens per scheduler step "
                                                  "(sizes the activation peak)", "tokens", maximum=TOKENS_MAX,
                                                  engine_default=True)
    max_num_seqs: int | None = _setting(None, "max_num_seqs", "Most requests in one step", "count",
                                        maximum=1 << 20, engine_default=True)
    weights_bytes: int | None = _setting(None, "weights", "Weight size of the whole model, e.g. 16GB (overrides "
                                         "the parameter count)", "size", panel=BUDGET_PANEL)
    overhead_bytes: int | None = _setting(None, "overhead", "Replace the overhead model (per GPU)", "size",
                                          panel=BUDGET_PANEL)
    activation_bytes: int | None = _setting(None, "activation_memory", "Activation peak per GPU", "size",
                                            panel=BUDGET_PANEL)
    non_torch_bytes: int | None = _setting(None, "non_torch_memory", "CUDA context / NCCL memory per GPU", "size",
                                           panel=BUDGET_PANEL)
    cuda_graph_bytes: int | None = _setting(None, "cuda_graph_memory", "CUDA graph memory per GPU", "size",
                                            panel=BUDGET_PANEL)
    kv_cache_memory_bytes: int | None = _setting(None, "kv_cache_memory", "KV budget per GPU, given directly "
                                                 "(vLLM --kv-cache-memory-bytes)", "size", panel=BUDGET_PANEL)
    engine: str = _setting("generic", "engine", "Budget semantics: generic vllm sglang trtllm transformers "
                           "(NAME@VERSION picks a version's)", "text")

    def __post_init__(self):
        for s in SETTINGS.values():
            value = getattr(self, s.name)
            if s.kind in ("count", "tokens") and value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise InputError(f"{s.flag} must be a positive integer, got {value!r}")
                if value > s.maximum:
                    raise InputError(f"{s.flag}: {value:,} is implausibly large (at most {s.maximum:,})")
            elif s.kind == "size" and value is not None and value < 0:
                raise InputError(f"{s.flag} must not be negative")
        util = self.gpu_memory_utilization
        if isinstance(util, bool) or not isinstance(util, (int, float)) or not (0.0 < util <= 1.0):
            raise InputError(f"--gpu-memory-utilization must be in (0, 1], got {util!r}")
        from .policies import get_policy  # policies import this module

        for name, value in get_policy(self.engine).defaults(self).items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)

    @property
    def num_gpus(self) -> int:
        return self.tp * self.pp


SETTINGS: dict[str, Setting] = {
    f.name: replace(f.metadata["setting"], name=f.name, default=f.default) for f in fields(Deployment)
}
ENGINE_DEFAULTS = tuple(s.name for s in SETTINGS.values() if s.engine_default)


def pp_partition(num_layers: int, pp: int) -> list[range]:
    """Layers per pipeline stage as vLLM splits them: even, remainder to the stages before the last."""
    if pp > num_layers:
        raise InputError(f"--pp {pp} exceeds the model's {num_layers} layers")
    per_stage = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        per_stage[-i] += 1
    stages, start = [], 0
    for count in per_stage:
        stages.append(range(start, start + count))
        start += count
    return stages
