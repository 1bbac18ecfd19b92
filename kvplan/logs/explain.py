"""Compare an engine's start-up log with kvplan's prediction for the same settings.

`explain_log(log, model, settings)` feeds the memory the engine reported as available for KV into
the engine's policy and sets each logged figure beside the predicted one. Logged memory is rounded
to 0.01 GiB, so every prediction made from it carries one rounding quantum: the figure is computed
at the low and high ends of the rounding interval too, and "agrees" means the logged value lies in
that range. The memory the engine would report is also predicted from kvplan's own overhead model
when the GPU is known, to show how far the budget model is from that run.
"""

from dataclasses import asdict, dataclass, field

from ..plan.dtype_plan import dtype_plan
from ..errors import InputError
from ..model import LoadedModel
from ..units import GiB
from ..plan.deployment import Deployment, pp_partition
from ..plan.policies import get_policy
from ..plan.policies.sglang import kv_pool_sizes_gib, max_total_num_tokens, rest_bytes
from .startup import StartupLog
from ..plan.weights import weight_bytes

LOG_QUANTUM_GIB = 0.005  # half of the 0.01 GiB the engines print


@dataclass(frozen=True)
class Row:
    figure: str
    logged: str
    predicted: str
    difference: str
    agrees: bool | None  # None: nothing to compare
    basis: str


@dataclass
class LogExplanation:
    engine: str
    engine_version: str
    model: str
    settings: dict
    rows: list[Row] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    predicted_lines: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def explain_log(log: StartupLog, model: LoadedModel, dep: Deployment, max_model_len: int) -> LogExplanation:
    if log.engine == "sglang":
        return _explain_sglang(log, model, dep)
    return _explain_vllm(log, model, dep, max_model_len)


def vllm_version_for(log: StartupLog) -> str | None:
    """The policy version a vLLM log asks for: its printed version, or V0 when it uses V0 templates."""
    if log.generation == "v0":
        return "v0"
    return log.version


def _stage_budgets(log: StartupLog, dep: Deployment) -> list[int] | None:
    """Each pipeline stage's available KV bytes: the smallest value its workers logged (or the refusal's)."""
    if not log.available_kv_gib:
        if log.refusal and log.refusal.get("available_gib") is not None:
            return [int(round(log.refusal["available_gib"] * GiB))] * dep.pp
        return None
    per_stage: dict[int, float] = {}
    for w in log.available_kv_gib:
        if w.pp_rank is not None:
            stage = w.pp_rank
        elif w.global_rank is not None and w.label:
            stage = w.global_rank // dep.tp
        else:
            continue
        if stage < dep.pp:
            per_stage[stage] = min(per_stage.get(stage, float("inf")), w.value)
    overall = log.min_available_kv_gib()
    return [int(round(per_stage.get(s, overall) * GiB)) for s in range(dep.pp)]


