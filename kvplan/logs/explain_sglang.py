"""SGLang's start-up log against SGLang's pool arithmetic, from the log's own memory figures.

SGLang logs free memory before loading ("Load weight begin. avail mem", the CUDA context already
taken), after it, and the per-rank weight usage; `rest = after - before x (1 - mem_fraction_static)`
and `max_total_num_tokens = rest // cell_size` (policies/sglang.py). Replaying a log through these
figures needs no --weights or --non-torch-memory: they are the log's.
"""

from ..model import LoadedModel
from ..plan.deployment import Deployment, pp_partition
from ..plan.dtype_plan import dtype_plan
from ..plan.policies import get_policy
from ..plan.policies.sglang import kv_pool_sizes_gib, max_total_num_tokens, rest_bytes
from ..plan.policies.vllm_overhead import load_extra_terms
from ..plan.weights import weight_bytes
from ..units import GiB
from .rows import LOG_QUANTUM_GIB, LogExplanation, Row, gib_row, int_row
from .startup import StartupLog


# SGLang's "mem usage" is free memory before minus after loading: the weights plus what the loader keeps
# besides (rotary caches, allocator rounding): 0.11-0.24 GiB on the collected logs.
LOADER_SLACK_GIB = 0.30


def explain_sglang(log: StartupLog, model: LoadedModel, dep: Deployment, settings: dict) -> LogExplanation:
    spec = model.spec
    policy = get_policy(dep.engine).bind(spec, model.config)
    dtypes = dtype_plan(spec, dep.weight_dtype)
    kv = dtypes.kv(dep.kv_dtype)
    stages = [spec.restricted_to(set(r)) for r in pp_partition(spec.num_layers, dep.pp)]
    stage = max(stages, key=lambda s: policy.cell_bytes(s, kv, dep))
    cell = policy.cell_bytes(stage, kv, dep)
    page = int(log.settings.get("page_size") or 1)
    out = LogExplanation("sglang", policy.version, spec.name, settings, missing=list(log.missing))
    out.settings["mem_fraction_static"] = dep.gpu_memory_utilization
    out.settings["cell_bytes"] = cell
    sg = log.sglang
    weights = weight_bytes(model, dtypes.weights, dep.weights_bytes)
    if log.weights_gib is not None and weights.total_bytes is not None:
        vision = load_extra_terms(spec, model.config, dep, dtypes.act_elem_bytes)[1:]  # the vision encoder, if any
        basis = weights.basis + "".join(f" + {t.name} {t.bytes / GiB:.2f} GiB" for t in vision if t.bytes)
        out.rows.append(gib_row("weights per GPU (GiB; the free-memory drop while loading)", log.weights_gib,
                                -(-weights.total_bytes // dep.num_gpus) + sum(t.bytes for t in vision), basis,
                                LOADER_SLACK_GIB))
    if "before_gib" in sg and "after_gib" in sg and "tokens" in sg:
        def tokens_at(before_gib: float, after_gib: float) -> int:
            rest = rest_bytes(int(before_gib * GiB), int(after_gib * GiB), dep.gpu_memory_utilization)
            return max_total_num_tokens(rest, cell, page)

        q = LOG_QUANTUM_GIB
        predicted = tokens_at(sg["before_gib"], sg["after_gib"])
        lo = tokens_at(sg["before_gib"] + q, sg["after_gib"] - q)
        hi = tokens_at(sg["before_gib"] - q, sg["after_gib"] + q)
        out.rows.append(int_row("max_total_num_tokens", sg["tokens"], predicted, lo, hi,
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
