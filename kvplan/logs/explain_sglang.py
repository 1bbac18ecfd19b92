"""SGLang's start-up log replayed through SGLang's own pool arithmetic, from the log's own figures.

SGLang logs the free memory before loading ("Load weight begin. avail mem", CUDA context and NCCL
already taken), after it ("Load weight end. ... avail mem") and `mem_fraction_static` (server_args),
and sizes the pool from the smallest of each over the ranks: `rest = after - before x (1 -
mem_fraction_static)`, `max_total_num_tokens = rest // cell_size` (policies/sglang.py). Every input
of the replay is the log's: no --weights, no --non-torch-memory, no tp arithmetic. A note gives the
`kvplan estimate` flags that reproduce the same pool from the same figures.
"""

from ..model import LoadedModel
from ..plan.deployment import Deployment, pp_partition
from ..plan.dtype_plan import dtype_plan
from ..plan.policies import get_policy
from ..plan.policies.sglang import (SGLANG_PAGE_SIZE, kv_pool_sizes_gib, max_total_num_tokens, rest_bytes,
                                    split_swa_pool)
from ..plan.policies.vllm_load_extras import load_extra_terms
from ..plan.weights import weight_bytes
from ..units import GiB
from .rows import LOG_QUANTUM_GIB, LogExplanation, Row, gib_row
from .startup import StartupLog

# SGLang's "mem usage" is free memory before minus after loading: the weights plus what the loader keeps
# besides (rotary caches, allocator rounding): 0.11-0.24 GiB on the collected logs.
LOADER_SLACK_GIB = 0.30
# The pool is sized from SGLang's own free-memory reading taken after "Load weight end" printed its figure; what
# is allocated in between (16-20 MiB on the 2026 builds' Qwen3 logs) shifts it beyond the 0.01 GiB print rounding.
# A token count within the rounding range, or within this fraction of the logged count, agrees.
TOKENS_TOLERANCE = 0.0015


def explain_sglang(log: StartupLog, model: LoadedModel, dep: Deployment, settings: dict) -> LogExplanation:
    spec = model.spec
    policy = get_policy(dep.engine).bind(spec, model.config)
    dtypes = dtype_plan(spec, dep.weight_dtype)
    kv = dtypes.kv(dep.kv_dtype)
    stages = [spec.restricted_to(set(r)) for r in pp_partition(spec.num_layers, dep.pp)]
    stage = max(stages, key=lambda s: policy.cell_bytes(s, kv, dep))
    cell = policy.cell_bytes(stage, kv, dep)
    st, sg = log.settings, log.sglang
    page = _int_setting(st, "page_size") or SGLANG_PAGE_SIZE
    cap = _int_setting(st, "max_total_tokens")
    out = LogExplanation("sglang", policy.version, spec.name, settings, missing=list(log.missing))
    fraction = None if "mem_fraction_static" in log.missing else dep.gpu_memory_utilization
    out.settings.update(gpu_memory_utilization=fraction, mem_fraction_static=fraction, cell_bytes=cell,
                        page_size=page, max_total_tokens=cap)
    _weights_row(out, log, model, dep, dtypes)
    if "mem_fraction_static" in log.missing:
        out.notes.append("the log prints no mem_fraction_static (server_args): pass --gpu-memory-utilization with "
                         "the value the server used; SGLang's default depends on its version, the GPU and tp, and "
                         "kvplan does not guess it")
    elif "before_gib" in sg and "after_gib" in sg and "tokens" in sg:
        swa_ratio = _swa_ratio(st, stage) if policy.hybrid_swa_pool() else None

        def tokens_at(before_gib: float, after_gib: float) -> int:
            rest = rest_bytes(int(before_gib * GiB), int(after_gib * GiB), fraction)
            tokens = max_total_num_tokens(rest, cell, page, cap)
            return tokens if swa_ratio is None else split_swa_pool(stage, tokens, page, swa_ratio)[0]

        before, after, q = sg["before_gib"], sg["after_gib"], LOG_QUANTUM_GIB
        predicted = tokens_at(before, after)
        rest_gib = after - before * (1 - fraction)
        extra = f", capped at --max-total-tokens {cap:,}" if cap is not None else ""
        if swa_ratio is not None:
            extra += f"; the full-attention share of a hybrid SWA pool (swa_full_tokens_ratio {swa_ratio:g})"
        basis = (f"rest = {after:.2f} - {before:.2f} x (1 - {fraction!r}) = {rest_gib:.4f} GiB; // {cell:,} B per "
                 f"token{extra}")
        out.rows.append(_tokens_row(sg["tokens"], predicted, tokens_at(before + q, after - q),
                                    tokens_at(before - q, after + q), basis))
        out.notes.append(_estimate_replay(_model_ref(spec), before, after, fraction, page, dep, cap))
    if str(st.get("enable_dp_attention")) == "True":
        out.notes.append(f"DP attention (dp_size {st.get('dp_size')}): SGLang spreads KV heads over tp / dp attention "
                         "ranks, not tp; kvplan sized the cell with --tp (give --tp tp/dp for an MHA model; MLA is "
                         "the same on every rank)")
    if _given(st, "speculative_algorithm"):
        out.notes.append(f"speculative decoding ({st['speculative_algorithm']}): the draft model's KV shares this "
                         "budget in SGLang (0.4 raises the target pool by max_num_reqs x (steps x topk + draft tokens) + "
                         "100, the 2026 builds scale cell_size by 1 + draft layers / layers); kvplan sizes the "
                         "target pool alone")
    if "tokens" in sg:
        sizes = kv_pool_sizes_gib(stage, sg["tokens"], page, kv, dep.tp)
        for key, label in (("k_size_gib", "K size (GiB, printed GB)"), ("v_size_gib", "V size (GiB, printed GB)"),
                           ("kv_size_gib", "KV size (GiB, printed GB)")):
            if key in sg and key in sizes:
                text = f"{sizes[key]:.2f}"
                out.rows.append(Row(label, f"{sg[key]:.2f}", text, f"{float(text) - sg[key]:+.2f}",
                                    abs(float(text) - sg[key]) < 1e-9, "(#tokens + page) x cell"))
    return out