def _explain_vllm(log: StartupLog, model: LoadedModel, dep: Deployment, max_model_len: int) -> LogExplanation:
    spec = model.spec
    policy = get_policy(dep.engine).bind(spec)
    dtypes = dtype_plan(spec, dep.weight_dtype)
    kv = dtypes.kv(dep.kv_dtype)
    stages = [spec.restricted_to(set(r)) for r in pp_partition(spec.num_layers, dep.pp)]
    out = LogExplanation("vllm", policy.version, spec.name, _settings(dep, max_model_len, kv.name), missing=list(log.missing))

    weights = weight_bytes(model, dtypes.weights, dep.weights_bytes)
    weights_per_gpu = None if weights.total_bytes is None else -(-weights.total_bytes // dep.num_gpus)
    if log.weights_gib is not None and weights_per_gpu is not None:
        out.rows.append(_gib_row("weights per GPU (GiB)", log.weights_gib, weights_per_gpu, weights.basis))

    total_bytes = int(round(log.total_gpu_gib * GiB)) if log.total_gpu_gib else (dep.gpu.memory_bytes if dep.gpu else None)
    budgets = _stage_budgets(log, dep)
    if total_bytes is not None and weights_per_gpu is not None:
        terms = policy.overhead(spec, dep, dtypes.act_elem_bytes)
        if all(t.bytes is not None for t in terms):
            model_budget = policy.kv_budget(total_bytes, weights_per_gpu, terms, _without_budget(dep))
            if budgets:
                out.rows.append(_gib_row("available KV memory (GiB)", min(budgets) / GiB, model_budget,
                                         "overhead model"))
            else:
                out.notes.append(f"kvplan's overhead model predicts {model_budget / GiB:.2f} GiB available for KV")
    if budgets is None and dep.kv_cache_memory_bytes is not None:
        budgets = [dep.kv_cache_memory_bytes] * dep.pp
    if budgets is None:
        if log.kv_cache_tokens is not None and log.generation != "v0":
            _consistency_rows(out, log, policy, stages, kv, dep, max_model_len)
        else:
            out.notes.append("no 'Available KV cache memory' line: token and concurrency figures cannot be compared "
                             "(pass --kv-cache-memory SIZE to use a known budget)")
        return out
    low = [max(b - int(LOG_QUANTUM_GIB * GiB), 0) for b in budgets]
    high = [b + int(LOG_QUANTUM_GIB * GiB) for b in budgets]
    out.notes.append(f"predictions use the logged available memory; ranges cover its rounding (+/- {LOG_QUANTUM_GIB} "
                     f"GiB) under {policy.name} {policy.version} semantics")

    report = policy.report_for_budgets(stages, budgets, kv, dep, max_model_len)
    lo_report = policy.report_for_budgets(stages, low, kv, dep, max_model_len)
    hi_report = policy.report_for_budgets(stages, high, kv, dep, max_model_len)
    out.predicted_lines = list(report.lines) + ([report.refusal] if report.refusal else [])
    basis = "logged available"
    if log.refusal and "needed_gib" in log.refusal:
        _refusal_rows(out, log, policy, stages, budgets, low, high, kv, dep, max_model_len)
        return out
    fig, lo, hi = report.figures, lo_report.figures, hi_report.figures
    if not fig.get("num_blocks"):  # V1 refused: nothing allocated
        out.rows.append(Row("start-up", "refused" if log.refusal else "started", "refused", "",
                            bool(log.refusal), report.refusal or ""))
        return out
    if log.kv_cache_tokens is not None and log.generation != "v0":
        out.rows.append(_int_row("GPU KV cache size (tokens)", log.kv_cache_tokens, fig["kv_cache_tokens"],
                                 lo["kv_cache_tokens"], hi["kv_cache_tokens"], basis))
    if log.num_gpu_blocks is not None:
        out.rows.append(_int_row("GPU blocks", log.num_gpu_blocks, fig["num_blocks"], lo["num_blocks"],
                                 hi["num_blocks"], basis))
    if log.concurrency is not None:
        out.rows.append(_concurrency_row(log, fig["max_concurrency"], lo["max_concurrency"], hi["max_concurrency"],
                                         basis))
        if log.concurrency_max_model_len not in (None, max_model_len):
            out.notes.append(f"the log's concurrency line is for {log.concurrency_max_model_len:,} tokens but "
                             f"max_model_len {max_model_len:,} was used; pass --max-model-len")
    if log.refusal and "kv_cache_tokens" in log.refusal:
        out.rows.append(_int_row("V0 refusal: tokens the KV cache holds", log.refusal["kv_cache_tokens"],
                                 fig["num_blocks"] * fig["block_size"], lo["num_blocks"] * lo["block_size"],
                                 hi["num_blocks"] * hi["block_size"], basis))
    if log.refusal or report.refusal:
        out.rows.append(Row("refuses to start", "yes" if log.refusal else "no", "yes" if report.refusal else "no", "",
                            bool(log.refusal) == bool(report.refusal), report.refusal or ""))
    return out


def _concurrency_row(log: StartupLog, predicted: float, low: float, high: float, basis: str) -> Row:
    text = f"{predicted:.2f}"
    inside = round(min(low, high), 2) - 1e-9 <= log.concurrency <= round(max(low, high), 2) + 1e-9
    return Row(f"max concurrency @ {log.concurrency_max_model_len:,}", log.concurrency_text + "x", text + "x",
               f"{float(text) - log.concurrency:+.2f}", inside, basis)


def _consistency_rows(out, log, policy, stages, kv, dep, max_model_len) -> None:
    """Without the budget: does one block count explain both the logged tokens and the logged concurrency?"""
    candidates = policy.block_counts_for_tokens(stages[0], log.kv_cache_tokens, kv, dep)
    per_block = policy.block_bytes(stages[0], kv, dep)
    reports = [policy.report_for_budgets(stages, [n * per_block] * len(stages), kv, dep, max_model_len)
               for n in candidates]
    matching = [r for r in reports if r.figures.get("kv_cache_tokens") == log.kv_cache_tokens]
    out.notes.append("no 'Available KV cache memory' line: checking that one block count explains both logged "
                     f"figures ({candidates[0]:,}..{candidates[-1]:,} blocks give {log.kv_cache_tokens:,} tokens)")
    if log.concurrency is not None and matching:
        values = [r.figures["max_concurrency"] for r in matching]
        out.rows.append(_concurrency_row(log, values[len(values) // 2], min(values), max(values),
                                         "block counts that give the logged tokens"))
    out.predicted_lines = list(matching[len(matching) // 2].lines[1:]) if matching else []


def _refusal_rows(out, log, policy, stages, budgets, low, high, kv, dep, max_model_len) -> None:
    stage = max(stages, key=lambda s: policy.needed_bytes(s, max_model_len, kv, dep))
    needed = policy.needed_bytes(stage, max_model_len, kv, dep)
    out.rows.append(_gib_row("KV for one max_model_len request (GiB)", log.refusal["needed_gib"], needed,
                             "sum of per-layer worst cases"))
    budget = min(budgets)
    out.rows.append(Row("refuses to start", "yes", "yes" if needed > budget else "no", "", needed > budget,
                        "needed > available"))
    if log.refusal.get("estimated_max_model_len") is not None:
        best = policy.largest_max_model_len(stage, budget, kv, dep, max_model_len)
        lo = policy.largest_max_model_len(stage, min(low), kv, dep, max_model_len)
        hi = policy.largest_max_model_len(stage, min(high), kv, dep, max_model_len)
        out.rows.append(_int_row("largest max_model_len that fits", log.refusal["estimated_max_model_len"], best,
                                 lo, hi, "binary search, logged available"))
    out.predicted_lines = [f"refuses: {policy._refusal(stages, budgets, kv, dep, max_model_len)}"]


def _explain_sglang(log: StartupLog, model: LoadedModel, dep: Deployment) -> LogExplanation:
    spec = model.spec
    policy = get_policy(dep.engine).bind(spec)
    dtypes = dtype_plan(spec, dep.weight_dtype)
    kv = dtypes.kv(dep.kv_dtype)
    stages = [spec.restricted_to(set(r)) for r in pp_partition(spec.num_layers, dep.pp)]
    stage = max(stages, key=lambda s: policy.cell_bytes(s, kv, dep))
    cell = policy.cell_bytes(stage, kv, dep)
    page = int(log.settings.get("page_size") or 1)
    out = LogExplanation("sglang", policy.version, spec.name, _settings(dep, None, kv.name), missing=list(log.missing))
    out.settings["mem_fraction_static"] = dep.gpu_memory_utilization
    out.settings["cell_bytes"] = cell
    sg = log.sglang
    weights = weight_bytes(model, dtypes.weights, dep.weights_bytes)
    if log.weights_gib is not None and weights.total_bytes is not None:
        out.rows.append(_gib_row("weights per GPU (GiB)", log.weights_gib, -(-weights.total_bytes // dep.num_gpus),
                                 weights.basis))
    if "before_gib" in sg and "after_gib" in sg and "tokens" in sg:
        def tokens_at(before_gib: float, after_gib: float) -> int:
            rest = rest_bytes(int(before_gib * GiB), int(after_gib * GiB), dep.gpu_memory_utilization)
            return max_total_num_tokens(rest, cell, page)

        q = LOG_QUANTUM_GIB
        predicted = tokens_at(sg["before_gib"], sg["after_gib"])
        lo = tokens_at(sg["before_gib"] + q, sg["after_gib"] - q)
        hi = tokens_at(sg["before_gib"] - q, sg["after_gib"] + q)
        out.rows.append(_int_row("max_total_num_tokens", sg["tokens"], predicted, lo, hi,
                                 "rest // cell_size"))
    if "tokens" in sg:
        sizes = kv_pool_sizes_gib(stage, sg["tokens"], page, kv, dep.tp)
        for key, label in (("k_size_gib", "K size (GiB, printed GB)"), ("v_size_gib", "V size (GiB, printed GB)"),
                           ("kv_size_gib", "KV size (GiB, printed GB)")):
            if key in sg and key in sizes:
                text = f"{sizes[key]:.2f}"
                out.rows.append(Row(label, f"{sg[key]:.2f}", text, f"{float(text) - sg[key]:+.2f}",
                                    abs(float(text) - sg[key]) < 1e-9, "(#tokens + page) x cell"))
    return out


def _settings(dep: Deployment, max_model_len: int | None, kv_name: str) -> dict:
    return {"tp": dep.tp, "pp": dep.pp, "max_model_len": max_model_len, "kv_dtype": kv_name,
            "block_size": dep.block_size, "max_num_batched_tokens": dep.max_num_batched_tokens,
            "gpu_memory_utilization": dep.gpu_memory_utilization, "engine": dep.engine}


def _without_budget(dep: Deployment) -> Deployment:
    from dataclasses import replace

    return replace(dep, kv_cache_memory_bytes=None)


def _gib_row(figure: str, logged_gib: float, predicted_bytes: int, basis: str) -> Row:
    predicted = predicted_bytes / GiB
    return Row(figure, f"{logged_gib:.2f}", f"{predicted:.2f}", f"{predicted - logged_gib:+.2f}",
               abs(round(predicted, 2) - logged_gib) < 0.0051, basis)


def _int_row(figure: str, logged: int, predicted: int, low: int | None, high: int | None, basis: str) -> Row:
    agrees = low is not None and high is not None and min(low, high) <= logged <= max(low, high)
    span = f" (range {min(low, high):,}..{max(low, high):,})" if low is not None and high is not None else ""
    return Row(figure, f"{logged:,}", f"{predicted:,}{span}", f"{predicted - logged:+,}", agrees, basis)


def deployment_for_log(log: StartupLog, spec, flags: dict, version: str | None, gpu) -> tuple[Deployment, int]:
    """The deployment the log describes; `flags` (kvplan names) win over what the log says."""
    from ..units import parse_count, parse_size

    st = log.settings
    sglang = log.engine == "sglang"

    def pick(flag: str, *keys: str, default=None):
        if flags.get(flag) is not None:
            return flags[flag]
        for key in keys:
            if st.get(key) not in (None, "None", ""):
                return st[key]
        return default

    max_model_len = pick("max_model_len", "max_model_len", "context_length", "max_seq_len")
    if max_model_len is None:
        max_model_len = (log.concurrency_max_model_len or (log.refusal or {}).get("max_model_len")
                         or log.sglang.get("context_len") or spec.max_position_embeddings)
    if max_model_len is None:
        raise InputError("the log gives no max_model_len and the model has none: pass --max-model-len")
    max_model_len = parse_count(max_model_len, "--max-model-len")
    block_size = flags.get("block_size") or log.forced_block_size or st.get("block_size")  # None: the engine's
    kv_dtype = str(pick("kv_dtype", "kv_cache_dtype", default="auto")).lower()
    engine = "sglang" if sglang else "vllm" + (f"@{version}" if version else "")
    kv_cache_memory = flags.get("kv_cache_memory")
    # V0 without chunked prefill (its default up to 32K) profiles a whole max_model_len prefill.
    v0_batch = max(max_model_len, 2048) if log.generation == "v0" and max_model_len <= 32768 else None
    utilization = pick("gpu_memory_utilization", "mem_fraction_static" if sglang else "gpu_memory_utilization")
    batched_tokens = pick("max_num_batched_tokens", "max_num_batched_tokens", default=v0_batch)
    dep = Deployment(
        gpu=gpu, tp=int(pick("tp", "tp_size" if sglang else "tensor_parallel_size", default=1)),
        pp=int(pick("pp", "pp_size" if sglang else "pipeline_parallel_size", default=1)),
        weight_dtype=flags.get("dtype"), kv_dtype=_KV_NAMES.get(kv_dtype, kv_dtype),
        max_model_len=max_model_len, block_size=None if block_size is None else int(block_size),
        max_num_batched_tokens=None if batched_tokens is None else int(batched_tokens),
        **({} if utilization is None else {"gpu_memory_utilization": float(utilization)}),
        weights_bytes=parse_size(flags["weights"], "--weights") if flags.get("weights") else None,
        kv_cache_memory_bytes=parse_size(kv_cache_memory, "--kv-cache-memory") if kv_cache_memory else None,
        engine=engine)
    return dep, max_model_len


_KV_NAMES = {"fp8_e4m3fn": "fp8_e4m3", "torch.bfloat16": "bf16", "torch.float16": "fp16", "bfloat16": "bf16",
             "float16": "fp16"}


def require_model(log: StartupLog, model: str | None) -> str:
    name = model or log.model
    if not name:
        raise InputError("the log names no model: pass --model NAME (a bundled spec, HF id or config.json)")
    return name
