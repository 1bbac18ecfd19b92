"""`estimate`: pure arithmetic from a model and a deployment to bytes, blocks and users."""

from dataclasses import asdict, dataclass, field, replace

from ..errors import InputError
from ..model import LoadedModel, ModelSpec, ceil_bytes
from ..units import fmt_gib
from .deployment import Deployment, pp_partition
from .dtype_plan import FLOAT_DTYPES, dtype_plan
from .policies import EnginePolicy, get_policy
from .overhead import Term
from .weights import weight_bytes

TABLE_CONTEXTS = (1024, 4096, 8192, 32768, 131072)


@dataclass(frozen=True)
class ContextRow:
    context_tokens: int
    kv_bytes_per_request: int  # whole model
    kv_bytes_per_request_per_gpu: int
    max_concurrent_users: int | None  # None without a budget


@dataclass(frozen=True)
class Estimate:
    model: str
    model_source: str
    layout: str
    engine: str
    engine_version: str
    deployment: dict
    kv_dtype: str
    weights_dtype: str
    context_tokens: int
    max_model_len: int
    batch: int
    kv_bytes_per_token: int
    kv_bytes_per_request: int
    kv_bytes_total: int
    kv_bytes_per_token_per_gpu: int
    kv_bytes_per_request_per_gpu: int
    state_bytes_per_request: int
    weights_bytes: int | None
    weights_bytes_per_gpu: int | None
    weights_basis: str
    gpu: str | None
    gpu_memory_bytes: int | None
    overhead: list[dict]
    kv_budget_bytes: int | None
    num_blocks: int | None
    block_size: int
    kv_cache_tokens: int | None
    max_concurrency: float | None
    max_concurrent_users: int | None
    max_context_tokens: int | None
    contexts: list[ContextRow]
    fits: bool | None
    verdict: str
    suggestions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    engine_report: dict | None = None  # the engine's own predicted start-up figures and lines (not generic)

    def to_dict(self) -> dict:
        return asdict(self)