def _tokens_row(logged: int, predicted: int, low: int, high: int, basis: str) -> Row:
    low, high = min(low, high), max(low, high)
    error = (predicted - logged) / logged
    agrees = low <= logged <= high or abs(error) <= TOKENS_TOLERANCE
    return Row("max_total_num_tokens", f"{logged:,}", f"{predicted:,} (range {low:,}..{high:,})",
               f"{predicted - logged:+,} ({error:+.3%})", agrees,
               f"{basis} (agrees within the print rounding or {TOKENS_TOLERANCE:.2%})")


def _weights_row(out: LogExplanation, log: StartupLog, model: LoadedModel, dep: Deployment, dtypes) -> None:
    if log.weights_gib is None:
        return
    loaded = log.sglang.get("architecture")
    if loaded and loaded not in ((model.config or {}).get("architectures") or [loaded]):
        out.notes.append(f"the log loaded {loaded}, not {model.spec.name}'s architecture: its weights are not compared "
                         "(the pool needs only the KV layout)")
        return
    if _given(log.settings, "kt_weight_path"):
        out.notes.append("experts offloaded to the CPU (ktransformers kt_weight_path): the logged mem usage is the "
                         "GPU-resident rest of the model, not its weights; the pool replay does not need them")
        return
    weights = weight_bytes(model, dtypes.weights, dep.weights_bytes)
    if weights.total_bytes is None:
        return
    spec = model.spec
    vision = load_extra_terms(spec, model.config, dep, dtypes.act_elem_bytes)[1:]  # the vision encoder, if any
    basis = weights.basis + "".join(f" + {t.name} {t.bytes / GiB:.2f} GiB" for t in vision if t.bytes)
    out.rows.append(gib_row("weights per GPU (GiB; the free-memory drop while loading)", log.weights_gib,
                            -(-weights.total_bytes // dep.num_gpus) + sum(t.bytes for t in vision), basis,
                            LOADER_SLACK_GIB))


def _estimate_replay(model: str, before: float, after: float, fraction: float, page: int, dep: Deployment,
                     cap: int | None) -> str:
    """The `kvplan estimate` flags that size the same pool from the log's figures."""
    gpus = dep.num_gpus
    flags = [f"--engine sglang --gpu-memory {before:.2f}GiB --non-torch-memory 0",
             f"--weights {(before - after) * gpus:.2f}GiB", f"--gpu-memory-utilization {fraction!r}",
             f"--block-size {page}", f"--tp {dep.tp}"]
    if dep.pp > 1:
        flags.append(f"--pp {dep.pp}")
    if dep.kv_dtype not in (None, "auto"):
        flags.append(f"--kv-dtype {dep.kv_dtype}")
    tail = f"; the log's --max-total-tokens {cap:,} caps the pool, which estimate does not" if cap is not None else ""
    return (f"the same pool from `kvplan estimate {model} {' '.join(flags)}`: the free memory before load stands for "
            f"the GPU (nothing is subtracted from it again) and --weights is the whole model, the per-GPU drop while "
            f"loading ({before - after:.2f} GiB) x tp x pp = {gpus}{tail}")


def _swa_ratio(settings: dict, stage) -> float | None:
    """SGLang's hybrid SWA pool splits the tokens where the build has one (its server_args carry
    swa_full_tokens_ratio) and the model has sliding-window layers; earlier builds keep one pool."""
    if not _given(settings, "swa_full_tokens_ratio") or str(settings.get("disable_hybrid_swa_memory")) == "True":
        return None
    if not any(g.sglang_swa_pool() for g in stage.kv_groups()):
        return None
    return float(settings["swa_full_tokens_ratio"])


def _model_ref(spec) -> str:
    """How `kvplan estimate` is given the same model: its config path, cache id or bundled name."""
    kind, _, ref = spec.source.partition(":")
    return ref if kind in ("config", "cache") and ref else spec.name


def _given(settings: dict, key: str) -> bool:
    return settings.get(key) not in (None, "None", "")


def _int_setting(settings: dict, key: str) -> int | None:
    value = settings.get(key)
    return int(value) if _given(settings, key) and str(value).isdigit() else None