def estimate(model: LoadedModel, dep: Deployment) -> Estimate:
    spec = model.spec
    policy = get_policy(dep.engine).bind(spec)
    notes: list[str] = []
    dtypes = dtype_plan(spec, dep.weight_dtype, notes)
    kv = dtypes.kv(dep.kv_dtype)
    max_model_len = _max_model_len(spec, dep, notes)
    context = dep.context_tokens or max_model_len
    _check_parallelism(spec, dep)

    block_size = policy.block_size(spec, dep)
    stages = pipeline_stages(spec, dep.pp)
    whole_per_token = spec.bytes_per_token(kv)
    per_gpu_per_token = max(s.bytes_per_token(kv, dep.tp) for s in stages)
    bottleneck = max(stages, key=lambda s: policy.request_bytes(s, context, kv, dep))
    per_request_whole = spec.bytes_per_request(context, kv, 1, block_size, dep.max_num_batched_tokens)

    weights = weight_bytes(model, dtypes.weights, dep.weights_bytes)
    weights_per_gpu = -(-weights.total_bytes // dep.num_gpus) if weights.total_bytes is not None else None
    gpu_memory = dep.gpu.memory_bytes if dep.gpu else None
    terms = policy.overhead(spec, dep, dtypes.act_elem_bytes)

    budget = _budget(policy, gpu_memory, weights_per_gpu, terms, dep, notes)
    fraction, of_what = policy.memory_fraction
    if budget is not None and dep.kv_cache_memory_bytes is None and fraction != "gpu_memory_utilization":
        notes.append(f"{policy.name} reads --gpu-memory-utilization {dep.gpu_memory_utilization:g} as its {fraction}, "
                     f"a fraction of {of_what}")
    pool = policy.pool(bottleneck, budget, kv, dep) if budget is not None else None
    users = mcc = max_ctx = longest_single = None
    if pool is not None:
        users = min(policy.max_users(s, policy.pool(s, budget, kv, dep), context, kv, dep) for s in stages)
        mcc = min(policy.max_concurrency(s, policy.pool(s, budget, kv, dep), max_model_len, kv, dep) for s in stages)
        max_ctx = _max_context(policy, stages, budget, kv, dep, max_model_len, dep.batch)
        longest_single = _max_context(policy, stages, budget, kv, dep, max_model_len, 1)

    rows = [_row(policy, spec, stages, budget, kv, dep, c, block_size)
            for c in _table_contexts(max_model_len, context)]
    fits, verdict, suggestions = _verdict(
        dep, weights_per_gpu=weights_per_gpu, gpu_memory=gpu_memory, budget=budget, users=users, context=context,
        max_ctx=max_ctx, longest_single=longest_single, max_model_len=max_model_len, kv=kv,
        weights_quantized=dtypes.weights_label not in FLOAT_DTYPES,
        weights_limit=policy.weights_limit_bytes(gpu_memory, dep) if gpu_memory is not None else None)
    report = policy.report(stages, budget, kv, dep, max_model_len) if budget is not None else None
    if report is not None and report.lines:
        notes.append(f"{policy.name} {policy.version} would log: " + " | ".join(report.lines))
    if report is not None and report.refusal:
        fits, verdict = False, f"{policy.name} {policy.version} would refuse to start: {report.refusal}"
    elif report is not None and "kv_cache_tokens" in report.figures:  # the engine's own figures, as it logs them
        pool = replace(pool, num_blocks=report.figures["num_blocks"], kv_cache_tokens=report.figures["kv_cache_tokens"])
        mcc = report.figures["max_concurrency"]
    return Estimate(
        model=spec.name, model_source=spec.source, layout=spec.layout(), engine=policy.name,
        engine_version=policy.version, deployment=_deployment_dict(dep), kv_dtype=kv.name, weights_dtype=weights.dtype,
        context_tokens=context, max_model_len=max_model_len, batch=dep.batch,
        kv_bytes_per_token=ceil_bytes(whole_per_token), kv_bytes_per_request=per_request_whole,
        kv_bytes_total=per_request_whole * dep.batch,
        kv_bytes_per_token_per_gpu=ceil_bytes(per_gpu_per_token),
        kv_bytes_per_request_per_gpu=max(policy.request_bytes(s, context, kv, dep) for s in stages),
        state_bytes_per_request=spec.state_bytes(kv),
        weights_bytes=weights.total_bytes, weights_bytes_per_gpu=weights_per_gpu, weights_basis=weights.basis,
        gpu=dep.gpu.name if dep.gpu else None, gpu_memory_bytes=gpu_memory,
        overhead=[asdict(t) for t in terms] if budget is not None and dep.kv_cache_memory_bytes is None else [],
        kv_budget_bytes=budget, num_blocks=pool.num_blocks if pool else None, block_size=block_size,
        kv_cache_tokens=pool.kv_cache_tokens if pool else None, max_concurrency=mcc, max_concurrent_users=users,
        max_context_tokens=max_ctx, contexts=rows, fits=fits, verdict=verdict, suggestions=suggestions, notes=notes,
        engine_report=asdict(report) if report is not None else None,
    )


def pipeline_stages(spec: ModelSpec, pp: int) -> list[ModelSpec]:
    """Each pipeline stage's layers as a model of their own (vLLM's split, `pp_partition`)."""
    return [spec.restricted_to(set(r)) for r in pp_partition(spec.num_layers, pp)]


def within_model_max(spec: ModelSpec, tokens: int) -> bool:
    """Whether `tokens` is within the model's max_position_embeddings (yes when it is unknown)."""
    return not spec.max_position_embeddings or tokens <= spec.max_position_embeddings


def _max_model_len(spec: ModelSpec, dep: Deployment, notes: list[str]) -> int:
    model_max = spec.max_position_embeddings
    if dep.max_model_len is not None:
        if not within_model_max(spec, dep.max_model_len):
            notes.append(f"max_model_len {dep.max_model_len:,} exceeds the model's max_position_embeddings "
                         f"{model_max:,} (vLLM refuses this unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1)")
        return dep.max_model_len
    if model_max:
        return model_max
    if dep.context_tokens:
        return dep.context_tokens
    raise InputError("the model has no max_position_embeddings: give --max-model-len or --context")


def _check_parallelism(spec: ModelSpec, dep: Deployment) -> None:
    heads = spec.num_attention_heads
    if heads and heads % dep.tp:
        raise InputError(f"--tp {dep.tp} does not divide the model's {heads} attention heads")
    for g in spec.kv_groups():
        kv_heads = g.tp_split_kv_heads
        if kv_heads is None:
            continue
        if (dep.tp <= kv_heads and kv_heads % dep.tp) or (dep.tp > kv_heads and dep.tp % kv_heads):
            raise InputError(f"--tp {dep.tp} and the model's {kv_heads} KV heads do not divide one another")
    pp_partition(spec.num_layers, dep.pp)


def _budget(policy: EnginePolicy, gpu_memory: int | None, weights_per_gpu: int | None, terms: list[Term],
            dep: Deployment, notes: list[str]) -> int | None:
    if dep.kv_cache_memory_bytes is not None:
        return dep.kv_cache_memory_bytes
    if gpu_memory is None:
        notes.append("no GPU given (--gpu NAME, --gpu auto or --gpu-memory SIZE): per-GPU budget and users left out")
        return None
    if weights_per_gpu is None:
        notes.append("weights unknown (raw numbers or an uncounted architecture): give --weights SIZE or "
                     "--kv-cache-memory SIZE for budget and users")
        return None
    if any(t.bytes is None for t in terms):
        unknown = ", ".join(t.name for t in terms if t.bytes is None)
        notes.append(f"overhead term unknown ({unknown}): give --overhead SIZE or --kv-cache-memory SIZE")
        return None
    return policy.kv_budget(gpu_memory, weights_per_gpu, terms, dep)


def _max_context(policy: EnginePolicy, stages: list[ModelSpec], budget: int, kv, dep: Deployment, max_model_len: int,
                 batch: int) -> int:
    """Largest context (<= max_model_len) for which `batch` requests fit on every stage."""
    pools = [(s, policy.pool(s, budget, kv, dep)) for s in stages]

    def fits(tokens: int) -> bool:
        return all(batch * policy.request_bytes(s, tokens, kv, dep) <= p.usable_bytes for s, p in pools)

    if not fits(1):
        return 0
    lo, hi = 1, max_model_len
    while lo < hi:  # request bytes never shrink as context grows, so the predicate is monotone
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _table_contexts(max_model_len: int, context: int) -> list[int]:
    contexts = {c for c in TABLE_CONTEXTS if c <= max_model_len} | {max_model_len, context}
    return sorted(contexts)


def _row(policy, spec, stages, budget, kv, dep, context, block_size) -> ContextRow:
    per_gpu = max(policy.request_bytes(s, context, kv, dep) for s in stages)
    users = None
    if budget is not None:
        users = min(policy.max_users(s, policy.pool(s, budget, kv, dep), context, kv, dep) for s in stages)
    return ContextRow(context, spec.bytes_per_request(context, kv, 1, block_size, dep.max_num_batched_tokens),
                      per_gpu, users)


def _verdict(dep: Deployment, *, weights_per_gpu, gpu_memory, budget, users, context, max_ctx, longest_single,
             max_model_len, kv, weights_quantized, weights_limit) -> tuple[bool | None, str, list[str]]:
    """Fits or not, in words, with the knobs that would change the answer. Checks run from the most
    basic (do the weights fit) to the most specific (does the asked batch fit)."""
    if budget is None:
        return None, "KV figures only: " + ("no GPU given" if gpu_memory is None and dep.kv_cache_memory_bytes is None
                                              else "weights or overhead unknown"), []
    quantize = "" if weights_quantized else ", or quantize the weights (--dtype fp8 / awq)"
    if gpu_memory is not None and weights_per_gpu is not None and dep.kv_cache_memory_bytes is None:
        usable = weights_limit
        if weights_per_gpu >= usable:
            need_gpus = -(-weights_per_gpu * dep.num_gpus // usable)
            share = (f"{dep.gpu_memory_utilization:g} x {fmt_gib(gpu_memory)}" if usable < gpu_memory
                     else "the whole GPU")
            return False, (f"does not fit: weights take {fmt_gib(weights_per_gpu)} per GPU, more than the "
                           f"{fmt_gib(usable)} usable ({share})"), [
                f"the weights alone need at least {need_gpus} such GPUs (more with activations and KV): raise --tp"
                f" or --pp{quantize}"]
    if budget <= 0:
        if dep.kv_cache_memory_bytes is not None:
            return False, "does not fit: --kv-cache-memory leaves no memory for KV", ["give a positive --kv-cache-memory"]
        return False, f"does not fit: no memory left for KV ({fmt_gib(budget)} after weights and overhead)", [
            f"raise --gpu-memory-utilization or --tp{quantize}"]
    if context > max_model_len:
        return False, f"does not fit: context {context:,} exceeds max_model_len {max_model_len:,}", [
            "raise --max-model-len (up to what the model supports) or shorten --context"]
    if longest_single is not None and longest_single < max_model_len:
        return False, (f"does not fit: one request of max_model_len {max_model_len:,} tokens needs more KV than "
                       "the budget holds (an engine refuses to start)"), [
            f"--max-model-len {longest_single:,} or less fits" if longest_single else "no request fits at all",
            "a larger --tp or GPU adds KV budget"]
    if users is None or users < dep.batch:
        suggestions = []
        if max_ctx:
            suggestions.append(f"at batch {dep.batch}, the longest context that fits is {max_ctx:,} tokens")
        suggestions.append(f"at {context:,} tokens, {users or 0} concurrent requests fit")
        if kv.fmt.bits > 8:
            suggestions.append(f"--kv-dtype fp8 cuts KV bytes per token {kv.fmt.bits // 8}x")
        suggestions.append("a larger --tp or GPU adds KV budget")
        return False, f"does not fit: {users or 0} requests of {context:,} tokens fit, {dep.batch} asked", suggestions
    if dep.batch > dep.max_num_seqs:
        return False, (f"does not fit: batch {dep.batch} exceeds --max-num-seqs {dep.max_num_seqs}, the most requests "
                       "an engine runs at once"), ["raise --max-num-seqs"]
    capped = f" (memory; the engine runs at most --max-num-seqs {dep.max_num_seqs})" if users > dep.max_num_seqs else ""
    return True, f"fits: {dep.batch} x {context:,}-token requests; up to {users:,} concurrent at this context{capped}", []


def _deployment_dict(dep: Deployment) -> dict:
    d = asdict(dep)
    d["gpu"] = dep.gpu.name if dep.gpu else None
    return d
